"""A TCP client that writes the bytes it is told and keeps every byte it receives.

For tests of what a server does with a request byte by byte (deadlines, pipelining,
upgrades) and exactly what it answers: ``client = await connectRaw(port)``,
``client.send(b"GET / HTTP/1.1\\r\\n...")``, then ``client.received``; ``client.gone``
once the server closed, ``await client.closed`` to wait for it.
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

__all__ = ["RawClient", "connectRaw"]


class RawClient(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.closed: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.closed.called:
            self.closed.callback(None)

    @property
    def gone(self) -> bool:
        return self.closed.called

    def send(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def close(self) -> None:
        if self.transport is not None and not self.gone:
            self.transport.abortConnection()  # type: ignore[attr-defined]


async def connectRaw(port: int, source: str = "127.0.0.1") -> RawClient:
    """A :class:`RawClient` connected to 127.0.0.1:``port`` from the address ``source``."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5, bindAddress=(source, 0))
    return await connectProtocol(endpoint, RawClient())
