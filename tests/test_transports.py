"""Each transport's framing, over a real socket to a real in-process server."""

from __future__ import annotations

import gc
import json
import pprint
import sys
from typing import Any

import treq
from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.internet import defer, reactor
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent
from twisted.web.http_headers import Headers

from pandapush.transports import websocket as ws_module
from pandapush.transports.websocket import BayeuxWebSocketProtocol
from tests.support.bayeux import openWebSocket
from tests.support.inprocess import AUTH, InProcessServer, channel

HANDSHAKE = {
    "channel": "/meta/handshake",
    "version": "1.0",
    "supportedConnectionTypes": ["long-polling", "websocket"],
}


class ServerTestCase(TestCase):
    serverArgs: tuple[str, ...] = ("--timeout", "2")

    async def setUp(self) -> None:  # type: ignore[override]
        self.server = InProcessServer(*self.serverArgs)
        await self.server.start()
        self.addCleanup(self.server.stop)
        self.push = self.server.url + "/push"

    async def post(
        self, body: Any, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> tuple[Any, Any]:
        data = raw if raw is not None else json.dumps(body).encode()
        fields = headers or {"Content-Type": "application/json"}
        response = await treq.post(
            self.push, data=data, headers=Headers({k: [v] for k, v in fields.items()}), persistent=False
        )
        content = await response.content()
        return response, content

    async def handshake(self) -> str:
        _, content = await self.post([HANDSHAKE])
        return json.loads(content)[0]["clientId"]  # type: ignore[no-any-return]


class LongPollingTests(ServerTestCase):
    async def test_jsonBody(self) -> None:
        """A JSON POST gets a JSON array with the protocol's headers."""
        response, content = await self.post([{**HANDSHAKE, "id": 0}])
        self.assertEqual(response.code, 200)
        headers = response.headers
        self.assertEqual(headers.getRawHeaders("content-type"), ["application/json; charset=utf-8"])
        self.assertEqual(headers.getRawHeaders("cache-control"), ["no-cache, no-store"])
        self.assertEqual(headers.getRawHeaders("x-content-type-options"), ["nosniff"])
        self.assertIsNone(headers.getRawHeaders("access-control-allow-origin"))
        (reply,) = json.loads(content)
        self.assertEqual(reply["id"], 0)
        self.assertTrue(reply["successful"])

    async def test_formBody(self) -> None:
        """Faye's CORS transport posts text/plain message=...: it works, with CORS headers."""
        body = "message=" + json.dumps([HANDSHAKE])
        response, content = await self.post(
            None,
            headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": "http://other.test"},
            raw=body.encode(),
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("access-control-allow-origin"), ["http://other.test"])
        self.assertEqual(response.headers.getRawHeaders("access-control-allow-credentials"), ["true"])
        self.assertTrue(json.loads(content)[0]["successful"])

    async def test_badBodies(self) -> None:
        """Malformed JSON, a bare value, or no message field: 400 Bad request."""
        for raw, contentType in [
            (b"{not json", "application/json"),
            (b"42", "application/json"),
            (b'"x"', "application/json"),
            (b"", "application/json"),
            (b"foo=bar", "application/x-www-form-urlencoded"),
            (b"message=%7Bbad", "application/x-www-form-urlencoded"),
            (b"\xff\xfe", "application/json"),
        ]:
            response, content = await self.post(None, headers={"Content-Type": contentType}, raw=raw)
            self.assertEqual(response.code, 400, raw)
            self.assertIn(b"Bad request", content)

    async def test_emptyArray(self) -> None:
        response, content = await self.post([])
        self.assertEqual((response.code, content), (200, b"[]"))

    async def test_tooLarge(self) -> None:
        """A body over the limit gets 413 and is not parsed; the server carries on."""
        raw = b"[" + b" " * (1024 * 1024 + 10) + b"]"
        response, _ = await self.post(None, raw=raw)
        self.assertEqual(response.code, 413)
        response, _ = await self.post([HANDSHAKE])
        self.assertEqual(response.code, 200)

    async def test_subPaths(self) -> None:
        """CometD posts to /push/handshake and /push/connect: same endpoint."""
        response = await treq.post(
            self.push + "/handshake",
            data=json.dumps([HANDSHAKE]).encode(),
            headers=Headers({"Content-Type": ["application/json"]}),
            persistent=False,
        )
        self.assertTrue(json.loads(await response.content())[0]["successful"])

    async def test_preflight(self) -> None:
        """OPTIONS answers CORS preflight with Faye's headers, echoing the Origin."""
        response = await treq.request(
            "OPTIONS", self.push, headers=Headers({"Origin": ["http://a.test"]}), persistent=False
        )
        await response.content()
        self.assertEqual(response.code, 200)
        h = response.headers
        self.assertEqual(h.getRawHeaders("access-control-allow-origin"), ["http://a.test"])
        self.assertEqual(h.getRawHeaders("access-control-allow-credentials"), ["true"])
        self.assertEqual(h.getRawHeaders("access-control-allow-methods"), ["POST, GET"])
        self.assertEqual(
            h.getRawHeaders("access-control-allow-headers"),
            ["Accept, Authorization, Content-Type, Pragma, X-Requested-With"],
        )
        self.assertEqual(h.getRawHeaders("access-control-max-age"), ["86400"])

    async def test_heldConnectAnsweredByPublish(self) -> None:
        """A held long-poll connect comes back with the published message after its reply."""
        clientId = await self.handshake()
        await self.post(
            [{"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"}]
        )
        await self.post([{"channel": "/meta/subscribe", "clientId": clientId, "subscription": channel("x")}])
        held = defer.ensureDeferred(
            self.post([{"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"}])
        )
        await self.post([{"channel": channel("x"), "data": {"hello": "world"}, "ext": {"auth": AUTH}}])
        _, content = await held
        replies = json.loads(content)
        self.assertEqual(replies[0]["channel"], "/meta/connect")
        self.assertEqual(replies[1].pop("ext")["position"]["offset"], 1)
        self.assertEqual(replies[1], {"channel": channel("x"), "data": {"hello": "world"}})


class RestrictedOriginTests(ServerTestCase):
    serverArgs = ("--allowed-origins", "http://good.test")

    async def test_otherOriginRefused(self) -> None:
        """
        With allowed origins configured, a Bayeux request from another origin is refused
        with 403 and no CORS headers before anything in it is processed (it was processed
        before, only its answer hidden from the page): the form post any page can send
        without a preflight, a JSON post, ``Origin: null``, JSONP and event-stream GETs
        that carry the Origin. The publish in them reaches no one; the held connect of a
        subscriber gets the next one.
        """
        clientId = await self.handshake()
        connect = [{"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"}]
        await self.post(connect)
        await self.post([{"channel": "/meta/subscribe", "clientId": clientId, "subscription": channel("x")}])
        held = defer.ensureDeferred(self.post(connect))
        refused = json.dumps([{"channel": channel("x"), "data": {"n": 1}, "ext": {"auth": AUTH}}])
        for contentType, origin, raw in [
            ("text/plain;charset=UTF-8", "http://evil.test", b"message=" + refused.encode()),
            ("application/x-www-form-urlencoded", "http://evil.test", b"message=" + refused.encode()),
            ("application/json", "http://evil.test", refused.encode()),
            ("application/json", "null", refused.encode()),
            ("application/json", "http://good.test.evil.test", refused.encode()),
        ]:
            response, content = await self.post(
                None, headers={"Content-Type": contentType, "Origin": origin}, raw=raw
            )
            self.assertEqual((response.code, content), (403, b"Origin not allowed"), (contentType, origin))
            self.assertIsNone(response.headers.getRawHeaders("access-control-allow-origin"))
        for accept in ("*/*", "text/event-stream"):
            response = await treq.get(
                self.push + ("/" + clientId if accept == "text/event-stream" else ""),
                params={"message": refused, "jsonp": "cb"},
                headers=Headers({"Origin": ["http://evil.test"], "Accept": [accept]}),
                persistent=False,
            )
            self.assertEqual((response.code, await response.content()), (403, b"Origin not allowed"), accept)
        self.assertFalse(held.called)
        await self.post([{"channel": channel("x"), "data": {"n": 2}, "ext": {"auth": AUTH}}])
        _, content = await held
        self.assertEqual([r.get("data") for r in json.loads(content)], [None, {"n": 2}])

    async def test_admittedOrigins(self) -> None:
        """
        A listed origin is served with CORS headers; requests without an Origin (servers,
        curl; JSONP's script tags) and from the server's own origin (its ``Host``: the
        pages it serves, such as the console) are served without.
        """
        own = self.server.url
        for origin, cors in [("http://good.test", ["http://good.test"]), (None, None), (own, None)]:
            headers = {"Content-Type": "application/json"}
            if origin is not None:
                headers["Origin"] = origin
            response, content = await self.post([HANDSHAKE], headers=headers)
            self.assertEqual(response.code, 200, origin)
            self.assertTrue(json.loads(content)[0]["successful"])
            self.assertEqual(response.headers.getRawHeaders("access-control-allow-origin"), cors, origin)
        response = await treq.get(self.push, params={"message": json.dumps([HANDSHAKE])}, persistent=False)
        self.assertEqual(response.code, 200)
        self.assertTrue((await response.content()).startswith(b"/**/jsonpcallback(["))


class CallbackPollingTests(ServerTestCase):
    async def get(self, params: dict[str, str]) -> tuple[Any, bytes]:
        response = await treq.get(self.push, params=params, persistent=False)
        return response, await response.content()

    async def test_jsonp(self) -> None:
        """A JSONP GET gets /**/name([...]); as an attachment of type text/javascript."""
        response, content = await self.get({"message": json.dumps([HANDSHAKE]), "jsonp": "cb.fn_1$"})
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/javascript; charset=utf-8"])
        self.assertEqual(
            response.headers.getRawHeaders("content-disposition"), ["attachment; filename=f.txt"]
        )
        self.assertTrue(content.startswith(b"/**/cb.fn_1$(["), content)
        self.assertTrue(content.endswith(b");"))

    async def test_defaultName(self) -> None:
        _, content = await self.get({"message": json.dumps([HANDSHAKE])})
        self.assertTrue(content.startswith(b"/**/jsonpcallback("))

    async def test_badNames(self) -> None:
        """Callback names that are not dotted identifiers are refused with 400."""
        for name in ["alert(1)", "1abc", "a..b", "a b", "a;b", "a.", "</script>"]:
            response, _ = await self.get({"message": json.dumps([HANDSHAKE]), "jsonp": name})
            self.assertEqual(response.code, 400, name)

    async def test_lineSeparatorsEscaped(self) -> None:
        """U+2028 and U+2029 in data are escaped so the script stays valid JavaScript."""
        clientId = await self.handshake()
        await self.post(
            [{"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"}]
        )
        await self.post([{"channel": "/meta/subscribe", "clientId": clientId, "subscription": channel("x")}])
        await self.post([{"channel": channel("x"), "data": "a\u2028b\u2029c", "ext": {"auth": AUTH}}])
        _, content = await self.get(
            {
                "message": json.dumps(
                    [{"channel": "/meta/connect", "clientId": clientId, "connectionType": "callback-polling"}]
                )
            }
        )
        self.assertNotIn("\u2028".encode(), content)
        self.assertIn(b"a\\u2028b\\u2029c", content)

    async def test_badMessage(self) -> None:
        response, _ = await self.get({"message": "{nope"})
        self.assertEqual(response.code, 400)
        response, _ = await self.get({})
        self.assertEqual(response.code, 400)


class NoJsonpTests(ServerTestCase):
    serverArgs = ("--no-jsonp",)

    async def test_refused(self) -> None:
        response = await treq.get(self.push, params={"message": json.dumps([HANDSHAKE])}, persistent=False)
        await response.content()
        self.assertEqual(response.code, 400)


class _StreamCollector(Protocol):
    def __init__(self, wanted: bytes) -> None:
        self.data = b""
        self.wanted = wanted
        self.found: defer.Deferred[bytes] = defer.Deferred()
        self.done: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.wanted in self.data and not self.found.called:
            self.found.callback(self.data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.callback(None)


class EventSourceTests(ServerTestCase):
    async def test_stream(self) -> None:
        """GET /push/<clientId> streams deliveries as data: [json] events after retry: 5000."""
        clientId = await self.handshake()
        await self.post([{"channel": "/meta/subscribe", "clientId": clientId, "subscription": channel("x")}])
        agent = Agent(reactor)
        response = await agent.request(
            b"GET", f"{self.push}/{clientId}".encode(), Headers({b"Accept": [b"text/event-stream"]})
        )
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/event-stream"])
        collector = _StreamCollector(b"data: [")
        response.deliverBody(collector)
        await self.post([{"channel": channel("x"), "data": 1, "ext": {"auth": AUTH}}])
        data = await collector.found
        self.assertTrue(data.startswith(b"retry: 5000\r\n\r\n"), data)
        self.assertIn(b'data: [{"channel":"' + channel("x").encode() + b'","data":1,"ext":{"position":', data)
        # The client's own connects say eventsource and are answered at once.
        _, content = await self.post(
            [{"channel": "/meta/connect", "clientId": clientId, "connectionType": "eventsource"}]
        )
        self.assertEqual(json.loads(content)[0]["advice"]["timeout"], 0)
        await self.post([{"channel": "/meta/disconnect", "clientId": clientId}])
        await collector.done

    async def test_unknownClient(self) -> None:
        response = await treq.get(
            self.push + "/nope", headers=Headers({"Accept": ["text/event-stream"]}), persistent=False
        )
        await response.content()
        self.assertEqual(response.code, 400)


class BayeuxWS(WebSocketClientProtocol):
    transport: Any  # TCP: tests abort it and pause its reading

    def onOpen(self) -> None:
        self.frames: list[Any] = []
        self.waiters: list[tuple[int, defer.Deferred[list[Any]]]] = []
        self.closed: defer.Deferred[tuple[bool, int | None]] = defer.Deferred()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.frames.append(json.loads(payload))
        for n, d in list(self.waiters):
            if len(self.frames) >= n:
                self.waiters.remove((n, d))
                d.callback(self.frames)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if hasattr(self, "closed") and not self.closed.called:
            self.closed.callback((wasClean, code))

    def send(self, message: Any) -> None:
        self.sendMessage(json.dumps(message).encode())

    def frameCount(self, n: int) -> defer.Deferred[list[Any]]:
        d: defer.Deferred[list[Any]] = defer.Deferred()
        if len(self.frames) >= n:
            d.callback(self.frames)
        else:
            self.waiters.append((n, d))
        return d


class WebSocketCase(ServerTestCase):
    async def open(self, path: str = "/push") -> BayeuxWS:
        ws = await openWebSocket(self.server.url.replace("http", "ws", 1) + path, BayeuxWS)

        async def close() -> None:
            if not ws.closed.called:
                ws.transport.loseConnection()
                await ws.closed
            # Let the server see the close too before it is stopped, or its drain
            # would start a close handshake on a dying socket.
            for _ in range(100):
                if not self.server.router.openSockets():
                    break
                await deferLater(reactor, 0.01, lambda: None)

        self.addCleanup(close)
        return ws


class WebSocketTests(WebSocketCase):
    async def test_roundTrip(self) -> None:
        """Handshake, connect, subscribe, publish, receive: replies are arrays, deliveries pushed."""
        ws = await self.open()
        ws.send(HANDSHAKE)
        frames = await ws.frameCount(1)
        clientId = frames[0][0]["clientId"]
        ws.send(
            [
                {"channel": "/meta/connect", "clientId": clientId, "connectionType": "websocket"},
                {"channel": "/meta/subscribe", "clientId": clientId, "subscription": channel("x/*")},
            ]
        )
        frames = await ws.frameCount(3)
        self.assertEqual(
            sorted(m["channel"] for f in frames[1:3] for m in f), ["/meta/connect", "/meta/subscribe"]
        )
        ws.send(
            {
                "channel": channel("x/y"),
                "data": {"n": 1},
                "clientId": clientId,
                "id": "p",
                "ext": {"auth": AUTH},
            }
        )
        frames = await ws.frameCount(5)
        received = [m for f in frames for m in f]
        for m in received:
            if m.get("data") == {"n": 1}:
                self.assertEqual(m.pop("ext")["position"]["offset"], 1)
        self.assertIn({"channel": channel("x/y"), "data": {"n": 1}, "id": "p"}, received)
        self.assertIn(
            {"id": "p", "clientId": clientId, "channel": channel("x/y"), "successful": True}, received
        )

    async def test_closeEndsClient(self) -> None:
        """A websocket closed without /meta/disconnect ends its client at once."""
        ws = await self.open()
        ws.send(HANDSHAKE)
        clientId = (await ws.frameCount(1))[0][0]["clientId"]
        ws.send({"channel": "/meta/connect", "clientId": clientId, "connectionType": "websocket"})
        await ws.frameCount(2)
        self.assertTrue(self.server.engine.hasClient(clientId))
        ws.transport.abortConnection()
        await ws.closed
        await defer.succeed(None)
        for _ in range(10):
            if not self.server.engine.hasClient(clientId):
                break
            d: defer.Deferred[None] = defer.Deferred()
            reactor.callLater(0.05, d.callback, None)
            await d
        self.assertFalse(self.server.engine.hasClient(clientId))

    async def test_disconnectCloses(self) -> None:
        """/meta/disconnect is answered, then the socket is closed with 1000."""
        ws = await self.open()
        ws.send(HANDSHAKE)
        clientId = (await ws.frameCount(1))[0][0]["clientId"]
        ws.send({"channel": "/meta/connect", "clientId": clientId, "connectionType": "websocket"})
        await ws.frameCount(2)
        ws.send({"channel": "/meta/disconnect", "clientId": clientId})
        frames = await ws.frameCount(3)
        self.assertTrue(frames[2][0]["successful"])
        _, code = await ws.closed
        self.assertEqual(code, 1000)

    async def test_badFrames(self) -> None:
        """Malformed JSON or a bare value gets a 400 error reply; the socket stays usable."""
        ws = await self.open()
        ws.sendMessage(b"{nope")
        ws.sendMessage(b"17")
        frames = await ws.frameCount(2)
        self.assertEqual(frames[0], [{"successful": False, "error": "400::Bad request"}])
        ws.send(HANDSHAKE)
        frames = await ws.frameCount(3)
        self.assertTrue(frames[2][0]["successful"])

    async def test_subPathUpgrade(self) -> None:
        ws = await self.open("/push/anything")
        ws.send(HANDSHAKE)
        self.assertTrue((await ws.frameCount(1))[0][0]["successful"])


class DrainTests(ServerTestCase):
    timeout = 10

    async def test_stopDrains(self) -> None:
        """Stopping answers held long-polls with handshake advice and closes websockets with 1001."""
        ws = await openWebSocket(self.server.url.replace("http", "ws", 1) + "/push", BayeuxWS)
        ws.send(HANDSHAKE)
        wsClient = (await ws.frameCount(1))[0][0]["clientId"]
        ws.send({"channel": "/meta/connect", "clientId": wsClient, "connectionType": "websocket"})
        await ws.frameCount(2)

        clientId = await self.handshake()
        await self.post(
            [{"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"}]
        )
        held = defer.ensureDeferred(
            self.post([{"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"}])
        )
        await deferLater(reactor, 0.05, lambda: None)
        stopped = defer.ensureDeferred(self.server.stop())
        _, content = await held
        self.assertEqual(json.loads(content)[0]["advice"], {"reconnect": "handshake", "interval": 0})
        _, code = await ws.closed
        self.assertEqual(code, 1001)
        await stopped


class SlowConsumerTests(WebSocketCase):
    async def test_slowWebsocketDropped(self) -> None:
        """A websocket client that stops reading is closed past its backlog bound; readers carry on."""
        self.server.service.bayeux.websocketFactory.maxBacklog = 1024 * 1024
        clients = []
        for _ in range(2):
            ws = await self.open()
            ws.send(HANDSHAKE)
            clientId = (await ws.frameCount(1))[0][0]["clientId"]
            ws.send({"channel": "/meta/connect", "clientId": clientId, "connectionType": "websocket"})
            ws.send({"channel": "/meta/subscribe", "clientId": clientId, "subscription": channel("firehose")})
            await ws.frameCount(3)
            clients.append((ws, clientId))
        (slow, slowId), (_, healthyId) = clients
        slow.transport.pauseProducing()  # stop reading from the socket
        payload = "x" * 4096
        for i in range(3000):
            await self.server.router.publish(channel("firehose"), {"i": i, "pad": payload})
            if i % 5 == 0:
                # Let the reading client (in this same reactor) keep up.
                await deferLater(reactor, 0, lambda: None)
            if not self.server.engine.hasClient(slowId):
                break
        for _ in range(400):
            if not self.server.engine.hasClient(slowId):
                break
            await deferLater(reactor, 0.02, lambda: None)
        self.assertFalse(self.server.engine.hasClient(slowId))
        self.assertTrue(self.server.engine.hasClient(healthyId))
        self.assertGreaterEqual(self.server.service.bayeux.websocketFactory.slowConsumers, 1)
        slow.transport.resumeProducing()


class OversizedFrameTests(WebSocketCase):
    serverArgs = ("--max-body-size", "1000")

    async def test_tooBigClosesWith1009(self) -> None:
        """A websocket message over the size limit closes the socket with 1009, saying why."""
        ws = await self.open()
        ws.send(HANDSHAKE)
        await ws.frameCount(1)
        ws.sendMessage(b"[" + b" " * 2000 + b"]")
        _, code = await ws.closed
        self.assertEqual(code, 1009)

    def test_badFrameWhileClosing(self) -> None:
        """
        A malformed frame read after the server began closing (behind a frame that was
        too big or not UTF-8, in the same read) gets no answer and raises nothing: the
        bad-request reply used to be sent on the closing socket, an unhandled error per
        frame in the log (found by bench/fuzz.py).
        """
        protocol = BayeuxWebSocketProtocol()
        protocol.state = protocol.STATE_CLOSING
        sent: list[bytes] = []
        protocol.sendMessage = lambda payload, *a, **k: sent.append(payload)  # type: ignore[method-assign]
        protocol.onMessage(b"{nope", False)
        self.assertEqual(sent, [])


class IdleSocketStateTests(WebSocketCase):
    """What an open, idle websocket keeps on the server (issue 17: <= 10 KB each at 10,000)."""

    async def serverSocket(self) -> BayeuxWebSocketProtocol:
        ws = await self.open()
        ws.send(HANDSHAKE)
        await ws.frameCount(1)
        sockets = [o for o in gc.get_objects() if isinstance(o, BayeuxWebSocketProtocol) and o._open]
        self.assertEqual(len(sockets), 1)
        return sockets[0]

    async def test_noHandshakeLeftovers(self) -> None:
        """The handshake's texts and parsed headers are not kept; options are the factory's, not copies."""
        socket = await self.serverSocket()
        state = vars(socket)
        for name in ("http_request_data", "http_response_data", "http_headers", "_wskey", "autoPingInterval"):
            self.assertNotIn(name, state)
        self.assertEqual(socket.autoPingInterval, socket.factory.autoPingInterval)  # type: ignore[attr-defined]
        options = (socket.maxMessagePayloadSize, socket.factory.maxMessagePayloadSize)  # type: ignore[attr-defined]
        self.assertEqual(options[0], options[1])
        # Counters shared by every socket; a dictionary of attributes under 2 KB each.
        self.assertIs(socket.trafficStats, ws_module._TRAFFIC)
        self.assertLessEqual(sys.getsizeof(state), 2048)

    def test_optionsLogStillFormatted(self) -> None:
        """Autobahn's per-connection options log is formatted lazily, and the same when it is."""
        import autobahn.websocket.protocol as protocol

        value = [("autoPingInterval", 25.0, "BayeuxWebSocketFactory")]
        self.assertEqual(f"\n{protocol.pformat(value)}", f"\n{pprint.pformat(value)}")
        self.assertEqual(str(protocol.pformat(value)), pprint.pformat(value))
