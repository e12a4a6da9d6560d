"""TCP proxies in the test's reactor, to put a fault between a client and a real server.

Each listens on a free port of 127.0.0.1 and forwards every connection to the server at
``host:targetPort`` (what a client sends before that connection is made waits in the
proxy); what the server sends passes through :meth:`TCPProxy.fromServer`, where a proxy
decides what becomes of it:

- :class:`LosingProxy` can lose one answer on the way: a reply that never arrives.
  ``lost = proxy.loseNext(b"marker")`` makes the next bytes from the server holding
  ``marker`` go nowhere: instead of passing them on, the proxy cuts that connection at
  both ends (the client sees it fail before it read the reply, the server sees it close
  after it wrote it). ``lost`` fires once that happened. A long-poll response and a
  websocket frame are lost alike (the server's frames are not masked, and pandapush's
  are not compressed, so the marker is plain in the bytes).
- :class:`StallingProxy` holds answers back, a slow Redis on demand: ``proxy.stall()``
  keeps everything the server sends in the proxy (the connection stays open, as with a
  Redis that stopped answering), ``proxy.resume()`` lets it through. The machine's Redis
  is shared by every test run: it is never made slow itself.

Both: ``proxy = await LosingProxy.start(serverPort)`` (or ``(host, port)``), point the
client at ``proxy.port`` (``proxy.url`` for HTTP); ``proxy.retarget(port)`` sends new
connections to another server (a client moving to another node); ``proxy.cut()`` ends
the open ones at both ends; ``await proxy.stop()``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol

__all__ = ["LosingProxy", "StallingProxy", "TCPProxy"]

_P = TypeVar("_P", bound="TCPProxy")


class _Upstream(Protocol):
    transport: Any

    def __init__(self, downstream: _Downstream) -> None:
        self.downstream = downstream

    def dataReceived(self, data: bytes) -> None:
        self.downstream.factory.fromServer(self.downstream, data)

    def connectionLost(self, reason: Any = None) -> None:
        self.downstream.transport.loseConnection()


class _Downstream(Protocol):
    """One client's connection to the proxy, and the proxy's to the server."""

    factory: TCPProxy
    transport: Any

    def connectionMade(self) -> None:
        self.upstream: _Upstream | None = None
        self.toServer: list[bytes] = []
        # What the proxy keeps of the server's bytes for this connection (see fromServer).
        self.held: list[bytes] = []
        self.tail = b""
        self.factory.connections.append(self)
        endpoint = TCP4ClientEndpoint(reactor, self.factory.host, self.factory.targetPort)
        endpoint.connect(Factory.forProtocol(lambda: _Upstream(self))).addCallbacks(
            self._connected, lambda _: self.transport.loseConnection()
        )

    def _connected(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        for data in self.toServer:
            upstream.transport.write(data)
        self.toServer = []

    def dataReceived(self, data: bytes) -> None:
        if self.upstream is None:
            self.toServer.append(data)
        else:
            self.upstream.transport.write(data)

    def cut(self) -> None:
        self.transport.abortConnection()
        if self.upstream is not None:
            self.upstream.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if self in self.factory.connections:
            self.factory.connections.remove(self)
        if self.upstream is not None:
            self.upstream.transport.loseConnection()


class TCPProxy(Factory):
    """Passes everything through; subclasses decide in :meth:`fromServer`."""

    protocol = _Downstream  # type: ignore[assignment]

    def __init__(self, host: str, targetPort: int) -> None:
        self.host = host
        self.targetPort = targetPort
        self.connections: list[_Downstream] = []
        self.listening: Any = None

    @classmethod
    async def start(cls: type[_P], *target: Any) -> _P:
        """``start(port)`` for a server on 127.0.0.1, or ``start(host, port)``."""
        host, port = ("127.0.0.1", *target) if len(target) == 1 else target
        proxy = cls(host, port)
        proxy.listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(proxy)
        return proxy

    @property
    def port(self) -> int:
        return int(self.listening.getHost().port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fromServer(self, connection: _Downstream, data: bytes) -> None:
        connection.transport.write(data)

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


class LosingProxy(TCPProxy):
    def __init__(self, host: str, targetPort: int) -> None:
        super().__init__(host, targetPort)
        self.marker: bytes | None = None
        self.waiting: defer.Deferred[None] | None = None

    def loseNext(self, marker: bytes) -> defer.Deferred[None]:
        """Lose the next answer holding ``marker``; fires once it is lost."""
        assert self.marker is None, "one loss at a time"
        self.marker = marker
        self.waiting = defer.Deferred()
        return self.waiting

    def fromServer(self, connection: _Downstream, data: bytes) -> None:
        marker = self.marker
        # With the end of what came before, so a marker split over two reads is still found.
        if marker is not None and marker in connection.tail + data:
            self.marker = None
            connection.cut()
            waiting, self.waiting = self.waiting, None
            if waiting is not None:
                waiting.callback(None)
            return
        connection.tail = data[-64:]
        connection.transport.write(data)


class StallingProxy(TCPProxy):
    stalled = False

    def stall(self) -> None:
        self.stalled = True

    def resume(self) -> None:
        self.stalled = False
        for connection in list(self.connections):
            held, connection.held = connection.held, []
            for data in held:
                connection.transport.write(data)

    def fromServer(self, connection: _Downstream, data: bytes) -> None:
        if self.stalled:
            connection.held.append(data)
        else:
            connection.transport.write(data)
