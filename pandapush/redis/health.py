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
queued before it proves only that Redis answered once, then). A Redis digging out of
a backlog answers some commands in time and others not: the status follows each
change at once, but the end of an outage is logged only once Redis has kept working
for ``RECOVERY_GRACE`` seconds, and a failure before that continues the same outage
(a mass disconnect of 3,000 clients logged two outages 0.1 s apart before).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["RECOVERY_GRACE", "RedisHealth", "healthOf"]

#: Seconds Redis must keep working before the end of its outage is logged.
RECOVERY_GRACE = 3.0


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
        self._connections: set[object] = set()
        # The outage being logged (from its first failure to its logged end), and the
        # call that logs its end once the grace has passed.
        self._outageSince: float | None = None
        self._ending: IDelayedCall | None = None

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
        if self._ending is not None:
            # Failing again within the grace: the same outage, told already.
            self._ending.cancel()
            self._ending = None
        elif self._outageSince is None:
            self._outageSince = now
            self._log.warn("Redis {shard} unavailable: {cause}", shard=self.name, cause=cause)

    def failedAt(self, connection: object) -> float | None:
        """When ``connection`` was last seen failing (None if it works)."""
        return self._failing.get(connection)

    def recovered(self, connection: object) -> None:
        """``connection`` works again."""
        if self._failing.pop(connection, None) is None or self._failing or self.since is None:
            return
        self.since = None
        if self._outageSince is not None and self._ending is None:
            self._ending = self._reactor.callLater(RECOVERY_GRACE, self._ended, self._reactor.seconds())

    def _ended(self, at: float) -> None:
        self._ending = None
        if self._outageSince is None:
            return
        seconds, self._outageSince = at - self._outageSince, None
        self._log.info("Redis {shard} available again after {seconds:.1f}s", shard=self.name, seconds=seconds)

    def forget(self, connection: object) -> None:
        """``connection`` is closed: it no longer counts either way."""
        self._connections.discard(connection)
        if self._failing.pop(connection, None) is not None and not self._failing:
            # The last failing connection is gone: nothing is known to fail, and nobody
            # is left to see the outage end.
            self.since = None
            if self._ending is None:
                self._outageSince = None
        if not self._connections and self._ending is not None:
            # Nobody left to fail again (the process is closing them): tell the end now,
            # leaving no timer behind.
            self._ending.cancel()
            self._ended(self._reactor.seconds())

    def add(self, connection: object) -> None:
        """``connection`` reports here from now on, until ``forget``."""
        self._connections.add(connection)


_registry: dict[str, RedisHealth] = {}


def healthOf(reactor: IReactorTime, name: str) -> RedisHealth:
    """The health of the Redis server ``name`` (``host:port``), shared in this process."""
    health = _registry.get(name)
    if health is None:
        health = _registry[name] = RedisHealth(reactor, name)
    return health
