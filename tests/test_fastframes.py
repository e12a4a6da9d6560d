"""
The websocket fast path (pandapush.transports.fastframes) reads and answers what
autobahn's own path does, byte for byte, however the bytes are split into reads.
"""

from __future__ import annotations

import json
import random
import socket
import struct
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor, tcp, threads
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from pandapush.transports import fastframes
from pandapush.transports.fastframes import FastFramesProtocol, arrayFrame, textFrame
from tests.support.inprocess import AUTH, channel
from tests.test_transports import HANDSHAKE, WebSocketCase

_UPGRADE = (
    b"GET /push HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def frame(
    payload: bytes,
    opcode: int = 1,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = b"\x0f\xa0\x55\x3c",
    longForm: bool = False,
) -> bytes:
    """A client's frame as it goes on the wire (``longForm``: a 16-bit length even when it is small)."""
    size = len(payload)
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    maskBit = 0x80 if mask is not None else 0
    if size < 126 and not longForm:
        head += bytes([maskBit | size])
    elif size < 65536:
        head += bytes([maskBit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([maskBit | 127]) + struct.pack("!Q", size)
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class _Recording:
    """Records each message and answers it with a text frame, so reply order shows."""

    messages: list[tuple[bytes, bool]]
    closed: tuple[Any, ...] | None = None

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closed = (wasClean, code, reason)

    def onOpen(self) -> None:
        self.messages = []

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append((payload, isBinary))
        if self.state == self.STATE_OPEN:  # type: ignore[attr-defined]
            self.sendMessage(b"re:" + payload[:20], isBinary)  # type: ignore[attr-defined]
            if payload == b"close-me":
                self.sendClose(4000, "asked to")  # type: ignore[attr-defined]


class AutobahnServer(_Recording, WebSocketServerProtocol):  # type: ignore[misc]
    pass


class FastServer(_Recording, FastFramesProtocol):  # type: ignore[misc]
    pass


class _Transport(StringTransport):
    def unregisterProducer(self) -> None:
        # As a TCP transport: autobahn unregisters on every drop, registered or not.
        self.producer = None


def openServer(protocol: type[Any], maxSize: int = 0) -> tuple[Any, StringTransport]:
    factory = WebSocketServerFactory("ws://localhost")
    factory.protocol = protocol
    # No timers: these sockets never see a reactor turn.
    factory.setProtocolOptions(
        openHandshakeTimeout=0,
        closeHandshakeTimeout=0,
        failByDrop=False,
        maxFramePayloadSize=maxSize,
        maxMessagePayloadSize=maxSize,
    )
    server: Any = factory.buildProtocol(None)
    transport = _Transport()
    server.makeConnection(transport)
    server.dataReceived(_UPGRADE)
    assert server.state == server.STATE_OPEN
    transport.clear()
    return server, transport


def outcome(protocol: type[Any], reads: list[bytes], maxSize: int = 0) -> tuple[Any, ...]:
    server, transport = openServer(protocol, maxSize)
    for data in reads:
        server.dataReceived(data)
    return server.messages, transport.value(), transport.disconnecting, server.state, server.failedByMe


class _Call:
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class SameAsAutobahnTests(SynchronousTestCase):
    def assertSame(self, reads: list[bytes], maxSize: int = 0) -> tuple[Any, ...]:
        fast = outcome(FastServer, reads, maxSize)
        self.assertEqual(fast, outcome(AutobahnServer, reads, maxSize), reads)
        return fast

    def splits(self, stream: bytes) -> list[list[bytes]]:
        """The stream in one read, a byte per read, and in two reads cut at every byte."""
        cuts = [[stream], [stream[i : i + 1] for i in range(len(stream))]]
        return cuts + [[stream[:i], stream[i:]] for i in range(1, len(stream))]

    def test_severalFramesPerRead(self) -> None:
        """Text frames of every length form in one read: each a message, replies in order."""
        payloads = [b"", b"a", b"[{}]", b"x" * 125, b"y" * 126, b"z" * 600, b"w" * 70000]
        messages, sent, disconnecting, _, _ = self.assertSame([b"".join(frame(p) for p in payloads)])
        self.assertEqual(messages, [(p, False) for p in payloads])
        self.assertFalse(disconnecting)
        self.assertEqual(sent.count(b"\x81"), len(payloads))

    def test_splitAtEveryByte(self) -> None:
        """Frames (text, ping, long-form text, close) split anywhere: the same messages and answers."""
        stream = (
            frame(b'[{"a":1}]') + frame(b"hi", opcode=9) + frame(b"q" * 130) + frame(b"\x03\xe8", opcode=8)
        )
        for reads in self.splits(stream):
            messages, sent, disconnecting, _, _ = self.assertSame(reads)
            self.assertEqual(len(messages), 2)
            self.assertTrue(disconnecting)
            # The close frame's answer was written before the connection was let go.
            self.assertTrue(sent.endswith(b"\x88\x02\x03\xe8"), sent)

    def test_controlFrameBetweenTextFrames(self) -> None:
        """A ping between two text frames is answered between their replies."""
        _, sent, _, _, _ = self.assertSame([frame(b"one") + frame(b"p!", opcode=9) + frame(b"two")])
        self.assertEqual(sent, b"\x81\x06re:one" + b"\x8a\x02p!" + b"\x81\x06re:two")

    def test_closedByApplication(self) -> None:
        """Frames read behind one whose handling closed the socket are handled as autobahn does."""
        stream = frame(b"a") + frame(b"close-me") + frame(b"b") + frame(b"\x0f\xa0", opcode=8)
        for reads in self.splits(stream):
            _, sent, disconnecting, _, _ = self.assertSame(reads)
            self.assertEqual(sent.count(b"\x88"), 1)
            self.assertTrue(disconnecting)

    def test_fragmentedMessage(self) -> None:
        """A message in fragments, between whole ones, goes through autobahn and arrives whole."""
        stream = frame(b"a") + frame(b"b1", fin=False) + frame(b"b2", opcode=0) + frame(b"c")
        for reads in self.splits(stream):
            messages, _, _, _, _ = self.assertSame(reads)
            self.assertEqual([m for m, _ in messages], [b"a", b"b1b2", b"c"])

    def test_binary(self) -> None:
        messages, _, _, _, _ = self.assertSame([frame(b"t") + frame(b"\x00\xff", opcode=2) + frame(b"u")])
        self.assertEqual(messages, [(b"t", False), (b"\x00\xff", True), (b"u", False)])

    def test_badUtf8(self) -> None:
        """A text frame that is not UTF-8 closes with 1007, after the frames before it are answered."""
        for bad in (b"\xff", b"ab\xc3", b"\xed\xa0\x80", b"\xc0\xaf", "é".encode() + b"\x80"):
            stream = frame(b"ok") + frame(bad) + frame(b"late")
            for reads in ([stream], [stream[:5], stream[5:]]):
                messages, sent, _, _, failed = self.assertSame(reads)
                self.assertEqual(messages[0], (b"ok", False))
                self.assertIn(b"\x88", sent)
                self.assertEqual(struct.unpack("!H", sent[sent.index(b"\x88") + 2 :][:2])[0], 1007)
                self.assertTrue(failed)
        messages, _, _, _, _ = self.assertSame([frame("ünï €𝄞".encode())])
        self.assertEqual(messages, [("ünï €𝄞".encode(), False)])

    def test_oversize(self) -> None:
        """A frame over the size limit closes with 1009; one at the limit is read."""
        for size in (100, 101, 1000):
            stream = frame(b"a" * 100) + frame(b"b" * size) + frame(b"c")
            for reads in ([stream], [stream[:110], stream[110:]]):
                messages, sent, _, _, _ = self.assertSame(reads, maxSize=100)
                if size == 100:
                    self.assertEqual(len(messages), 3)
                else:
                    self.assertIn(b"\x88", sent)
                    self.assertEqual(struct.unpack("!H", sent[sent.index(b"\x88") + 2 :][:2])[0], 1009)

    def test_protocolErrors(self) -> None:
        """Unmasked, reserved bits, reserved opcode, non-minimal length, a lone continuation: 1002."""
        for bad in (
            frame(b"x", mask=None),
            frame(b"x", rsv=1),
            frame(b"x", opcode=3),
            frame(b"x", longForm=True),
            frame(b"x", opcode=0),
        ):
            stream = frame(b"ok") + bad + frame(b"after")
            for reads in self.splits(stream):
                messages, sent, _, _, failed = self.assertSame(reads)
                self.assertEqual(messages[0], (b"ok", False))
                self.assertTrue(failed)
                self.assertEqual(struct.unpack("!H", sent[sent.index(b"\x88") + 2 :][:2])[0], 1002)

    def test_random(self) -> None:
        """Random mixes of good and bad frames, split at random: the same outcome every time."""
        rng = random.Random(17)
        kinds = [
            lambda: frame(bytes(rng.choice(b"abc{}[]") for _ in range(rng.choice([0, 5, 125, 126, 700])))),
            lambda: frame(b"ping", opcode=9),
            lambda: frame(b"pong", opcode=10),
            lambda: frame(b"\xe2\x82", fin=False) + frame(b"\xac", opcode=0),
            lambda: frame(b"\xf0\x28\x8c\xbc"),
            lambda: frame(b"u", mask=None),
            lambda: frame(b"r", rsv=2),
            lambda: frame(b"big" * 400),
            lambda: frame(b"\x03\xe8bye", opcode=8),
            lambda: frame(b"close-me"),
        ]
        for _ in range(300):
            kindsOf = rng.choices(kinds, weights=[12, 1, 1, 1, 1, 1, 1, 1, 1, 1], k=rng.randrange(1, 8))
            stream = b"".join(kind() for kind in kindsOf)
            cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randrange(0, 5))))
            reads = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
            self.assertSame(reads, maxSize=1000)

    def test_liveness(self) -> None:
        """A text frame read on the fast path counts as the peer being alive, as in autobahn's path."""
        for protocol in (FastServer, AutobahnServer):
            server, _ = openServer(protocol)
            call = _Call()
            server.autoPingTimeoutCall = call
            server.autoPingPending = b"x" * 12
            server.dataReceived(frame(b"hello"))
            self.assertTrue(call.cancelled, protocol)
            self.assertIsNone(server.autoPingTimeoutCall)
            self.assertIsNone(server.autoPingPending)

    def test_badUtf8BeforeTheFrameIsWhole(self) -> None:
        """
        A text frame whose first payload bytes cannot begin UTF-8 is failed before the
        rest of it comes, as autobahn fails it (1007, the same words); a frame cut
        inside a character still waits (found by test_http_fuzz).
        """
        bad = frame(b"ok \xff" + b"x" * 300)
        for cut in (12, 13, 100):
            fast = self.assertSame([bad[:cut]])
            self.assertTrue(fast[4], cut)
            self.assertIn(b"invalid UTF-8", fast[1])
        good = frame("\u00e9".encode() * 200)
        for cut in (9, 10, 200):
            fast = self.assertSame([good[:cut]])
            self.assertEqual(fast[1:], (b"", False, WebSocketServerProtocol.STATE_OPEN, False), cut)
        self.assertEqual(self.assertSame([good[:9], good[9:]])[0], [("\u00e9".encode() * 200, False)])

    def test_partialFrameWaits(self) -> None:
        """A frame's first bytes wait at a frame boundary in autobahn's buffer until the rest comes."""
        server, _ = openServer(FastServer)
        whole = frame(b"x" * 300)
        server.dataReceived(frame(b"first") + whole[:100])
        self.assertEqual(server.messages, [(b"first", False)])
        self.assertEqual(server.data, whole[:100])
        self.assertIsNone(server.current_frame)
        server.dataReceived(whole[100:])
        self.assertEqual(server.messages[1], (b"x" * 300, False))
        self.assertEqual(server.data, b"")

    def test_tricklingFrameIsAutobahns(self) -> None:
        """
        A frame still incomplete after a few reads is autobahn's to stream: each read
        does not join and check the frame's bytes so far again (quadratic: a 64 KiB
        frame a byte per read cost 1.5 s of CPU). Read as autobahn reads it, and the
        frames after it are the fast path's again.
        """
        checked: list[int] = []

        def counting(data: bytes, payloadStart: int, end: int) -> bool:
            checked.append(end - payloadStart)
            return utf8Prefix(data, payloadStart, end)

        utf8Prefix = fastframes._utf8Prefix
        self.patch(fastframes, "_utf8Prefix", counting)
        payload = "\u00e9".encode() * 8000
        stream = frame(b"first") + frame(payload) + frame(b"after")
        for size in (1, 500):
            del checked[:]
            reads = [stream[i : i + size] for i in range(0, len(stream), size)]
            fast = self.assertSame(reads)
            self.assertEqual([message for message, _ in fast[0]], [b"first", payload, b"after"])
            # The prefixes of four reads at most (1 + 2 + 3 + 4 reads' worth), not the
            # ~270,000 bytes of 32 growing prefixes (reads of 500).
            self.assertLessEqual(sum(checked), 10 * size, size)
        server, _ = openServer(FastServer)
        whole = frame(payload)
        for i in range(0, 2000, 500):
            server.dataReceived(whole[i : i + 500])
        self.assertIsNotNone(server.current_frame)
        self.assertLess(len(server.data), 500)
        server.dataReceived(whole[2000:])
        self.assertIsNone(server.current_frame)
        second = frame(b"y" * 300)
        server.dataReceived(second[:100])
        self.assertEqual(server.data, second[:100])
        self.assertIsNone(server.current_frame)
        server.dataReceived(second[100:])
        self.assertEqual(server.messages[-1], (b"y" * 300, False))
        # Nothing of the waits left on the socket (see FastFramesProtocol._waits).
        self.assertNotIn("_waits", set(vars(server)))
        server.dataReceived(frame(b"pong", opcode=10))
        self.assertNotIn("_waits", set(vars(server)))


class ConnectionLostTests(SynchronousTestCase):
    def lose(self, protocol: type[Any], reads: list[bytes], reason: Exception) -> tuple[Any, ...]:
        server, _ = openServer(protocol)
        for data in reads:
            server.dataReceived(data)
        server.connectionLost(Failure(reason))
        closed: list[Any] = []
        server.is_closed.addCallback(closed.append)
        return (
            server.closed,
            server.state,
            server.factory.countConnections,
            closed == [server],
            server.wasClean,
        )

    def test_sameAsAutobahn(self) -> None:
        """A connection closed, lost or failed otherwise ends as autobahn's does (without its debug logs)."""
        for reads in ([], [frame(b"\x03\xe8", opcode=8)], [frame(b"a")]):
            for reason in (ConnectionDone(), ConnectionLost(), ConnectionAborted(), ValueError("tls")):
                fast = self.lose(FastServer, reads, reason)
                self.assertEqual(fast, self.lose(AutobahnServer, reads, reason), (reads, reason))
                self.assertEqual(fast[2], 0)


class TextFrameTests(SynchronousTestCase):
    def test_sameBytesAsAutobahn(self) -> None:
        """sendText writes what autobahn's sendMessage writes, at every length form's edges."""
        for size in (0, 1, 124, 125, 126, 127, 65535, 65536, 70000):
            payload = bytes(i % 251 for i in range(size))
            fast, fastTransport = openServer(FastServer)
            fast.sendText(payload)
            plain, plainTransport = openServer(FastServer)
            plain.sendMessage(payload)
            self.assertEqual(fastTransport.value(), plainTransport.value(), size)

    def test_sameBytesAsPreparedMessage(self) -> None:
        """A delivery framed by textFrame is what autobahn's prepared message held."""
        factory = WebSocketServerFactory("ws://localhost")
        for size in (0, 125, 126, 65535, 65536):
            payload = b"d" * size
            self.assertEqual(textFrame(payload), factory.prepareMessage(payload).payloadHybi, size)

    def test_arrayFrameSameBytes(self) -> None:
        """arrayFrame(item) is the text frame of ``[item]``, at every length form's edges."""
        factory = WebSocketServerFactory("ws://localhost")
        for size in [*range(0, 130), 65531, 65532, 65533, 65534, 65535, 70000]:
            item = bytes(i % 251 for i in range(size))
            framed = arrayFrame(item)
            self.assertEqual(framed, textFrame(b"[" + item + b"]"), size)
            self.assertEqual(framed, factory.prepareMessage(b"[" + item + b"]").payloadHybi, size)

    def test_overLimitRefused(self) -> None:
        """A message over maxMessagePayloadSize is refused as autobahn refuses it."""
        from autobahn.exception import PayloadExceededError

        server, transport = openServer(FastServer, maxSize=100)
        server.sendText(b"x" * 100)
        self.assertRaises(PayloadExceededError, server.sendText, b"x" * 101)
        self.assertEqual(transport.value(), textFrame(b"x" * 100))

    def test_compressionKeepsAutobahns(self) -> None:
        """A socket with autobahn options that change framing (fragmenting here) is framed by autobahn."""
        server, transport = openServer(FastServer)
        server.autoFragmentSize = 10
        self.assertFalse(server.plainFrames())
        server.sendText(b"y" * 25)
        self.assertEqual(transport.value()[:2], b"\x01\x0a")


class DirectRepliesTests(WebSocketCase):
    """Over a real socket: a read's replies leave in one send, and a close frame is never lost."""

    async def raw(self) -> socket.socket:
        """A plain socket, upgraded (blocking calls run in a thread: the server is in this reactor)."""
        port = int(self.server.url.rsplit(":", 1)[1])
        client = socket.create_connection(("127.0.0.1", port))
        self.addCleanup(client.close)
        client.settimeout(5)
        client.sendall(_UPGRADE)

        def upgraded() -> bytes:
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += client.recv(4096)
            return answer

        answer = await threads.deferToThread(upgraded)
        self.assertIn(b" 101 ", answer.split(b"\r\n")[0])
        return client

    def readFrames(self, client: socket.socket, count: int) -> list[tuple[int, bytes]]:
        """``count`` frames from the server (blocking: call in a thread)."""
        buffer = b""
        frames: list[tuple[int, bytes]] = []
        while len(frames) < count:
            while True:
                if len(buffer) >= 2:
                    size, at = buffer[1] & 0x7F, 2
                    if size == 126 and len(buffer) >= 4:
                        size, at = struct.unpack("!H", buffer[2:4])[0], 4
                    if size < 126 or at == 4:
                        if len(buffer) >= at + size:
                            frames.append((buffer[0] & 0x0F, buffer[at : at + size]))
                            buffer = buffer[at + size :]
                            break
                chunk = client.recv(65536)
                if not chunk:
                    return frames
                buffer += chunk
        return frames

    async def test_repliesThenClose(self) -> None:
        """A handshake, a bad frame and a client's close in one send: reply, 400, then the close echoed."""
        client = await self.raw()
        client.sendall(
            frame(json.dumps([HANDSHAKE]).encode()) + frame(b"{nope") + frame(b"\x03\xe8", opcode=8)
        )
        frames = await threads.deferToThread(self.readFrames, client, 3)
        self.assertEqual([opcode for opcode, _ in frames], [1, 1, 8])
        self.assertTrue(json.loads(frames[0][1])[0]["successful"])
        self.assertEqual(json.loads(frames[1][1]), [{"successful": False, "error": "400::Bad request"}])
        self.assertEqual(frames[2][1][:2], b"\x03\xe8")
        # and then the server lets the connection go
        self.assertEqual(await threads.deferToThread(client.recv, 10), b"")

    async def test_protocolErrorClose(self) -> None:
        """An unmasked frame after a good one: the reply, then a close frame with 1002."""
        client = await self.raw()
        client.sendall(frame(json.dumps([HANDSHAKE]).encode()) + frame(b"[]", mask=None))
        frames = await threads.deferToThread(self.readFrames, client, 2)
        self.assertEqual([opcode for opcode, _ in frames], [1, 8])
        self.assertEqual(struct.unpack("!H", frames[1][1][:2])[0], 1002)
        # The close handshake completes: the server drops the connection (autobahn
        # aborts it) once the client answers.
        client.sendall(frame(frames[1][1][:2], opcode=8))
        try:
            rest = await threads.deferToThread(client.recv, 10)
        except ConnectionResetError:
            rest = b""
        self.assertEqual(rest, b"")

    async def test_oneSendPerRead(self) -> None:
        """The replies to the frames of one read reach the kernel in one send, not through the buffer."""
        sends: list[int] = []
        original = tcp.Server.write

        def write(self: tcp.Server, data: bytes) -> None:
            sends.append(len(data))
            original(self, data)

        client = await self.raw()
        self.patch(tcp.Server, "write", write)
        handshakes = b"".join(frame(json.dumps([HANDSHAKE]).encode()) for _ in range(5))
        client.sendall(handshakes)
        frames = await threads.deferToThread(self.readFrames, client, 5)
        self.assertEqual(len(frames), 5)
        # Nothing went through Twisted's buffered write.
        self.assertEqual(sends, [])

    async def test_deliveryStraightToKernel(self) -> None:
        """
        A delivery after the read that published it goes to the kernel at once, in a frame
        of its own beside the publish's reply, not through Twisted's buffered write.
        """
        sends: list[bytes] = []
        original = tcp.Server.write

        def write(self: tcp.Server, data: bytes) -> None:
            sends.append(data)
            original(self, data)

        client = await self.raw()
        self.patch(tcp.Server, "write", write)
        client.sendall(frame(json.dumps([HANDSHAKE]).encode()))
        ((_, handshake),) = await threads.deferToThread(self.readFrames, client, 1)
        clientId = json.loads(handshake)[0]["clientId"]
        connect = {"channel": "/meta/connect", "clientId": clientId, "connectionType": "websocket"}
        subscribe = {"channel": "/meta/subscribe", "clientId": clientId, "subscription": channel("x")}
        client.sendall(frame(json.dumps([connect, subscribe]).encode()))
        await threads.deferToThread(self.readFrames, client, 2)
        for i in range(3):
            publish = {
                "channel": channel("x"),
                "clientId": clientId,
                "data": i,
                "id": f"p{i}",
                "ext": {"auth": AUTH},
            }
            client.sendall(frame(json.dumps([publish]).encode()))
            frames = await threads.deferToThread(self.readFrames, client, 2)
            received = sorted((json.loads(payload) for _, payload in frames), key=lambda f: "data" in f[0])
            self.assertEqual(
                received[0],
                [{"id": f"p{i}", "clientId": clientId, "channel": channel("x"), "successful": True}],
            )
            self.assertEqual(received[1][0]["data"], i)
        self.assertEqual(sends, [])
        # Closed without a disconnect: the server ends the client (and its timers).
        client.close()
        while self.server.router.openSockets() or self.server.engine.hasClient(clientId):
            await deferLater(reactor, 0.01, lambda: None)

    async def test_deliveriesBeforeTheirAcknowledgements(self) -> None:
        """
        The deliveries a read's publishes made leave before that read's acknowledgements
        (the memory engine's flush run at the end of the read, not at the end of the
        turn), as Faye sends them: a publisher pacing itself by its acknowledgements has
        nothing in flight it thinks delivered.
        """
        from pandapush.transports import fastframes, websocket

        sent: list[tuple[Any, bytes]] = []
        original = fastframes.sendAtTurnEnd

        def sendAtTurnEnd(transport: Any, data: bytes) -> None:
            sent.append((transport, data))
            original(transport, data)

        async def opened(subscription: str | None) -> tuple[Any, str]:
            client = await self.raw()
            client.sendall(frame(json.dumps([HANDSHAKE]).encode()))
            ((_, handshake),) = await threads.deferToThread(self.readFrames, client, 1)
            clientId = json.loads(handshake)[0]["clientId"]
            connect = {"channel": "/meta/connect", "clientId": clientId, "connectionType": "websocket"}
            messages: list[dict[str, Any]] = [connect]
            if subscription is not None:
                messages.append(
                    {"channel": "/meta/subscribe", "clientId": clientId, "subscription": subscription}
                )
            client.sendall(frame(json.dumps(messages).encode()))
            await threads.deferToThread(self.readFrames, client, len(messages))
            return client, clientId

        subscribers = [await opened(channel(f"room{i}")) for i in range(3)]
        publisher, publisherId = await opened(None)
        self.patch(fastframes, "sendAtTurnEnd", sendAtTurnEnd)
        self.patch(websocket, "sendAtTurnEnd", sendAtTurnEnd)
        publishes = [
            {
                "channel": channel(f"room{i}"),
                "clientId": publisherId,
                "data": i,
                "id": f"p{i}",
                "ext": {"auth": AUTH},
            }
            for i in range(3)
        ]
        publisher.sendall(frame(json.dumps(publishes).encode()))
        frames = await threads.deferToThread(self.readFrames, publisher, 1)
        self.assertEqual([r["successful"] for r in json.loads(frames[0][1])], [True, True, True])
        for client, _ in subscribers:
            await threads.deferToThread(self.readFrames, client, 1)
        kinds = ["ack" if b'"successful"' in data else "delivery" for _, data in sent]
        self.assertEqual(kinds, ["delivery", "delivery", "delivery", "ack"])
        everyone = [*subscribers, (publisher, publisherId)]
        for client, _ in everyone:
            client.close()
        while self.server.router.openSockets() or any(self.server.engine.hasClient(c) for _, c in everyone):
            await deferLater(reactor, 0.01, lambda: None)

    async def test_replyAfterAWaitStraightToKernel(self) -> None:
        """
        A reply whose answer waited (the Redis engine answers a handshake after its
        script) goes to the kernel at once when it comes, not through Twisted's
        buffered write.
        """
        sends: list[bytes] = []
        original = tcp.Server.write

        def write(self: tcp.Server, data: bytes) -> None:
            sends.append(data)
            original(self, data)

        engine = self.server.engine
        create = engine.createClient

        def later() -> Any:
            # Answered on a later reactor turn, outside the read that asked.
            return deferLater(reactor, 0, create)

        self.patch(engine, "createClient", later)
        client = await self.raw()
        self.patch(tcp.Server, "write", write)
        client.sendall(frame(json.dumps([HANDSHAKE]).encode()))
        ((_, handshake),) = await threads.deferToThread(self.readFrames, client, 1)
        self.assertTrue(json.loads(handshake)[0]["successful"])
        self.assertEqual(sends, [])
