"""Per-application allowed origins: the cache, the extension, and a whole server over HTTP and websocket."""

from __future__ import annotations

import json
from typing import Any

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from pandapush.auth.keycache import KeyCache
from pandapush.auth.origins import AppOrigins, OriginExtension
from pandapush.bayeux.context import MessageContext
from pandapush.config import Configuration, ConfigurationError
from pandapush.interfaces import IExtension
from pandapush.storage.memory import MemoryStorage
from pandapush.transports.http import OriginPolicy
from tests.support.bayeux import HANDSHAKE, WSClient
from tests.support.inprocess import APP, AUTH, InProcessServer, channel
from tests.support.rawclient import connectRaw
from tests.support.waiting import eventually
from tests.test_handshake import head, plus

GOOD = "https://good.example"
EVIL = "https://evil.example"


class _CountingStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.hold: Deferred[Any] | None = None
        self.fail = False

    def getApplication(self, applicationId: str) -> Deferred[Any]:
        self.reads += 1
        if self.fail:
            return defer.fail(RuntimeError("database down"))
        if self.hold is not None:
            held, self.hold = self.hold, None
            return held.addCallback(lambda _: self._apps.get(applicationId))
        return super().getApplication(applicationId)


class AppOriginsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.storage = _CountingStorage()
        self.keys = KeyCache(self.storage, self.clock)
        self.origins = AppOrigins(self.storage, self.clock, self.keys, ttl=60)
        self.app = self.successResultOf(self.storage.createApplication("app", "alice"))
        self.successResultOf(self.storage.updateApplication(self.app.id, allowedOrigins=[GOOD]))

    def test_cachedForTTL(self) -> None:
        """One read per TTL; unknown applications and ones without a list are None."""
        self.assertEqual(self.origins.peek(self.app.id), (False, None))
        self.assertEqual(self.successResultOf(self.origins.get(self.app.id)), frozenset([GOOD]))
        self.assertEqual(self.origins.peek(self.app.id), (True, frozenset([GOOD])))
        self.successResultOf(self.origins.get(self.app.id))
        self.assertEqual(self.storage.reads, 1)
        self.clock.advance(61)
        self.assertEqual(self.origins.peek(self.app.id), (False, None))
        self.assertIsNone(self.successResultOf(self.origins.get("nosuchapp")))

    def test_invalidatedWithTheKeyCache(self) -> None:
        """invalidateApp (local, or from another node) and clear() forget the cached lists."""
        self.successResultOf(self.origins.get(self.app.id))
        self.successResultOf(self.storage.updateApplication(self.app.id, allowedOrigins=[]))
        self.keys.invalidateApp(self.app.id, propagate=False)
        self.assertIsNone(self.successResultOf(self.origins.get(self.app.id)))
        self.keys.clear()
        self.assertEqual(self.origins.peek(self.app.id), (False, None))

    def test_storageDown(self) -> None:
        """While the storage fails, a list read before is used (re-asked every 5 s); others go unchecked."""
        self.successResultOf(self.origins.get(self.app.id))
        self.clock.advance(61)
        self.storage.fail = True
        self.assertEqual(self.successResultOf(self.origins.get(self.app.id)), frozenset([GOOD]))
        self.assertEqual(self.origins.peek(self.app.id), (True, frozenset([GOOD])))
        self.assertIsNone(self.successResultOf(self.origins.get("neverread")))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1, "an outage is logged once")
        self.clock.advance(6)
        self.storage.fail = False
        self.successResultOf(self.storage.updateApplication(self.app.id, allowedOrigins=[EVIL]))
        self.assertEqual(self.successResultOf(self.origins.get(self.app.id)), frozenset([EVIL]))

    def test_loadRacingAnInvalidation(self) -> None:
        """A read that started before an invalidation answers its caller but is not cached."""
        self.storage.hold = Deferred()
        held = self.storage.hold
        pending = self.origins.get(self.app.id)
        self.keys.invalidateApp(self.app.id)
        held.callback(None)
        self.successResultOf(pending)
        self.assertEqual(self.origins.peek(self.app.id), (False, None))


class OriginExtensionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.storage = MemoryStorage()
        app = self.successResultOf(self.storage.createApplication("app", "alice"))
        self.successResultOf(self.storage.updateApplication(app.id, allowedOrigins=[GOOD]))
        other = self.successResultOf(self.storage.createApplication("other", "alice"))
        self.appId, self.otherId = app.id, other.id
        self.extension = OriginExtension(AppOrigins(self.storage, self.clock))

    def check(self, message: dict[str, Any], origin: str | None, transport: str = "websocket") -> Any:
        headers = {"origin": origin} if origin is not None else {}
        result = self.extension.incoming(message, MessageContext(transport, headers))
        return self.successResultOf(result) if isinstance(result, Deferred) else result

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IExtension, self.extension))

    def test_subscribe(self) -> None:
        """A subscribe is refused when any of its channels' applications refuses the origin."""
        ok = f"/{self.appId}/private/x"
        message = self.check({"channel": "/meta/subscribe", "subscription": ok}, GOOD)
        self.assertNotIn("error", message)
        message = self.check(
            {"channel": "/meta/subscribe", "subscription": [f"/{self.otherId}/public/y", ok]}, EVIL
        )
        self.assertEqual(message["error"], f"403:{ok}:Origin not allowed")

    def test_publish(self) -> None:
        """Publishes are checked too (cached now: synchronously); case and a trailing slash do not matter."""
        channelName = f"/{self.appId}/public/x"
        self.check({"channel": channelName, "data": 1}, GOOD)
        self.assertEqual(
            self.check({"channel": channelName, "data": 1}, "HTTPS://Good.example/"),
            {"channel": channelName, "data": 1},
        )
        self.assertIn("error", self.check({"channel": channelName, "data": 1}, EVIL))

    def test_applicationWithoutList(self) -> None:
        """An application with no list of its own accepts every origin."""
        message = self.check({"channel": f"/{self.otherId}/public/x", "data": 1}, EVIL)
        self.assertNotIn("error", message)

    def test_notABrowser(self) -> None:
        """No Origin (a server, a command line): not checked; JSONP without Origin or Referer: refused."""
        channelName = f"/{self.appId}/public/x"
        self.assertNotIn("error", self.check({"channel": channelName, "data": 1}, None, "long-polling"))
        self.assertIn("error", self.check({"channel": channelName, "data": 1}, None, "callback-polling"))

    def test_emptyOriginHeader(self) -> None:
        """An empty Origin header is no origin; one of blanks is an origin, and not a listed one."""
        channelName = f"/{self.appId}/public/x"
        self.assertNotIn("error", self.check({"channel": channelName, "data": 1}, ""))
        self.assertIn("error", self.check({"channel": channelName, "data": 1}, " "))
        self.assertIn("error", self.check({"channel": channelName, "data": 1}, "", "callback-polling"))

    def test_jsonpReferer(self) -> None:
        """Callback-polling's origin is its Referer's."""
        channelName = f"/{self.appId}/public/x"
        for referer, refused in [(GOOD + "/page?x=1", False), (EVIL + "/page", True)]:
            context = MessageContext("callback-polling", {"referer": referer})
            result = self.extension.incoming({"channel": channelName, "data": 1}, context)
            message = self.successResultOf(result) if isinstance(result, Deferred) else result
            self.assertEqual("error" in message, refused, referer)

    def test_leavesOthersAlone(self) -> None:
        """Refused messages, meta messages other than subscribe, and server messages pass untouched."""
        refused = {"channel": f"/{self.appId}/public/x", "data": 1, "error": "401::No auth supplied"}
        self.assertEqual(self.check(dict(refused), EVIL), refused)
        self.assertNotIn("error", self.check({"channel": "/meta/connect"}, EVIL))
        trusted = MessageContext("rest", {"origin": EVIL}, trusted=True)
        message = {"channel": f"/{self.appId}/public/x", "data": 1}
        self.assertNotIn("error", self.extension.incoming(message, trusted))


async def setOrigins(server: InProcessServer, origins: Any) -> tuple[int, Any]:
    """Set the application's ``allowed_origins`` through the admin API: the status and the answer."""
    response = await treq.post(
        f"{server.url}/admin/api/application/{APP}",
        data=json.dumps({"allowed_origins": origins}).encode(),
        headers=Headers({"Content-Type": ["application/json"]}),
        auth=("admin", "sesame"),
        persistent=False,
    )
    return response.code, json.loads(await response.content())


class InProcessOriginTests(TestCase):
    """A whole server: set the list over the admin API, then browsers of either origin."""

    async def setUp(self) -> None:  # type: ignore[override]
        self.server = InProcessServer(
            environ={"AUTH_METHOD": "basic", "ADMIN_USERNAME": "admin", "ADMIN_PASSWORD": "sesame"}
        )
        await self.server.start()
        self.addCleanup(self.server.stop)

    async def setOrigins(self, origins: Any) -> Any:
        return await setOrigins(self.server, origins)

    async def websocket(self, origin: str | None) -> WSClient:
        client = WSClient(self.server.url, origin=origin)
        await client.start()
        self.addCleanup(client.close)
        return client

    async def test_adminAPI(self) -> None:
        """The list is set, normalised and shown by the admin API; bad origins are a 400 saying which."""
        code, body = await self.setOrigins([GOOD + "/", "http://LOCALHOST:8080"])
        self.assertEqual(code, 200)
        response = await treq.get(
            f"{self.server.url}/admin/api/application/{APP}", auth=("admin", "sesame"), persistent=False
        )
        shown = json.loads(await response.content())
        self.assertEqual(shown["allowed_origins"], ["http://localhost:8080", GOOD])
        code, body = await self.setOrigins(["good.example"])
        self.assertEqual(code, 400)
        self.assertIn("good.example", body["message"])
        code, body = await self.setOrigins("https://x.example")
        self.assertEqual(code, 400)

    async def test_websocket(self) -> None:
        """Over websocket: another origin's subscribe and publish are refused at once after the change."""
        good = await self.websocket(GOOD)
        evil = await self.websocket(EVIL)
        private = channel("room", "private")
        # Cached as "no list" first, so the change below must reach the cache.
        self.assertTrue(
            (await evil.call({"channel": "/meta/subscribe", "subscription": private, "ext": {"auth": AUTH}}))[
                "successful"
            ]
        )
        self.assertEqual((await self.setOrigins([GOOD]))[0], 200)
        reply = await evil.call(
            {"channel": "/meta/subscribe", "subscription": channel("other"), "ext": {"auth": AUTH}}
        )
        self.assertEqual(
            (reply["successful"], reply["error"]), (False, f"403:{channel('other')}:Origin not allowed")
        )
        reply = await evil.call({"channel": private, "data": {"n": 1}, "ext": {"auth": AUTH}})
        self.assertEqual(reply["error"], f"403:{private}:Origin not allowed")
        reply = await good.call(
            {"channel": "/meta/subscribe", "subscription": private, "ext": {"auth": AUTH}}
        )
        self.assertTrue(reply["successful"])
        reply = await good.call({"channel": private, "data": {"n": 2}, "ext": {"auth": AUTH}})
        self.assertTrue(reply["successful"])
        # A client with no Origin (a server) is not a browser: not checked.
        server = await self.websocket(None)
        reply = await server.call({"channel": private, "data": {"n": 3}, "ext": {"auth": AUTH}})
        self.assertTrue(reply["successful"])

    async def test_longPolling(self) -> None:
        """Over cross-origin long-polling, the Origin header of the request decides."""
        await self.setOrigins([GOOD])

        async def post(message: dict[str, Any], origin: str) -> Any:
            response = await treq.post(
                self.server.url + "/push",
                data=json.dumps([message]).encode(),
                headers=Headers({"Content-Type": ["application/json"], "Origin": [origin]}),
                persistent=False,
            )
            return json.loads(await response.content())[0]

        handshake = await post(HANDSHAKE, EVIL)
        clientId = handshake["clientId"]
        subscribe = {"channel": "/meta/subscribe", "clientId": clientId, "subscription": channel("x")}
        self.assertEqual((await post(subscribe, EVIL))["error"], f"403:{channel('x')}:Origin not allowed")
        self.assertTrue((await post(subscribe, GOOD))["successful"])


class CrossNodeOriginTests(TestCase):
    """Two nodes' origin caches on one Redis: a change made through one is forgotten by the other."""

    async def test_changeReachesOtherNode(self) -> None:
        import uuid

        from twisted.internet import reactor

        from pandapush.auth.keysync import KeySync
        from tests.support.redis import redisReachable

        if not redisReachable():
            raise SkipTest("Redis is not running on 127.0.0.1:6379")
        namespace = f"pp-test-{uuid.uuid4().hex}"
        storage = MemoryStorage()
        app = await storage.createApplication("app", "alice")
        await storage.updateApplication(app.id, allowedOrigins=[GOOD])
        caches = []
        for _ in range(2):
            keys = KeyCache(storage, reactor)
            origins = AppOrigins(storage, reactor, keys)
            sync = KeySync(reactor, keys, "127.0.0.1:6379", namespace)
            sync.startService()
            self.addCleanup(sync.stopService)
            await sync.subscribed
            caches.append((keys, origins))
        for _, origins in caches:
            self.assertEqual(await origins.get(app.id), frozenset([GOOD]))
        # What the admin API does on node 0 after changing the list.
        await storage.updateApplication(app.id, allowedOrigins=[EVIL])
        caches[0][0].invalidateApp(app.id)
        other = caches[1][1]
        self.assertTrue(await eventually(lambda: not other.peek(app.id)[0], timeout=2))
        self.assertEqual(await other.get(app.id), frozenset([EVIL]))


class ServerListTests(SynchronousTestCase):
    """
    ``--allowed-origins`` is kept as an application's list is: browsers send an origin's
    scheme and host in lower case and leave a default port out, so a list written
    otherwise matched nothing, and the refusals it made were silent.
    """

    def test_normalised(self) -> None:
        """Case, a trailing slash and a default port are taken off; duplicates go."""
        config = Configuration.fromOptions(
            {"allowed-origins": "HTTPS://Good.Example:443/, null,https://good.example, http://x.test:8080"},
            {},
        )
        self.assertEqual(config.allowedOrigins, ("http://x.test:8080", GOOD, "null"))

    def test_notAnOrigin(self) -> None:
        """Anything but scheme://host[:port] or null is refused at start, naming the option."""
        for bad in ("good.example", "https://good.example/path", "https://good.example?x", "*"):
            with self.assertRaises(ConfigurationError) as raised:
                Configuration.fromOptions({"allowed-origins": bad}, {})
            self.assertIn("--allowed-origins", str(raised.exception), bad)

    def test_policyIgnoresCase(self) -> None:
        """The policy compares without regard to case, on its list's side and the Origin's."""
        policy = OriginPolicy(["HTTPS://Good.Example/", "null"])
        for origin in (GOOD, "https://GOOD.example", "https://good.example/", "null", "NULL"):
            self.assertTrue(policy.allows(origin), origin)
        for origin in (EVIL, "https://good.example.evil", "http://good.example", ""):
            self.assertFalse(policy.allows(origin), origin)
        self.assertTrue(OriginPolicy().allows(EVIL))


class NullOriginTests(TestCase):
    """
    ``Origin: null`` (sandboxed iframes, file:// pages) over real sockets: an origin like
    any other, allowed with no ``--allowed-origins``, and with a list (the server's or an
    application's) only if the list names ``null``.
    """

    #: The status of the last :meth:`cors` request.
    code = 0

    async def server(self, *args: str) -> InProcessServer:
        environ = {"AUTH_METHOD": "basic", "ADMIN_USERNAME": "admin", "ADMIN_PASSWORD": "sesame"}
        return await InProcessServer.started(self, *args, environ=environ)

    async def opening(self, server: InProcessServer, origin: bytes) -> bytes:
        """The status line the server answers a websocket opening from ``origin`` with."""
        assert server.port is not None
        client = await connectRaw(server.port.getHost().port)  # type: ignore[attr-defined]
        self.addCleanup(client.close)
        client.send(head(plus(b"Origin: " + origin)))
        await eventually(lambda: b"\r\n" in client.received)
        return client.received.split(b"\r\n")[0]

    async def cors(self, server: InProcessServer, origin: str, method: str = "POST") -> Headers:
        """The headers of a long-polling POST (or a preflight) from ``origin`` (its status: ``code``)."""
        response = await treq.request(
            method,
            server.push,
            data=json.dumps([HANDSHAKE]).encode() if method == "POST" else None,
            headers=Headers(
                {
                    "Content-Type": ["application/json"],
                    "Origin": [origin],
                    "Access-Control-Request-Method": ["POST"],
                }
                if method == "OPTIONS"
                else {"Content-Type": ["application/json"], "Origin": [origin]}
            ),
            persistent=False,
        )
        await response.content()
        self.code = response.code
        return response.headers  # type: ignore[no-any-return]

    async def test_anyOrigin(self) -> None:
        """
        With no ``--allowed-origins``, null opens a websocket (it got autobahn's 400 before)
        and is echoed in CORS answers, as any origin; an application's list refuses it
        unless it names ``null``.
        """
        server = await self.server()
        self.assertEqual(await self.opening(server, b"null"), b"HTTP/1.1 101 Switching Protocols")
        client = WSClient(server.url, origin="null")
        await client.start()
        self.addCleanup(client.close)
        for method in ("POST", "OPTIONS"):
            headers = await self.cors(server, "null", method)
            self.assertEqual(headers.getRawHeaders("Access-Control-Allow-Origin"), ["null"], method)
        self.assertEqual(headers.getRawHeaders("Access-Control-Allow-Credentials"), ["true"])

        subscribe = {"channel": "/meta/subscribe", "subscription": channel("room"), "ext": {"auth": AUTH}}
        self.assertEqual((await setOrigins(server, [GOOD]))[0], 200)
        reply = await client.call(subscribe)
        self.assertEqual(reply.get("error"), f"403:{channel('room')}:Origin not allowed")
        self.assertEqual((await setOrigins(server, [GOOD, " NULL "]))[0], 200)
        response = await treq.get(
            f"{server.url}/admin/api/application/{APP}", auth=("admin", "sesame"), persistent=False
        )
        self.assertEqual(json.loads(await response.content())["allowed_origins"], [GOOD, "null"])
        self.assertTrue((await client.call(subscribe))["successful"])

    async def test_listWithoutNull(self) -> None:
        """
        A list without ``null`` refuses it with the same 403 as any origin not listed, a
        websocket opening and a long-polling POST alike; no CORS answer.
        """
        server = await self.server("--allowed-origins", GOOD)
        for origin in (b"null", b"file://", EVIL.encode()):
            self.assertEqual(await self.opening(server, origin), b"HTTP/1.1 403 Origin not allowed", origin)
        for method, code in (("POST", 403), ("OPTIONS", 200)):
            headers = await self.cors(server, "null", method)
            self.assertIsNone(headers.getRawHeaders("Access-Control-Allow-Origin"), method)
            self.assertEqual(self.code, code, method)
        self.assertEqual(await self.opening(server, GOOD.encode()), b"HTTP/1.1 101 Switching Protocols")

    async def test_listAsWritten(self) -> None:
        """
        Over real sockets, a list written with capitals and the default port admits the
        origin a browser sends (websocket and long-polling, echoed as sent), and still
        refuses the others.
        """
        server = await self.server("--allowed-origins", "HTTPS://Good.Example:443")
        self.assertEqual(await self.opening(server, GOOD.encode()), b"HTTP/1.1 101 Switching Protocols")
        headers = await self.cors(server, GOOD)
        self.assertEqual(self.code, 200)
        self.assertEqual(headers.getRawHeaders("Access-Control-Allow-Origin"), [GOOD])
        self.assertEqual(await self.opening(server, EVIL.encode()), b"HTTP/1.1 403 Origin not allowed")
        await self.cors(server, EVIL)
        self.assertEqual(self.code, 403)

    async def test_refusalsCounted(self) -> None:
        """
        Each websocket opening and Bayeux HTTP request refused for its origin counts in
        ``pandapush_limit_refusals_total{limit="origin"}``; a preflight (answered 200
        without CORS headers) and a listed origin do not.
        """
        server = await self.server("--allowed-origins", GOOD)

        async def counted() -> float:
            response = await treq.get(f"{server.url}/metrics", persistent=False)
            text = (await response.content()).decode()
            found = [
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "pandapush_limit_refusals_total" and sample.labels["limit"] == "origin"
            ]
            return found[0] if found else 0.0

        self.assertEqual(await counted(), 0.0)
        self.assertEqual(await self.opening(server, EVIL.encode()), b"HTTP/1.1 403 Origin not allowed")
        await self.cors(server, EVIL)
        self.assertEqual(self.code, 403)
        self.assertEqual(await counted(), 2.0)
        await self.cors(server, EVIL, "OPTIONS")
        await self.cors(server, GOOD)
        self.assertEqual(await self.opening(server, GOOD.encode()), b"HTTP/1.1 101 Switching Protocols")
        self.assertEqual(await counted(), 2.0)

    async def test_listWithNull(self) -> None:
        """A list that names ``null`` lets it open and echoes it; other origins stay out."""
        server = await self.server("--allowed-origins", f"{GOOD},null")
        self.assertEqual(await self.opening(server, b"null"), b"HTTP/1.1 101 Switching Protocols")
        client = WSClient(server.url, origin="null")
        await client.start()
        self.addCleanup(client.close)
        self.assertEqual(
            (await self.cors(server, "null")).getRawHeaders("Access-Control-Allow-Origin"), ["null"]
        )
        self.assertEqual(self.code, 200)
        self.assertEqual(await self.opening(server, EVIL.encode()), b"HTTP/1.1 403 Origin not allowed")
