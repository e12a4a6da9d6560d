"""A new connection to a Sentinel shard's primary, before anything uses it: ROLE, then a gate.

:class:`PrimaryCheck` speaks first on a connection :class:`~pandapush.redis.sentinel.PrimaryEndpoint`
made: it asks ``ROLE`` and hands the connection to the protocol it was made for (txredisapi's)
only if the server says ``master``, so no command of ours ever reaches a replica. Between the
two, the endpoint may run a few commands of its own on it (:meth:`PrimaryCheck.command`: the
gate that holds a reconnected command connection until every node's SUBSCRIBE connection is
back, see ``RedisShard.gateReconnections``). Their replies are read by the command
connection's own reader (:func:`~pandapush.redis.protocol.readReply`), so they are what
a command answers everywhere else: text, ``int``, lists, None, ``txredisapi.ResponseError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from pandapush.redis.connection import RedisUnavailable
from pandapush.redis.protocol import encodeCommand, readReply

__all__ = [
    "GatedEndpoint",
    "NotPrimary",
    "PrimaryCheck",
    "PrimaryCheckFactory",
    "abort",
]

Endpoint = tuple[str, int]


class NotPrimary(Exception):  # noqa: N818 - a state, like RedisUnavailable
    """The server Sentinel named is not (or no longer) the master's primary."""


def abort(transport: Any) -> None:
    if transport is not None:
        transport.abortConnection()


#: ROLE answers in a few hundred bytes, plus ~40 per replica.
_MAX_ROLE_REPLY = 64 * 1024


class PrimaryCheck(Protocol):
    """
    Asks ROLE on a new connection; ``checked`` fires if the server is the primary
    (else fails, and the connection is closed). Nothing of the protocol the
    connection was made for runs until :meth:`start`, so no command can reach a
    replica; then it sees the connection as if it had just been made.
    """

    def __init__(self, wrapped: IProtocolFactory, checked: defer.Deferred[None], role: bool = True) -> None:
        self._wrapped = wrapped
        self._checked = checked
        # False: no ROLE, the connection is checked once made (a plain server, only gated).
        self._role = role
        self._buffer = b""
        self.inner: IProtocol | None = None
        self.primary: Endpoint | None = None
        self.lost: Failure | None = None
        #: Told when the connection is lost after :meth:`start`.
        self.onLost: Callable[[], None] = lambda: None
        # Answers awaited by :meth:`command`, in the order the commands were sent.
        self._answers: list[defer.Deferred[Any]] = []

    def connectionMade(self) -> None:
        if not self._role:
            self._checked.callback(None)
            return
        self.transport.write(b"*1\r\n$4\r\nROLE\r\n")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.dataReceived(data)
            return
        self._buffer += data
        if self._checked.called:
            self._answered()
            return
        try:
            parsed = readReply(self._buffer)
            if parsed is None and len(self._buffer) > _MAX_ROLE_REPLY:
                raise txredisapi.InvalidResponse("ROLE reply too long")
        except txredisapi.InvalidResponse as e:
            self._refuse(RedisUnavailable(f"bad ROLE reply: {e}"))
            return
        if parsed is None:
            return
        reply, end = parsed
        self._buffer = self._buffer[end:]
        role = reply[0] if isinstance(reply, list) and reply else reply
        if role != "master":
            what = str(role) if isinstance(role, str | Exception) else repr(role)
            self._refuse(NotPrimary(f"the server Sentinel named answers ROLE with {what!r}"))
            return
        self._checked.callback(None)

    def command(self, *args: str) -> defer.Deferred[Any]:
        """
        Send one command of the endpoint's own on the checked connection, before
        :meth:`start`; fires with its reply as the command connection reads it (an error
        reply too, as a ``txredisapi.ResponseError`` value: the gate reads on past one), or
        fails with RedisUnavailable if the connection is lost or answers what is not RESP.
        """
        if self.lost is not None or self.inner is not None or not self._checked.called:
            return defer.fail(RedisUnavailable("the connection is not checked, or in use"))
        self.transport.write(encodeCommand(args))  # type: ignore[union-attr]
        answer: defer.Deferred[Any] = defer.Deferred()
        self._answers.append(answer)
        return answer

    def _answered(self) -> None:
        # Replies to command(); anything else is kept for the protocol (nothing else is
        # expected before it speaks).
        while self._answers:
            try:
                parsed = readReply(self._buffer)
            except txredisapi.InvalidResponse as e:
                self._refuse(RedisUnavailable(f"bad reply: {e}"))
                return
            if parsed is None:
                return
            reply, end = parsed
            self._buffer = self._buffer[end:]
            self._answers.pop(0).callback(reply)

    def start(self) -> IProtocol:
        """Hand the checked connection to the protocol it was made for."""
        if self._answers:
            raise RedisUnavailable("commands of the endpoint are still unanswered")
        if self.lost is not None:
            raise RedisUnavailable(f"connection lost after ROLE: {self.lost.getErrorMessage()}")
        inner = self._wrapped.buildProtocol(self.transport.getPeer())  # type: ignore[union-attr]
        if inner is None:
            abort(self.transport)
            raise RedisUnavailable("no protocol for the connection")
        self.inner = inner
        inner.makeConnection(self.transport)  # type: ignore[arg-type]
        rest, self._buffer = self._buffer, b""
        if rest:
            inner.dataReceived(rest)
        return inner

    def _refuse(self, reason: Exception) -> None:
        if not self._checked.called:
            self._checked.errback(reason)
        self._failAnswers(reason)
        abort(self.transport)

    def _failAnswers(self, reason: Exception) -> None:
        answers, self._answers = self._answers, []
        for answer in answers:
            answer.errback(reason)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason
        if self.inner is not None:
            self.onLost()
            self.inner.connectionLost(reason)
        elif not self._checked.called:
            why = reason.getErrorMessage()
            self._checked.errback(RedisUnavailable(f"connection lost before ROLE: {why}"))
        else:
            self._failAnswers(RedisUnavailable(f"connection lost: {reason.getErrorMessage()}"))


class PrimaryCheckFactory(Factory):
    noisy = False

    def __init__(self, wrapped: IProtocolFactory, checked: defer.Deferred[None], role: bool = True) -> None:
        self.wrapped = wrapped
        self.checked = checked
        self.role = role
        self.made: PrimaryCheck | None = None

    def buildProtocol(self, addr: Any) -> PrimaryCheck:
        self.made = PrimaryCheck(self.wrapped, self.checked, self.role)
        return self.made


@implementer(IStreamClientEndpoint)
class GatedEndpoint:
    """
    A plain server's endpoint (``REDIS_HOSTS``) whose connections, after the first,
    are handed over only once ``gate`` (if set) has finished with them: what
    ``PrimaryEndpoint`` does after a failover, for a server restarted or a
    connection cut (the commands that queued meanwhile would otherwise reach a
    server that not every node's SUBSCRIBE connection is back on). No ROLE check:
    a plain server is used whatever it says it is, as before.
    """

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint
        self.gate: Any = None
        self._made = 0

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        if not self._made or self.gate is None:

            def made(protocol: IProtocol) -> IProtocol:
                self._made += 1
                return protocol

            return self._endpoint.connect(protocolFactory).addCallback(made)
        return defer.Deferred.fromCoroutine(self._gated(protocolFactory, self.gate))

    async def _gated(self, protocolFactory: IProtocolFactory, gate: Any) -> IProtocol:
        checked: defer.Deferred[None] = defer.Deferred()
        factory = PrimaryCheckFactory(protocolFactory, checked, role=False)
        await self._endpoint.connect(factory)
        check = factory.made
        assert check is not None
        try:
            await checked
            await gate(check.command)
            protocol = check.start()
        except BaseException:
            abort(check.transport)
            raise
        self._made += 1
        return protocol
