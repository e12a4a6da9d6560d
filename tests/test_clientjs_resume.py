"""
``/client.js`` resuming by itself, in headless Chromium against a real pandapush with channel history.

The page's client remembers the position (``ext.position``) of the last message of every
subscription and sends it in ``ext.resume`` whenever it subscribes again; the server sends
what the client missed, and the client drops what it already had. Each test makes the
client miss messages a different way (its websocket closed while it cannot reconnect,
long-poll requests failing in the same session, a server restart that loses history, a
wildcard subscription) and checks that every message arrives once, in order, or that the
page is told (``subscription:unrecovered``) what could not be recovered; and what went on
the wire. The pages and the server are set up as in ``tests.test_clientjs_browser``; and a page
whose node is killed resumes on the other node of a cluster.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.trial.unittest import SkipTest

from tests.support.browser import BROWSER_DIR, BrowserThread
from tests.support.cluster import ClusterCase, channel
from tests.support.proxy import LosingProxy
from tests.test_clientjs_browser import APP, ROOM, BrowserTestCase, Page, _unavailable, bayeuxPublish

# The page's WebSocket and fetch, made to fail on demand: a network that is away.
_BLOCKABLE = """() => {
  window.blockSockets = false;
  window.blockFetch = false;
  const RealSocket = WebSocket;
  window.WebSocket = class extends RealSocket {
    constructor(url) {
      if (window.blockSockets) throw new Error('blocked by the test');
      super(url);
    }
  };
  const realFetch = window.fetch.bind(window);
  window.fetch = (...args) => (window.blockFetch
    ? Promise.reject(new TypeError('blocked by the test')) : realFetch(...args));
}"""


async def received(page: Page, count: int) -> list[Any]:
    """The data of every message the page got, once ``count`` have arrived (and a moment more)."""
    await page.waitFor("(n) => harness.count('message', 'a') >= n", count, timeout=30)
    await page.idle(0.5)  # a duplicate would show up now
    return [e["data"] for e in await page.events("message", "a")]


class ResumeTests(BrowserTestCase):
    async def page(self, channel: str = ROOM, disable: tuple[str, ...] = ()) -> Page:
        page = await self.openPage()
        await page.evaluate(_BLOCKABLE)
        await page.evaluate(
            "([url, channel, disable]) => { harness.client('a', url, {retry: 0.2, maxRetry: 1}, disable);"
            " return harness.subscribe('a', channel); }",
            [self.server.push, channel, list(disable)],
        )
        await page.waitFor("() => harness.count('subscribed', 'a') >= 1")
        return page

    async def received(self, page: Page, count: int) -> list[Any]:
        return await received(page, count)

    async def test_websocketClosedWhileAway(self) -> None:
        """
        Messages published while the client's websocket is closed and it cannot reconnect
        (its session ended with the socket) arrive after it handshakes again: its
        re-subscribe names the last position it had, and nothing comes twice.
        """
        page = await self.page(disable=("long-polling",))
        for n in (1, 2):
            await bayeuxPublish(self.server.push, ROOM, n)
        self.assertEqual(await self.received(page, 2), [1, 2])
        await page.evaluate("() => { blockSockets = true; harness.clients.a._transport.socket.close(); }")
        await page.waitFor("() => harness.count('down', 'a') >= 1")
        for n in (3, 4):
            await bayeuxPublish(self.server.push, ROOM, n)
        await page.evaluate("() => { blockSockets = false; }")
        self.assertEqual(await self.received(page, 4), [1, 2, 3, 4])
        subscribes = page.net.subscribesTo(ROOM)
        self.assertEqual(len(subscribes), 2)
        self.assertNotIn("resume", subscribes[0].get("ext", {}))
        resume = subscribes[1]["ext"]["resume"]
        self.assertEqual(list(resume), [ROOM])
        self.assertEqual(resume[ROOM]["offset"], 2)
        self.assertIsInstance(resume[ROOM]["epoch"], str)
        self.assertEqual(await page.events("unrecovered", "a"), [])

    async def test_longPollingSameSession(self) -> None:
        """
        A long-poller whose requests fail for a while keeps its session; back, it
        subscribes again from its last position (what another node would not have), and
        the messages the server had queued and sends again from history arrive once.
        """
        page = await self.page(disable=("websocket",))
        await bayeuxPublish(self.server.push, ROOM, 1)
        self.assertEqual(await self.received(page, 1), [1])
        firstId = await page.evaluate("() => harness.clients.a.getClientId()")
        await page.evaluate("() => { blockFetch = true; }")
        await page.waitFor("() => harness.count('down', 'a') >= 1", timeout=30)
        for n in (2, 3):
            await bayeuxPublish(self.server.push, ROOM, n)
        await page.evaluate("() => { blockFetch = false; }")
        self.assertEqual(await self.received(page, 3), [1, 2, 3])
        self.assertEqual(await page.evaluate("() => harness.clients.a.getClientId()"), firstId)
        subscribes = page.net.subscribesTo(ROOM)
        self.assertEqual(len(subscribes), 2, subscribes)
        # From the last it had: 1, or 3 when the connect that brought 2 and 3 came first.
        self.assertIn(subscribes[1]["ext"]["resume"][ROOM]["offset"], (1, 3))

    async def test_restartLosesHistory(self) -> None:
        """
        A server restarted with its history gone (memory engine): the re-subscribe names the
        old position, the server says it could not recover it, and the page is told; the
        messages published from then on arrive.
        """
        page = await self.page()
        await bayeuxPublish(self.server.push, ROOM, 1)
        self.assertEqual(await self.received(page, 1), [1])
        await self.server.restart()
        await page.waitFor("() => harness.count('unrecovered', 'a') >= 1", timeout=30)
        (event,) = await page.events("unrecovered", "a")
        self.assertEqual((event["channel"], event["reasons"]), (ROOM, {ROOM: "epoch changed"}))
        await bayeuxPublish(self.server.push, ROOM, 2)
        self.assertEqual(await self.received(page, 2), [1, 2])

    async def test_wildcardResumesEachChannel(self) -> None:
        """A wildcard subscription resumes every concrete channel it saw, each from its own position."""
        pattern = f"/{APP}/public/*"
        x, y = f"/{APP}/public/x", f"/{APP}/public/y"
        page = await self.page(channel=pattern, disable=("long-polling",))
        await bayeuxPublish(self.server.push, x, "x1")
        await bayeuxPublish(self.server.push, y, "y1")
        await bayeuxPublish(self.server.push, y, "y2")
        self.assertEqual(await self.received(page, 3), ["x1", "y1", "y2"])
        await page.evaluate("() => { blockSockets = true; harness.clients.a._transport.socket.close(); }")
        await page.waitFor("() => harness.count('down', 'a') >= 1")
        await bayeuxPublish(self.server.push, x, "x2")
        await bayeuxPublish(self.server.push, y, "y3")
        await page.evaluate("() => { blockSockets = false; }")
        got = await self.received(page, 5)
        self.assertEqual(sorted(got), ["x1", "x2", "y1", "y2", "y3"])
        self.assertEqual([d for d in got if d.startswith("y")], ["y1", "y2", "y3"])
        resume = page.net.subscribesTo(pattern)[-1]["ext"]["resume"]
        self.assertEqual({c: p["offset"] for c, p in resume.items()}, {x: 1, y: 2})

    async def test_latest(self) -> None:
        """``subscribe(...).latest()`` gets the channel's last message at once (a cache channel)."""
        await bayeuxPublish(self.server.push, ROOM, "old")
        await bayeuxPublish(self.server.push, ROOM, "cached")
        page = await self.openPage()
        await page.evaluate(
            """([url, channel]) => {
              const c = harness.client('a', url, {});
              return c.subscribe(channel, (data) => harness.record('message', {client: 'a', data})).latest()
                .then(() => harness.record('subscribed', {client: 'a'}));
            }""",
            [self.server.push, ROOM],
        )
        self.assertEqual(await self.received(page, 1), ["cached"])
        (subscribe,) = page.net.subscribesTo(ROOM)
        self.assertIs(subscribe["ext"]["latest"], True)

    async def test_refusedPositionStartsFromNow(self) -> None:
        """
        A position the server refuses (here one from the future, made up by an extension)
        does not end the subscription: the client subscribes again without it, tells the
        page, and goes on receiving.
        """
        page = await self.page(disable=("long-polling",))
        await bayeuxPublish(self.server.push, ROOM, 1)
        self.assertEqual(await self.received(page, 1), [1])
        await page.evaluate(
            """(channel) => harness.clients.a.addExtension({outgoing(message, callback) {
              const resume = message.ext && message.ext.resume;
              if (message.channel === '/meta/subscribe' && resume && resume[channel]) {
                resume[channel].offset += 1000;
              }
              callback(message);
            }})""",
            ROOM,
        )
        await page.evaluate("() => harness.clients.a._transport.socket.close()")
        await page.waitFor("() => harness.count('unrecovered', 'a') >= 1", timeout=30)
        (event,) = await page.events("unrecovered", "a")
        self.assertIn("Invalid position", event["reasons"][ROOM])
        await page.waitFor("() => [...harness.clients.a._channels.values()][0].session > 1")
        await bayeuxPublish(self.server.push, ROOM, 2)
        self.assertEqual(await self.received(page, 2), [1, 2])
        self.assertEqual(await page.events("refused-later", "a"), [])

    async def test_duplicatesDropped(self) -> None:
        """
        A message the subscription already had (same channel, same epoch, an offset not
        past the last) is dropped; one from a new epoch starts over.
        """
        page = await self.page()
        await page.evaluate(
            """(channel) => {
              const at = (data, offset, epoch) => ({channel, data, ext: {position: {offset, epoch}}});
              harness.clients.a._receive([
                at('five', 5, 'E1'), at('five', 5, 'E1'), at('four', 4, 'E1'), at('six', 6, 'E1'),
                at('new epoch', 1, 'E2'), at('unpositioned', undefined, undefined),
              ]);
            }""",
            ROOM,
        )
        self.assertEqual(await self.received(page, 4), ["five", "six", "new epoch", "unpositioned"])

    async def dropIncoming(self, page: Page, data: Any, times: int) -> None:
        """The page's client loses the delivery carrying ``data``, ``times`` times (as if a server had)."""
        await page.evaluate(
            """([data, times]) => { window.dropsLeft = times; harness.clients.a.addExtension({
              incoming(message, callback) {
                const lose = message.data === data && !('successful' in message) && window.dropsLeft > 0;
                if (lose) window.dropsLeft -= 1;
                callback(lose ? null : message);
              }}); }""",
            [data, times],
        )

    async def test_gapFilledFromHistory(self) -> None:
        """
        A message that never reached the client (its offset skipped) is asked for at once:
        the messages after it wait, the client subscribes again from the last it had, and
        the page gets them all in order, once.
        """
        page = await self.page(disable=("long-polling",))
        await self.dropIncoming(page, 2, times=1)
        for n in (1, 2, 3):
            await bayeuxPublish(self.server.push, ROOM, n)
        self.assertEqual(await self.received(page, 3), [1, 2, 3])
        subscribes = page.net.subscribesTo(ROOM)
        self.assertEqual(len(subscribes), 2)
        self.assertEqual(subscribes[1]["ext"]["resume"][ROOM]["offset"], 1)
        self.assertEqual(await page.events("unrecovered", "a"), [])

    async def test_gapNotFilled(self) -> None:
        """
        When the missing message does not come (lost again), what waited goes on after a few
        seconds and the page is told: never a silent gap.
        """
        page = await self.page(disable=("long-polling",))
        await self.dropIncoming(page, 2, times=1000)
        for n in (1, 2, 3):
            await bayeuxPublish(self.server.push, ROOM, n)
        await page.waitFor("() => harness.count('unrecovered', 'a') >= 1", timeout=30)
        (event,) = await page.events("unrecovered", "a")
        self.assertEqual(event["reasons"], {ROOM: "missing messages did not come"})
        self.assertEqual(await self.received(page, 2), [1, 3])
        await bayeuxPublish(self.server.push, ROOM, 4)
        self.assertEqual(await self.received(page, 3), [1, 3, 4])


class TwoNodeResumeTests(ClusterCase):
    """Two nodes on one Redis, the page reaching them through a proxy (a load balancer)."""

    timeout = 180

    async def test_nodeKilledResumedOnAnother(self) -> None:
        """
        The page's node is killed while it cannot reconnect, messages are published through
        the other node meanwhile: back through the other node, the page resumes from the
        history the nodes share and gets every message once, in order.
        """
        if _unavailable:
            raise SkipTest(_unavailable)
        a, b = await self.startNodes(2)
        proxy = await LosingProxy.start(a.port)
        self.addCleanup(proxy.stop)
        browser = BrowserThread()
        await browser.start()
        self.addCleanup(browser.stop)
        base = proxy.url
        routes = {f"{base}/__test__/{name}": BROWSER_DIR / name for name in ("index.html", "harness.js")}
        raw, log = await browser.call(browser.newPage, routes)
        page = Page(browser, raw, log)
        self.addCleanup(page.close)
        await page.goto(f"{base}/__test__/index.html")
        await page.evaluate(_BLOCKABLE)
        room = channel("room")
        await page.evaluate(
            "([url, channel]) => { harness.client('a', url, {retry: 0.2, maxRetry: 1}, ['long-polling']);"
            " return harness.subscribe('a', channel); }",
            [f"{base}/push", room],
        )
        await page.waitFor("() => harness.count('subscribed', 'a') >= 1")
        self.assertEqual((await self.restPublish(a, "room", 1))[0], 200)
        self.assertEqual(await received(page, 1), [1])
        await page.evaluate("() => { blockSockets = true; }")
        await a.stop(signal.SIGKILL)
        proxy.retarget(b.port)
        proxy.cut()
        await page.waitFor("() => harness.count('down', 'a') >= 1")
        for n in (2, 3):
            self.assertEqual((await self.restPublish(b, "room", n))[0], 200)
        await page.evaluate("() => { blockSockets = false; }")
        self.assertEqual(await received(page, 3), [1, 2, 3])
        resume = page.net.subscribesTo(room)[-1]["ext"]["resume"]
        self.assertEqual(resume[room]["offset"], 1)
        self.assertEqual(await page.events("unrecovered", "a"), [])
