"""How the site answers HTTP requests: the lean request of :mod:`pandapush.web.site`.

``LimitedRequest`` writes an answer of known length as one piece (status line, headers,
body) and hands it to the kernel after the reactor turn when nothing is buffered
(:func:`pandapush.transports.turnsends.sendAtTurnEnd`, tested in ``test_turnsends``),
with a ``Date`` formatted once a second; everything else (chunked answers, ``HEAD``,
204/304) is Twisted's code. These tests pin what a client sees over a real socket,
whichever path an answer took.
"""

from __future__ import annotations

import email.utils
import io
import json
import time
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from pandapush.transports.http import requestLost
from pandapush.web.site import LimitedRequest, PandapushRoot, makeSite
from tests.support.inprocess import InProcessServer
from tests.support.ports import listenLocally, portNumber
from tests.support.rawclient import RawClient, connectRaw
from tests.support.waiting import eventually

HANDSHAKE = json.dumps(
    [{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}]
).encode()


def post(path: bytes, body: bytes, version: bytes = b"HTTP/1.1", extra: bytes = b"") -> bytes:
    return b"POST %s %s\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        path,
        version,
        len(body),
        extra,
        body,
    )


def answers(data: bytes) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """The answers in ``data``, each (status line, headers by lower-case name, body); all complete."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines[1:])}
        length = int(headers[b"content-length"])
        out.append((lines[0], headers, rest[:length]))
        data = rest[length:]
    return out


def complete(data: bytes, count: int) -> bool:
    try:
        return len(answers(data)) >= count
    except (KeyError, ValueError):
        return False


class AnswerTests(TestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        self.server = InProcessServer()
        await self.server.start()
        self.addCleanup(self.server.stop)
        assert self.server.port is not None
        self.port = portNumber(self.server.port)

    async def connect(self) -> RawClient:
        client = await connectRaw(self.port)
        self.addCleanup(lambda: client.transport.abortConnection())  # type: ignore[union-attr]
        return client

    async def test_lengthDateServer(self) -> None:
        """A long-poll's answer: its length, a Date of this second in HTTP's format, Twisted's Server."""
        client = await self.connect()
        before = time.time()
        client.transport.write(post(b"/push", HANDSHAKE))  # type: ignore[union-attr]
        await eventually(lambda: complete(client.received, 1))
        [(status, headers, body)] = answers(client.received)
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(int(headers[b"content-length"]), len(body))
        self.assertTrue(json.loads(body)[0]["successful"])
        self.assertEqual(headers[b"content-type"], b"application/json; charset=utf-8")
        self.assertTrue(headers[b"server"].startswith(b"TwistedWeb/"))
        date = email.utils.parsedate_to_datetime(headers[b"date"].decode()).timestamp()
        self.assertTrue(int(before) <= date <= time.time(), (before, headers[b"date"]))

    async def test_pipelinedAnswersInOrder(self) -> None:
        """Three requests in one packet, a REST publish between two long-polls: three answers, in order."""
        client = await self.connect()
        key = b"Basic " + __import__("base64").b64encode(b"PSIDtestkey000000001:in-process-test-secret")
        client.transport.write(  # type: ignore[union-attr]
            post(b"/push", HANDSHAKE)
            + post(
                b"/channel/testapp0000000000001/public/x",
                b'{"a":1}',
                extra=b"Authorization: " + key + b"\r\n",
            )
            + post(b"/push", b"nope")
        )
        await eventually(lambda: complete(client.received, 3))
        (s1, _, b1), (s2, _, b2), (s3, _, b3) = answers(client.received)
        self.assertEqual((s1, s2, s3), (b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.1 400 Bad Request"))
        self.assertIn(b"clientId", b1)
        self.assertEqual(b2, b"OK")
        self.assertEqual(b3, b"Bad request")

    async def test_http10Closes(self) -> None:
        """An HTTP/1.0 request is answered as HTTP/1.0 and its connection closed after the answer."""
        client = await self.connect()
        client.transport.write(post(b"/push", HANDSHAKE, version=b"HTTP/1.0"))  # type: ignore[union-attr]
        await client.closed
        [(status, _, body)] = answers(client.received)
        self.assertEqual(status, b"HTTP/1.0 200 OK")
        self.assertIn(b"clientId", body)

    async def test_headHasNoBody(self) -> None:
        """HEAD still goes through Twisted's own write: headers only, the connection ready for more."""
        client = await self.connect()
        client.transport.write(b"HEAD /health_check.json HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[union-attr]
        await eventually(lambda: b"\r\n\r\n" in client.received)
        head, _, rest = client.received.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 "), head)
        client.received = b""
        client.transport.write(post(b"/push", HANDSHAKE))  # type: ignore[union-attr]
        await eventually(lambda: complete(client.received, 1))
        self.assertEqual(rest, b"")

    async def test_drainingAnswerCloses(self) -> None:
        """A long-poll answered at once while the node drains tells the client to reconnect elsewhere."""
        self.server.router.drain()
        client = await self.connect()
        client.transport.write(post(b"/push", HANDSHAKE))  # type: ignore[union-attr]
        await eventually(lambda: complete(client.received, 1))
        [(_, headers, body)] = answers(client.received)
        self.assertEqual(headers[b"connection"], b"close")
        self.assertEqual(json.loads(body)[0]["advice"]["reconnect"], "handshake")


class _Chunked(Resource):
    """Writes its answer without a length, later: Twisted chunks it."""

    isLeaf = True

    def render(self, request: Any) -> Any:
        request.setHeader(b"Content-Type", b"text/plain")
        reactor.callLater(0, self._finish, request)
        return NOT_DONE_YET

    def _finish(self, request: Any) -> None:
        request.write(b"hello")
        request.finish()


class _Held(Resource):
    """Holds every request until told, and says when a client left first."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Any] = []
        self.lost: list[Any] = []

    def render(self, request: Any) -> Any:
        self.requests.append(request)
        requestLost(request).addCallback(lambda _: self.lost.append(request))
        return NOT_DONE_YET


class SiteTests(TestCase):
    def listen(self, site: Any) -> int:
        port = listenLocally(site)
        self.addCleanup(port.stopListening)
        return portNumber(port)

    async def connect(self, port: int) -> RawClient:
        client = await connectRaw(port)
        self.addCleanup(lambda: client.transport.abortConnection())  # type: ignore[union-attr]
        return client

    async def test_siteHeadersFirst(self) -> None:
        """The site's headers (X-Pandapush-Worker) lead every answer, before Server and Date."""
        held = _Held()
        root = PandapushRoot(held, held)
        port = self.listen(makeSite(root, maxBodySize=100, headers={b"X-Pandapush-Worker": b"3"}))
        client = await self.connect(port)
        client.transport.write(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[union-attr]
        await eventually(lambda: held.requests)
        request = held.requests[0]
        request.setHeader(b"Content-Length", b"2")
        request.write(b"ok")
        request.finish()
        await eventually(lambda: complete(client.received, 1))
        names = [line.split(b":")[0] for line in client.received.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]]
        self.assertEqual(names[:3], [b"X-Pandapush-Worker", b"Server", b"Date"])
        self.assertEqual(client.received.split(b"\r\n\r\n", 1)[1], b"ok")

    async def test_accessLog(self) -> None:
        """With the access log on, each answered request is a line: method, path, status, length."""
        held = _Held()
        site = makeSite(PandapushRoot(held, held), maxBodySize=100, accessLog=True)
        port = self.listen(site)
        log = io.StringIO()
        site._logFile = log  # type: ignore[attr-defined]  # where Twisted's HTTPFactory.log writes
        client = await self.connect(port)
        client.transport.write(b"GET /x/y HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[union-attr]
        await eventually(lambda: held.requests)
        request = held.requests[0]
        request.setResponseCode(201)
        request.setHeader(b"Content-Length", b"5")
        request.write(b"hello")
        request.finish()
        await eventually(lambda: complete(client.received, 1))
        self.assertIn('"GET /x/y HTTP/1.1" 201 5 ', log.getvalue())

    async def test_chunkedWithoutLength(self) -> None:
        """An answer written without a length is still chunked (Twisted's write), and complete."""
        root = PandapushRoot(_Chunked(), _Chunked())
        port = self.listen(makeSite(root, maxBodySize=100))
        client = await self.connect(port)
        client.transport.write(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[union-attr]
        await eventually(lambda: client.received.endswith(b"0\r\n\r\n"))
        head, _, body = client.received.partition(b"\r\n\r\n")
        self.assertIn(b"Transfer-Encoding: chunked", head)
        self.assertEqual(body, b"5\r\nhello\r\n0\r\n\r\n")

    async def test_lostBeforeTheAnswer(self) -> None:
        """requestLost fires when a held request's client goes away, and not once it was answered."""
        held = _Held()
        port = self.listen(makeSite(PandapushRoot(held, held), maxBodySize=100))
        answered = await self.connect(port)
        answered.transport.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[union-attr]
        gone = await self.connect(port)
        gone.transport.write(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[union-attr]
        await eventually(lambda: len(held.requests) == 2)
        first, second = held.requests
        self.assertIsInstance(first, LimitedRequest)
        first.setHeader(b"Content-Length", b"0")
        first.finish()
        await eventually(lambda: complete(answered.received, 1))
        answered.transport.abortConnection()  # type: ignore[union-attr]
        gone.transport.abortConnection()  # type: ignore[union-attr]
        await eventually(lambda: held.lost)
        await answered.closed
        self.assertEqual(held.lost, [second])
