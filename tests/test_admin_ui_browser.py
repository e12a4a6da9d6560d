"""
The ``/admin`` console end to end in headless Chromium (Debian's, via Playwright): an
operator creates an application, a key (copying its secret), mints a token and reads its
claims, subscribes and publishes in the live console, revokes the key and sees publishing
with it refused, watches statistics and presence, renames and deletes the application, and
does it on a phone-sized screen too. Screenshots of each page go to ``artifacts/admin/``.

The server is pandapush in this process (memory storage, Basic admin auth) with the console
mounted as the server mounts it; browser steps run on a thread of their own.
"""

from __future__ import annotations

import re
from typing import Any

import jwt
import treq
from twisted.internet import defer
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.browser import BrowserThread, chromiumAvailable
from tests.support.console import ConsolePage, Http
from tests.support.inprocess import ADMIN_PASSWORD, ADMIN_USER, InProcessServer
from tests.support.process import PandapushProcess

_unavailable = chromiumAvailable()

#: The elements that stick out past the right edge of the window (for failure messages).
WIDE = """() => [...document.querySelectorAll('body *')]
  .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 0.5)
  .map((el) => `${el.tagName.toLowerCase()}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`)
  .slice(0, 12)"""

#: The page's width against the window's, and the elements whose content spills out of
#: their box (overflow left visible), which is how a long unbreakable word widens a page.
SIZES = """() => ({scroll: document.documentElement.scrollWidth, inner: innerWidth,
  client: document.documentElement.clientWidth, body: document.body.scrollWidth,
  wide: [...document.querySelectorAll('body *')]
    .filter((el) => el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX === 'visible')
    .map((el) => `${el.tagName}.${el.className}`).slice(0, 8)})"""

#: What every view must get right for keyboard and screen reader users: each form control
#: has a label (or an aria-label), ids are unique, one h1, and aria-describedby points at
#: elements that exist. Returns the problems found.
AUDIT = """() => {
  const problems = [];
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.closest('[hidden]') || el.classList.contains('offscreen')) continue;
    if (!(el.labels && el.labels.length) && !el.getAttribute('aria-label')) {
      problems.push(`unlabelled ${el.tagName.toLowerCase()} ${el.name || ''}`);
    }
    for (const id of (el.getAttribute('aria-describedby') || '').split(' ').filter(Boolean)) {
      if (!document.getElementById(id)) problems.push(`aria-describedby ${id} missing`);
    }
  }
  const ids = [...document.querySelectorAll('[id]')].map((el) => el.id);
  const dupes = ids.filter((id, i) => ids.indexOf(id) !== i);
  if (dupes.length) problems.push(`duplicate ids ${dupes}`);
  const h1 = document.querySelectorAll('h1').length;
  if (h1 !== 1) problems.push(`${h1} h1 elements`);
  for (const el of document.querySelectorAll('[onclick], div[tabindex], span[tabindex]')) {
    problems.push(`clickable non-control ${el.outerHTML.slice(0, 60)}`);
  }
  return problems;
}"""


class ConsoleTestCase(TestCase):
    timeout = 180
    server: InProcessServer | PandapushProcess

    def setUp(self) -> Any:
        if _unavailable:
            raise SkipTest(_unavailable)
        return defer.Deferred.fromCoroutine(self._setUp())

    async def _setUp(self) -> None:
        self.server = InProcessServer.withConsole(statsInterval=0.5)
        await self.server.start()
        self.addCleanup(self.server.stop)
        self.browser = BrowserThread()
        await self.browser.start()
        self.addCleanup(self.browser.stop)
        self.http = Http(self.server.url)

    def page(self, **kwargs: Any) -> ConsolePage:
        """(Browser thread.) A logged-in page; closed at the end of the test."""
        page = ConsolePage(self.browser.browser, self.server.url, **kwargs)
        self.addCleanup(self.browser.call, page.close)
        return page

    async def onBrowser(self, step: Any, *args: Any) -> Any:
        return await self.browser.call(step, *args)

    def newApp(self, name: str) -> str:
        """(Browser thread.) An application made through the API, for tests about other things."""
        status, body = self.http.admin("POST", "applications", {"name": name})
        assert status == 201, body
        return str(body["id"])

    def assertNoErrors(self, page: ConsolePage) -> None:
        self.assertEqual(page.errors(), [], page.console)


class ApplicationsKeysTokensTests(ConsoleTestCase):
    async def test_create_app_key_copy_secret_mint_token(self) -> None:
        await self.onBrowser(self._flow)

    def _flow(self) -> None:
        page = self.page()
        p = page.page
        page.open()
        page.screenshot("01-applications-empty")
        self.assertIn("No applications yet", p.inner_text("main"))

        # Keyboard only: Tab to the name field, type, Enter submits.
        for _ in range(30):
            p.keyboard.press("Tab")
            if p.evaluate("() => document.activeElement && document.activeElement.name === 'name'"):
                break
        else:
            self.fail("the Name field cannot be reached with Tab")
        p.keyboard.type("Chat <b>prod</b>")
        p.keyboard.press("Enter")
        p.wait_for_function("() => location.hash.startsWith('#/app/')")
        appId = re.match(r"#/app/([^/]+)/keys", p.evaluate("() => location.hash")).group(1)  # type: ignore[union-attr]
        p.wait_for_selector("main h1")
        # Shown as text, never as markup.
        self.assertEqual(
            p.evaluate("() => document.querySelector('main h1').firstChild.textContent"), "Chat <b>prod</b>"
        )
        self.assertEqual(p.locator("main h1 b").count(), 0)

        # A key: the secret is shown once, copied by the button.
        p.get_by_label("Purpose").fill("chat backend")
        p.get_by_role("button", name="Create key").click()
        panel = p.get_by_role("region", name="New key secret")
        panel.wait_for()
        keyId = panel.get_by_label("Key id").input_value()
        secret = panel.get_by_label("Secret").input_value()
        self.assertTrue(keyId.startswith("PSID"), keyId)
        self.assertGreater(len(secret), 20)
        page.screenshot("02-keys-new-secret")
        panel.get_by_role("button", name="Copy secret").click()
        p.wait_for_function("() => window.__copied.length === 1")
        copied = p.evaluate("() => window.__copied[0]")
        self.assertEqual(copied, {"text": secret, "ok": True})
        self.assertEqual(p.evaluate("() => navigator.clipboard.readText()"), secret)
        panel.get_by_text("Copied").wait_for()
        row = p.locator(f"tr[data-key='{keyId}']")
        self.assertEqual(row.get_attribute("data-status"), "active")
        self.assertIn("chat backend", row.inner_text())
        # The secret works: a REST publish with it is accepted.
        status, body = self.http.request(
            "POST", f"/channel/{appId}/public/room", {"x": 1}, auth=(keyId, secret)
        )
        self.assertEqual((status, body), (200, "OK"))
        # After a reload the secret is gone for good; use count and last use are listed.
        p.reload()
        p.wait_for_selector(f"tr[data-key='{keyId}']")
        self.assertEqual(p.get_by_role("region", name="New key secret").count(), 0)
        self.assertNotIn(secret, p.content())
        page.screenshot("03-keys-list")

        # The token generator, signing with that key.
        p.get_by_role("link", name="Tokens").click()
        p.get_by_label("Signed with").select_option(keyId)
        p.get_by_label("Channel", exact=True).fill(f"/{appId}/presence/lobby")
        p.get_by_label("May publish (pub)").check()
        p.get_by_role("button", name="Generate token").click()
        # Presence channel without presence: refused here, with the reason on the field.
        p.get_by_text("Subscribing to a presence channel needs a presence object").wait_for()
        p.get_by_label("Presence (JSON, optional)").fill('{"id": "ada", "name": "Ada"}')
        p.get_by_label("Expires in (minutes)").fill("30")
        p.get_by_role("button", name="Generate token").click()
        p.locator("table.claims").wait_for()
        token = p.get_by_label("Token", exact=True).input_value()
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"verify_sub": False}
        )  # signed with the new key's secret
        self.assertEqual(claims["keyId"], keyId)
        self.assertEqual(claims["channel"], f"/{appId}/presence/lobby")
        self.assertEqual(claims["presence"], {"id": "ada", "name": "Ada"})
        self.assertIs(claims["pub"], True)
        shown = {
            r.get_attribute("data-claim"): r.inner_text() for r in p.locator("table.claims tbody tr").all()
        }
        self.assertIn(keyId, shown["keyId"])
        self.assertIn(f"/{appId}/presence/lobby", shown["channel"])
        self.assertIn("may publish", shown["pub"])
        self.assertIn("joins presence as ada", shown["presence"])
        self.assertIn("expires", shown["exp"])
        page.screenshot("04-token")
        self.assertNoErrors(page)


class LiveConsoleTests(ConsoleTestCase):
    async def test_round_trip_and_revoked_key_refused(self) -> None:
        await self.onBrowser(self._flow)

    def _flow(self) -> None:
        appId = self.newApp("Live")
        page = self.page()
        p = page.page
        page.open(f"#/app/{appId}/keys")
        p.get_by_label("Purpose").fill("server")
        p.get_by_role("button", name="Create key").click()
        panel = p.get_by_role("region", name="New key secret")
        keyId = panel.get_by_label("Key id").input_value()
        secret = panel.get_by_label("Secret").input_value()

        p.get_by_role("link", name="Live console").click()
        subscribe = p.locator("form").filter(has=p.get_by_role("button", name="Subscribe", exact=True))
        publish = p.locator("form").filter(has=p.get_by_role("button", name="Publish", exact=True))
        events = p.get_by_role("log", name="Events")

        # A public wildcard subscription, then a publish through the client.
        subscribe.get_by_label("Channel", exact=True).fill(f"/{appId}/public/**")
        subscribe.get_by_role("button", name="Subscribe", exact=True).click()
        p.locator(f"ul.subscriptions li[data-channel='/{appId}/public/**'] .badge-subscribed").wait_for()
        p.get_by_text(re.compile(r"Connected over (websocket|long-polling)")).wait_for()
        publish.get_by_label("Channel", exact=True).fill(f"/{appId}/public/room")
        publish.get_by_label("Message (JSON)").fill('{"text": "hello from the console"}')
        publish.get_by_role("button", name="Publish", exact=True).click()
        message = events.locator(".event-message").filter(has_text="hello from the console")
        message.wait_for()
        self.assertIn(f"/{appId}/public/room", message.inner_text())
        self.assertRegex(message.locator("time").inner_text(), r"^\d\d:\d\d:\d\d\.\d{3}$")

        # JSON validation: a clear error on the field, nothing sent.
        before = events.locator("li").count()
        publish.get_by_label("Message (JSON)").fill("{text: 'nope'}")
        publish.get_by_text("Not valid JSON").wait_for()
        self.assertEqual(publish.get_by_label("Message (JSON)").get_attribute("aria-invalid"), "true")
        publish.get_by_role("button", name="Publish", exact=True).click()
        self.assertEqual(events.locator("li").count(), before)

        # A private channel (subscribed with a minted token) receives a server's REST publish.
        subscribe.get_by_label("Channel", exact=True).fill(f"/{appId}/private/orders")
        subscribe.get_by_role("button", name="Subscribe", exact=True).click()
        p.locator(f"ul.subscriptions li[data-channel='/{appId}/private/orders'] .badge-subscribed").wait_for()
        status, _ = self.http.request(
            "POST", f"/channel/{appId}/private/orders", {"order": 42}, auth=(keyId, secret)
        )
        self.assertEqual(status, 200)
        events.locator(".event-message").filter(has_text='"order": 42').wait_for()

        # The meta channel reports occupancy; presence shows who is there.
        subscribe.get_by_label("Channel", exact=True).fill(f"/{appId}/meta/channels")
        subscribe.get_by_role("button", name="Subscribe", exact=True).click()
        p.locator(f"ul.subscriptions li[data-channel='/{appId}/meta/channels'] .badge-subscribed").wait_for()
        subscribe.get_by_label("Channel", exact=True).fill(f"/{appId}/presence/lobby")
        subscribe.get_by_label("Your presence (JSON)").fill('{"id": "console-admin", "role": "operator"}')
        subscribe.get_by_role("button", name="Subscribe", exact=True).click()
        lobby = p.locator(f"ul.subscriptions li[data-channel='/{appId}/presence/lobby']")
        lobby.locator(".badge-subscribed").wait_for()
        lobby.get_by_text("1 member: console-admin").wait_for()
        events.locator(".event-message").filter(has_text="member_added").wait_for()

        # REST publish from the console with the new key + secret reaches the subscription.
        publish.get_by_label("Channel", exact=True).fill(f"/{appId}/public/room")
        publish.get_by_label("Message (JSON)").fill('{"via": "rest"}')
        publish.get_by_label("The REST API (POST /channel/…)").check()
        publish.get_by_label("Credentials (REST)").select_option(f"secret:{keyId}")
        publish.get_by_role("button", name="Publish", exact=True).click()
        publish.get_by_text(f"over REST with key {keyId} + secret").wait_for()
        events.locator(".event-message").filter(has_text='"via": "rest"').wait_for()
        # A refused subscribe is shown with the server's words.
        subscribe.get_by_label("Channel", exact=True).fill(f"/{appId}/presence/big")
        subscribe.get_by_label("Your presence (JSON)").fill('{"id": "big", "blob": "%s"}' % ("x" * 2000))
        subscribe.get_by_role("button", name="Subscribe", exact=True).click()
        refused = subscribe.get_by_role("alert")
        refused.wait_for()
        self.assertIn(
            f"Subscribe to /{appId}/presence/big refused: Presence data larger than", refused.inner_text()
        )
        self.assertEqual(p.locator(f"ul.subscriptions li[data-channel='/{appId}/presence/big']").count(), 0)
        page.screenshot("05-console")

        # Revoke the key; publishing with it is now refused, and the console says why.
        p.get_by_role("link", name="Keys").click()
        p.get_by_role("button", name=f"Revoke key {keyId}").click()
        dialog = p.get_by_role("dialog", name="Revoke this key?")
        dialog.wait_for()
        page.screenshot("06-revoke-confirm")
        dialog.get_by_role("button", name="Revoke key").click()
        p.locator(f"tr[data-key='{keyId}'][data-status='revoked']").wait_for()
        page.screenshot("07-keys-revoked")
        p.get_by_role("link", name="Live console").click()
        publish = p.locator("form").filter(has=p.get_by_role("button", name="Publish", exact=True))
        publish.get_by_label("The REST API (POST /channel/…)").check()
        publish.get_by_label("Credentials (REST)").select_option(f"secret:{keyId}")
        publish.get_by_role("button", name="Publish", exact=True).click()
        refusal = publish.get_by_role("alert")
        refusal.wait_for()
        self.assertIn("REST publish refused: Revoked key (403)", refusal.inner_text())
        publish.get_by_label("Credentials (REST)").select_option(f"token:{keyId}")
        publish.get_by_role("button", name="Publish", exact=True).click()
        publish.get_by_role("alert").filter(has_text="Revoked key").wait_for()
        p.get_by_role("log", name="Events").locator(".event-error").filter(
            has_text="Revoked key"
        ).first.wait_for()
        page.screenshot("08-console-revoked-refused")
        # The server agrees.
        status, body = self.http.request(
            "POST", f"/channel/{appId}/public/room", {"x": 1}, auth=(keyId, secret)
        )
        self.assertEqual((status, body["message"]), (403, "Revoked key"))
        self.assertNoErrors(page)


class StatisticsPresenceTests(ConsoleTestCase):
    async def test_chart_updates_and_members_come_and_go(self) -> None:
        await self.onBrowser(self._flow)

    def _flow(self) -> None:
        appId = self.newApp("Stats")
        status, key = self.http.admin("POST", f"application/{appId}/keys", {"purpose": "load"})
        self.assertEqual(status, 200)
        watcher = self.page()
        w = watcher.page
        watcher.open(f"#/app/{appId}/stats", query="?statsInterval=300")
        w.locator("table.figures-table").wait_for()
        w.get_by_label("Presence channel").fill(f"/{appId}/presence/lobby")
        w.get_by_role("button", name="Watch members").click()
        w.locator("li[data-member='observer-admin']").wait_for()

        # Another operator's console joins the lobby as alice and publishes.
        other = self.page()
        o = other.page
        other.open(f"#/app/{appId}/console")
        subscribe = o.locator("form").filter(has=o.get_by_role("button", name="Subscribe", exact=True))
        subscribe.get_by_label("Channel", exact=True).fill(f"/{appId}/presence/lobby")
        subscribe.get_by_label("Your presence (JSON)").fill('{"id": "alice"}')
        subscribe.get_by_role("button", name="Subscribe", exact=True).click()
        o.locator(f"ul.subscriptions li[data-channel='/{appId}/presence/lobby']").get_by_text(
            "2 members"
        ).wait_for()
        w.locator("li[data-member='alice']").wait_for()
        w.get_by_text(f"2 members on /{appId}/presence/lobby").wait_for()

        for n in range(20):
            self.http.request(
                "POST", f"/channel/{appId}/presence/lobby", {"n": n}, auth=(key["id"], key["secret"])
            )
        w.wait_for_function(
            "() => Number(document.querySelector(\"tr[data-figure='Published (total)'] td\")"
            ".textContent) >= 20"
        )
        w.wait_for_function(
            "() => Number(document.querySelector(\"tr[data-figure='Connections'] td\").textContent) >= 2"
        )
        # The charts drew lines, and say what they show.
        self.assertGreaterEqual(w.locator("svg.chart path.line").count(), 4)
        label = w.get_by_role("img", name=re.compile("^Messages per second, latest")).get_attribute(
            "aria-label"
        )
        self.assertIn("published/s", label or "")
        points = w.evaluate(
            "() => document.querySelector('svg.chart path.line').getAttribute('d').split('L').length"
        )
        w.wait_for_function(
            "(n) => document.querySelector('svg.chart path.line').getAttribute('d').split('L').length > n",
            arg=points,
        )  # it keeps updating itself
        watcher.screenshot("09-statistics")

        # Alice leaves: the member list follows.
        o.get_by_role("button", name=f"Unsubscribe from /{appId}/presence/lobby").click()
        w.locator("li[data-member='alice']").wait_for(state="detached")
        w.get_by_text(f"1 member on /{appId}/presence/lobby").wait_for()
        self.assertNoErrors(watcher)
        self.assertNoErrors(other)


class SettingsTests(ConsoleTestCase):
    async def test_rename_admins_delete(self) -> None:
        await self.onBrowser(self._flow)

    def _flow(self) -> None:
        appId = self.newApp("Old name")
        page = self.page()
        p = page.page
        page.open(f"#/app/{appId}/settings")
        p.get_by_label("Name", exact=True).fill("New name")
        p.get_by_label("Add an admin (user name)").fill("bob")
        p.get_by_label("Add an admin (user name)").press("Enter")  # adds, does not submit
        p.locator("li[data-admin='bob']").wait_for()
        p.get_by_role("button", name="Save changes").click()
        p.wait_for_function("() => document.querySelector('main h1')?.textContent.startsWith('New name')")
        _, app = self.http.admin("GET", f"application/{appId}")
        self.assertEqual(app["name"], "New name")
        self.assertEqual(sorted(app["admins"]), ["admin", "bob"])

        # Allowed origins: one per line, saved on their own and shown normalised.
        origins = p.get_by_label("Allowed origins (one per line)")
        origins.fill("https://App.example.com/\nhttp://localhost:8080")
        p.get_by_role("button", name="Save origins").click()
        p.get_by_text("Saved: 2 allowed origins.").wait_for()
        _, app = self.http.admin("GET", f"application/{appId}")
        self.assertEqual(app["allowed_origins"], ["http://localhost:8080", "https://app.example.com"])
        self.assertEqual(origins.input_value(), "http://localhost:8080\nhttps://app.example.com")
        page.screenshot("10-settings")

        # Channel history: limits checked in the page, saved, shown; empty is the server's default.
        size = p.get_by_label("Messages each channel keeps")
        ttl = p.get_by_label("Seconds a message is kept")
        size.fill("-3")
        p.get_by_role("button", name="Save history").click()
        p.get_by_text("A whole number from 0 to 10000, or empty.").wait_for()
        size.fill("250")
        ttl.fill("120")
        p.get_by_role("button", name="Save history").click()
        p.get_by_text("Saved: 250 messages, kept 120 s.").wait_for()
        _, app = self.http.admin("GET", f"application/{appId}")
        self.assertEqual(app["history"], {"size": 250, "ttl": 120.0})
        size.fill("")
        ttl.fill("")
        p.get_by_role("button", name="Save history").click()
        p.get_by_text("Saved: the server\u2019s default.").wait_for()
        self.assertEqual(
            self.http.admin("GET", f"application/{appId}")[1]["history"], {"size": None, "ttl": None}
        )

        # Delete: needs the name typed; Cancel leaves it alone.
        p.get_by_role("button", name="Delete application…").click()
        dialog = p.get_by_role("dialog", name="Delete New name?")
        confirm = dialog.get_by_role("button", name="Delete application")
        self.assertTrue(confirm.is_disabled())
        dialog.get_by_role("textbox").fill("New nam")
        self.assertTrue(confirm.is_disabled())
        page.screenshot("11-delete-confirm")
        p.keyboard.press("Escape")  # Escape cancels, and focus returns to the button
        dialog.wait_for(state="detached")
        self.assertEqual(p.evaluate("() => document.activeElement.textContent"), "Delete application…")
        p.get_by_role("button", name="Delete application…").click()
        dialog.get_by_role("button", name="Cancel").click()
        self.assertEqual(self.http.admin("GET", f"application/{appId}")[0], 200)
        p.get_by_role("button", name="Delete application…").click()
        dialog = p.get_by_role("dialog", name="Delete New name?")
        dialog.get_by_role("textbox").fill("New name")
        dialog.get_by_role("button", name="Delete application").click()
        p.wait_for_function("() => location.hash === '#/'")
        p.get_by_role("heading", name="Applications", exact=True).wait_for()
        self.assertEqual(p.get_by_role("link", name="New name").count(), 0)
        self.assertEqual(self.http.admin("GET", f"application/{appId}")[0], 404)
        self.assertNoErrors(page)


class ErrorsAndNarrowTests(ConsoleTestCase):
    async def test_api_errors_are_shown(self) -> None:
        await self.onBrowser(self._errors)

    def _errors(self) -> None:
        page = self.page()
        p = page.page
        page.open("#/app/NoSuchApplication00/keys")
        alert = p.get_by_role("alert").filter(has_text="Not found (404)")
        alert.wait_for()
        page.screenshot("12-error-not-found")
        page.go("#/")
        p.get_by_role("button", name="Create application").click()
        p.get_by_text("Enter a name for the application.").wait_for()
        self.assertEqual(p.get_by_label("Name").get_attribute("aria-invalid"), "true")

    async def test_narrow_viewport(self) -> None:
        await self.onBrowser(self._narrow)

    def _narrow(self) -> None:
        appId = self.newApp("Phone")
        page = self.page(width=375, height=740)
        p = page.page
        # Nothing wider than the window, and no text spilling out of its box (long ids and
        # channel names must wrap) outside the few things meant to scroll sideways.
        fits = f"() => {{ const s = ({SIZES})(); return s.scroll <= s.inner && s.wide.length === 0; }}"
        page.open()
        self.assertTrue(p.evaluate(fits))
        self.assertEqual(p.evaluate(AUDIT), [])
        page.screenshot("13-narrow-applications")
        for tab, name in [
            ("keys", "Keys"),
            ("tokens", "Tokens"),
            ("console", "Live console"),
            ("stats", "Statistics"),
            ("webhooks", "Webhooks"),
            ("settings", "Settings"),
        ]:
            page.go(f"#/app/{appId}/{tab}")
            p.locator(".tab-body .card").first.wait_for()
            self.assertTrue(p.evaluate(fits), f"{tab} is wider than the screen: {p.evaluate(SIZES)}")
            self.assertEqual(p.evaluate(AUDIT), [], tab)
            self.assertEqual(p.get_by_role("link", name=name).get_attribute("aria-current"), "page")
            page.screenshot(f"14-narrow-{tab}")
        # Still usable: subscribe and see the round trip on a phone.
        page.go(f"#/app/{appId}/console")
        subscribe = p.locator("form").filter(has=p.get_by_role("button", name="Subscribe", exact=True))
        subscribe.get_by_role("button", name="Subscribe", exact=True).click()
        p.locator("ul.subscriptions .badge-subscribed").wait_for()
        p.get_by_role("button", name="Publish", exact=True).click()
        p.get_by_role("log", name="Events").locator(".event-message").wait_for()
        self.assertTrue(
            p.evaluate(fits), f"the console with events is too wide: {p.evaluate(WIDE)} {p.evaluate(SIZES)}"
        )
        self.assertEqual(p.evaluate(AUDIT), [])
        page.screenshot("15-narrow-console-events")
        self.assertNoErrors(page)


class ModuleTests(ConsoleTestCase):
    """The console's pure helpers, imported as the page imports them (no Node needed)."""

    async def test_helpers(self) -> None:
        await self.onBrowser(self._helpers)

    def _helpers(self) -> None:
        page = self.page()
        page.open()
        results = page.page.evaluate(
            """async () => {
              const jwt = await import('/admin/ui/jwt.js');
              const presence = await import('/admin/ui/presence.js');
              const tokens = await import('/admin/ui/views/tokens.js');
              const stats = await import('/admin/ui/views/stats.js');
              const format = await import('/admin/ui/format.js');
              const api = await import('/admin/ui/api.js');
              // header {"alg":"HS256"} . claims with a non-ASCII presence name . signature
              const b64 = (o) => btoa(String.fromCharCode(...new TextEncoder().encode(JSON.stringify(o))))
                .replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
              const claims = {keyId: 'PSIDx', channel: '/a/private/**', sub: true,
                              presence: {id: 'zoë'}, exp: 0};
              const token = `${b64({alg: 'HS256', typ: 'JWT'})}.${b64(claims)}.sig`;
              const decoded = jwt.decodeToken(token);
              let notJwt = null;
              try { jwt.decodeToken('nope'); } catch (e) { notJwt = e.message; }
              const members = new Map();
              const first = presence.applyPresence(members, {subscribe: {a: {id: 'a'}, b: {id: 'b'}}});
              const second = presence.applyPresence(members, {unsubscribe: {a: null, zz: null}});
              return {
                decoded, notJwt,
                claims: jwt.describeClaims(decoded.claims).map(([n, , m]) => [n, m]),
                first, second, members: [...members.keys()],
                notice: [presence.isPresenceNotice({subscribe: {}}), presence.isPresenceNotice({text: 1}),
                         presence.isPresenceNotice([]), presence.isPresenceNotice({})],
                channels: ['/app1/public/room', '/app1/public/**', '/app1/meta/statistics', '/app2/public/x',
                           '/app1/secret/x', '/app1/public', '/app1/public/a/**/b', '/app1/public/a b',
                           '/app1/public//x'].map((c) => tokens.channelProblem('app1', c)),
                rates: [stats.rate(null, 5, 1), stats.rate(10, 30, 2), stats.rate(30, 4, 2),
                        stats.rate(1, 2, 0)],
                json: [format.parseJSON('{"a":1}'), format.parseJSON(''), format.parseJSON('{a:1}').ok],
                status: [format.keyStatus({revoked: true}),
                         format.keyStatus({expires: '2000-01-01T00:00:00Z'}),
                         format.keyStatus({expires: null})],
                errorText: [api.errorText(403, 'Forbidden', {code: 403, params: [], message: 'Revoked key'}),
                            api.errorText(500, 'Internal Server Error', ''),
                            api.errorText(404, 'Not Found', 'OK')],
              };
            }"""
        )
        self.assertEqual(results["decoded"]["header"], {"alg": "HS256", "typ": "JWT"})
        self.assertEqual(results["decoded"]["claims"]["presence"], {"id": "zoë"})
        self.assertIn("three dot-separated parts", results["notJwt"])
        meanings = dict(results["claims"])
        self.assertEqual(meanings["channel"], "this channel subtree")
        self.assertEqual(meanings["sub"], "may subscribe")
        self.assertEqual(meanings["presence"], "joins presence as zoë")
        self.assertEqual(meanings["exp"], "expires 1970-01-01T00:00:00Z")
        self.assertEqual(results["first"], {"joined": ["a", "b"], "left": []})
        self.assertEqual(results["second"], {"joined": [], "left": ["a"]})
        self.assertEqual(results["members"], ["b"])
        self.assertEqual(results["notice"], [True, False, False, False])
        ok = [c is None for c in results["channels"]]
        self.assertEqual(ok, [True, True, True, False, False, False, False, False, False])
        self.assertEqual(results["rates"], [0, 10, 2, 0])
        self.assertEqual(results["json"][0], {"ok": True, "value": {"a": 1}})
        self.assertFalse(results["json"][1]["ok"])
        self.assertFalse(results["json"][2])
        self.assertEqual(results["status"], ["revoked", "expired", "active"])
        self.assertEqual(
            results["errorText"],
            ["Revoked key (403)", "Internal Server Error (500)", "OK (404)"],
        )
        self.assertNoErrors(page)


class EnvironmentsTests(ConsoleTestCase):
    """``ENVIRONMENTS``: the header links to the console of each, the current one marked."""

    async def _setUp(self) -> None:
        self.server = InProcessServer.withConsole(
            environ={"ENVIRONMENTS": "staging,https://staging.example;production,https://push.example/"}
        )
        await self.server.start()
        self.addCleanup(self.server.stop)
        self.browser = BrowserThread()
        await self.browser.start()
        self.addCleanup(self.browser.stop)
        self.http = Http(self.server.url)

    async def test_links(self) -> None:
        await self.onBrowser(self._links)

    def _links(self) -> None:
        page = self.page()
        page.open()
        nav = page.page.get_by_role("navigation", name="Environments")
        self.assertEqual(
            nav.get_by_role("link", name="staging").get_attribute("href"), "https://staging.example/admin/"
        )
        self.assertEqual(
            nav.get_by_role("link", name="production").get_attribute("href"), "https://push.example/admin/"
        )


class RealServerTests(ConsoleTestCase):
    """
    The console as ``twistd pandapush`` serves it (a child process, the server's own
    ``/admin`` mount). Skipped until the server mounts the console.
    """

    async def _setUp(self) -> None:
        env = {"DATABASE": "memory", "AUTH_METHOD": "basic", "ADMIN_USERNAME": ADMIN_USER}
        env["ADMIN_PASSWORD"] = ADMIN_PASSWORD
        self.server = await PandapushProcess.started(self, "--timeout", "5", env=env)
        self.http = Http(self.server.url)
        response = await treq.get(
            self.server.url + "/admin/ui/main.js", auth=(ADMIN_USER, ADMIN_PASSWORD), persistent=False
        )
        await response.content()
        contentType = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        if response.code != 200 or b"javascript" not in contentType:
            served = f"{response.code} {contentType.decode()}"
            raise SkipTest(f"the server does not serve the console yet (/admin/ui/main.js: {served})")
        self.browser = BrowserThread()
        await self.browser.start()
        self.addCleanup(self.browser.stop)

    async def test_smoke(self) -> None:
        await self.onBrowser(self._smoke)

    def _smoke(self) -> None:
        page = self.page()
        p = page.page
        page.open()
        p.get_by_label("Name").fill("Real server")
        p.get_by_role("button", name="Create application").click()
        p.get_by_role("button", name="Create key").wait_for()
        p.get_by_role("link", name="Live console").click()
        p.get_by_role("button", name="Subscribe", exact=True).click()
        p.locator("ul.subscriptions .badge-subscribed").wait_for()
        p.get_by_role("button", name="Publish", exact=True).click()
        p.get_by_role("log", name="Events").locator(".event-message").wait_for()
        page.screenshot("16-real-server-console")
        self.assertNoErrors(page)
