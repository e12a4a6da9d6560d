"""
:mod:`pandapush.transports.turnsends`: what a reactor turn writes to a plain TCP
connection reaches the peer after the turn, in one ``send``, in order with everything
else written to it, with Twisted's back pressure and closing unchanged. Over real
sockets on the real reactor: the point is what the kernel is given, and when.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from pandapush.transports.turnsends import TurnSends, sendAtTurnEnd
from tests.support.ports import portNumber
from tests.support.waiting import eventually


class _Sink(Protocol):
    def connectionMade(self) -> None:
        self.factory.accepted.callback(self.transport)  # type: ignore[attr-defined]


@implementer(IPushProducer)
class _Producer:
    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        self.resumed += 1

    def stopProducing(self) -> None:
        pass


async def _turn() -> None:
    """
    Once the turn's ``callLater(0)`` has run: two turns later, since a ``callLater(0)`` of
    the same moment may run before or after it.
    """
    for _ in range(2):
        await deferLater(reactor, 0, lambda: None)  # type: ignore[arg-type]


class TurnSendsTests(TestCase):
    async def pair(self) -> tuple[Any, socket.socket]:
        factory = Factory.forProtocol(_Sink)
        factory.accepted = defer.Deferred()  # type: ignore[attr-defined]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined,arg-type]
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", portNumber(port)))
        self.addCleanup(client.close)
        client.setblocking(False)
        transport = await factory.accepted  # type: ignore[attr-defined]
        self.addCleanup(transport.abortConnection)
        return transport, client

    def nothingYet(self, client: socket.socket) -> None:
        with self.assertRaises(BlockingIOError):
            client.recv(100)

    async def receive(self, client: socket.socket, size: int) -> bytes:
        received = [b""]

        def read() -> bool:
            try:
                chunk = client.recv(1 << 20)
            except BlockingIOError:
                return False
            if not chunk:
                raise AssertionError(f"closed after {received[0]!r}")
            received[0] += chunk
            return len(received[0]) >= size

        await eventually(read)
        return received[0]

    def replaceSend(self, transport: Any, send: Callable[[Any, bytes], int]) -> Any:
        """
        Give the transport's ``send`` to ``send(realSocket, data)`` (the socket is put back
        after the test); returns the real socket, for a test to put back sooner.
        """
        real = transport.socket

        class Socket:
            def send(self, data: bytes) -> int:
                return send(real, data)

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        transport.socket = Socket()
        self.addCleanup(setattr, transport, "socket", real)
        return real

    def sends(self, transport: Any) -> list[bytes]:
        """Record what is given to the transport's socket, one item per ``send``."""
        sent: list[bytes] = []

        def send(real: Any, data: bytes) -> int:
            sent.append(bytes(data))
            return int(real.send(data))

        self.replaceSend(transport, send)
        return sent

    async def test_afterTheTurnInOneSend(self) -> None:
        """A turn's writes wait for its end, then leave in one send, without epoll_ctl."""
        transport, client = await self.pair()
        sent = self.sends(transport)
        sendAtTurnEnd(transport, b"hello ")
        sendAtTurnEnd(transport, b"world")
        self.nothingYet(client)
        self.assertNotIn(transport, reactor.getWriters())  # type: ignore[attr-defined]
        await _turn()
        self.assertEqual(sent, [b"hello world"])
        self.assertEqual(await self.receive(client, 11), b"hello world")
        self.assertEqual((transport._tempDataBuffer, transport.dataBuffer), ([], b""))

    async def test_oneCallForManyConnections(self) -> None:
        """Every connection written in a turn is sent by the same one call."""
        turn = TurnSends()
        pairs = [await self.pair() for _ in range(3)]
        before = len(reactor.getDelayedCalls())  # type: ignore[attr-defined]
        for i, (transport, _) in enumerate(pairs):
            turn.send(transport, b"%d" % i)
        self.assertEqual(len(reactor.getDelayedCalls()), before + 1)  # type: ignore[attr-defined]
        await _turn()
        for i, (_, client) in enumerate(pairs):
            self.assertEqual(await self.receive(client, 1), b"%d" % i)

    async def test_inOrderWithWrites(self) -> None:
        """A transport.write between two of them lands between them."""
        transport, client = await self.pair()
        sendAtTurnEnd(transport, b"one ")
        transport.write(b"two ")
        sendAtTurnEnd(transport, b"three")
        self.assertEqual(await self.receive(client, 13), b"one two three")

    async def test_afterBufferedData(self) -> None:
        """Behind data Twisted still holds, it waits its turn: the peer gets both, in order."""
        transport, client = await self.pair()
        transport.write(b"first ")
        sendAtTurnEnd(transport, b"second")
        self.nothingYet(client)
        self.assertEqual(await self.receive(client, 12), b"first second")

    async def test_thenLoseConnection(self) -> None:
        """Closed in the same turn: the data, then the end of the stream."""
        transport, client = await self.pair()
        sendAtTurnEnd(transport, b"bye")
        transport.loseConnection()
        self.assertEqual(await self.receive(client, 3), b"bye")
        client.setblocking(True)
        client.settimeout(5)
        self.assertEqual(client.recv(100), b"")

    async def test_goneBeforeTheTurnEnds(self) -> None:
        """An abort before the turn's end drops the data, and the others are still sent."""
        turn = TurnSends()
        gone, _ = await self.pair()
        kept, client = await self.pair()
        turn.send(gone, b"lost")
        turn.send(kept, b"kept")
        gone.abortConnection()
        await _turn()
        self.assertEqual(await self.receive(client, 4), b"kept")

    async def test_pastTheBufferSizeThroughWrite(self) -> None:
        """What would take the buffer past bufferSize goes through write, which pauses the producer."""
        transport, client = await self.pair()
        producer = _Producer()
        transport.registerProducer(producer, True)
        self.addCleanup(transport.unregisterProducer)
        sendAtTurnEnd(transport, b"a" * 1000)
        sendAtTurnEnd(transport, b"b" * transport.bufferSize)
        self.assertEqual(producer.paused, 1)
        data = await self.receive(client, 1000 + transport.bufferSize)
        self.assertEqual(data, b"a" * 1000 + b"b" * transport.bufferSize)
        await eventually(lambda: producer.resumed == 1)

    async def test_whatTheKernelDoesNotTake(self) -> None:
        """A send the kernel takes part of leaves the rest to Twisted's write, in order."""
        transport, client = await self.pair()
        real = self.replaceSend(transport, lambda real, data: int(real.send(data[:3])))
        sendAtTurnEnd(transport, b"abcdef")
        await _turn()
        transport.socket = real
        self.assertEqual(await self.receive(client, 6), b"abcdef")

    async def test_brokenConnection(self) -> None:
        """A send that fails leaves the data to write, whose next try ends the connection."""
        transport, client = await self.pair()
        lost = defer.Deferred[None]()
        transport.protocol.connectionLost = lambda reason: lost.callback(None)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()
        await deferLater(reactor, 0.05, lambda: None)  # type: ignore[arg-type]
        for _ in range(3):
            sendAtTurnEnd(transport, b"x" * 1000)
            await _turn()
        await lost

    async def test_afterACancelledTurn(self) -> None:
        """A turn's call cancelled by someone (trial's janitor does) does not stop later sends."""
        turn = TurnSends()
        transport, client = await self.pair()
        turn.send(transport, b"first")
        assert turn._call is not None
        turn._call.cancel()
        other, otherClient = await self.pair()
        turn.send(other, b"second")
        self.assertEqual(await self.receive(otherClient, 6), b"second")
        self.assertEqual(await self.receive(client, 5), b"first")

    async def test_oneFailingConnection(self) -> None:
        """One connection whose write raises is logged; the turn's others are still sent."""
        turn = TurnSends()

        class Raising(_Producer):
            def pauseProducing(self) -> None:
                raise RuntimeError("pause")

        failing, failingClient = await self.pair()
        kept, keptClient = await self.pair()
        failing.registerProducer(Raising(), True)
        self.addCleanup(failing.unregisterProducer)
        real = self.replaceSend(failing, lambda real, data: 0)
        turn.send(failing, b"abc")
        turn.send(kept, b"kept")
        failing.bufferSize = 2  # what the kernel leaves, 3 bytes, makes write pause the producer
        await _turn()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(await self.receive(keptClient, 4), b"kept")
        failing.socket = real
        self.assertEqual(await self.receive(failingClient, 3), b"abc")

    def test_otherTransportsWrite(self) -> None:
        """A transport that is not a plain TCP one (TLS, a test's) gets a plain write."""
        from twisted.internet.testing import StringTransport

        transport = StringTransport()
        sendAtTurnEnd(transport, b"x")
        self.assertEqual(transport.value(), b"x")
