"""What one TCP connection, and one address, may hold of a real server (issue 18, defects 4 and 7).

Raw sockets, since HTTP libraries hide what is tested here: requests sent a line at a
time, bodies announced and never sent, connections opened and left silent. The
file-descriptor tests run the server in a child process under ``ulimit -n``.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import treq
import twisted.test
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor, ssl, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import (
    SSL4ClientEndpoint,
    SSL4ServerEndpoint,
    connectProtocol,
)
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource

from pandapush.transports.handshake import DirectOpeningProtocol
from pandapush.web.connections import AddressLimit, PandapushChannel
from pandapush.web.site import PandapushSite
from tests.support.bayeux import WSClient
from tests.support.inprocess import InProcessServer
from tests.support.process import PandapushProcess
from tests.support.rawclient import RawClient, connectRaw
from tests.support.waiting import eventually, sleep

#: A POST of a JSON body to /push: ``POST % (len(body), body)``.
POST = b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
#: A websocket opening handshake for ``UPGRADE % (path, extra header lines)``.
UPGRADE = (
    b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
)
#: The start of the server's answer to UPGRADE when it opens the socket.
SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\n"
HEALTH = b"GET /health_check.json HTTP/1.1\r\nHost: x\r\n\r\n"


def upgrade(path: bytes = b"/push", extra: bytes = b"") -> bytes:
    return UPGRADE % (path, extra)


def frame(payload: bytes) -> bytes:
    """A client's masked text frame (payloads under 126 bytes)."""
    mask = b"\x1f\x2e\x3d\x4c"
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


#: A Bayeux handshake, framed, and what its answer contains.
HANDSHAKE_FRAME = frame(
    b'[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}]'
)
HANDSHAKE_ANSWERED = b'"successful":true'


async def get(port: int, path: str, source: str = "127.0.0.1", timeout: float = 5.0) -> bytes:
    """One ``GET`` over a raw socket from ``source``: the answer, or b"" if none came."""
    client = await connectRaw(port, source)
    client.send(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await eventually(lambda: client.gone, timeout=timeout)
    client.close()
    return client.received


class ConnectionCase(TestCase):
    serverArgs: tuple[str, ...] = ()

    async def setUp(self) -> None:  # type: ignore[override]
        self.server = InProcessServer(*self.serverArgs)
        await self.server.start()
        self.addCleanup(self.server.stop)
        assert self.server.port is not None
        self.port: int = self.server.port.getHost().port  # type: ignore[attr-defined]
        self.site = self.server.service.site
        self.raw: list[RawClient] = []
        self.sockets: list[WSClient] = []
        self.addCleanup(self._closeAll)

    def addressLimit(self) -> AddressLimit:
        limit = self.site.addressLimit
        assert limit is not None, "the server runs without a per-address cap"
        return limit

    async def _closeAll(self) -> None:
        for client in self.raw:
            client.close()
        for ws in self.sockets:
            ws.kill()
        await eventually(lambda: self.server.router.openSockets() == 0)

    async def ws(self) -> WSClient:
        client = await WSClient(self.server.url).start()
        self.sockets.append(client)
        return client

    async def connect(self, source: str = "127.0.0.1") -> RawClient:
        client = await connectRaw(self.port, source)
        self.raw.append(client)
        return client

    async def opened(self, client: RawClient) -> None:
        """``client`` got its 101, and its Bayeux handshake over the socket was answered."""
        self.assertTrue(await eventually(lambda: SWITCHED in client.received), client.received)
        client.send(HANDSHAKE_FRAME)
        self.assertTrue(await eventually(lambda: HANDSHAKE_ANSWERED in client.received), client.received)
        self.assertFalse(client.gone)

    async def refusals(self) -> dict[str, float]:
        response = await treq.get(f"{self.server.url}/metrics", persistent=False)
        text = (await response.content()).decode()
        return {
            sample.labels["limit"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "pandapush_limit_refusals_total"
        }


class BodyTooLargeTests(ConnectionCase):
    async def test_refusedFromContentLength(self) -> None:
        """
        A request announcing a body over ``--max-body-size`` gets its 413 at once, from
        the headers, and the connection closes: the body is never waited for (100 MB
        used to be read to the end first).
        """
        client = await self.connect()
        client.send(
            b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 104857600\r\n\r\n" + b"[" * 1000
        )
        self.assertTrue(await eventually(lambda: client.gone, timeout=3))
        self.assertTrue(client.received.startswith(b"HTTP/1.1 413 "), client.received)
        self.assertIn(b"Request body larger than 1048576 bytes", client.received)
        self.assertEqual((await self.refusals())["body_size"], 1)

    async def test_chunkedRefusedPastTheLimit(self) -> None:
        """A chunked body is refused as soon as it grows past the limit, not at its end."""
        client = await self.connect()
        client.send(b"POST /channel/a/public/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        for _ in range(20):  # 1.25 MiB, and never the last chunk
            if client.gone:
                break
            client.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await sleep(0.01)
        self.assertTrue(await eventually(lambda: client.gone, timeout=3))
        self.assertTrue(client.received.startswith(b"HTTP/1.1 413 "), client.received)

    async def test_withinTheLimitServed(self) -> None:
        """A body within the limit is read and answered as ever, on a kept-alive connection."""
        client = await self.connect()
        body = json.dumps([{"channel": "/meta/handshake"}]).encode()
        client.send(POST % (len(body), body))
        self.assertTrue(await eventually(lambda: client.received.count(b"HTTP/1.1 200") == 1))
        client.send(POST % (len(body), body))
        self.assertTrue(await eventually(lambda: client.received.count(b"HTTP/1.1 200") == 2))
        self.assertFalse(client.gone)


class RequestDeadlineTests(ConnectionCase):
    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        self.site.headersTimeout = 0.5
        self.site.bodyTimeout = 0.5

    async def test_slowHeadersTimedOut(self) -> None:
        """
        Headers sent a line at a time must all arrive within the deadline, however
        often a byte comes (Twisted's idle timeout starts again with every byte):
        past it, 408 and the connection closes.
        """
        client = await self.connect()
        client.send(b"GET /health_check.json HTTP/1.1\r\n")
        for n in range(15):
            if client.gone:
                break
            client.send(b"X-Slow-%d: 1\r\n" % n)
            await sleep(0.1)
        self.assertTrue(client.gone)
        self.assertTrue(client.received.startswith(b"HTTP/1.1 408 "), client.received)
        self.assertEqual((await self.refusals())["request_timeout"], 1)

    async def test_slowBodyTimedOut(self) -> None:
        """A body dribbled a byte at a time is cut off at its own deadline."""
        client = await self.connect()
        client.send(POST % (50, b""))
        for _ in range(15):
            if client.gone:
                break
            client.send(b" ")
            await sleep(0.1)
        self.assertTrue(client.gone)
        self.assertTrue(client.received.startswith(b"HTTP/1.1 408 "), client.received)

    async def test_silentConnectionTimedOut(self) -> None:
        """A connection that never sends a byte holds its descriptor no longer than a slow one."""
        client = await self.connect()
        self.assertTrue(await eventually(lambda: client.gone, timeout=3))

    async def test_idleKeepAliveKept(self) -> None:
        """
        Between two requests a kept-alive connection may stay idle past the deadline: it
        runs from a request's first byte. Long-poll clients wait that way between polls.
        """
        client = await self.connect()
        request = b"GET /health_check.json HTTP/1.1\r\nHost: x\r\n\r\n"
        client.send(request)
        self.assertTrue(await eventually(lambda: client.received.count(b"HTTP/1.1 200") == 1))
        await sleep(1.0)
        self.assertFalse(client.gone)
        client.send(request)
        self.assertTrue(await eventually(lambda: client.received.count(b"HTTP/1.1 200") == 2))
        self.assertNotIn(b"408", client.received)

    async def test_heldLongPollNotCut(self) -> None:
        """The deadline ends with the request's body: a long-poll held longer is answered as usual."""
        ws = await self.ws()
        client = await self.connect()
        body = json.dumps(
            [{"channel": "/meta/connect", "clientId": ws.clientId, "connectionType": "long-polling"}]
        ).encode()
        client.send(POST % (len(body), body))
        await sleep(1.0)
        self.assertFalse(client.gone)
        self.assertEqual(client.received, b"")


class _RenderSpy:
    """Counts the upgrades that went through twisted.web (``BayeuxResource.render``)."""

    def __init__(self, case: TestCase, resource: Any) -> None:
        self.upgrades = 0
        self._render = resource.render
        case.patch(resource, "render", self.render)

    def render(self, request: Any) -> Any:
        if request.requestHeaders.hasHeader(b"upgrade"):
            self.upgrades += 1
        return self._render(request)


class DirectUpgradeTests(ConnectionCase):
    """A websocket upgrade of /push handed to the websocket as it came, without a twisted.web request."""

    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        self.spy = _RenderSpy(self, self.server.service.bayeux)

    async def test_upgradeWithoutRequest(self) -> None:
        """
        An upgrade that arrives whole in one read opens the socket without twisted.web:
        at /push, under it, and with a query; and the answer carries the handshake
        headers of the factory (``X-Pandapush-Worker`` with ``--workers``).
        """
        self.server.service.bayeux.websocketFactory.headers = {"X-Pandapush-Worker": "3"}
        for path in [b"/push", b"/push/", b"/push/websocket", b"/push?x=1"]:
            client = await self.connect()
            client.send(upgrade(path))
            await self.opened(client)
            self.assertIn(b"\r\nX-Pandapush-Worker: 3\r\n", client.received.split(b"\r\n\r\n")[0] + b"\r\n")
        self.assertEqual(self.spy.upgrades, 0)
        self.assertEqual(self.server.service.bayeux.websocketFactory.openSockets, 4)

    async def test_upgradeAfterKeepAlive(self) -> None:
        """A kept-alive connection may upgrade after a request it was answered, or pipelined behind one."""
        client = await self.connect()
        client.send(HEALTH)
        self.assertTrue(await eventually(lambda: b"HTTP/1.1 200 " in client.received))
        await sleep(0.1)
        client.send(upgrade())
        await self.opened(client)
        self.assertEqual(self.spy.upgrades, 0)
        pipelined = await self.connect()
        pipelined.send(HEALTH + upgrade())
        await self.opened(pipelined)
        self.assertLess(pipelined.received.index(b"HTTP/1.1 200 "), pipelined.received.index(SWITCHED))

    async def test_othersThroughTwistedWeb(self) -> None:
        """
        Upgrades that twisted.web must look at (a head in two reads, a body) still open
        through it; a GET of /push without an upgrade and an upgrade of another path are
        answered as before.
        """
        split = await self.connect()
        head = upgrade()
        split.send(head[:30])
        await sleep(0.1)
        split.send(head[30:])
        await self.opened(split)
        withBody = await self.connect()
        withBody.send(upgrade(extra=b"Content-Length: 0\r\n"))
        await self.opened(withBody)
        self.assertEqual(self.spy.upgrades, 2)
        plain = await self.connect()
        plain.send(b"GET /push HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(await eventually(lambda: b"\r\n\r\n" in plain.received))
        self.assertTrue(plain.received.startswith(b"HTTP/1.1 400 "), plain.received)
        other = await self.connect()
        other.send(upgrade(b"/pushed"))
        self.assertTrue(await eventually(lambda: b"\r\n\r\n" in other.received))
        self.assertTrue(other.received.startswith(b"HTTP/1.1 404 "), other.received)

    async def test_oversizeHeadRefused(self) -> None:
        """
        An upgrade whose head is larger than twisted.web takes is refused as any request
        is: past 16 KB of headers a 400, a line over 16 KB a closed connection; no socket.
        """
        client = await self.connect()
        client.send(upgrade(extra=b"".join(b"X-Big-%d: %s\r\n" % (n, b"x" * 1000) for n in range(17))))
        self.assertTrue(await eventually(lambda: client.gone, timeout=3))
        self.assertTrue(client.received.startswith(b"HTTP/1.1 400 "), client.received)
        longLine = await self.connect()
        longLine.send(upgrade(extra=b"Cookie: %s\r\n" % (b"x" * 17000)))
        self.assertTrue(await eventually(lambda: longLine.gone, timeout=3))
        self.assertNotIn(SWITCHED, longLine.received)
        self.assertEqual((self.spy.upgrades, self.server.service.bayeux.websocketFactory.openSockets), (0, 0))

    async def test_badHandshakeRefused(self) -> None:
        """Autobahn still checks the handshake it is handed: no key, 400, and no socket."""
        client = await self.connect()
        client.send(b"GET /push HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        self.assertTrue(await eventually(lambda: client.gone, timeout=3))
        self.assertTrue(client.received.startswith(b"HTTP/1.1 400 "), client.received)
        self.assertEqual((self.spy.upgrades, self.server.service.bayeux.websocketFactory.openSockets), (0, 0))


class NoDelayTests(ConnectionCase):
    """
    Nagle's algorithm is off on every accepted connection, as autobahn turns it off for
    the websockets it opens: a small delivery written while the last one is not yet
    acknowledged must not wait for the subscriber's delayed ACK (up to 40 ms).
    """

    def noDelay(self, client: RawClient) -> bool:
        """Whether the server's end of ``client``'s connection has TCP_NODELAY set."""
        assert client.transport is not None
        port = client.transport.getHost().port  # type: ignore[attr-defined]
        for reader in reactor.getReaders():  # type: ignore[attr-defined]
            if isinstance(reader, tcp.Server) and reader.getPeer().port == port:
                return reader.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        raise AssertionError(f"no server connection for the client's port {port}")

    async def test_everyConnection(self) -> None:
        http = await self.connect()
        http.send(HEALTH)
        self.assertTrue(await eventually(lambda: b"HTTP/1.1 200 " in http.received))
        self.assertTrue(self.noDelay(http), "HTTP")
        for direct in (True, False):
            self.patch(DirectOpeningProtocol, "directOpening", direct)
            client = await self.connect()
            client.send(upgrade())
            await self.opened(client)
            self.assertTrue(self.noDelay(client), f"websocket, opened directly: {direct}")


class RefusedOriginUpgradeTests(ConnectionCase):
    serverArgs = ("--allowed-origins", "http://good.test")

    async def test_otherOriginRefused(self) -> None:
        """
        ``--allowed-origins`` holds for an upgrade handed over directly: another origin
        gets a 403 and no socket; an allowed one opens.
        """
        spy = _RenderSpy(self, self.server.service.bayeux)
        evil = await self.connect()
        evil.send(upgrade(extra=b"Origin: http://evil.test\r\n"))
        self.assertTrue(await eventually(lambda: evil.gone, timeout=3))
        self.assertTrue(evil.received.startswith(b"HTTP/1.1 403 "), evil.received)
        good = await self.connect()
        good.send(upgrade(extra=b"Origin: http://good.test\r\n"))
        self.assertTrue(await eventually(lambda: SWITCHED in good.received), good.received)
        self.assertEqual((spy.upgrades, self.server.service.bayeux.websocketFactory.openSockets), (0, 1))


class SlowUpgradeTests(ConnectionCase):
    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        self.site.headersTimeout = 0.5

    async def test_slowUpgradeTimedOut(self) -> None:
        """An upgrade sent a line at a time has the same deadline as any request's headers: 408, closed."""
        client = await self.connect()
        for line in upgrade().split(b"\r\n")[:-2]:
            client.send(line + b"\r\n")
            await sleep(0.15)
        for n in range(10):
            if client.gone:
                break
            client.send(b"X-Slow-%d: 1\r\n" % n)
            await sleep(0.1)
        self.assertTrue(client.gone)
        self.assertTrue(client.received.startswith(b"HTTP/1.1 408 "), client.received)
        self.assertEqual(self.server.service.bayeux.websocketFactory.openSockets, 0)

    async def test_noTimerLeftOnTheSocket(self) -> None:
        """An open socket outlives the deadline: nothing of the HTTP channel's is left to close it."""
        client = await self.connect()
        client.send(upgrade())
        self.assertTrue(await eventually(lambda: SWITCHED in client.received))
        await sleep(1.0)
        self.assertFalse(client.gone)
        client.send(HANDSHAKE_FRAME)
        self.assertTrue(await eventually(lambda: HANDSHAKE_ANSWERED in client.received))


class AddressLimitTests(ConnectionCase):
    serverArgs = ("--max-connections-per-address", "5")

    async def test_capPerAddress(self) -> None:
        """
        An address may hold five connections; the sixth is closed at once, before a byte
        is read, and counted. Another address is served meanwhile, and a closed
        connection gives its place back.
        """
        held = [await self.connect() for _ in range(5)]
        refused = await self.connect()
        self.assertTrue(await eventually(lambda: refused.gone, timeout=3))
        self.assertEqual(refused.received, b"")
        self.assertIn(b"HTTP/1.1 200 ", await get(self.port, "/health_check.json", source="127.0.0.2"))
        self.assertFalse(any(client.gone for client in held))
        held[0].close()
        self.assertTrue(await eventually(lambda: self.addressLimit().connections("127.0.0.1") == 4))
        again = await self.connect()
        again.send(b"GET /health_check.json HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(await eventually(lambda: b"HTTP/1.1 200 " in again.received))
        self.assertEqual((await self.refusals(source="127.0.0.3"))["connections_per_address"], 1)

    async def test_websocketsCountedUntilClosed(self) -> None:
        """
        A websocket keeps its place for as long as it is open (it takes the connection
        over from HTTP), and gives it back when it closes.
        """
        spy = _RenderSpy(self, self.server.service.bayeux)
        sockets = [await self.ws() for _ in range(5)]
        refused = await self.connect()
        self.assertTrue(await eventually(lambda: refused.gone, timeout=3))
        for ws in sockets:
            ws.kill()
        self.assertTrue(await eventually(lambda: self.addressLimit().connections("127.0.0.1") == 0))
        self.assertIsNotNone((await self.ws()).clientId)
        # Those sockets were handed over without twisted.web; through it they count the same.
        self.assertEqual(spy.upgrades, 0)
        head = upgrade()
        split = await self.connect()
        split.send(head[:30])
        await sleep(0.05)
        split.send(head[30:])
        self.assertTrue(await eventually(lambda: SWITCHED in split.received))
        self.assertEqual((spy.upgrades, self.addressLimit().connections("127.0.0.1")), (1, 2))
        split.close()
        self.assertTrue(await eventually(lambda: self.addressLimit().connections("127.0.0.1") == 1))

    async def test_websocketOverTLSGivesItsPlaceBack(self) -> None:
        """
        Over a TLS listener a websocket replaces the counted protocol inside the TLS
        wrapper: its place is given back at the upgrade (see _CountedConnection), not
        kept forever.
        """
        pem = (Path(twisted.test.__file__).parent / "server.pem").read_bytes()
        certificate = ssl.PrivateCertificate.loadPEM(pem)
        endpoint = SSL4ServerEndpoint(reactor, 0, certificate.options(), interface="127.0.0.1")
        port = await endpoint.listen(self.site)
        self.addCleanup(port.stopListening)
        client = RawClient()
        await connectProtocol(
            SSL4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, ssl.CertificateOptions()), client
        )
        self.raw.append(client)
        self.assertTrue(await eventually(lambda: self.addressLimit().connections("127.0.0.1") == 1))
        client.send(upgrade())
        self.assertTrue(await eventually(lambda: SWITCHED in client.received), client.received)
        client.send(HANDSHAKE_FRAME)
        self.assertTrue(await eventually(lambda: HANDSHAKE_ANSWERED in client.received))
        self.assertEqual(self.addressLimit().connections("127.0.0.1"), 0)

    async def refusals(self, source: str = "127.0.0.1") -> dict[str, float]:  # type: ignore[override]
        text = (await get(self.port, "/metrics", source=source)).decode()
        body = text.split("\r\n\r\n", 1)[1]
        return {
            sample.labels["limit"]: sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples
            if sample.name == "pandapush_limit_refusals_total"
        }


class TrustedProxyTests(ConnectionCase):
    serverArgs = ("--max-connections-per-address", "2", "--trusted-proxies", "127.0.0.1")

    async def test_proxiesNotCounted(self) -> None:
        """A trusted proxy carries every client behind it: its connections are not counted."""
        held = [await self.connect() for _ in range(4)]
        await sleep(0.2)
        self.assertFalse(any(client.gone for client in held))
        self.assertEqual(self.addressLimit().connections("127.0.0.1"), 0)


class LimitedProcess(PandapushProcess):
    """A server started under ``ulimit``: ``limit`` is the shell's ``ulimit`` arguments."""

    def __init__(self, *args: str, limit: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit = limit

    def command(self) -> list[str]:
        return ["/bin/sh", "-c", f'ulimit {self.limit} && exec "$@"', "sh", *super().command()]

    def openFileLimits(self) -> tuple[int, int]:
        limits = Path(f"/proc/{self._transport.pid}/limits").read_text()
        soft, hard = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits).groups()  # type: ignore[union-attr]
        return int(soft), int(hard)


class FileDescriptorTests(TestCase):
    timeout = 120

    async def test_softLimitRaised(self) -> None:
        """The server raises its soft limit of open files to the hard limit at start, and says so."""
        server = await LimitedProcess.started(self, "--database", "memory", limit="-S -n 256")
        soft, hard = server.openFileLimits()
        self.assertGreater(hard, 256)
        self.assertEqual(soft, hard)
        self.assertTrue(any(f"open files: limit raised from 256 to {hard}" in line for line in server.output))

    async def test_halfOpenRequestsFromOneAddress(self) -> None:
        """
        At a limit of 1,024 descriptors, 1,100 half-open requests from one address (a
        header line sent, then nothing) once made every new connection fail; now that
        address holds 256 of them and the rest are closed at once, while another address
        is served.
        """
        server = await LimitedProcess.started(self, "--database", "memory", limit="-n 1024")
        self.assertEqual(server.openFileLimits(), (1024, 1024))
        attackers: list[RawClient] = []

        def closeAll() -> None:
            for client in attackers:
                client.close()

        self.addCleanup(closeAll)
        for _ in range(1100):
            client = await connectRaw(server.port)
            client.send(b"GET /health_check.json HTTP/1.1\r\n")
            attackers.append(client)
        await eventually(lambda: sum(not c.gone for c in attackers) <= 256, timeout=10)
        self.assertIn(b"HTTP/1.1 200 ", await get(server.port, "/health_check.json", source="127.0.0.2"))
        self.assertEqual(sum(not c.gone for c in attackers), 256)


class AddressLimitUnitTests(SynchronousTestCase):
    def test_countedByAddressAndIPv6Network(self) -> None:
        """IPv4 addresses are counted one by one, IPv6 ones by their /64 (one subscriber has one)."""
        refused: list[str] = []
        limit = AddressLimit(Clock(), maxPerAddress=2, onRefused=refused.append)
        keys = [limit.admit(host) for host in ["10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:db8::ffff:2"]]
        self.assertEqual(keys, ["10.0.0.1", "10.0.0.2", "2001:db8::/64", "2001:db8::/64"])
        self.assertIs(limit.admit("2001:db8::3"), False)
        self.assertEqual(limit.admit("2001:db8:0:1::1"), "2001:db8:0:1::/64")
        self.assertEqual(limit.admit("::ffff:10.0.0.1"), "10.0.0.1")
        self.assertIs(limit.admit("10.0.0.1"), False)
        self.assertEqual(refused, ["connections_per_address"] * 2)
        limit.release("10.0.0.1")
        self.assertEqual(limit.connections("10.0.0.1"), 1)
        self.assertIsNone(limit.admit(None))
        self.assertIsNone(limit.admit("unix-socket"))

    def test_trustedAndUnlimitedNotCounted(self) -> None:
        limit = AddressLimit(Clock(), maxPerAddress=1, trusts=lambda host: host == "10.0.0.5")
        self.assertEqual([limit.admit("10.0.0.5") for _ in range(3)], [None] * 3)
        unlimited = AddressLimit(Clock(), maxPerAddress=0)
        self.assertEqual([unlimited.admit("10.0.0.1") for _ in range(3)], [None] * 3)


class _CountingClock(Clock):
    """A clock that counts the calls scheduled on it."""

    scheduled = 0

    def callLater(self, delay: float, callable: Any, *args: object, **kw: object) -> Any:
        self.scheduled += 1
        return super().callLater(delay, callable, *args, **kw)


class _Answer(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        return b"ok"


class ChannelTimerTests(SynchronousTestCase):
    """The channel's timers: as few as the deadlines need, and the deadlines all there."""

    def setUp(self) -> None:
        self.clock = _CountingClock()
        self.site = PandapushSite(_Answer(), maxBodySize=1024, accessLog=False)
        self.site.reactor = self.clock  # type: ignore[assignment]
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
        assert isinstance(channel, PandapushChannel)
        self.channel = channel
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def pending(self) -> list[float]:
        """Seconds until each call still to come."""
        return sorted(call.getTime() - self.clock.seconds() for call in self.clock.getDelayedCalls())

    def timedOut(self) -> bool:
        return b"HTTP/1.1 408 " in self.transport.value() and bool(self.transport.disconnecting)

    def test_oneTimerUntilTheFirstRequest(self) -> None:
        """
        A new connection has one timer, the headers deadline (Twisted's idle timeout,
        which every byte resets, cannot fire first): silent, it is closed with a 408.
        """
        self.assertEqual(self.pending(), [self.site.headersTimeout])
        self.clock.advance(self.site.headersTimeout)
        self.assertTrue(self.timedOut())

    def test_idleTimeoutAfterTheFirstRequest(self) -> None:
        """
        Once a request is answered, a kept-alive connection has Twisted's idle timeout
        (and nothing else) until its next request; a whole request in one read starts
        no deadline, and one without a body no body deadline.
        """
        self.channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"HTTP/1.1 200 ", self.transport.value())
        self.assertEqual(self.pending(), [self.site.timeOut])
        scheduled = self.clock.scheduled
        self.channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(self.transport.value().count(b"HTTP/1.1 200 "), 2)
        # Only the idle timeout again: Twisted stops it for each request and starts it after.
        self.assertEqual((self.clock.scheduled, self.pending()), (scheduled + 1, [self.site.timeOut]))

    def test_partialRequestDeadline(self) -> None:
        """A kept-alive connection's next request that does not come whole has the headers deadline."""
        self.channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.channel.dataReceived(b"GET / HTTP/1.1\r\n")
        self.clock.advance(self.site.headersTimeout - 0.1)
        self.channel.dataReceived(b"X-Slow: 1\r\n")
        self.assertFalse(self.timedOut())
        self.clock.advance(0.1)
        self.assertTrue(self.timedOut())

    def test_bodyDeadline(self) -> None:
        """A request whose body does not come has the body deadline, even with its head whole in one read."""
        self.channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        self.assertEqual(self.pending(), [self.site.bodyTimeout])
        self.clock.advance(self.site.bodyTimeout)
        self.assertTrue(self.timedOut())
