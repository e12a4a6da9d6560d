"""
The websocket opening without autobahn (pandapush.transports.handshake) answers every
head as autobahn's own opening does: the same 101 byte for byte, the same refusals
(400, 403, 405, 426, ...), the same headers for the Bayeux context, a socket that then
works the same, however the head is split into reads.

Each head is sent twice to the same server, with the direct opening on and off
(``DirectOpeningProtocol.directOpening``), through the site's HTTP channel over an
in-memory transport (every split of the head into reads is deterministic there), and
some over real sockets with a Bayeux session after the 101.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from txaio._common import _BatchedTimer

from pandapush.transports import handshake
from pandapush.transports.handshake import DirectOpeningProtocol, acceptKey, plainOpening
from pandapush.transports.websocket import BayeuxWebSocketProtocol
from tests.support.inprocess import InProcessServer
from tests.support.rawclient import RawClient, connectRaw
from tests.support.waiting import eventually, sleep
from tests.test_connections import HANDSHAKE_ANSWERED, HANDSHAKE_FRAME, SWITCHED
from tests.test_fastframes import frame

KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
#: What the ``ws`` package sends (the benchmark's and the Node SDK's client).
BASE = [
    b"Sec-WebSocket-Version: 13",
    KEY,
    b"Connection: Upgrade",
    b"Upgrade: websocket",
    b"Host: 127.0.0.1:3000",
]


def head(lines: list[bytes], target: bytes = b"/push", start: bytes = b"GET %s HTTP/1.1") -> bytes:
    return start.replace(b"%s", target) + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


def plus(*lines: bytes) -> list[bytes]:
    """BASE and ``lines``."""
    return [*BASE, *lines]


def changed(name: bytes, *values: bytes) -> list[bytes]:
    """BASE with the header ``name`` replaced by one line per value (none: without it)."""
    lines = [line for line in BASE if not line.lower().startswith(name.lower() + b":")]
    return lines + [name + b": " + value for value in values]


CHROMIUM = [
    b"Host: 127.0.0.1:3000",
    b"Connection: Upgrade",
    b"Pragma: no-cache",
    b"Cache-Control: no-cache",
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0",
    b"Upgrade: websocket",
    b"Origin: http://127.0.0.1:3000",
    b"Sec-WebSocket-Version: 13",
    b"Accept-Encoding: gzip, deflate, br, zstd",
    b"Accept-Language: en-US,en;q=0.9",
    b"Cookie: a=1; b=2",
    KEY,
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
]

#: Heads the direct opening answers itself.
DIRECT = {
    "ws package": head(BASE),
    "chromium": head(CHROMIUM),
    "firefox": head(
        [*changed(b"Connection", b"keep-alive, Upgrade"), b"Sec-WebSocket-Extensions: permessage-deflate"]
    ),
    "capitalised upgrade": head(changed(b"Upgrade", b"WebSocket")),
    "lower-case names": head([line.split(b":")[0].lower() + b":" + line.split(b":", 1)[1] for line in BASE]),
    "path under /push": head(BASE, b"/push/websocket"),
    "query": head(BASE, b"/push?x=1&y=%20&z"),
    "subprotocols offered": head(plus(b"Sec-WebSocket-Protocol: bayeux, cometd")),
    "unknown extension": head(plus(b"Sec-WebSocket-Extensions: x-webkit-deflate-frame")),
    "deflate offer with parameters": head(
        plus(b'Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits="10", x-foo')
    ),
    "spaces and tabs around values": head(
        [*changed(b"Connection", b"\t Upgrade \t "), b"X-Empty:", b"X-Blank: \t "]
    ),
    "repeated headers": head(plus(b"Cookie: a=1", b"Cookie: b=2", b"Connection: keep-alive")),
    "obs-text in a value": head(plus(b"User-Agent: caf\xe9 \xff")),
    "ipv6 host": head(changed(b"Host", b"[::1]:8080")),
    "ipv6 host without port": head(changed(b"Host", b"[::1]")),
    "host without port": head(changed(b"Host", b"example.com")),
    "x-forwarded-for": head(plus(b"X-Forwarded-For: 10.1.2.3, 10.0.0.1")),
    "key with spaces": head(changed(b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ== ")),
    # A sandboxed iframe, a file:// page (autobahn reads file:// as null too): with no
    # --allowed-origins, origins like any other.
    "null origin": head(plus(b"Origin: null")),
    "file origin": head(plus(b"Origin: file://")),
}

#: Heads autobahn answers: opened, or refused with its reason.
AUTOBAHN = {
    "version 8": head(changed(b"Sec-WebSocket-Version", b"8")),
    "version +13": head(changed(b"Sec-WebSocket-Version", b"+13")),
    "version 12": head(changed(b"Sec-WebSocket-Version", b"12")),
    "version abc": head(changed(b"Sec-WebSocket-Version", b"abc")),
    "two versions": head(changed(b"Sec-WebSocket-Version", b"13", b"13")),
    "no version": head(changed(b"Sec-WebSocket-Version")),
    "no host": head(changed(b"Host")),
    "two hosts": head(changed(b"Host", b"a", b"b")),
    "host with a bad port": head(changed(b"Host", b"127.0.0.1:http")),
    "no connection": head(changed(b"Connection")),
    "connection close": head(changed(b"Connection", b"close")),
    "no key": head(changed(b"Sec-WebSocket-Key")),
    "short key": head(changed(b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZQ==")),
    "key without padding": head(changed(b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQxx")),
    "key with a bad character": head(changed(b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZ!==")),
    "two keys": head(plus(KEY)),
    "a subprotocol twice": head(plus(b"Sec-WebSocket-Protocol: a, b, a")),
    "origin without host": head(plus(b"Origin: http://")),
    "origin with a bad port": head(plus(b"Origin: http://a.test:port")),
    "two origins": head(plus(b"Origin: http://a.test", b"Origin: http://a.test")),
    "malformed deflate offer": head(
        plus(b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=99")
    ),
    "unknown deflate parameter": head(plus(b"Sec-WebSocket-Extensions: permessage-deflate; foo")),
    "two extension headers": head(plus(b"Sec-WebSocket-Extensions: a", b"Sec-WebSocket-Extensions: b")),
    "fragment": head(BASE, b"/push?a#frag"),
    "delete in the target": head(BASE, b"/push?\x7f"),
    "nbsp in the target": head(BASE, b"/push?a\xa0b"),
    "control character in a value": head(plus(b"X-Evil: a\x01b")),
    "delete in a value": head(plus(b"X-Evil: a\x7fb")),
    "nul in a value": head(plus(b"X-Evil: a\x00b")),
    "bare lf in a value": head(plus(b"X-Evil: a\nX-Injected: b")),
    "bare cr in a value": head(plus(b"X-Evil: a\rb")),
    "obsolete folding": head(plus(b"X-Folded: a", b" b")),
    "space before the colon": head(plus(b"X-Space : a")),
    "line without a colon": head(plus(b"garbage")),
    "post": head(BASE, start=b"POST %s HTTP/1.1"),
    "http/1.0": head(BASE, start=b"GET %s HTTP/1.0"),
    "absolute target": head(BASE, b"http://127.0.0.1:3000/push"),
    "other path": head(BASE, b"/pushx"),
    "body": head(plus(b"Content-Length: 3")) + b"abc",
    "no upgrade header": head(changed(b"Upgrade")),
    "upgrade to something else": head(changed(b"Upgrade", b"h2c")),
}

_DATE = re.compile(rb"\r\nDate: [^\r]*")
_CLIENT_ID = re.compile(rb'"clientId":"[^"]*"')


def _normal(answer: bytes) -> bytes:
    """``answer`` without what differs between two runs: the date, client ids (and so frame lengths)."""
    answer = _DATE.sub(b"\r\nDate: -", answer)
    return _CLIENT_ID.sub(b'"clientId":"-"', answer)


def _texts(data: bytes) -> list[bytes]:
    """The payloads of the server's (unmasked) frames in ``data``."""
    payloads = []
    while data:
        size, start = data[1] & 0x7F, 2
        if size == 126:
            size, start = int.from_bytes(data[2:4], "big"), 4
        payloads.append(data[start : start + size])
        data = data[start + size :]
    return payloads


class _Transport(StringTransport):
    protocol: Any
    #: As a TCP transport's: whether Nagle's algorithm was turned off.
    noDelay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.noDelay = enabled

    def unregisterProducer(self) -> None:
        # As a TCP transport: autobahn unregisters on every drop, registered or not.
        self.producer = None


def _socketOf(transport: Any) -> BayeuxWebSocketProtocol | None:
    protocol = transport.protocol
    protocol = getattr(protocol, "wrappedProtocol", protocol)
    return protocol if isinstance(protocol, BayeuxWebSocketProtocol) else None


class OpeningCase(TestCase):
    serverArgs: tuple[str, ...] = ()

    async def setUp(self) -> None:  # type: ignore[override]
        self.server = await InProcessServer.started(self, *self.serverArgs)
        self.site = self.server.service.site
        self.direct: list[bool] = []
        opened = DirectOpeningProtocol._openDirectly

        def spy(protocol: DirectOpeningProtocol, data: bytes) -> bytes | None:
            rest = opened(protocol, data)
            self.direct.append(rest is not None)
            return rest

        self.patch(DirectOpeningProtocol, "_openDirectly", spy)
        # Autobahn's timers (auto-ping, close handshake) on a clock of the test's.
        self.clock = Clock()
        self.patch(
            self.server.service.bayeux.websocketFactory,
            "_batched_timer",
            _BatchedTimer(200, 1000, self.clock.seconds, self.clock.callLater),
        )

    def exchange(self, reads: list[bytes], direct: bool, session: bool = True) -> dict[str, Any]:
        """What the server answers ``reads`` (one after the other) with the direct opening on or off."""
        self.patch(DirectOpeningProtocol, "directOpening", direct)
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        transport = _Transport(peerAddress=peer, hostAddress=IPv4Address("TCP", "127.0.0.1", 3000))
        transport.protocol = self.site.buildProtocol(peer)
        transport.protocol.makeConnection(transport)
        try:
            for data in reads:
                if transport.disconnecting:
                    break
                transport.protocol.dataReceived(data)
            socket = _socketOf(transport)
            outcome: dict[str, Any] = {
                "answer": _normal(transport.value()),
                "closing": transport.disconnecting,
                "state": None if socket is None else socket.state,
                "noDelay": transport.noDelay,
            }
            if socket is not None and socket.state == socket.STATE_OPEN:
                assert socket._context is not None
                outcome["headers"] = dict(socket._context.headers)
                outcome["peer"] = socket._context.remoteAddress
                outcome["open"] = (socket._open, socket.factory.countConnections > 0)
                if session:
                    transport.clear()
                    transport.protocol.dataReceived(HANDSHAKE_FRAME)
                    outcome["session"] = HANDSHAKE_ANSWERED in transport.value()
            return outcome
        finally:
            transport.protocol.connectionLost(Failure(ConnectionDone()))

    def assertSame(self, name: str, reads: list[bytes], session: bool = True) -> dict[str, Any]:
        autobahn = self.exchange(reads, direct=False, session=session)
        direct = self.exchange(reads, direct=True, session=session)
        self.assertEqual(direct, autobahn, name)
        return direct


class OpeningDifferentialTests(OpeningCase):
    def test_directHeads(self) -> None:
        """Plain heads open without autobahn's handshake, with autobahn's 101 and headers, and work."""
        for name, data in DIRECT.items():
            self.direct.clear()
            outcome = self.assertSame(name, [data])
            self.assertEqual(self.direct, [True], name)
            self.assertTrue(outcome["answer"].startswith(SWITCHED), (name, outcome))
            self.assertIn(b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n", outcome["answer"])
            self.assertTrue(outcome["session"], name)

    def test_autobahnHeads(self) -> None:
        """Every other head is autobahn's (or twisted.web's) to answer, as before: the same answer."""
        for name, data in AUTOBAHN.items():
            self.direct.clear()
            self.assertSame(name, [data])

    def test_refusalsAreAutobahns(self) -> None:
        """A few refusals, spelt out: the same status lines autobahn gave before."""
        expected = {
            "version 12": b"HTTP/1.1 400 WebSocket version 12 not supported (supported versions: 13,8)\r\n"
            b"Sec-WebSocket-Version: 13,8\r\n\r\n",
            "no host": b"HTTP/1.1 400 HTTP Host header missing in opening handshake request\r\n\r\n",
            "two keys": b"HTTP/1.1 400 HTTP Sec-WebSocket-Key header appears more than once"
            b" in opening handshake request\r\n\r\n",
            "post": b'HTTP/1.1 405 HTTP method "POST" not allowed\r\n\r\n',
        }
        for name, answer in expected.items():
            outcome = self.exchange([AUTOBAHN[name]], direct=True)
            self.assertEqual((outcome["answer"], outcome["closing"]), (answer, True), name)

    def test_everySplit(self) -> None:
        """
        However a head is split into reads, the direct opening answers as autobahn does; a
        split plain head (which twisted.web reads) gets the same 101 as a whole one.
        """
        for name in ["ws package", "chromium", "repeated headers", "query"]:
            data = DIRECT[name]
            whole = self.exchange([data], direct=True)
            for cut in range(1, len(data)):
                outcome = self.assertSame(f"{name} at {cut}", [data[:cut], data[cut:]], session=cut % 7 == 0)
                self.assertEqual(
                    outcome["answer"].split(b"\r\n\r\n")[0], whole["answer"].split(b"\r\n\r\n")[0]
                )
        for name in ["version 12", "two keys", "malformed deflate offer", "control character in a value"]:
            data = AUTOBAHN[name]
            for cut in range(1, len(data), 5):
                self.assertSame(f"{name} at {cut}", [data[:cut], data[cut:]])

    def test_byteByByte(self) -> None:
        """Every head, a byte a read: the same answers both ways."""
        for name, data in {**DIRECT, **AUTOBAHN}.items():
            self.assertSame(name + " byte by byte", [data[i : i + 1] for i in range(len(data))])

    def test_framesBehindTheHead(self) -> None:
        """Frames sent in the same read as the head are read once the socket is open, in order."""
        data = DIRECT["ws package"] + HANDSHAKE_FRAME + frame(b"", opcode=9) + frame(b"\x03\xe8", opcode=8)
        outcome = self.assertSame("pipelined", [data], session=False)
        self.assertEqual(self.direct, [True])
        answer = outcome["answer"]
        self.assertIn(HANDSHAKE_ANSWERED, answer)
        # The pong, then the close frame echoing 1000, in that order, and the socket closing.
        self.assertTrue(answer.endswith(b"\x8a\x00\x88\x02\x03\xe8"), answer[-20:])
        self.assertTrue(outcome["closing"])


class RestrictedOriginOpeningTests(OpeningCase):
    serverArgs = ("--allowed-origins", "http://good.test")

    def test_origins(self) -> None:
        """``--allowed-origins`` refuses another origin with autobahn's 403, and opens for a listed one."""
        refused = self.assertSame("evil", [head(plus(b"Origin: http://evil.test"))])
        self.assertEqual(refused["answer"], b"HTTP/1.1 403 Origin not allowed\r\n\r\n")
        self.assertNotIn(True, self.direct)
        allowed = self.assertSame("good", [head(plus(b"Origin: http://good.test"))])
        self.assertTrue(allowed["session"])
        self.assertEqual(self.direct[-1], True)

    def test_null(self) -> None:
        """``Origin: null`` is refused as any origin not listed (403), not with autobahn's 400."""
        for origin in (b"null", b"file://"):
            refused = self.assertSame(origin.decode(), [head(plus(b"Origin: " + origin))])
            self.assertEqual(refused["answer"], b"HTTP/1.1 403 Origin not allowed\r\n\r\n")
        self.assertNotIn(True, self.direct)


class NullListedOpeningTests(OpeningCase):
    serverArgs = ("--allowed-origins", "http://good.test,null")

    def test_null(self) -> None:
        """``null`` listed: it opens (directly), other origins are still refused, file:// among them."""
        opened = self.assertSame("null", [head(plus(b"Origin: null"))])
        self.assertTrue(opened["session"])
        self.assertEqual(self.direct[-1], True)
        for origin in (b"http://evil.test", b"file://"):
            refused = self.assertSame(origin.decode(), [head(plus(b"Origin: " + origin))])
            self.assertEqual(refused["answer"], b"HTTP/1.1 403 Origin not allowed\r\n\r\n")


class RememberedVerdictTests(OpeningCase):
    """Origins and extension offers are judged once per value, under the options of the moment."""

    def test_optionsChanged(self) -> None:
        """A verdict remembered under autobahn's old origin patterns is not used under new ones."""
        factory = self.server.service.bayeux.websocketFactory
        chromium = head(CHROMIUM)
        self.assertTrue(self.assertSame("before", [chromium])["session"])
        factory.setProtocolOptions(allowedOrigins=["http://good.test"])
        refused = self.assertSame("after", [chromium])
        self.assertEqual(
            refused["answer"],
            b"HTTP/1.1 400 WebSocket connection denied: origin 'http://127.0.0.1:3000' not allowed\r\n\r\n",
        )
        self.assertEqual(self.direct[-1], False)

    def test_originsAndOffersApart(self) -> None:
        """An origin and an extension offer with the same text are judged each as what it is."""
        text = b"x-webkit-deflate-frame"
        self.assertTrue(
            self.assertSame("offer", [head(plus(b"Sec-WebSocket-Extensions: " + text))])["session"]
        )
        refused = self.assertSame("origin", [head(plus(b"Origin: " + text))])
        self.assertTrue(refused["answer"].startswith(b"HTTP/1.1 400 HTTP Origin header invalid"), refused)

    def test_bounded(self) -> None:
        """At most ``kept`` values are remembered (a client may send a new one each time)."""
        self.patch(handshake._Verdicts, "kept", 3)
        for n in range(5):
            self.assertSame(f"origin {n}", [head(plus(b"Origin: http://a%d.test" % n))], session=False)
        verdicts = vars(self.server.service.bayeux.websocketFactory)["_openingVerdicts"]
        self.assertLessEqual(len(verdicts.origins), 3)
        self.assertEqual(self.direct, [True] * 5)


class OpenSocketTests(OpeningCase):
    """A socket opened directly is autobahn's from then on: pings, closes, fragments, timers."""

    def openDirectly(self) -> tuple[_Transport, BayeuxWebSocketProtocol, Clock]:
        clock = self.clock
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        transport = _Transport(peerAddress=peer)
        transport.protocol = self.site.buildProtocol(peer)
        transport.protocol.makeConnection(transport)
        self.addCleanup(lambda: transport.protocol.connectionLost(Failure(ConnectionDone())))
        transport.protocol.dataReceived(DIRECT["ws package"])
        socket = _socketOf(transport)
        assert socket is not None
        self.assertEqual(self.direct, [True])
        transport.clear()
        return transport, socket, clock

    def test_autoPing(self) -> None:
        """The auto-ping runs, and a socket whose peer does not answer is closed."""
        transport, socket, clock = self.openDirectly()
        clock.advance(socket.autoPingInterval + 1)
        self.assertTrue(transport.value().startswith(b"\x89"), transport.value())
        clock.advance(socket.autoPingTimeout + 1)  # type: ignore[attr-defined]
        self.assertTrue(transport.disconnecting)

    def test_fragmentsAndBinary(self) -> None:
        """A fragmented message is read whole; a binary one is refused as before (400 in a reply)."""
        transport, _, _ = self.openDirectly()
        message = b'[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}]'
        transport.protocol.dataReceived(frame(message[:10], fin=False) + frame(message[10:], opcode=0))
        self.assertIn(HANDSHAKE_ANSWERED, transport.value())
        self.assertFalse(transport.disconnecting)

    def test_closeHandshake(self) -> None:
        """The server's close (a disconnect) sends 1000 and waits for the peer's close frame."""
        transport, socket, _ = self.openDirectly()
        transport.protocol.dataReceived(HANDSHAKE_FRAME)
        clientId = json.loads(_texts(transport.value())[0])[0]["clientId"]
        transport.clear()
        disconnect = json.dumps([{"channel": "/meta/disconnect", "clientId": clientId}]).encode()
        transport.protocol.dataReceived(frame(disconnect))
        self.assertTrue(transport.value().endswith(b"\x88\x02\x03\xe8"), transport.value())
        self.assertEqual(socket.state, socket.STATE_CLOSING)
        transport.protocol.dataReceived(frame(b"\x03\xe8", opcode=8))
        self.assertTrue(transport.disconnecting)
        self.assertTrue(socket.wasClean)

    def test_keepsLess(self) -> None:
        """What autobahn set per connection is the class's: an open socket's dictionary is small."""
        _, socket, _ = self.openDirectly()
        state = vars(socket)
        for name in ("http_headers", "_wskey", "openHandshakeTimeoutCall", "closedByMe", "utf8validator"):
            self.assertNotIn(name, state)
        self.assertLessEqual(len(state), 30, sorted(state))


class PlainOpeningTests(TestCase):
    def test_headers(self) -> None:
        """Headers as autobahn parses them: lower-cased names, values stripped, repeats joined."""
        parsed = plainOpening(DIRECT["repeated headers"].decode("latin-1"))
        assert parsed is not None
        headers, key = parsed
        self.assertEqual(headers["cookie"], "a=1, b=2")
        self.assertEqual(headers["connection"], "Upgrade, keep-alive")
        self.assertEqual(key, "dGhlIHNhbXBsZSBub25jZQ==")
        self.assertEqual(acceptKey(key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")

    def test_refused(self) -> None:
        """None for every head autobahn must answer but those the protocol refuses by its options."""
        options = {
            "origin without host",
            "origin with a bad port",
            "null origin",
            "file origin",
            "malformed deflate offer",
            "unknown deflate parameter",
        }
        for name, data in AUTOBAHN.items():
            if name not in options:
                self.assertIsNone(plainOpening(data.decode("latin-1")), name)


def _has(client: RawClient, data: bytes) -> Callable[[], bool]:
    return lambda: data in client.received


def _gone(client: RawClient) -> Callable[[], bool]:
    return lambda: client.gone


class WireTests(OpeningCase):
    async def test_realSockets(self) -> None:
        """Over real sockets: the same answers both ways, and a Bayeux session after each 101."""
        port = self.server.port.getHost().port  # type: ignore[union-attr]
        for direct in (True, False):
            self.patch(DirectOpeningProtocol, "directOpening", direct)
            for name in ["ws package", "chromium", "firefox"]:
                client = await connectRaw(port)
                self.addCleanup(client.close)
                client.send(DIRECT[name])
                self.assertTrue(await eventually(_has(client, SWITCHED)), (name, client.received))
                client.send(HANDSHAKE_FRAME)
                self.assertTrue(await eventually(_has(client, HANDSHAKE_ANSWERED)), name)
            for name in ["version 12", "two keys", "no host"]:
                client = await connectRaw(port)
                client.send(AUTOBAHN[name])
                self.assertTrue(await eventually(_gone(client)), name)
                self.assertTrue(client.received.startswith(b"HTTP/1.1 400 "), (name, client.received))
        self.assertEqual(self.direct.count(True), 3)
        await sleep(0)
