"""A TCP proxy in the test's reactor that can lose one answer on the way: a reply that never arrives.

``proxy = await LosingProxy.start(serverPort)``; point a client at ``proxy.port``;
``lost = proxy.loseNext(b"marker")`` makes the next bytes from the server holding
``marker`` go nowhere: instead of passing them on, the proxy cuts that connection at both
ends (the client sees it fail before it read the reply, the server sees it close after it
wrote it). ``lost`` fires once that happened. A long-poll response and a websocket frame
are lost alike (the server's frames are not masked, and pandapush's are not compressed,
so the marker is plain in the bytes). ``proxy.retarget(port)`` sends new connections
to another server (a client moving to another node); ``proxy.cut()`` ends the open ones.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol

__all__ = ["LosingProxy"]


class _Upstream(Protocol):
    transport: Any

    def __init__(self, downstream: _Downstream) -> None:
        self.downstream = downstream

    def dataReceived(self, data: bytes) -> None:
        self.downstream.fromServer(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.downstream.transport.loseConnection()


class _Downstream(Protocol):
    factory: LosingProxy
    transport: Any

    def connectionMade(self) -> None:
        self.upstream: _Upstream | None = None
        self.pending: list[bytes] = []
        # The end of what came before, so a marker split over two reads is still found.
        self.tail = b""
        self.factory.connections.append(self)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.factory.targetPort)
        endpoint.connect(Factory.forProtocol(lambda: _Upstream(self))).addCallbacks(
            self._connected, lambda _: self.transport.loseConnection()
        )

    def _connected(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        for data in self.pending:
            upstream.transport.write(data)
        self.pending = []

    def dataReceived(self, data: bytes) -> None:
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.transport.write(data)

    def fromServer(self, data: bytes) -> None:
        factory = self.factory
        marker = factory.marker
        if marker is not None and marker in self.tail + data:
            factory.marker = None
            self.cut()
            waiting, factory.waiting = factory.waiting, None
            if waiting is not None:
                waiting.callback(None)
            return
        self.tail = data[-64:]
        self.transport.write(data)

    def cut(self) -> None:
        self.transport.abortConnection()
        if self.upstream is not None:
            self.upstream.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if self in self.factory.connections:
            self.factory.connections.remove(self)
        if self.upstream is not None:
            self.upstream.transport.loseConnection()


class LosingProxy(Factory):
    protocol = _Downstream  # type: ignore[assignment]

    def __init__(self, targetPort: int) -> None:
        self.targetPort = targetPort
        self.marker: bytes | None = None
        self.waiting: defer.Deferred[None] | None = None
        self.connections: list[_Downstream] = []
        self.listening: Any = None

    @classmethod
    async def start(cls, targetPort: int) -> LosingProxy:
        proxy = cls(targetPort)
        proxy.listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(proxy)
        return proxy

    @property
    def port(self) -> int:
        return int(self.listening.getHost().port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def loseNext(self, marker: bytes) -> defer.Deferred[None]:
        """Lose the next answer holding ``marker``; fires once it is lost."""
        assert self.marker is None, "one loss at a time"
        self.marker = marker
        self.waiting = defer.Deferred()
        return self.waiting

    def retarget(self, port: int) -> None:
        """New connections go to the server on ``port``."""
        self.targetPort = port

    def cut(self) -> None:
        """End every open connection, at both ends."""
        for connection in list(self.connections):
            connection.cut()

    async def stop(self) -> None:
        self.cut()
        await self.listening.stopListening()
