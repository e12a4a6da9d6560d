"""
``/client.js`` in a real browser: headless Chromium (Debian's) against a real pandapush.

Each test starts ``python -m twisted pandapush`` as a child process (so a restart is a real
one, and the browser never waits on this process's reactor), opens pages with Playwright
on a thread of its own, and checks what the page observed *and* what it put on the wire.
Screenshots go to ``artifacts/`` (not committed).

The server is started with a development application and key (upstream's ``DEV_*``
variables), so the same tests run before and after tenancy is wired in: channels are
``/<app>/public/...``, publishing from Python uses Bayeux with ``ext.auth`` key+secret,
and pages publish with a token. Tests that need tenancy (auth refusals, presence) skip
when the server does not enforce it.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import treq
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.browser import (
    ARTIFACTS,
    BROWSER_DIR,
    BrowserThread,
    NetworkLog,
    PageServer,
    chromiumAvailable,
    clientFile,
)
from tests.support.process import PandapushProcess
from tests.support.waiting import sleep

APP = "clientjsTestApp00001"
KEY = "PSIDclientjsTestK01"[:4] + "clientjsTestKey1"
SECRET = "clientjs-test-secret-0123456789abcdef"
ENV = {
    "DATABASE": "memory",
    "DEV_APPLICATION_ID": APP,
    "DEV_KEY_ID": KEY,
    "DEV_KEY_SECRET": SECRET,
    "AUTH_METHOD": "none",
}
ROOM = f"/{APP}/public/room"

_unavailable = chromiumAvailable()


def token(channel: str, **claims: Any) -> str:
    """A token as the application's server would mint it (HS256 with the key's secret)."""
    return jwt.encode({"keyId": KEY, "channel": channel, **claims}, SECRET, algorithm="HS256")


async def postBayeux(push: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = await treq.post(push, json=messages, persistent=False, timeout=10)
    return await response.json()  # type: ignore[no-any-return]


async def bayeuxPublish(push: str, channel: str, data: Any) -> None:
    """Publishes as a second, raw Bayeux client (a server would use the REST API)."""
    [hello] = await postBayeux(
        push, [{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}]
    )
    clientId = hello["clientId"]
    auth = {"auth": {"key": KEY, "secret": SECRET}}
    [reply] = await postBayeux(push, [{"channel": channel, "clientId": clientId, "data": data, "ext": auth}])
    assert reply.get("successful"), reply
    await postBayeux(push, [{"channel": "/meta/disconnect", "clientId": clientId}])


_BOUNDED = """([source, arg, ms]) => Promise.race([
  Promise.resolve().then(() => (0, eval)('(' + source + ')')(arg)),
  new Promise((_, reject) => setTimeout(() => reject(new Error(`evaluate timed out after ${ms} ms`)), ms)),
])"""


class Page:
    """A browser page, every call run on the browser thread, awaited from the reactor."""

    def __init__(self, browser: BrowserThread, page: Any, log: NetworkLog) -> None:
        self.browser = browser
        self.page = page
        self.net = log
        self.closed = False

    async def goto(self, url: str) -> None:
        await self.browser.call(self.page.goto, url)

    async def evaluate(self, script: str, arg: Any = None, timeout: float = 20) -> Any:
        """
        Runs the JS function ``script`` with ``arg``; a promise it returns is awaited, for at
        most ``timeout`` seconds (Playwright's own evaluate would wait for ever, and the
        browser thread with it).
        """
        return await self.browser.call(self.page.evaluate, _BOUNDED, [script, arg, timeout * 1000])

    async def waitFor(self, predicate: str, arg: Any = None, timeout: float = 15) -> None:
        """Waits until the JS ``predicate(arg)`` is truthy; fails with the page's log if not."""
        try:
            await self.browser.call(self.page.wait_for_function, predicate, arg=arg, timeout=timeout * 1000)
        except Exception as e:
            events = await self.evaluate("() => window.harness ? harness.events : null")
            raise AssertionError(
                f"timed out waiting for {predicate} ({e});\nevents: {events}\nconsole:"
                f" {self.page.consoleLines}"
            ) from None

    async def idle(self, seconds: float) -> None:
        """Lets the page run (and its network be recorded) for a while."""
        await self.browser.call(self.page.wait_for_timeout, seconds * 1000)

    async def events(self, type: str, client: str | None = None) -> list[dict[str, Any]]:
        return await self.evaluate("([t, c]) => harness.find(t, c === null ? undefined : c)", [type, client])  # type: ignore[no-any-return]

    async def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        await self.browser.call(
            self.page.screenshot, path=str(ARTIFACTS / f"clientjs-{name}.png"), full_page=True
        )

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.browser.call(self.page.context.close)


class BrowserTestCase(TestCase):
    timeout = 180
    serverArgs: tuple[str, ...] = ()

    def setUp(self) -> Any:
        if _unavailable:
            raise SkipTest(_unavailable)
        from twisted.internet import defer

        return defer.Deferred.fromCoroutine(self._setUp())

    async def _setUp(self) -> None:
        self.server = await PandapushProcess.started(self, "--timeout", "5", *self.serverArgs, env=ENV)
        self.browser = BrowserThread()
        await self.browser.start()
        self.addCleanup(self.browser.stop)
        self.pageServer = PageServer()
        self.pageServer.start()
        self.addCleanup(self.pageServer.stop)
        response = await treq.get(self.server.url + "/client.js", persistent=False)
        body = await response.content()
        # Until the server mounts /client.js, the same-origin page gets the file from the browser itself.
        self.serverHasClient = response.code == 200 and b"Pandapush" in body
        self.tenancy: bool | None = None

    async def openPage(self, crossOrigin: bool = False, page: str = "index.html") -> Page:
        """``index.html`` of the server's own origin (answered by the browser) or of the page server."""
        if crossOrigin:
            url = f"{self.pageServer.url}/{page}"
            routes = {}
        else:
            base = self.server.url
            url = f"{base}/__test__/{page}"
            routes = {
                f"{base}/__test__/{name}": BROWSER_DIR / name
                for name in ("index.html", "module.html", "harness.js")
            }
            if not self.serverHasClient:
                routes[f"{base}/client.js"] = clientFile("client.js")
                routes[f"{base}/client.mjs"] = clientFile("client.mjs")
        raw, log = await self.browser.call(self.browser.newPage, routes)
        result = Page(self.browser, raw, log)
        self.addCleanup(result.close)
        await result.goto(url)
        return result

    async def hasTenancy(self) -> bool:
        """Does the server refuse a private subscribe without a token?"""
        if self.tenancy is None:
            push = self.server.push
            [hello] = await postBayeux(
                push,
                [
                    {
                        "channel": "/meta/handshake",
                        "version": "1.0",
                        "supportedConnectionTypes": ["long-polling"],
                    }
                ],
            )
            [reply] = await postBayeux(
                push,
                [
                    {
                        "channel": "/meta/subscribe",
                        "clientId": hello["clientId"],
                        "subscription": f"/{APP}/private/x",
                    }
                ],
            )
            self.tenancy = not reply.get("successful")
        return self.tenancy

    async def rawError(self, channel: str) -> str:
        """The error the server gives a raw Bayeux subscribe to ``channel``."""
        push = self.server.push
        [hello] = await postBayeux(
            push,
            [{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}],
        )
        [reply] = await postBayeux(
            push, [{"channel": "/meta/subscribe", "clientId": hello["clientId"], "subscription": channel}]
        )
        return str(reply.get("error"))

    async def subscribedPage(
        self, crossOrigin: bool = False, disable: tuple[str, ...] = (), channel: str = ROOM, name: str = "a"
    ) -> Page:
        page = await self.openPage(crossOrigin)
        await page.evaluate(
            "([name, url, disable, channel]) => { harness.client(name, url, {retry: 0.2, maxRetry:"
            " 2}, disable);"
            " return harness.subscribe(name, channel); }",
            [name, self.server.push, list(disable), channel],
        )
        await page.waitFor("(n) => harness.count('subscribed', n) >= 1", name)
        return page

    async def assertRoundTrip(self, page: Page, data: Any, channel: str = ROOM, count: int = 1) -> None:
        """A publish from outside the page reaches it (the ``count``-th message)."""
        await bayeuxPublish(self.server.push, channel, data)
        await page.waitFor("(n) => harness.count('message') >= n", count)
        messages = await page.events("message")
        self.assertEqual(messages[count - 1]["data"], data)
        self.assertEqual(messages[count - 1]["channel"], channel)


class TransportTests(BrowserTestCase):
    async def test_websocket(self) -> None:
        """The README's example as written; websocket is chosen; publishes arrive; ids and batching."""
        page = await self.openPage()
        await page.evaluate(
            """(args) => {
              var client = new Pandapush.Client(args.url);
              window.readme = [];
              client.subscribe(args.channel, function (message) { readme.push(message); });
              window.readmeClient = client;
            }""",
            {"url": self.server.push, "channel": ROOM},
        )
        await page.waitFor(
            "() => readmeClient.getState() === 'CONNECTED' && readmeClient.getTransport() === 'websocket'"
        )
        # Let the subscribe be confirmed before publishing.
        await page.waitFor(
            "() => readmeClient._channels.size === 1 &&"
            " [...readmeClient._channels.values()][0].status === 'subscribed'"
        )
        await bayeuxPublish(self.server.push, ROOM, {"text": "hello"})
        await page.waitFor("() => readme.length === 1")
        self.assertEqual(await page.evaluate("() => readme[0]"), {"text": "hello"})

        self.assertEqual(len(page.net.sockets), 1)
        self.assertTrue(page.net.sockets[0].startswith(f"ws://127.0.0.1:{self.server.port}/push"))
        self.assertEqual(page.net.posts(), [], "nothing went over HTTP")
        sent = page.net.sent()
        handshake = [m for m in sent if m["channel"] == "/meta/handshake"]
        self.assertEqual(len(handshake), 1)
        self.assertEqual(handshake[0]["supportedConnectionTypes"], ["websocket", "long-polling"])
        connects = page.net.sentOn("/meta/connect")
        self.assertTrue(connects and all(c["connectionType"] == "websocket" for c in connects))
        ids = [m["id"] for m in sent]
        self.assertEqual(len(ids), len(set(ids)), "message ids are unique")

        # Three subscribes in one tick travel in one frame, as an array.
        await page.evaluate(
            "(app) => { for (const c of ['x', 'y', 'z'])"
            " readmeClient.subscribe(`/${app}/public/${c}`, () => {}); }",
            APP,
        )
        await page.waitFor("() => readmeClient._channels.size === 4")
        await page.idle(0.5)
        frames = [f for f in page.net.sentFrames() if any(m.get("channel") == "/meta/subscribe" for m in f)]
        self.assertEqual([len(f) for f in frames][-1], 3)
        await page.screenshot("websocket")

    async def test_publishFromPage(self) -> None:
        """``publishTo`` with a token reaches subscribers (itself included), thenable resolving."""
        page = await self.subscribedPage()
        result = await page.evaluate(
            "([ch, tok]) => harness.clients.a.publishTo(ch, tok, {from: 'page'}).then(() => 'ok',"
            " (e) => e.message)",
            [ROOM, token(ROOM, pub=True)],
        )
        self.assertEqual(result, "ok")
        await page.waitFor("() => harness.count('message') >= 1")
        self.assertEqual((await page.events("message"))[0]["data"], {"from": "page"})
        refused = await page.evaluate(
            "(ch) => harness.clients.a.publish(ch + '/*', 1).then(() => null, (e) => ({code: e.code,"
            " message: e.message}))",
            ROOM,
        )
        self.assertEqual(refused["code"], 405)

    async def test_longPollingFallback(self) -> None:
        """With websockets disabled: long-polling (JSON POSTs), and no socket is ever opened."""
        page = await self.subscribedPage(disable=("websocket",))
        self.assertEqual(await page.evaluate("() => harness.clients.a.getTransport()"), "long-polling")
        await self.assertRoundTrip(page, {"n": 1})
        await self.assertRoundTrip(page, {"n": 2}, count=2)
        self.assertEqual(page.net.sockets, [])
        posts = page.net.posts()
        self.assertTrue(posts)
        self.assertTrue(all(p["headers"].get("content-type") == "application/json" for p in posts))
        connects = page.net.sentOn("/meta/connect")
        self.assertTrue(all(c["connectionType"] == "long-polling" for c in connects))
        self.assertGreaterEqual(len(connects), 2)
        await page.screenshot("long-polling")

    async def test_websocketUnavailable(self) -> None:
        """A page whose websockets cannot connect falls back to long-polling by itself."""
        page = await self.openPage()
        await page.evaluate(
            "() => { window.WebSocket = class extends WebSocket { constructor(u) {"
            " super('ws://127.0.0.1:9/'); } }; }"
        )
        await page.evaluate(
            "(args) => { harness.client('a', args.url, {websocketTimeout: 2}); return"
            " harness.subscribe('a', args.ch); }",
            {"url": self.server.push, "ch": ROOM},
        )
        await page.waitFor("() => harness.count('subscribed') >= 1")
        self.assertEqual(await page.evaluate("() => harness.clients.a.getTransport()"), "long-polling")
        await self.assertRoundTrip(page, "fallback")

    async def test_crossOriginLongPolling(self) -> None:
        """A page of another origin, websockets disabled: text/plain form posts with credentials."""
        page = await self.subscribedPage(crossOrigin=True, disable=("websocket",))
        self.assertEqual(
            await page.evaluate("() => harness.clients.a.getTransport()"), "cross-origin-long-polling"
        )
        await self.assertRoundTrip(page, {"cross": True})
        posts = page.net.posts()
        self.assertTrue(posts)
        for post in posts:
            self.assertTrue(post["headers"]["content-type"].startswith("text/plain"))
            self.assertTrue(post["body"].startswith("message="))
            self.assertTrue(post["url"].startswith(self.server.push))
        # The answers were readable (fetch with credentials: the server echoed the origin).
        self.assertNotEqual(self.pageServer.url, self.server.url)
        connects = page.net.sentOn("/meta/connect")
        self.assertTrue(all(c["connectionType"] == "cross-origin-long-polling" for c in connects))
        await page.screenshot("cross-origin-long-polling")

    async def test_crossOriginCredentials(self) -> None:
        """Cross-origin long-polling sends the server's cookies (credentials: include) and an Origin."""
        page = await self.openPage(crossOrigin=True)
        await self.browser.call(
            page.page.context.add_cookies,
            [{"name": "session", "value": "s3cret", "domain": "127.0.0.1", "path": "/push"}],
        )
        await page.evaluate(
            "([url, ch]) => { harness.client('a', url, {}, ['websocket']);"
            " return harness.subscribe('a', ch); }",
            [self.server.push, ROOM],
        )
        await page.waitFor("() => harness.count('subscribed') === 1")
        post = page.net.posts()[0]
        headers = await self.browser.call(post["request"].all_headers)
        self.assertEqual(headers.get("origin"), self.pageServer.url)
        self.assertIn("session=s3cret", headers.get("cookie", ""))

    async def test_crossOriginWebsocket(self) -> None:
        page = await self.subscribedPage(crossOrigin=True)
        self.assertEqual(await page.evaluate("() => harness.clients.a.getTransport()"), "websocket")
        await self.assertRoundTrip(page, {"cross": "ws"})

    async def test_esModule(self) -> None:
        """``/client.mjs`` imports as an ES module and gives the same API."""
        page = await self.openPage(page="module.html")
        await page.waitFor("() => window.moduleExports !== undefined")
        self.assertTrue(await page.evaluate("() => moduleExports.Client === moduleExports.Pandapush.Client"))
        await page.evaluate(
            "([url, ch]) => { const c = new moduleExports.Client(url); window.got = [];"
            " window.sub = c.subscribe(ch, (m) => got.push(m)); return window.sub.then(() => true); }",
            [self.server.push, ROOM],
        )
        await bayeuxPublish(self.server.push, ROOM, "from module")
        await page.waitFor("() => got.length === 1")


class ReconnectTests(BrowserTestCase):
    async def _restart(self, disable: tuple[str, ...]) -> Page:
        page = await self.openPage()
        calls = await page.evaluate(
            """([url, ch, tok, disable]) => {
              window.tokenCalls = 0;
              harness.client('a', url, {retry: 0.2, maxRetry: 2}, disable);
              return harness.subscribe('a', ch, () => { tokenCalls += 1; return Promise.resolve(tok); })
                .then(() => tokenCalls);
            }""",
            [self.server.push, ROOM, token(ROOM, sub=True), list(disable)],
        )
        self.assertEqual(calls, 1)
        await self.assertRoundTrip(page, "before")
        firstId = await page.evaluate("() => harness.clients.a.getClientId()")

        await self.server.restart()
        await page.waitFor("() => harness.count('down') >= 1 && harness.count('up') >= 2", timeout=30)
        await page.waitFor(
            "() => tokenCalls >= 2 && harness.clients.a.getState() === 'CONNECTED'", timeout=30
        )
        # The re-subscribe is confirmed once the server knows the channel again.
        await page.waitFor("(ch) => [...harness.clients.a._channels.values()][0].session > 1", ROOM)
        secondId = await page.evaluate("() => harness.clients.a.getClientId()")
        self.assertNotEqual(firstId, secondId)
        await self.assertRoundTrip(page, "after", count=2)
        handshakes = page.net.sentOn("/meta/handshake")
        self.assertLessEqual(len(handshakes), 10, "no handshake storm while the server was away")
        resubscribes = page.net.subscribesTo(ROOM)
        self.assertEqual(len(resubscribes), 2)
        self.assertEqual(resubscribes[-1]["ext"]["auth"]["token"], token(ROOM, sub=True))
        return page

    async def test_restartWebsocket(self) -> None:
        page = await self._restart(())
        self.assertEqual(await page.evaluate("() => harness.clients.a.getTransport()"), "websocket")
        await page.screenshot("restart-websocket")

    async def test_restartLongPolling(self) -> None:
        page = await self._restart(("websocket",))
        self.assertEqual(await page.evaluate("() => harness.clients.a.getTransport()"), "long-polling")
        await page.screenshot("restart-long-polling")

    async def test_refusedHandshakesBackOff(self) -> None:
        """A server refusing every handshake (here: 301, no common transport) is retried ever slower."""
        page = await self.openPage()
        await page.evaluate(
            """(url) => {
              const c = harness.client('a', url, {retry: 0.5, maxRetry: 2});
              window.handshakeErrors = [];
              c.bind('handshake:error', (e) => handshakeErrors.push(e.code));
              c.addExtension({outgoing(message, callback) {
                if (message.channel === '/meta/handshake') message.supportedConnectionTypes = ['iframe'];
                callback(message);
              }});
              c.connect();
            }""",
            self.server.push,
        )
        await page.idle(6)
        errors = await page.evaluate("() => handshakeErrors")
        self.assertTrue(errors and set(errors) == {301}, errors)
        # 0.25-0.5, 0.5-1, 1-2, then 1-2 s apart: 4 to 7 in 6 s; a loop would make thousands.
        self.assertGreaterEqual(len(errors), 3)
        self.assertLessEqual(len(errors), 8)
        self.assertEqual(await page.evaluate("() => harness.clients.a.getState()"), "CONNECTING")

    async def test_serverAwayBacksOff(self) -> None:
        """While the server is down the client retries with growing delays, not in a loop."""
        page = await self.subscribedPage(disable=("websocket",))
        await self.server.stop()
        started = time.monotonic()
        await page.idle(6)
        handshakes = [m for m in page.net.sentOn("/meta/handshake")]
        # retry 0.2 s doubling to maxRetry 2 s: about 6 attempts in 6 s; a loop would make hundreds.
        self.assertLess(
            len(handshakes), 12, f"{len(handshakes)} handshakes in {time.monotonic() - started:.1f}s"
        )
        await self.server.start()
        await page.waitFor(
            "() => harness.clients.a.getState() === 'CONNECTED' && harness.count('up') >= 2", timeout=30
        )


class RefusalTests(BrowserTestCase):
    async def test_forbiddenSubscribeIsNotRetried(self) -> None:
        """A refused subscribe rejects with {code, params, message} and is sent once, ever."""
        page = await self.subscribedPage()
        await page.evaluate("() => harness.subscribe('a', '/meta/foo')")
        await page.waitFor("() => harness.count('subscribe-failed') >= 1")
        [failed] = await page.events("subscribe-failed")
        # Plain Bayeux says 403 Forbidden channel; tenancy answers first, 405 Invalid channel name.
        expected = await self.rawError("/meta/foo")
        self.assertIn(expected, ("403:/meta/foo:Forbidden channel", "405::Invalid channel name"))
        code, params, message = expected.split(":")
        self.assertEqual(
            (failed["code"], failed["params"], failed["message"], failed["isError"]),
            (int(code), params.split(",") if params else [], message, True),
        )
        await page.idle(4)
        self.assertEqual(len(page.net.subscribesTo("/meta/foo")), 1)
        self.assertEqual(len(page.net.sentOn("/meta/handshake")), 1)
        # The refusal hurt nothing else.
        await self.assertRoundTrip(page, "still here")
        await page.screenshot("refused-subscribe")

    async def test_authRefusalIsNotRetried(self) -> None:
        """A bad token: rejected with the contract's text, not retried, not even after a reconnect."""
        if not await self.hasTenancy():
            raise SkipTest("the server does not enforce tenancy yet")
        private = f"/{APP}/private/secrets"
        page = await self.subscribedPage()
        await page.evaluate(
            "(ch) => { window.badCalls = 0; return harness.subscribe('a', ch, () => { badCalls += 1;"
            " return 'not-a-jwt'; }); }",
            private,
        )
        await page.waitFor("() => harness.count('subscribe-failed') >= 1")
        [failed] = await page.events("subscribe-failed")
        self.assertEqual((failed["code"], failed["message"]), (401, "Invalid token"))
        await page.idle(4)
        self.assertEqual(len(page.net.subscribesTo(private)), 1)
        self.assertEqual(await page.evaluate("() => badCalls"), 1)
        # A good token on the same channel works.
        await page.evaluate(
            "([ch, tok]) => harness.subscribe('a', ch, tok)", [private, token(private, sub=True)]
        )
        await page.waitFor("(ch) => harness.find('subscribed').some((e) => e.channel === ch)", private)
        await self.assertRoundTrip(page, "secret", channel=private)
        await page.screenshot("auth-refused")


class TokenExpiryTests(BrowserTestCase):
    """The server ends a subscription when its token expires; the page is told, and may refresh."""

    def shortToken(self, channel: str, seconds: float) -> str:
        # The server accepts a token until exp + 30 s of leeway and ends its subscription
        # then: a token that "expired" 30 - seconds ago lives ``seconds`` more.
        return token(channel, sub=True, exp=int(time.time() + seconds - 30))

    async def test_tokenFunctionRefreshes(self) -> None:
        """A token function: subscription:expired, a subscribe with a fresh token, and messages flow."""
        if not await self.hasTenancy():
            raise SkipTest("the server does not enforce tenancy yet")
        private = f"/{APP}/private/expiring"
        page = await self.subscribedPage()
        # Minted once the page is up: setting it up can take longer than the token lives.
        tokens = [self.shortToken(private, 2), token(private, sub=True, exp=int(time.time() + 3600))]
        await page.evaluate(
            "([ch, toks]) => { window.calls = 0;"
            " return harness.subscribe('a', ch, () => toks[Math.min(calls++, 1)]); }",
            [private, tokens],
        )
        await page.waitFor("(ch) => harness.find('subscribed').some((e) => e.channel === ch)", private)
        await page.waitFor("() => harness.count('expired') >= 1")
        [expired] = await page.events("expired")
        self.assertEqual(
            (expired["channel"], expired["code"], expired["message"]), (private, 401, "Token expired")
        )
        await page.waitFor("() => calls >= 2")
        await page.waitFor("(ch) => harness.find('subscribed').some((e) => e.channel === ch)", private)
        await page.idle(0.5)
        self.assertEqual(len(page.net.subscribesTo(private)), 2)
        await self.assertRoundTrip(page, "after refresh", channel=private)
        self.assertEqual(await page.events("refused-later"), [])

    async def test_fixedTokenEnds(self) -> None:
        """With a fixed token: subscription:expired and subscription:refused; nothing more arrives."""
        if not await self.hasTenancy():
            raise SkipTest("the server does not enforce tenancy yet")
        private = f"/{APP}/private/expiring-fixed"
        page = await self.subscribedPage()
        await page.evaluate(
            "([ch, tok]) => harness.subscribe('a', ch, tok)", [private, self.shortToken(private, 2)]
        )
        await page.waitFor("(ch) => harness.find('subscribed').some((e) => e.channel === ch)", private)
        await page.waitFor("() => harness.count('refused-later') >= 1")
        [refused] = await page.events("refused-later")
        self.assertEqual(
            (refused["channel"], refused["code"], refused["message"]), (private, 401, "Token expired")
        )
        self.assertEqual(len(await page.events("expired")), 1)
        await bayeuxPublish(self.server.push, private, "too late")
        await self.assertRoundTrip(page, "the public room still works")
        self.assertNotIn("too late", [m["data"] for m in await page.events("message")])
        self.assertEqual(len(page.net.subscribesTo(private)), 1)


class PresenceTests(BrowserTestCase):
    async def test_twoJoinOneLeaves(self) -> None:
        if not await self.hasTenancy():
            raise SkipTest("the server does not enforce tenancy yet (presence needs tokens)")
        channel = f"/{APP}/presence/lobby"
        pages = []
        for name in ("alice", "bob"):
            page = await self.openPage()
            tok = token(channel, sub=True, presence={"id": name, "name": name.title()})
            await page.evaluate(
                "([name, url, ch, tok]) => { harness.client(name, url); return"
                " harness.subscribe(name, ch, tok); }",
                [name, self.server.push, channel, tok],
            )
            await page.waitFor("() => harness.count('subscribed') >= 1")
            pages.append(page)
        alice, bob = pages
        # Bob's callback got everyone (upstream's contract); Alice was told Bob joined.
        await bob.waitFor("() => harness.count('message') >= 1")
        [members] = await bob.events("message")
        self.assertEqual(set(members["data"]["subscribe"]), {"alice", "bob"})
        await alice.waitFor("() => harness.count('message') >= 2")
        aliceSaw = [e["data"] for e in await alice.events("message")]
        self.assertEqual(aliceSaw[0], {"subscribe": {"alice": {"id": "alice", "name": "Alice"}}})
        self.assertEqual(aliceSaw[1], {"subscribe": {"bob": {"id": "bob", "name": "Bob"}}})
        # A second subscription to the channel in the same page learns the members at once.
        await alice.evaluate(
            "(ch) => { window.late = []; harness.clients.alice.subscribe(ch, (m) => late.push(m)); }",
            channel,
        )
        await alice.waitFor("() => late.length === 1")
        self.assertEqual(set((await alice.evaluate("() => late[0]"))["subscribe"]), {"alice", "bob"})
        await alice.screenshot("presence-two-joined")
        await bob.close()
        await alice.waitFor("() => harness.count('message') >= 3")
        self.assertEqual((await alice.events("message"))[2]["data"], {"unsubscribe": {"bob": None}})
        await alice.screenshot("presence-one-left")


class ApiTests(BrowserTestCase):
    async def test_unsubscribeAndDisconnect(self) -> None:
        page = await self.subscribedPage()
        await self.assertRoundTrip(page, 1)
        await page.evaluate("(ch) => harness.clients.a.unsubscribe(ch)", ROOM)
        [unsubscribe] = page.net.sentOn("/meta/unsubscribe")
        self.assertEqual(unsubscribe["subscription"], ROOM)
        await bayeuxPublish(self.server.push, ROOM, 2)
        await page.idle(1)
        self.assertEqual(await page.evaluate("() => harness.count('message')"), 1)
        # cancel() of one of two subscriptions keeps the channel for the other.
        await page.evaluate(
            """(ch) => { const c = harness.clients.a; window.one = []; window.two = [];
              const s1 = c.subscribe(ch, (m) => one.push(m)); c.subscribe(ch, (m) => two.push(m));
              return s1.then(() => s1.cancel()); }""",
            ROOM,
        )
        await bayeuxPublish(self.server.push, ROOM, 3)
        await page.waitFor("() => two.length === 1")
        self.assertEqual(await page.evaluate("() => one.length"), 0)
        state = await page.evaluate(
            "() => harness.clients.a.disconnect().then(() => harness.clients.a.getState())"
        )
        self.assertEqual(state, "DISCONNECTED")
        self.assertEqual(len(page.net.sentOn("/meta/disconnect")), 1)
        await page.idle(1)
        connects = len(page.net.sentOn("/meta/connect"))
        await page.idle(2)
        self.assertEqual(len(page.net.sentOn("/meta/connect")), connects, "no connects after disconnect")
        # The client can be used again: a new session.
        await page.evaluate("(ch) => harness.subscribe('a', ch)", ROOM)
        await page.waitFor("() => harness.count('subscribed') === 2")
        await self.assertRoundTrip(page, "again", count=2)

    async def test_extensionsAndHeaders(self) -> None:
        page = await self.openPage()
        await page.evaluate(
            """([url, ch]) => {
              const c = harness.client('a', url, {}, ['websocket']);
              window.incoming = [];
              c.addExtension({
                outgoing(message, callback) {
                  message.ext = Object.assign({}, message.ext, {tag: 'x'});
                  callback(message);
                },
                incoming(message, callback) { incoming.push(message.channel); callback(message); },
              });
              c.setHeader('X-Requested-With', 'pandapush-test');
              return harness.subscribe('a', ch);
            }""",
            [self.server.push, ROOM],
        )
        await page.waitFor("() => harness.count('subscribed') === 1")
        await self.assertRoundTrip(page, "extended")
        self.assertTrue(all(m.get("ext", {}).get("tag") == "x" for m in page.net.sent()))
        incoming = await page.evaluate("() => incoming")
        self.assertIn("/meta/handshake", incoming)
        self.assertIn(ROOM, incoming)
        self.assertTrue(
            all(p["headers"].get("x-requested-with") == "pandapush-test" for p in page.net.posts())
        )

    async def test_tokenFunctionFailure(self) -> None:
        """A token function that throws rejects the subscription; nothing is sent for it."""
        page = await self.subscribedPage()
        await page.evaluate(
            "(ch) => harness.subscribe('a', ch, () => Promise.reject(new Error('no session')))", ROOM + "2"
        )
        await page.waitFor("() => harness.count('subscribe-failed') === 1")
        [failed] = await page.events("subscribe-failed")
        self.assertEqual(failed["code"], 0)
        self.assertIn("no session", failed["message"])
        self.assertEqual(page.net.subscribesTo(ROOM + "2"), [])

    async def test_requestTimeouts(self) -> None:
        """A server that never answers: requests time out and are retried with backoff, not hung."""
        page = await self.openPage()
        # The browser swallows every Bayeux request and never answers it.
        await self.browser.call(page.page.route, f"{self.server.push}**", lambda route: None)
        await page.evaluate(
            """(url) => { harness.client('a', url, {timeout: 1, retry: 0.5, maxRetry: 1}, ['websocket']);
              harness.clients.a.connect(); }""",
            self.server.push,
        )
        await page.idle(5)
        handshakes = len(page.net.sentOn("/meta/handshake"))
        # 1 s timeout then 0.25-1 s backoff: 2 to 5 attempts in 5 s.
        self.assertGreaterEqual(handshakes, 2)
        self.assertLessEqual(handshakes, 5)
        self.assertEqual(await page.evaluate("() => harness.clients.a.getState()"), "CONNECTING")

    async def test_leavingPageEndsLongPollingSession(self) -> None:
        """A long-polling page that goes away says so (a beacon), so presence sees it leave at once."""
        page = await self.subscribedPage(disable=("websocket",))
        clientId = await page.evaluate("() => harness.clients.a.getClientId()")
        await page.goto("about:blank")
        # The server forgot the client well before its 10 s expiry.
        await sleep(1)
        [reply] = await postBayeux(
            self.server.push,
            [{"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"}],
        )
        self.assertEqual(reply.get("error", "").split(":")[0], "401", reply)


class TooLargeTests(BrowserTestCase):
    serverArgs = ("--max-body-size", "65536")

    async def _tooLarge(self, disable: tuple[str, ...]) -> None:
        page = await self.subscribedPage(disable=disable)
        big = f"/{APP}/public/big"
        error = await page.evaluate(
            """([ch, tok]) => harness.clients.a.publishTo(ch, tok, 'x'.repeat(100000))
              .then(() => null, (e) => ({code: e.code, message: e.message}))""",
            [big, token(big, pub=True)],
        )
        if disable:
            # Long-polling: the server answers 413, so the client knows at once.
            self.assertEqual(error["code"], 413, error)
        else:
            # The server drops the socket; browsers say 1006, not 1009, so the client gives
            # up when the second socket dies under the same message.
            self.assertIn(error["code"], (0, 413), error)
        await page.idle(3)
        self.assertLessEqual(len(page.net.sentOn(big)), 2, "a message the server cannot take is not resent")
        # The client carries on (over a new session if the socket was closed for it).
        await page.waitFor("() => harness.clients.a.getState() === 'CONNECTED'")
        await page.waitFor(
            "() => [...harness.clients.a._channels.values()].every((e) => e.status === 'subscribed')"
        )
        await self.assertRoundTrip(page, "small again")

    async def test_websocket(self) -> None:
        await self._tooLarge(())

    async def test_longPolling(self) -> None:
        await self._tooLarge(("websocket",))


class ResubscribeRefusedTests(BrowserTestCase):
    async def test_refusedAfterRestart(self) -> None:
        """A token that went bad by the time of a re-subscribe: one refusal, an event, no loop."""
        if not await self.hasTenancy():
            raise SkipTest("the server does not enforce tenancy yet")
        private = f"/{APP}/private/feed"
        page = await self.openPage()
        await page.evaluate(
            """([url, ch, good]) => {
              window.tokens = [good, 'expired-token'];
              harness.client('a', url, {retry: 0.2, maxRetry: 2});
              return harness.subscribe('a', ch, () => tokens.shift() || 'no-more-tokens');
            }""",
            [self.server.push, private, token(private, sub=True)],
        )
        await page.waitFor("() => harness.count('subscribed') === 1")
        await self.server.restart()
        await page.waitFor("() => harness.count('refused-later') === 1", timeout=30)
        [refused] = await page.events("refused-later")
        self.assertEqual(
            (refused["channel"], refused["code"], refused["message"]), (private, 401, "Invalid token")
        )
        await page.idle(3)
        self.assertEqual(len(page.net.subscribesTo(private)), 2)
        self.assertEqual(await page.evaluate("() => tokens.length"), 0)
        self.assertEqual(await page.evaluate("() => harness.clients.a.getState()"), "CONNECTED")
