"""Whether a Redis server can be reached, and why not: an outage logged once, its end once.

Every connection to one Redis server in this process (the engine's command and
SUBSCRIBE connections, key sync's, the webhook outbox's...) reports to the same
:class:`RedisHealth`, found by the server's address with :func:`healthOf`. A Redis
that is down used to be told once per failed command and once per reconnection
attempt (125 lines in 12 s on a node whose Redis was unreachable, 167,000 lines of
command timeouts in a mass disconnect): now the first connection to fail logs the
outage with its real cause (``Connection refused``, or no answer within the command
timeout), the last one to recover logs its end with its length, and nothing in
between. Callers that get :class:`~pandapush.redis.RedisUnavailable` meanwhile log
it at debug level at most.

What counts as recovered is a proof that Redis answers now: a connection made, or
the answer to a command sent after the failure was seen (an answer to a command
queued before it proves only that Redis answered once, then).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["RedisHealth", "healthOf"]


class RedisHealth:
    """One Redis server's state as this process's connections to it see it."""

    _log = Logger()

    def __init__(self, reactor: IReactorTime, name: str) -> None:
        self._reactor = reactor
        self.name = name
        # connection -> when it failed; the server is unavailable while any has.
        self._failing: dict[object, float] = {}
        self.cause = ""
        self.since: float | None = None

    @property
    def ok(self) -> bool:
        return not self._failing

    def status(self) -> dict[str, Any]:
        """``{"status": "ok"}`` or ``{"status": "unavailable", "error": cause, "seconds": n}``."""
        if self.since is None:
            return {"status": "ok"}
        seconds = round(self._reactor.seconds() - self.since, 1)
        return {"status": "unavailable", "error": self.cause, "seconds": seconds}

    def failed(self, connection: object, cause: str) -> None:
        """``connection`` could not reach the server (or it did not answer in time)."""
        if connection in self._failing:
            return
        now = self._reactor.seconds()
        self._failing[connection] = now
        if self.since is None:
            self.since = now
            self.cause = cause
            self._log.warn("Redis {shard} unavailable: {cause}", shard=self.name, cause=cause)

    def failedAt(self, connection: object) -> float | None:
        """When ``connection`` was last seen failing (None if it works)."""
        return self._failing.get(connection)

    def recovered(self, connection: object) -> None:
        """``connection`` works again."""
        if self._failing.pop(connection, None) is None or self._failing or self.since is None:
            return
        seconds = self._reactor.seconds() - self.since
        self.since = None
        self._log.info("Redis {shard} available again after {seconds:.1f}s", shard=self.name, seconds=seconds)

    def forget(self, connection: object) -> None:
        """``connection`` is closed: it no longer counts either way (nothing is logged)."""
        self._failing.pop(connection, None)
        if not self._failing:
            self.since = None


_registry: dict[str, RedisHealth] = {}


def healthOf(reactor: IReactorTime, name: str) -> RedisHealth:
    """The health of the Redis server ``name`` (``host:port``), shared in this process."""
    health = _registry.get(name)
    if health is None:
        health = _registry[name] = RedisHealth(reactor, name)
    return health
