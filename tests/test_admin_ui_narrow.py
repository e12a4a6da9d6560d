"""
The console on a 390 px wide phone, checked by measurement in headless Chromium.

Issue 19: at 390 px ids wrapped five characters a line, words broke mid-word and the tab bar
was cut off. Each view is measured, not just photographed: no element sticks out of the
window, every tab is wholly on screen, each id is one line and shown whole, no word is
split across lines, badges and dates are one line each, and the wide tables become one
card per row (while at desktop width they stay tables). Screenshots go to
``artifacts/admin/narrow-390-*.png``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.browser import BrowserThread, chromiumAvailable
from tests.support.console import ConsolePage, Http
from tests.support.inprocess import InProcessServer

WIDTH = 390

#: Measurements of the page as laid out. ``brokenWords``: words (runs of non-space
#: characters in visible text, ids and channel names aside) whose characters sit on more
#: than one line, i.e. a word broken in the middle. ``ids``: each id's line count (from its
#: height) and whether it is cut (ellipsis) or off screen. ``tabs``: each tab link's box.
MEASURE = """() => {
  const vw = document.documentElement.clientWidth;
  const lines = (el) => {
    const cs = getComputedStyle(el);
    const lh = parseFloat(cs.lineHeight) || parseFloat(cs.fontSize) * 1.45;
    const box = el.getBoundingClientRect();
    return Math.round((box.height - parseFloat(cs.paddingTop) - parseFloat(cs.paddingBottom)) / lh);
  };
  const brokenWords = [];
  const walker = document.createTreeWalker(document.querySelector('main'), NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    const skip = 'code, pre, textarea, select, option, .visually-hidden, [hidden]';
    if (!parent || parent.closest(skip)) continue;
    if (!parent.getClientRects().length) continue;
    for (const match of node.data.matchAll(/\\S+/g)) {
      const range = document.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      const rects = [...range.getClientRects()].filter((r) => r.width > 0);
      const tops = new Set(rects.map((r) => Math.round(r.top)));
      if (tops.size > 1) brokenWords.push(`${match[0]} (in ${parent.tagName.toLowerCase()})`);
    }
  }
  const ids = [...document.querySelectorAll('main code.id')].map((el) => {
    const box = el.getBoundingClientRect();
    return {text: el.textContent, lines: lines(el), cut: el.scrollWidth > el.clientWidth + 1,
            inside: box.left >= 0 && box.right <= vw + 0.5, rects: el.getClientRects().length};
  });
  const tabs = [...document.querySelectorAll('.tabs a')].map((a) => {
    const box = a.getBoundingClientRect();
    return {text: a.textContent, left: box.left, right: box.right, lines: lines(a)};
  });
  const tabList = document.querySelector('.tabs ul');
  const oneLine = [...document.querySelectorAll('main .badge, main time')]
    .filter((el) => el.getClientRects().length && lines(el) !== 1)
    .map((el) => `${el.tagName.toLowerCase()} ${el.textContent} (${lines(el)} lines)`);
  const sticking = [...document.querySelectorAll('body *')]
    .filter((el) => el.getClientRects().length && el.getBoundingClientRect().right > vw + 0.5
      && !el.closest('.offscreen, .visually-hidden, .skip-link, .stack-narrow > thead'))
    .map((el) => `${el.tagName.toLowerCase()}.${el.className}`);
  return {
    viewport: vw, scrollWidth: document.documentElement.scrollWidth,
    brokenWords, ids, tabs, sticking: sticking.slice(0, 10), oneLine,
    tabsScroll: tabList ? tabList.scrollWidth - tabList.clientWidth : 0,
    tables: [...document.querySelectorAll('main table')].map((t) => ({
      cls: t.className, display: getComputedStyle(t).display,
      header: getComputedStyle(t.tHead).position,
      rows: [...t.tBodies[0].rows].map((r) => r.getBoundingClientRect().width)})),
  };
}"""


class NarrowConsoleTests(TestCase):
    timeout = 180

    def setUp(self) -> Any:
        unavailable = chromiumAvailable()
        if unavailable:
            raise SkipTest(unavailable)

        async def start() -> None:
            self.server = InProcessServer.withConsole()
            await self.server.start()
            self.addCleanup(self.server.stop)
            self.browser = BrowserThread()
            await self.browser.start()
            self.addCleanup(self.browser.stop)
            self.http = Http(self.server.url)

        return defer.Deferred.fromCoroutine(start())

    def assertFits(self, where: str, seen: dict[str, Any]) -> None:
        """Everything :data:`MEASURE` checks, for one view."""
        self.assertEqual(seen["viewport"], WIDTH, where)
        self.assertLessEqual(seen["scrollWidth"], WIDTH, f"{where}: the page scrolls sideways")
        self.assertEqual(seen["sticking"], [], f"{where}: elements past the right edge")
        self.assertEqual(seen["brokenWords"], [], f"{where}: words broken mid-word")
        self.assertEqual(seen["oneLine"], [], f"{where}: badges and dates on more than one line")
        for shown in seen["ids"]:
            self.assertEqual(shown["lines"], 1, f"{where}: id {shown['text']} wraps: {shown}")
            self.assertFalse(shown["cut"], f"{where}: id {shown['text']} is cut at 390 px: {shown}")
            self.assertTrue(shown["inside"], f"{where}: id {shown['text']} is off screen: {shown}")
        if seen["tabs"]:
            names = [t["text"] for t in seen["tabs"]]
            self.assertEqual(names, ["Keys", "Tokens", "Live console", "Statistics", "Webhooks", "Settings"])
            for tab in seen["tabs"]:
                self.assertGreaterEqual(tab["left"], 0, f"{where}: tab {tab}")
                self.assertLessEqual(tab["right"], WIDTH, f"{where}: tab {tab} cut off")
                self.assertEqual(tab["lines"], 1, f"{where}: tab {tab}")
            self.assertLessEqual(seen["tabsScroll"], 0, f"{where}: the tab bar hides tabs behind a scroll")

    async def test_every_view_at_390px(self) -> None:
        """Applications, and each tab of an application with a long name, a key and a token."""
        await self.browser.call(self._views)

    def _views(self) -> None:
        status, app = self.http.admin(
            "POST", "applications", {"name": "Customer notifications production environment"}
        )
        self.assertEqual(status, 201)
        appId = app["id"]
        keyIds = []
        for purpose in ("chat backend servers", "billing"):
            status, key = self.http.admin("POST", f"application/{appId}/keys", {"purpose": purpose})
            self.assertEqual(status, 200)
            keyIds.append(key["id"])
        page = ConsolePage(self.browser.browser, self.server.url, width=WIDTH, height=844)
        try:
            p = page.page
            page.open()
            seen = p.evaluate(MEASURE)
            self.assertFits("applications", seen)
            self.assertEqual([i["text"] for i in seen["ids"]], [appId])
            [apps] = seen["tables"]
            self.assertEqual((apps["display"], apps["header"]), ("block", "absolute"))  # one card per row
            page.screenshot("narrow-390-applications")

            page.go(f"#/app/{appId}/keys")
            p.locator("table.keys").wait_for()
            seen = p.evaluate(MEASURE)
            self.assertFits("keys", seen)
            # The application id in the heading, and both key ids, each on one line.
            self.assertEqual(len(seen["ids"]), 3, seen["ids"])
            [keys] = seen["tables"]
            self.assertEqual(keys["display"], "block")
            self.assertEqual(len(keys["rows"]), 2)
            page.screenshot("narrow-390-keys")

            page.go(f"#/app/{appId}/tokens")
            p.get_by_label("Channel", exact=True).fill(f"/{appId}/private/orders/eu-west")
            p.get_by_role("button", name="Generate token").click()
            p.locator("table.claims").wait_for()
            seen = p.evaluate(MEASURE)
            self.assertFits("tokens", seen)
            page.screenshot("narrow-390-tokens")

            status, _ = self.http.admin(
                "POST",
                f"application/{appId}/webhooks",
                {
                    "url": "http://127.0.0.1:9/hooks/customer-notifications",
                    "events": ["channel_occupied"],
                    "keyId": keyIds[0],
                },
            )
            self.assertEqual(status, 201)
            page.go(f"#/app/{appId}/webhooks")
            p.locator("table.webhooks").wait_for()
            seen = p.evaluate(MEASURE)
            self.assertFits("webhooks", seen)
            page.screenshot("narrow-390-webhooks")

            for tab in ("console", "stats", "settings"):
                page.go(f"#/app/{appId}/{tab}")
                p.locator(".tab-body .card").first.wait_for()
                if tab == "stats":
                    p.locator("table.figures-table").wait_for()
                seen = p.evaluate(MEASURE)
                self.assertFits(tab, seen)
                page.screenshot(f"narrow-390-{tab}")
            self.assertEqual(page.errors(), [], page.console)
        finally:
            page.close()

    async def test_desktop_keeps_tables(self) -> None:
        """At desktop width the same tables are tables, with their header row shown."""
        await self.browser.call(self._desktop)

    def _desktop(self) -> None:
        _, app = self.http.admin("POST", "applications", {"name": "Desk"})
        self.http.admin("POST", f"application/{app['id']}/keys", {"purpose": "x"})
        page = ConsolePage(self.browser.browser, self.server.url, width=1280, height=900)
        try:
            page.open(f"#/app/{app['id']}/keys")
            page.page.locator("table.keys").wait_for()
            seen = page.page.evaluate(MEASURE)
            [keys] = seen["tables"]
            self.assertEqual((keys["display"], keys["header"]), ("table", "static"))
            self.assertEqual(seen["brokenWords"], [])
            self.assertTrue(all(i["lines"] == 1 and not i["cut"] for i in seen["ids"]), seen["ids"])
        finally:
            page.close()
