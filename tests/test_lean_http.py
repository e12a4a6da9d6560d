"""
The lean HTTP path (:mod:`pandapush.web.lean`) against twisted.web's: the same byte streams
through one real server's site, once with simple requests served from the channel's read
and once with ``serveSimple`` off (every request parsed by twisted.web), split at every
byte, pipelined, valid, invalid and hostile; the answers (status lines, headers, bodies),
and whether the connection was closed, must be the same, byte for byte but for the
``Date`` and the server-made clientIds.
"""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

import jwt
from twisted.internet import reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource

from pandapush.web import lean
from pandapush.web.site import PandapushSite
from tests.support.inprocess import APP, KEY, SECRET, InProcessServer

PUSH = b"/push"
REST = f"/channel/{APP}/private/lean".encode()
BASIC = b"Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode())

_DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")
_CLIENT = re.compile(rb'"clientId":"[^"]*"')
#: A channel's position in its history: one more for each run that published to it.
_OFFSET = re.compile(rb'"offset":\d+')


def post(path: bytes, body: bytes, *headers: bytes, contentType: bytes = b"application/json") -> bytes:
    head = [b"POST " + path + b" HTTP/1.1", b"Host: 127.0.0.1"]
    if contentType:
        head.append(b"Content-Type: " + contentType)
    head.append(b"Content-Length: %d" % len(body))
    head.extend(headers)
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def bayeux(*messages: dict[str, Any]) -> bytes:
    return json.dumps(list(messages)).encode()


def token(claims: dict[str, Any], secret: str = SECRET) -> bytes:
    payload = {"keyId": KEY, "exp": int(time.time()) + 3600, **claims}
    return jwt.encode(payload, secret, algorithm="HS256").encode()


def normal(answer: bytes) -> bytes:
    answer = _DATE.sub(b"\r\nDate: -\r\n", answer)
    return _OFFSET.sub(b'"offset":-', _CLIENT.sub(b'"clientId":"-"', answer))


def parsed(channel: Any, head: bytes) -> tuple[lean.LeanRequest, int]:
    """The LeanRequest the lean path makes of the request ``head`` (all of it), and where it ends."""
    found = lean._parse(channel, head, 0)
    assert found is not None
    uri, headers, body, contextHeaders, end = found
    return lean._request(channel, uri, headers, body, contextHeaders), end


class _Connection:
    """One channel of the site on a StringTransport, fed the reads it is given."""

    port = 40000

    def __init__(self, site: Any) -> None:
        _Connection.port += 1
        peer = IPv4Address("TCP", "127.0.0.1", _Connection.port)
        self.protocol = site.buildProtocol(peer)
        self.transport = StringTransport(peerAddress=peer)
        # As a TCP transport's: autobahn reads it when an upgrade reaches its resource.
        self.transport.protocol = self.protocol  # type: ignore[attr-defined]
        self.protocol.makeConnection(self.transport)

    def feed(self, *reads: bytes) -> None:
        for data in reads:
            if not self.transport.disconnecting:
                self.protocol.dataReceived(data)

    def close(self) -> tuple[bytes, bool]:
        closed = bool(self.transport.disconnecting)
        self.protocol.connectionLost(Failure(ConnectionDone()))
        return normal(self.transport.value()), closed


class DifferentialCase(TestCase):
    """One server, and the same byte streams sent through both of its paths."""

    #: More options for the server.
    serverArgs: tuple[str, ...] = ()

    async def setUp(self) -> None:  # type: ignore[override]
        self.server = await InProcessServer.started(
            self, "--timeout", "1", "--max-body-size", "2048", "--max-publish-rate", "0", *self.serverArgs
        )
        self.site = self.server.service.site
        self.served = 0
        #: Of them, REST publishes that the publish lane took (answered now or later).
        self.laned = 0
        answer = lean._answer
        publish = lean._lane

        def counted(channel: Any, request: Any, later: Any = None) -> None:
            if later is None:
                self.served += 1
            answer(channel, request, later)

        def countedLane(*args: Any) -> None:
            self.served += 1
            self.laned += 1
            publish(*args)

        self.patch(lean, "_answer", counted)
        self.patch(lean, "_lane", countedLane)

    def clientId(self) -> bytes:
        connection = _Connection(self.site)
        connection.feed(
            post(
                PUSH,
                bayeux(
                    {
                        "channel": "/meta/handshake",
                        "version": "1.0",
                        "supportedConnectionTypes": ["long-polling"],
                    }
                ),
            )
        )
        answer = connection.transport.value()
        connection.close()
        return json.loads(answer.split(b"\r\n\r\n", 1)[1])[0]["clientId"].encode()

    def exchange(self, leanPath: bool, reads: list[bytes]) -> tuple[bytes, bool]:
        self.site.serveSimple = lean.serve if leanPath else None
        connection = _Connection(self.site)
        connection.feed(*reads)
        return connection.close()

    def assertSame(self, stream: bytes, splits: bool = True) -> int:
        """``stream`` in one read, then split in two at every byte, answered alike on both paths."""
        cuts = range(len(stream) + 1) if splits else [len(stream)]
        servedBefore = self.served
        for cut in cuts:
            reads = [stream[:cut], stream[cut:]]
            twisted = self.exchange(False, reads)
            leaner = self.exchange(True, reads)
            self.assertEqual(leaner, twisted, f"split at {cut}")
        self.assertTrue(twisted[0].startswith(b"HTTP/1.1 ") or not twisted[0], twisted)
        return self.served - servedBefore


class LeanDifferentialTests(DifferentialCase):
    def test_restPublishes(self) -> None:
        """Valid, refused and malformed REST publishes: the same answers, split anywhere."""
        valid = post(REST, b'{"text":"hi"}', b"Authorization: " + BASIC)
        self.assertGreater(self.assertSame(valid), 0)
        for stream in [
            post(REST, b'{"text":', b"Authorization: " + BASIC),
            post(REST, b"{text:'x'}", b"Authorization: " + BASIC),
            post(
                REST, b"a=1&b=2", b"Authorization: " + BASIC, contentType=b"application/x-www-form-urlencoded"
            ),
            post(REST, b"", b"Authorization: " + BASIC),
            post(REST, b'{"a":1}'),
            post(REST, b'{"a":1}', b"Authorization: Basic bm90OmF1dGg="),
            post(
                REST,
                b'{"a":1}',
                b"Authorization: Bearer " + token({"channel": f"/{APP}/private/lean", "pub": True}),
            ),
            post(
                REST,
                b'{"a":1}',
                b"Authorization: Token " + token({"channel": f"/{APP}/private/lean", "pub": True}, "x"),
            ),
            post(REST + b"?token=" + token({"channel": f"/{APP}/private/lean", "pub": True}), b'{"a":1}'),
            post(REST, b'{"a":1}', b"Authorization: Bearer garbage"),
            post(f"/channel/{APP}/nope/x".encode(), b"{}", b"Authorization: " + BASIC),
            post(f"/channel/{APP}/private/".encode(), b"{}", b"Authorization: " + BASIC),
            post(REST, b'{"a":1}', b"Authorization: " + BASIC, b"Idempotency-Key: " + b"x" * 300),
            post(REST, b'{"a":1}', b"Authorization: " + BASIC, b"Origin: http://elsewhere", b"Cookie: a=b"),
            post(REST, b'{"a":1}', b"Authorization: " + BASIC, b"Connection: close"),
            post(REST, b'{"a":1}', b"Authorization: " + BASIC, b"X-Forwarded-For: 10.1.2.3"),
            post(REST, json.dumps({"big": "x" * 3000}).encode(), b"Authorization: " + BASIC),
            post(b"/channel/%ff/private/x", b"{}", b"Authorization: " + BASIC),
        ]:
            self.assertSame(stream, splits=len(stream) < 400)

    def test_longPolling(self) -> None:
        """Long-polling requests (JSON, forms, malformed, with and without a client): the same answers."""
        cid = self.clientId().decode()
        for stream in [
            post(
                PUSH,
                bayeux(
                    {
                        "channel": "/meta/handshake",
                        "version": "1.0",
                        "supportedConnectionTypes": ["long-polling"],
                    }
                ),
            ),
            post(PUSH, b"[{"),
            post(
                PUSH,
                b"message="
                + bayeux({"channel": "/meta/subscribe", "clientId": cid, "subscription": f"/{APP}/public/a"}),
                contentType=b"text/plain",
            ),
            post(
                PUSH,
                bayeux({"channel": "/meta/subscribe", "clientId": "nobody", "subscription": "/x"}),
                b"Origin: http://o",
            ),
            post(
                PUSH,
                bayeux({"channel": "/meta/subscribe", "clientId": "nobody", "subscription": "/x"}),
                b"Origin: null",
            ),
            post(PUSH, bayeux({"channel": f"/{APP}/public/a", "clientId": cid, "data": {"x": 1}})),
            post(
                PUSH + b"/connect",
                bayeux({"channel": "/meta/connect", "clientId": "nobody", "connectionType": "long-polling"}),
            ),
            post(PUSH, b"", contentType=b""),
        ]:
            self.assertSame(stream)

    def test_connectionAndContentTypes(self) -> None:
        """
        ``Connection`` values (which close, which keep the connection) and ``Content-Type``
        values (JSON or a form, in any case, with parameters) of long-polling requests,
        each sent twice in one stream (the second read from what the first left kept):
        the same answers, and the same connections closed.
        """
        cid = self.clientId().decode()
        subscribe = bayeux(
            {"channel": "/meta/subscribe", "clientId": cid, "subscription": f"/{APP}/public/v"}
        )
        values = [b"keep-alive", b"Keep-Alive", b"close", b"CLOSE", b"keep-alive, close", b"Upgrade", b""]
        for value in values:
            stream = post(PUSH, subscribe, b"Connection: " + value)
            self.assertSame(stream * 2, splits=False)
            self.assertSame(stream)
        for contentType, body in [
            (b"application/json; charset=utf-8", subscribe),
            (b"Application/JSON", subscribe),
            (b"application/json ;x=y", subscribe),
            (b"text/plain;charset=UTF-8", b"message=" + subscribe),
            (b"application/x-www-form-urlencoded", b"message=" + subscribe),
            (b"text/plain", subscribe),
            (b"application/jsonx", subscribe),
        ]:
            stream = post(PUSH, body, contentType=contentType)
            self.assertSame(stream * 2, splits=False)
            self.assertSame(stream, splits=contentType == b"Application/JSON")

    def test_pipelinedAndHostile(self) -> None:
        """Pipelined requests, and heads the lean path leaves to twisted.web, answered alike and in order."""
        valid = post(REST, b'{"text":"hi"}', b"Authorization: " + BASIC)
        streams = [
            valid * 3,
            valid + b"\r\n" + valid,
            valid + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + valid,
            valid + post(REST, b"x" * 5000, b"Authorization: " + BASIC) + valid,
            valid + b"POST /push HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            valid + b"POST /push HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            valid + b"POST /push HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            valid + b"POST /push HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n",
            valid + b"POST /push HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n[]",
            valid + b"POST /push HTTP/1.1\r\nX: a\r\n b\r\nContent-Length: 2\r\n\r\n[]",
            valid + b"POST /push HTTP/1.1\r\nBad Name: a\r\nContent-Length: 2\r\n\r\n[]",
            valid + b"POST /push HTTP/1.0\r\nContent-Length: 2\r\n\r\n[]",
            valid + b"POST /push HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 600 + b"\r\n",
            valid + b"POST /push HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
            post(REST, b"{}", b"Authorization: " + BASIC, b"Connection: close") + valid,
        ]
        for stream in streams:
            self.assertSame(stream, splits=len(stream) < 700)

    async def test_heldConnect(self) -> None:
        """
        A held ``/meta/connect`` is answered when a message comes, with the requests
        pipelined behind it answered after it, in order, on both paths.
        """
        results = []
        for leanPath in (False, True):
            cid = self.clientId()
            subscribe = bayeux(
                {
                    "channel": "/meta/subscribe",
                    "clientId": cid.decode(),
                    "subscription": f"/{APP}/public/held",
                }
            )
            connect = bayeux(
                {"channel": "/meta/connect", "clientId": cid.decode(), "connectionType": "long-polling"}
            )
            self.site.serveSimple = lean.serve if leanPath else None
            connection = _Connection(self.site)
            connection.feed(post(PUSH, subscribe), post(PUSH, connect))  # the first connect: at once
            connection.feed(post(PUSH, connect) + post(PUSH, subscribe))  # held, and one behind it
            await task.deferLater(reactor, 0.05, lambda: None)
            before = connection.transport.value().count(b"HTTP/1.1 200")
            publisher = _Connection(self.site)
            publisher.feed(
                post(f"/channel/{APP}/public/held".encode(), b'{"n":1}', b"Authorization: " + BASIC)
            )
            publisher.close()
            await task.deferLater(reactor, 0.05, lambda: None)
            results.append((before, connection.close()))
        self.assertEqual(results[0][0], 2)
        self.assertIn(b'"data":{"n":1}', results[0][1][0])
        self.assertEqual(results[0][1][0].count(b"HTTP/1.1 200"), 4)
        self.assertEqual(results[1], results[0])

    async def test_heldConnectLost(self) -> None:
        """A held connect whose connection closes is noticed: the client is not left attached to it."""
        cid = self.clientId()
        connect = bayeux(
            {"channel": "/meta/connect", "clientId": cid.decode(), "connectionType": "long-polling"}
        )
        connection = _Connection(self.site)
        connection.feed(post(PUSH, connect))
        served = self.served
        connection.feed(post(PUSH, connect))
        self.assertEqual(self.served, served + 1)
        channel = getattr(connection.protocol, "wrappedProtocol", connection.protocol)
        (request,) = channel.requests
        self.assertIsInstance(request, lean.LeanRequest)
        lost = request.notifyLost()
        self.assertFalse(lost.called)
        connection.close()
        self.assertTrue(lost.called)


class LostTests(DifferentialCase):
    """When a long-poll request makes the Deferred that says its client hung up."""

    def test_onlyWhenHeld(self) -> None:
        """
        A long-poll answered at once makes none; a held connect does, on both paths,
        and is let go (no longer held) once its connection closes.
        """
        from pandapush.web.site import LimitedRequest

        made: list[Any] = []
        original = LimitedRequest.notifyLost

        def notifyLost(request: Any) -> Any:
            made.append(request)
            return original(request)

        self.patch(LimitedRequest, "notifyLost", notifyLost)
        cid = self.clientId().decode()
        router = self.server.router
        handshake = {
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["long-polling"],
        }
        connect = {"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling"}
        for leanPath in (True, False):
            self.site.serveSimple = lean.serve if leanPath else None
            connection = _Connection(self.site)
            del made[:]
            # Answered at once: a handshake, and a connect that holds nothing.
            connection.feed(
                post(PUSH, bayeux(handshake)), post(PUSH, bayeux({**connect, "advice": {"timeout": 0}}))
            )
            self.assertEqual(made, [], leanPath)
            held = router.heldConnects()
            connection.feed(post(PUSH, bayeux(connect)))
            self.assertEqual(router.heldConnects(), held + 1, leanPath)
            self.assertEqual(len(made), 1, leanPath)
            connection.close()
            self.assertEqual(router.heldConnects(), held, leanPath)


class PublishLaneTests(DifferentialCase):
    """
    REST publishes answered by the publish lane (``lean._publish``: no twisted.web request
    for an answer given now) against twisted.web's whole path: the same bytes.
    """

    def assertLaned(self, stream: bytes, splits: bool = False) -> None:
        laned = self.laned
        self.assertGreater(self.assertSame(stream, splits), 0)
        self.assertGreater(self.laned, laned, "the lane did not take it")

    def test_answers(self) -> None:
        """Published, refused, malformed, and a query's token: each the lane's, each alike."""
        self.assertLaned(post(REST, b'{"text":"hi"}', b"Authorization: " + BASIC), splits=True)
        claims = {"channel": f"/{APP}/private/lean", "pub": True}
        for stream in [
            post(f"/channel/{APP}/nosuchtype/x".encode(), b"{}", b"Authorization: " + BASIC),
            post(f"/channel/{APP}/private".encode(), b"{}", b"Authorization: " + BASIC),
            post(f"/channel/{APP}/private//x".encode(), b"{}", b"Authorization: " + BASIC),
            post(f"/channel/{APP}/private/bad*name".encode(), b"{}", b"Authorization: " + BASIC),
            post(b"/channel/OTHERotherOTHERother/private/x", b"{}", b"Authorization: " + BASIC),
            post(REST, b'{"a":1}'),
            post(REST, b'{"a":1}', b"Authorization: Basic bm90OmF1dGg="),
            post(REST + b"?token=" + token(claims), b'{"a":1}'),
            post(REST + b"?token=" + token(claims, secret="wrong"), b'{"a":1}'),
            post(REST, b'{"a":1}', b"Authorization: " + BASIC, b"Idempotency-Key: k-1"),
            post(REST, b'{"a":1}', b"Authorization: " + BASIC, b"Idempotency-Key: " + b"x" * 300),
            post(REST, b'{"a":', b"Authorization: " + BASIC),
            post(REST, b'{"a":1}', b"Authorization: " + BASIC, contentType=b"text/plain"),
            post(REST, b'{"a":1}', b"Authorization: " + BASIC, b"Connection: close"),
            post(REST, b'{"a":1}', b"Authorization: " + BASIC) * 3,
        ]:
            self.assertLaned(stream)

    def test_siteHeaders(self) -> None:
        """The site's headers come first, as process sets them; one set again keeps its place."""
        stream = post(REST, b'{"a":1}', b"Authorization: " + BASIC)
        refused = post(REST, b'{"a":1}')
        for headers in [{b"X-Pandapush-Worker": b"3"}, {b"cache-control": b"max-age=1", b"X-A": b"b"}]:
            self.site.headers = headers
            self.assertLaned(stream)
            self.assertLaned(refused)
            answer, _ = self.exchange(True, [refused])
            self.assertIn(b"Cache-Control: no-store", answer)
            self.assertEqual(answer.count(b"Cache-Control"), 1)

    def test_notTaken(self) -> None:
        """Escaped or non-ASCII paths, and a site keeping an access log, go twisted.web's way."""
        for stream in [
            post(f"/channel/{APP}/private/l%61ne".encode(), b'{"a":1}', b"Authorization: " + BASIC),
            post(REST + b"\xc3\xa9", b'{"a":1}', b"Authorization: " + BASIC),
            post(REST + b"\xff", b'{"a":1}', b"Authorization: " + BASIC),
        ]:
            laned = self.laned
            self.assertSame(stream, splits=False)
            self.assertEqual(self.laned, laned)
        self.site.accessLog = True
        self.assertIsNone(self.site.publishLane)
        laned = self.laned
        self.assertSame(post(REST, b'{"a":1}', b"Authorization: " + BASIC), splits=False)
        self.assertEqual(self.laned, laned)

    async def test_answeredLater(self) -> None:
        """
        A publish that answers later (as through Redis): a twisted.web request is made for
        it, with what the lane set, and answered as on the whole path; a request pipelined
        behind it waits for it.
        """
        app = self.site.publishLane.app
        publish = app.publish

        def later(*args: Any, **kwargs: Any) -> Any:
            return task.deferLater(reactor, 0.01, lambda: None).addCallback(
                lambda _: publish(*args, **kwargs)
            )

        self.patch(app, "publish", later)
        valid = post(REST, b'{"a":1}', b"Authorization: " + BASIC)
        for stream in [
            valid,
            valid + valid,
            post(REST, b'{"a":1}', b"Authorization: " + BASIC, b"Connection: close"),
        ]:
            answers = []
            for leanPath in (False, True):
                self.site.serveSimple = lean.serve if leanPath else None
                connection = _Connection(self.site)
                connection.feed(stream)
                await task.deferLater(reactor, 0.1, lambda: None)
                answers.append(connection.close())
            self.assertEqual(answers[1], answers[0])
            self.assertEqual(answers[0][0].count(b"HTTP/1.1 200 OK"), stream.count(b"POST"))

    def test_headersAsTwistedTakesThem(self) -> None:
        """Headers set with a line break, as text or by a lower-case name: as twisted.web writes them."""
        app = self.site.publishLane.app
        published = app._published

        def odd(result: Any, request: Any, channel: Any) -> bytes:
            request.setHeader(b"x-odd", b"a\r\nInjected: yes")
            request.setHeader("X-Text", "caf\u00e9")
            return published(result, request, channel)  # type: ignore[no-any-return]

        self.patch(app, "_published", odd)
        self.assertLaned(post(REST, b'{"a":1}', b"Authorization: " + BASIC))
        answer, _ = self.exchange(True, [post(REST, b'{"a":1}', b"Authorization: " + BASIC)])
        self.assertNotIn(b"\r\nInjected", answer)
        self.assertIn(b"\r\nX-Odd: a Injected: yes\r\n", answer)

    def test_noBodyCodes(self) -> None:
        """An answer of a code without a body (304) goes twisted.web's way: its body and type left out."""
        app = self.site.publishLane.app
        published = app._published

        def notModified(result: Any, request: Any, channel: Any) -> bytes:
            published(result, request, channel)
            request.setResponseCode(304)
            return b"not for a 304"

        self.patch(app, "_published", notModified)
        self.assertLaned(post(REST, b'{"a":1}', b"Authorization: " + BASIC))
        answer, _ = self.exchange(True, [post(REST, b'{"a":1}', b"Authorization: " + BASIC)])
        self.assertTrue(answer.startswith(b"HTTP/1.1 304 Not Modified\r\n"), answer)
        self.assertNotIn(b"not for a 304", answer)

    def test_failing(self) -> None:
        """A resource that raises: a JSON 500, logged, and the connection serves the next request."""
        resource = self.site.publishLane
        answer = resource.answer
        calls = []

        def failing(request: Any) -> Any:
            calls.append(request)
            if len(calls) == 1:
                raise RuntimeError("boom")
            return answer(request)

        self.patch(resource, "answer", failing)
        valid = post(REST, b'{"a":1}', b"Authorization: " + BASIC)
        reply, closed = self.exchange(True, [valid + valid])
        self.assertFalse(closed)
        first, second = reply.split(b"HTTP/1.1 ")[1:]
        self.assertTrue(first.startswith(b"500 Internal Server Error\r\n"), first)
        self.assertIn(b"Content-Type: application/json", first)
        self.assertIn(b'"code":500', first)
        self.assertTrue(second.startswith(b"200 OK\r\n"), second)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class PushLaneTests(DifferentialCase):
    """
    Long-polling requests answered by the push lane (``lean._lane`` with ``/push``'s
    resource: no twisted.web request for an answer given now) against twisted.web's
    whole path: the same bytes, the same connections closed.
    """

    def assertLaned(self, stream: bytes, splits: bool = False) -> None:
        laned = self.laned
        self.assertGreater(self.assertSame(stream, splits), 0)
        self.assertGreater(self.laned, laned, "the lane did not take it")

    def test_answers(self) -> None:
        """Handshakes, subscribes, connects answered at once, publishes, refusals: the lane's, alike."""
        cid = self.clientId().decode()
        handshake = {
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["long-polling"],
        }
        subscribe = {"channel": "/meta/subscribe", "clientId": cid, "subscription": f"/{APP}/public/pl"}
        connect = {"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling"}
        self.assertLaned(post(PUSH, bayeux(handshake)), splits=True)
        for stream in [
            post(PUSH, bayeux(subscribe)),
            post(PUSH + b"/connect", bayeux({**connect, "advice": {"timeout": 0}})),
            post(PUSH + b"?x=1", bayeux({"channel": f"/{APP}/public/pl", "clientId": cid, "data": {"n": 1}})),
            post(PUSH, bayeux({"channel": "/meta/subscribe", "clientId": "nobody", "subscription": "/x"})),
            post(PUSH, b"[{"),
            post(PUSH, b"", contentType=b""),
            post(PUSH, b"message=" + bayeux(handshake), contentType=b"text/plain;charset=UTF-8"),
            post(PUSH, bayeux(handshake), b"Origin: http://page.test"),
            post(PUSH, b"", b"Origin: http://page.test", b"Access-Control-Request-Method: POST"),
            post(PUSH, bayeux(handshake), b"Connection: close"),
            post(PUSH, bayeux(handshake), b"Cookie: a=b", b"X-Forwarded-For: 10.1.2.3"),
            post(PUSH, bayeux(subscribe)) * 3,
        ]:
            self.assertLaned(stream)

    def test_siteHeaders(self) -> None:
        """
        The site's headers first, as process sets them, one set again keeping its place;
        a ``Content-Type`` of the site's is not doubled by twisted.web's default.
        """
        handshake = post(
            PUSH,
            bayeux(
                {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}
            ),
        )
        preflight = post(PUSH, b"", b"Origin: http://page.test", b"Access-Control-Request-Method: POST")
        published = post(REST, b'{"a":1}', b"Authorization: " + BASIC)
        for headers in [
            {b"X-Pandapush-Worker": b"2"},
            {b"cache-control": b"private"},
            {b"Content-Type": b"text/x-site"},
        ]:
            self.site.headers = headers
            for stream in [
                handshake,
                preflight,
                published,
                handshake.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1),
            ]:
                self.assertLaned(stream)
        answer, _ = self.exchange(True, [published])
        self.assertEqual(answer.count(b"Content-Type"), 1, answer)

    def test_untypedAnswer(self) -> None:
        """
        A lane's resource that sets no ``Content-Type``: twisted.web's default after the
        length, or the site's in its place, never both.
        """

        class Plain(Resource):
            isLeaf = True
            hostBlind = True

            def answer(self, request: Any) -> bytes:
                return b"plain"

            def respond(self, answer: Any, request: Any) -> None:
                raise AssertionError("answered now")

            def render_POST(self, request: Any) -> bytes:
                return self.answer(request)

        self.server.service.site.resource.mount(b"channel", Plain())
        self.assertIsInstance(self.site.publishLane, Plain)
        stream = post(b"/channel/x", b"{}")
        for headers in [{}, {b"Content-Type": b"text/x-site"}]:
            self.site.headers = headers
            self.assertLaned(stream, splits=True)
            answer, _ = self.exchange(True, [stream])
            self.assertEqual(answer.count(b"Content-Type"), 1, answer)

    def test_draining(self) -> None:
        """A node going away: ``Connection: close`` on every answer, in twisted.web's place, on both paths."""
        handshake = post(
            PUSH,
            bayeux(
                {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}
            ),
        )
        self.server.router.drain()
        self.assertLaned(handshake, splits=True)
        self.assertLaned(handshake.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
        answer, _ = self.exchange(True, [handshake])
        self.assertEqual(answer.count(b"Connection: close"), 1, answer)

    def test_notTaken(self) -> None:
        """Escaped or non-ASCII paths, and a site keeping an access log, go twisted.web's way."""
        handshake = bayeux(
            {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}
        )
        for stream in [post(PUSH + b"/h%61ndshake", handshake), post(PUSH + b"/\xc3\xa9", handshake)]:
            laned = self.laned
            self.assertSame(stream, splits=False)
            self.assertEqual(self.laned, laned)
        self.site.accessLog = True
        self.assertIsNone(self.site.pushLane)
        laned = self.laned
        self.assertSame(post(PUSH, handshake), splits=False)
        self.assertEqual(self.laned, laned)

    def test_failing(self) -> None:
        """
        The router failing now, and failing a held connect later: a Bayeux 500 on both
        paths, logged, and the connection serves the next request.
        """
        router = self.server.router
        processNow = router.processNow
        calls: list[Any] = []

        def failing(messages: Any, context: Any) -> Any:
            calls.append(messages)
            if len(calls) % 2:
                raise RuntimeError("boom")
            return processNow(messages, context)

        self.patch(router, "processNow", failing)
        handshake = post(
            PUSH,
            bayeux(
                {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}
            ),
        )
        self.assertLaned(handshake + handshake)
        reply, closed = self.exchange(True, [handshake + handshake])
        self.assertFalse(closed)
        first, second = reply.split(b"HTTP/1.1 ")[1:]
        self.assertTrue(first.startswith(b"500 Internal Server Error\r\n"), first)
        self.assertIn(b'"error":"500::Internal server error"', first)
        self.assertTrue(second.startswith(b"200 OK\r\n"), second)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)

    async def test_failingLater(self) -> None:
        """An answer that comes later and fails: the same Bayeux 500 on both paths."""
        router = self.server.router
        processNow = router.processNow

        def later(messages: Any, context: Any) -> Any:
            def fail(_: Any) -> Any:
                raise RuntimeError("later")

            return task.deferLater(reactor, 0.01, lambda: None).addCallback(fail)

        handshake = post(
            PUSH,
            bayeux(
                {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}
            ),
        )
        self.patch(router, "processNow", later)
        answers = []
        for leanPath in (False, True):
            self.site.serveSimple = lean.serve if leanPath else None
            connection = _Connection(self.site)
            laned = self.laned
            connection.feed(handshake + handshake)
            self.assertEqual(self.laned, laned + leanPath)
            await task.deferLater(reactor, 0.1, lambda: None)
            answers.append(connection.close())
        self.patch(router, "processNow", processNow)
        self.assertEqual(answers[1], answers[0])
        self.assertEqual(answers[0][0].count(b"HTTP/1.1 500 Internal Server Error"), 2, answers[0])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 4)

    async def test_heldThroughTheLane(self) -> None:
        """
        A held connect taken by the lane: answered by the request made for it when a
        message comes, and let go when its connection closes before one does.
        """
        cid = self.clientId().decode()
        subscribe = {"channel": "/meta/subscribe", "clientId": cid, "subscription": f"/{APP}/public/held2"}
        connect = {"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling"}
        router = self.server.router
        connection = _Connection(self.site)
        connection.feed(post(PUSH, bayeux(subscribe)), post(PUSH, bayeux(connect)))
        held = router.heldConnects()
        laned = self.laned
        connection.feed(post(PUSH, bayeux(connect)))
        self.assertEqual((self.laned, router.heldConnects()), (laned + 1, held + 1))
        publisher = _Connection(self.site)
        publisher.feed(post(f"/channel/{APP}/public/held2".encode(), b'{"n":2}', b"Authorization: " + BASIC))
        publisher.close()
        await task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(router.heldConnects(), held)
        self.assertIn(b'"data":{"n":2}', connection.transport.value())
        connection.feed(post(PUSH, bayeux(connect)))
        self.assertEqual(router.heldConnects(), held + 1)
        connection.close()
        self.assertEqual(router.heldConnects(), held)


class LeanOriginTests(DifferentialCase):
    """The Bayeux requests of origins ``--allowed-origins`` refuses, answered alike on both paths."""

    serverArgs = ("--allowed-origins", "http://good.test")

    def test_refused(self) -> None:
        """
        Long-polling posts from an origin not listed (``null`` included): the same 403 on
        both paths, split anywhere, and nothing of them processed by the router.
        """
        processed = []
        router = self.server.router
        processNow = router.processNow

        def counted(messages: Any, context: Any) -> Any:
            processed.append(messages)
            return processNow(messages, context)

        self.patch(router, "processNow", counted)
        handshake = bayeux(
            {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}
        )
        publish = bayeux({"channel": f"/{APP}/public/a", "data": {"x": 1}, "ext": {"auth": {"key": KEY}}})
        for stream in [
            post(PUSH, b"message=" + publish, b"Origin: http://evil.test", contentType=b"text/plain"),
            post(
                PUSH,
                b"message=" + publish,
                b"Origin: http://evil.test",
                contentType=b"application/x-www-form-urlencoded",
            ),
            post(PUSH, handshake, b"Origin: null"),
            post(PUSH + b"/handshake", handshake, b"Origin: http://good.test.evil.test"),
            post(PUSH, b"[{", b"Origin: http://evil.test"),
            post(PUSH, handshake, b"Origin: http://evil.test", b"Connection: close"),
        ]:
            self.assertGreater(self.assertSame(stream, splits=len(stream) < 400), 0)
            self.assertEqual(self.exchange(True, [stream])[0].split(b"\r\n")[0], b"HTTP/1.1 403 Forbidden")
        self.assertEqual(processed, [])

    def test_admitted(self) -> None:
        """The listed origin, none, and the server's own (its ``Host``): served alike on both paths."""
        handshake = bayeux(
            {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}
        )
        for stream in [
            post(PUSH, handshake, b"Origin: http://good.test"),
            post(PUSH, handshake),
            post(PUSH, handshake, b"Origin: http://127.0.0.1"),
        ]:
            self.assertSame(stream)
            self.assertEqual(self.exchange(True, [stream])[0].split(b"\r\n")[0], b"HTTP/1.1 200 OK")


class HeadBlockTests(TestCase):
    """The header lines of a head, read once per distinct block (``lean._BLOCKS``)."""

    def setUp(self) -> None:
        self.patch(lean, "_BLOCKS", {})
        self.site = PandapushSite(Resource(), 1024)

    def channel(self) -> Any:
        peer = IPv4Address("TCP", "127.0.0.1", 40001)
        channel = self.site.buildProtocol(peer)
        channel.makeConnection(StringTransport(peerAddress=peer))
        self.addCleanup(channel.connectionLost, Failure(ConnectionDone()))
        return channel

    def test_ownHeaders(self) -> None:
        """Requests of one block each get headers of their own, equal to what the lines say."""
        head = post(PUSH, b"[]", b"X-Two: a", b"X-Two: b")
        channel = self.channel()
        first, end = parsed(channel, head)
        self.assertEqual(end, len(head))
        first.requestHeaders.addRawHeader(b"X-Two", b"c")
        first.requestHeaders.setRawHeaders(b"Host", [b"elsewhere"])
        second, _ = parsed(channel, head)
        self.assertEqual(len(lean._BLOCKS), 1)
        self.assertEqual(
            list(second.requestHeaders.getAllRawHeaders()),
            [
                (b"Host", [b"127.0.0.1"]),
                (b"Content-Type", [b"application/json"]),
                (b"Content-Length", [b"2"]),
                (b"X-Two", [b"a", b"b"]),
            ],
        )
        self.assertEqual(second.content.getvalue(), b"[]")  # type: ignore[union-attr]

    def test_contextHeaders(self) -> None:
        """
        A MessageContext's headers for requests of one block are made once, shared and
        read-only, and are what contextFor makes from a request's own headers: names
        lower-cased, each first value.
        """
        from pandapush.transports.http import contextFor

        head = post(PUSH, b"[]", b"X-Two: a", b"X-Two: b", b"Origin: https://Good.example")
        channel = self.channel()
        first, _ = parsed(channel, head)
        second, _ = parsed(channel, head)
        shared = contextFor(first, "long-polling").headers
        self.assertIs(contextFor(second, "long-polling").headers, shared)
        second.contextHeaders = None
        made = contextFor(second, "long-polling").headers
        self.assertEqual(dict(shared), made)
        self.assertEqual(made["x-two"], "a")
        self.assertEqual(made["origin"], "https://Good.example")
        with self.assertRaises(TypeError):
            shared["origin"] = "https://evil.example"  # type: ignore[index]

    def test_refusedAgain(self) -> None:
        """A block twisted.web must take is refused from the cache as when first read."""
        for head in [
            b"POST /push HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /push HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            b"POST /push HTTP/1.1\r\nBad Name: a\r\nContent-Length: 2\r\n\r\n[]",
        ]:
            for _ in range(2):
                self.assertIsNone(lean._parse(self.channel(), head, 0))

    def test_limitsPerChannel(self) -> None:
        """A kept block is held to each channel's own header count and the site's body limit."""
        head = post(PUSH, b"[]", *[b"X-%d: 1" % i for i in range(5)])
        self.assertIsNotNone(lean._parse(self.channel(), head, 0))
        strict = self.channel()
        strict.maxHeaders = 7
        self.assertIsNone(lean._parse(strict, head, 0))
        self.site.maxBodySize = 1
        self.assertIsNone(lean._parse(self.channel(), head, 0))

    def test_bounded(self) -> None:
        """At most ``_BLOCKS_KEPT`` blocks are kept, none longer than ``_BLOCK_KEPT``."""
        self.patch(lean, "_BLOCKS_KEPT", 3)
        long = b"X-Long: " + b"a" * lean._BLOCK_KEPT
        self.assertIsNotNone(lean._parse(self.channel(), post(PUSH, b"[]", long), 0))
        self.assertEqual(lean._BLOCKS, {})
        for i in range(5):
            self.assertIsNotNone(lean._parse(self.channel(), post(PUSH, b"[]", b"X-N: %d" % i), 0))
        self.assertEqual(len(lean._BLOCKS), 3)


class LeanRequestTests(TestCase):
    def test_hostOnDemand(self) -> None:
        """
        A lean request's ``getHost()`` is its connection's local address, looked up when
        something asks (twisted.web's Request looks it up for every request).
        """
        from twisted.web.http_headers import Headers

        from pandapush.web.site import makeSite

        local = IPv4Address("TCP", "10.0.0.1", 3000)
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        channel = makeSite(Resource(), maxBodySize=1024).buildProtocol(peer)
        channel.makeConnection(StringTransport(hostAddress=local, peerAddress=peer))
        self.addCleanup(channel.connectionLost, Failure(ConnectionDone()))
        asked: list[Any] = []
        getHost = channel.getHost

        def counted() -> Any:
            asked.append(1)
            return getHost()

        channel.getHost = counted  # type: ignore[method-assign]
        request = lean.LeanRequest(channel, b"POST", b"/push", Headers(), b"", peer)
        self.assertEqual(asked, [])
        self.assertEqual(request.getHost(), local)
        self.assertEqual(request.getHost(), local)
        self.assertEqual(asked, [1])
        request.host = IPv4Address("TCP", "10.0.0.2", 80)
        self.assertEqual(request.getHost(), IPv4Address("TCP", "10.0.0.2", 80))
