"""A TCP proxy in the test's reactor whose answers can be held back: a slow Redis, on demand.

``proxy = await StallingProxy.start("127.0.0.1", 6379)``; point a client at
``proxy.port``; ``proxy.stall()`` keeps everything the server sends in the proxy (the
connection stays open, as with a Redis that stopped answering), ``proxy.resume()`` lets
it through. The machine's Redis is shared by every test run: it is never made slow itself.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol

__all__ = ["StallingProxy"]


class _Upstream(Protocol):
    transport: Any

    def __init__(self, downstream: _Downstream) -> None:
        self.downstream = downstream

    def dataReceived(self, data: bytes) -> None:
        self.downstream.fromServer(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.downstream.transport.loseConnection()


class _Downstream(Protocol):
    factory: StallingProxy
    transport: Any

    def connectionMade(self) -> None:
        self.upstream: _Upstream | None = None
        self.toServer: list[bytes] = []
        self.held: list[bytes] = []
        self.factory.connections.append(self)
        endpoint = TCP4ClientEndpoint(reactor, self.factory.host, self.factory.targetPort)
        endpoint.connect(Factory.forProtocol(lambda: _Upstream(self))).addCallbacks(
            self._connected, self._failed
        )

    def _connected(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        for data in self.toServer:
            upstream.transport.write(data)
        self.toServer = []

    def _failed(self, failure: Any) -> None:
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.upstream is None:
            self.toServer.append(data)
        else:
            self.upstream.transport.write(data)

    def fromServer(self, data: bytes) -> None:
        if self.factory.stalled:
            self.held.append(data)
        else:
            self.transport.write(data)

    def release(self) -> None:
        held, self.held = self.held, []
        for data in held:
            self.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self in self.factory.connections:
            self.factory.connections.remove(self)
        if self.upstream is not None:
            self.upstream.transport.loseConnection()


class StallingProxy(Factory):
    protocol = _Downstream  # type: ignore[assignment]

    def __init__(self, host: str, targetPort: int) -> None:
        self.host = host
        self.targetPort = targetPort
        self.stalled = False
        self.connections: list[_Downstream] = []
        self.listening: Any = None

    @classmethod
    async def start(cls, host: str, targetPort: int) -> StallingProxy:
        proxy = cls(host, targetPort)
        proxy.listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(proxy)
        return proxy

    @property
    def port(self) -> int:
        return int(self.listening.getHost().port)

    def stall(self) -> None:
        self.stalled = True

    def resume(self) -> None:
        self.stalled = False
        for connection in list(self.connections):
            connection.release()

    async def stop(self) -> None:
        for connection in list(self.connections):
            connection.transport.abortConnection()
        await self.listening.stopListening()
