"""
A refused login on ``/admin`` reads as a page in a browser and stays JSON for programs.

Issue 19: a wrong password on ``/admin`` showed the raw JSON error in the browser. The
console's pages now turn the admin auth's JSON refusal into a short HTML page (same status,
same ``WWW-Authenticate``, so the browser still asks again), while the admin API and
any client asking for JSON keep the JSON they parse.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import treq
from twisted.internet import defer
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest

from pandapush.bayeux import json
from pandapush.web.adminauth import prefersPage
from tests.support.browser import BrowserThread, chromiumAvailable
from tests.support.console import SCREENSHOTS
from tests.support.http import FakeRequest
from tests.support.inprocess import ADMIN_USER, InProcessServer

#: What Chromium sends when it loads a page.
BROWSER_ACCEPT = (
    b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    b"image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)
WRONG = b"Basic " + base64.b64encode(f"{ADMIN_USER}:wrong-password".encode())


def _request(path: bytes, accept: bytes | None) -> IRequest:
    headers = {b"accept": accept} if accept is not None else {}
    return FakeRequest(path, headers=headers).asIRequest()


class PrefersPageTests(SynchronousTestCase):
    """Which requests are a person's browser asking for a page."""

    def test_browsers(self) -> None:
        """A navigation's ``Accept`` (Chromium's, Firefox's, a bare text/html) is a page."""
        for accept in (
            BROWSER_ACCEPT,
            b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            b"text/html",
            b"TEXT/HTML; q=1",
        ):
            self.assertTrue(prefersPage(_request(b"/admin/", accept)), accept)

    def test_programs(self) -> None:
        """No ``Accept``, ``*/*`` (fetch, curl), JSON first, or text/html refused: not a page."""
        for accept in (
            None,
            b"*/*",
            b"application/json",
            b"application/json, text/html;q=0.5",
            b"text/html;q=0",
            b"text/html;q=nonsense",
        ):
            self.assertFalse(prefersPage(_request(b"/admin/", accept)), accept)

    def test_api_is_never_a_page(self) -> None:
        """Under ``/admin/api`` the answer is JSON whatever the client says it accepts."""
        for path in (b"/admin/api", b"/admin/api/info"):
            self.assertFalse(prefersPage(_request(path, BROWSER_ACCEPT)), path)
        self.assertTrue(prefersPage(_request(b"/admin/apix", BROWSER_ACCEPT)))


class AdminRefusalCase(TestCase):
    """The server's real ``/admin`` mount over HTTP, with ``environ`` as its settings."""

    environ: dict[str, str] = {}

    def setUp(self) -> Any:
        async def start() -> None:
            self.server = InProcessServer.withConsole(environ=self.environ)
            await self.server.start()
            self.addCleanup(self.server.stop)

        return defer.Deferred.fromCoroutine(start())

    async def get(self, path: str, accept: bytes | None, auth: bytes | None = WRONG) -> tuple[Any, bytes]:
        headers = Headers()
        if accept is not None:
            headers.setRawHeaders(b"Accept", [accept])
        if auth is not None:
            headers.setRawHeaders(b"Authorization", [auth])
        response = await treq.get(self.server.url + path, headers=headers, persistent=False)
        return response, await response.content()

    def assertPage(self, response: Any, body: bytes, status: int, title: str) -> str:
        """A complete HTML page with ``title`` as its heading, its one style allowed by hash."""
        self.assertEqual(response.code, status)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/html; charset=utf-8"])
        text = body.decode("utf-8")
        self.assertTrue(text.startswith("<!doctype html>"), text[:80])
        self.assertIn(f"<h1>{title}</h1>", text)
        self.assertNotIn('{"code"', text)
        [style] = re.findall(r"<style>(.*?)</style>", text)
        digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
        [csp] = response.headers.getRawHeaders(b"content-security-policy")
        self.assertIn(f"style-src 'sha256-{digest}'".encode(), csp)
        self.assertIn(b"default-src 'none'", csp)
        self.assertNotIn("<script", text)
        return text


class RefusalOverHTTPTests(AdminRefusalCase):
    """Basic auth: a wrong password, JSON for programs, the login throttle."""

    async def test_wrong_password_in_a_browser(self) -> None:
        """A wrong password (or none) on /admin: a readable page, and the browser still asks again."""
        for auth in (WRONG, None):
            for path in ("/admin", "/admin/"):
                response, body = await self.get(path, BROWSER_ACCEPT, auth)
                text = self.assertPage(response, body, 401, "Sign-in required")
                self.assertIn("Admin login required", text)
                self.assertIn("The user name or password was not accepted", text)
                self.assertIn(f'<a href="{path}">Try again</a>', text)
                [challenge] = response.headers.getRawHeaders(b"www-authenticate")
                self.assertTrue(challenge.startswith(b"Basic realm="), challenge)

    async def test_programs_keep_json(self) -> None:
        """The API, a client asking for JSON, and the console's own files get the JSON error."""
        for path, accept in [
            ("/admin/api/info", BROWSER_ACCEPT),  # a person opening the API in a tab: still the API
            ("/admin/api/applications", b"application/json"),
            ("/admin/", b"application/json"),
            ("/admin/", None),
            ("/admin/ui/main.js", b"*/*"),
        ]:
            response, body = await self.get(path, accept)
            self.assertEqual(response.code, 401, path)
            self.assertEqual(
                response.headers.getRawHeaders(b"content-type"), [b"application/json; charset=utf-8"], path
            )
            self.assertEqual(json.loads(body)["message"], "Admin login required", path)

    async def test_throttled_in_a_browser(self) -> None:
        """Past the failed-login allowance the browser reads how long to wait; Retry-After stays."""
        for _ in range(5):
            response, _ = await self.get("/admin/api/info", b"application/json")
            self.assertEqual(response.code, 401)
        response, body = await self.get("/admin/", BROWSER_ACCEPT)
        text = self.assertPage(response, body, 429, "Too many failed sign-ins")
        self.assertIn("Too many failed logins; try again in", text)
        self.assertTrue(response.headers.getRawHeaders(b"retry-after"))
        response, body = await self.get("/admin/", b"application/json")
        self.assertEqual((response.code, json.loads(body)["code"]), (429, 429))


class ClosedAdminTests(AdminRefusalCase):
    """``AUTH_METHOD=none``: the browser reads that the admin area is off."""

    environ = {"AUTH_METHOD": "none"}

    async def test_disabled_in_a_browser(self) -> None:
        """A browser asking for /admin reads that the admin area is disabled."""
        response, body = await self.get("/admin/", BROWSER_ACCEPT, None)
        text = self.assertPage(response, body, 403, "Access refused")
        self.assertIn("The admin area is disabled (AUTH_METHOD=none)", text)

    async def test_programs_keep_json(self) -> None:
        """A program asking for JSON gets the JSON refusal."""
        response, body = await self.get("/admin/", b"application/json", None)
        self.assertEqual((response.code, json.loads(body)["code"]), (403, 403))


class RefusalInChromiumTests(TestCase):
    """What a person sees in Chromium after typing a wrong password."""

    timeout = 120

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

        return defer.Deferred.fromCoroutine(start())

    async def test_wrong_password_page(self) -> None:
        """Chromium, given a wrong password, shows a page with a heading and a link, not JSON."""
        seen = await self.browser.call(self._wrongPassword)
        self.assertEqual(seen["status"], 401)
        self.assertEqual(seen["contentType"], "text/html")
        self.assertEqual(seen["h1"], "Sign-in required")
        self.assertIn("The user name or password was not accepted", seen["text"])
        self.assertNotIn('"code"', seen["text"])
        self.assertEqual(seen["pre"], 0)  # Chromium shows JSON and plain text in a <pre>
        self.assertEqual(seen["link"], self.server.url + "/admin/")
        self.assertEqual(seen["errors"], [])
        self.assertEqual(seen["background"], "rgb(246, 247, 249)")  # its style was allowed

    def _wrongPassword(self) -> dict[str, Any]:
        context = self.browser.browser.new_context(
            viewport={"width": 390, "height": 844},
            http_credentials={"username": ADMIN_USER, "password": "wrong-password"},
        )
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            response = page.goto(self.server.url + "/admin/")
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "refusal-wrong-password.png"), full_page=True)
            return {
                "status": response.status if response is not None else None,
                "contentType": page.evaluate("() => document.contentType"),
                "h1": page.locator("h1").inner_text(),
                "text": page.locator("body").inner_text(),
                "pre": page.locator("pre").count(),
                "background": page.evaluate("() => getComputedStyle(document.body).backgroundColor"),
                "link": page.get_by_role("link", name="Try again").evaluate("(a) => a.href"),
                # A CSP violation (the inline style refused) is logged as an error; the 401
                # itself and the browser's own /favicon.ico 404 are "failed to load" ones.
                "errors": [e for e in errors if not e.startswith("Failed to load resource")],
            }
        finally:
            context.close()
