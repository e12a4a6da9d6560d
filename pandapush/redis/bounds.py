"""
How long a Redis command may take, and what its answer or its silence tells the shard's
health: :func:`bounded` on a command's Deferred (a subscriber's, or one txredisapi's
handler holds until a connection is made), :class:`ShardBounds` for the command
connection, which does the same on its queue of commands waiting
(:class:`~pandapush.redis.protocol.CommandProtocol`), without callbacks per command.
"""

from __future__ import annotations

from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IReactorTime, IStreamClientEndpoint
from zope.interface import implementer

from pandapush.redis.commands import Deadlines
from pandapush.redis.health import RedisHealth

__all__ = ["ObservedEndpoint", "RedisUnavailable", "ShardBounds", "bounded"]


class RedisUnavailable(Exception):  # noqa: N818 - reads as a state, like ConnectionRefused
    """A Redis command did not complete in time (Redis down or unreachable)."""


@implementer(IStreamClientEndpoint)
class ObservedEndpoint:
    """An endpoint telling ``health`` whether each attempt to connect worked (its connection's key there)."""

    def __init__(self, endpoint: IStreamClientEndpoint, health: RedisHealth) -> None:
        self._endpoint = endpoint
        self._health = health
        # The connection failed to connect (not merely to answer in time): connecting
        # again proves it works. After a timeout it proves nothing (a paused Redis
        # still accepts connections), an answer does.
        self.refused = False
        # Its connection was closed: attempts cancelled by the close say nothing of Redis.
        self.closed = False
        # When a command on it was last answered: a command (or PING) that times out while
        # later-sent ones are being answered waited behind a backlog, Redis is alive.
        self.lastAnswer = float("-inf")

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        def made(protocol: IProtocol) -> IProtocol:
            if self.refused and not self.closed:
                self.refused = False
                self._health.recovered(self)
            return protocol

        def failed(failure: Any) -> Any:
            if not self.closed and not failure.check(defer.CancelledError):
                self.refused = True
                self._health.failed(self, failure.getErrorMessage())
            return failure

        return self._endpoint.connect(protocolFactory).addCallbacks(made, failed)


def timeoutError(
    what: str,
    seconds: float,
    sent: float,
    health: RedisHealth | None,
    connection: ObservedEndpoint | None,
) -> RedisUnavailable:
    # What a command sent at ``sent`` and not answered within ``seconds`` fails with.
    if connection is not None and connection.lastAnswer >= sent:
        # Redis answered other commands since this one was sent: it works, and this
        # one waited behind a backlog (a reconnect storm queues thousands). Fail this
        # call only; counting it as an outage made /ready and every handshake say
        # "Redis unavailable" while Redis answered.
        return RedisUnavailable(f"Redis is behind: no answer to {what} within {seconds}s")
    if health is not None and connection is not None and not connection.closed:
        health.failed(connection, f"no answer within {seconds}s")
        if not health.ok and health.cause:
            return RedisUnavailable(f"Redis {health.name} unavailable ({health.cause})")
    return RedisUnavailable(f"Redis did not answer {what} within {seconds}s")


def answeredAt(sent: float, reactor: IReactorTime, health: RedisHealth, connection: ObservedEndpoint) -> None:
    # A command sent at ``sent`` was answered: the connection works, and if it was
    # counted as failing before that command was sent, it has recovered.
    if connection.closed:
        return
    connection.lastAnswer = reactor.seconds()
    failedAt = health.failedAt(connection)
    if failedAt is not None and sent >= failedAt:
        health.recovered(connection)


def bounded(
    d: defer.Deferred[Any],
    seconds: float,
    reactor: IReactorTime,
    what: str,
    health: RedisHealth | None = None,
    connection: ObservedEndpoint | None = None,
    deadlines: Deadlines | None = None,
) -> defer.Deferred[Any]:
    """
    Fail ``d`` with RedisUnavailable if it has not fired after ``seconds`` (timed by
    ``deadlines``, the connection's queue, when given); with ``health``, a timeout counts
    as ``connection`` failing, and an answer to a command sent after that as its recovery.
    (A shard's commands on a connected connection are bounded by the protocol instead:
    :class:`ShardBounds`.)
    """
    sent = reactor.seconds()

    def answered(result: Any) -> Any:
        assert health is not None and connection is not None
        answeredAt(sent, reactor, health, connection)
        return result

    def timedOut(failure: Any) -> Any:
        if failure.check(defer.CancelledError, defer.TimeoutError):
            raise timeoutError(what, seconds, sent, health, connection)
        if failure.check(txredisapi.ConnectionError):
            raise RedisUnavailable(f"Redis connection lost during {what}")
        return failure

    if deadlines is not None:
        d.addBoth(deadlines.add(d, sent))
    else:
        d.addTimeout(seconds, reactor)  # type: ignore[arg-type]
    if health is not None:
        d.addCallback(answered)
    d.addErrback(timedOut)
    return d


class ShardBounds:
    """What :func:`bounded` does to a command, done by :class:`CommandProtocol` (``CommandBounds``)."""

    __slots__ = ("_connection", "_health", "reactor", "timeout")

    def __init__(
        self, reactor: IReactorTime, timeout: float, health: RedisHealth, connection: ObservedEndpoint
    ) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self._health = health
        self._connection = connection

    def answered(self, sent: float) -> None:
        answeredAt(sent, self.reactor, self._health, self._connection)

    def timedOut(self, what: str, sent: float) -> Exception:
        return timeoutError(what, self.timeout, sent, self._health, self._connection)

    def lost(self, what: str) -> Exception:
        return RedisUnavailable(f"Redis connection lost during {what}")
