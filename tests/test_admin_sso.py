"""
``AUTH_METHOD=oidc`` end to end: headless Chromium signs in to the console through a real
OpenID provider (npm's ``oidc-provider`` on 127.0.0.1, ``tests/node/oidc-provider.mjs``).

- a root admin and an application admin reach the console with their own rights;
- the authorization request carries PKCE (S256), a state and a nonce; the session cookie
  is HttpOnly, SameSite=Lax, scoped to /admin and bounded;
- a forged state is refused before the code is redeemed; so is a callback in a browser
  that never started the sign-in;
- ID tokens altered on their way (another nonce, another audience or issuer, expired, a
  changed claim under the old signature, a key the provider never published) are refused,
  while a key the provider has just rotated in is fetched and accepted;
- a session that ends sends the console back to sign in, to the view it was on; the
  server refuses an expired or foreign cookie by itself;
- signing out ends the session here and at the provider;
- a provider that keeps the e-mail out of the ID token is asked at its userinfo endpoint.

Screenshots go to ``artifacts/admin/sso-*.png``.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import treq
from twisted.internet import defer
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.http_headers import Headers

from pandapush.bayeux import json
from tests.support.browser import BrowserThread, chromiumAvailable
from tests.support.oidc import CLIENT_ID, ROOT, SSOPage, createApplication, oidcMethod, startSSO

BROWSER_ACCEPT = b"text/html,application/xhtml+xml,*/*;q=0.8"


class SSOTestCase(TestCase):
    timeout = 240
    conform = False
    environ: dict[str, str] = {}

    def setUp(self) -> Any:
        unavailable = chromiumAvailable()
        if unavailable:
            raise SkipTest(unavailable)

        async def start() -> None:
            self.provider, self.server = await startSSO(self, self.conform, self.environ)
            self.auth = oidcMethod(self.server)
            self.appA = (await createApplication(self.server, "Chat", ["alice@example.com"])).id
            self.appB = (await createApplication(self.server, "Billing", ["bob@example.com"])).id
            self.browser = BrowserThread()
            await self.browser.start()
            self.addCleanup(self.browser.stop)

        return defer.Deferred.fromCoroutine(start())

    def page(self, **kwargs: Any) -> SSOPage:
        """(Browser thread.) A fresh browser, closed after the test."""
        page = SSOPage(self.browser.browser, self.server.url, **kwargs)
        self.addCleanup(self.browser.call, page.close)
        return page

    def refused(self, page: SSOPage, response: Any) -> dict[str, Any]:
        """(Browser thread.) What a failed sign-in left on screen."""
        return {
            "status": response.status,
            "url": page.page.url,
            "h1": page.page.locator("h1").inner_text(),
            "text": page.page.locator("body").inner_text(),
            "session": "pandapush_admin" in page.cookies(),
        }


class SignInTests(SSOTestCase):
    async def test_root_admin(self) -> None:
        """A root admin (ROOT_ADMINS) signs in through the provider and sees every application."""
        seen = await self.browser.call(self._root)
        authorize = parse_qs(urlsplit(seen["authorize"]).query)
        self.assertEqual(authorize["response_type"], ["code"])
        self.assertEqual(authorize["client_id"], [CLIENT_ID])
        self.assertEqual(authorize["code_challenge_method"], ["S256"])
        self.assertEqual(len(authorize["code_challenge"][0]), 43)
        self.assertGreaterEqual(len(authorize["state"][0]), 32)
        self.assertGreaterEqual(len(authorize["nonce"][0]), 32)
        self.assertEqual(authorize["redirect_uri"], [self.server.url + "/admin/auth/callback"])
        self.assertIn("Signed in as root@example.com (root admin)", seen["whoami"])
        self.assertEqual(sorted(seen["apps"]), ["Billing", "Chat"])
        self.assertEqual(seen["info"]["username"], ROOT)
        self.assertIs(seen["info"]["root"], True)
        self.assertEqual(
            seen["info"]["auth"],
            {"method": "oidc", "signIn": "/admin/auth/login", "signOut": "/admin/auth/logout"},
        )
        cookie = seen["cookies"]["pandapush_admin"]
        self.assertEqual(
            (cookie["httpOnly"], cookie["sameSite"], cookie["secure"], cookie["path"]),
            (True, "Lax", False, "/admin"),  # Secure over https; this test is plain http
        )
        self.assertLess(abs(cookie["expires"] - (seen["at"] + 8 * 3600)), 120)
        self.assertNotIn("pandapush_admin_login", seen["cookies"])  # single use, deleted
        self.assertEqual(seen["errors"], [])
        # One discovery and one key set fetch served both sign-ins (cached, not refetched).
        counts = await self.provider.counts()
        self.assertEqual((counts["token"], counts["discovery"], counts["jwks"]), (2, 1, 1))

    def _root(self) -> dict[str, Any]:
        page = self.page()
        page.signIn("root")
        page.ready()
        page.page.locator("table.apps").wait_for()
        page.screenshot("sso-root-applications")
        seen = {
            "at": time.time(),
            "authorize": next(u for u in page.requests if "/auth?" in u and self.provider.issuer in u),
            "whoami": page.page.inner_text("#whoami"),
            "apps": page.page.locator("table.apps tbody th").all_inner_texts(),
            "info": page.page.evaluate("() => fetch('/admin/api/info').then((r) => r.json())"),
            "cookies": page.cookies(),
            "errors": page.errors(),
        }
        other = self.page()
        other.signIn("bob")
        other.ready()
        return seen

    async def test_application_admin(self) -> None:
        """An admin of one application (matched by e-mail, in lower case) sees only that one."""
        seen = await self.browser.call(self._alice)
        self.assertIn("Signed in as alice@example.com", seen["whoami"])
        self.assertNotIn("root admin", seen["whoami"])
        self.assertEqual(seen["apps"], ["Chat"])
        self.assertIn("Not found (404)", seen["other"])
        self.assertEqual(seen["errors"], [])

    def _alice(self) -> dict[str, Any]:
        page = self.page()
        page.signIn("alice")  # the provider spells her address Alice@Example.com
        page.ready()
        page.page.locator("table.apps").wait_for()
        page.screenshot("sso-application-admin")
        seen = {
            "whoami": page.page.inner_text("#whoami"),
            "apps": page.page.locator("table.apps tbody th").all_inner_texts(),
            "errors": page.errors(),
        }
        page.page.evaluate("(id) => { location.hash = `#/app/${id}/keys`; }", self.appB)
        seen["other"] = page.page.get_by_role("alert").inner_text()
        return seen

    async def test_unverified_email_refused(self) -> None:
        """An address the provider has not verified names nobody, even a root admin's."""
        seen = await self.browser.call(self._mallory)
        self.assertEqual((seen["status"], seen["h1"]), (403, "Sign-in failed"))
        self.assertIn("has not verified the address root@example.com", seen["text"])
        self.assertFalse(seen["session"])

    def _mallory(self) -> dict[str, Any]:
        page = self.page()
        response = page.signIn("mallory")
        page.screenshot("sso-refused-unverified")
        return self.refused(page, response)


class ForgeryTests(SSOTestCase):
    async def test_forged_state(self) -> None:
        """
        A callback carrying another sign-in's code and state (an attacker's own, replayed into
        a victim's browser that is signing in itself): refused before the code is redeemed.
        """
        seen = await self.browser.call(self._forgedState)
        self.assertEqual((seen["status"], seen["h1"]), (400, "Sign-in failed"))
        self.assertIn("its state does not match", seen["text"])
        self.assertFalse(seen["session"])
        self.assertEqual((await self.provider.counts())["token"], 1)  # the attacker's own, only
        # Not signed in: the console sends the browser to the provider again.
        response = await treq.get(
            self.server.url + "/admin/",
            headers=Headers({b"Accept": [BROWSER_ACCEPT]}),
            allow_redirects=False,
            persistent=False,
        )
        await response.content()
        self.assertEqual(response.code, 303)
        self.assertEqual(response.headers.getRawHeaders(b"location"), [b"/admin/auth/login?next=/admin/"])

    def _forgedState(self) -> dict[str, Any]:
        attacker = self.page()
        attacker.signIn("bob")
        callback = next(u for u in attacker.requests if "/admin/auth/callback?" in u)
        victim = self.page()
        victim.page.goto(self.server.url + "/admin/")
        victim.page.wait_for_url(re.compile(r"/interaction/"))
        self.assertIn("pandapush_admin_login", {c["name"] for c in victim.context.cookies()})
        response = victim.page.goto(callback)
        victim.screenshot("sso-refused-forged-state")
        return self.refused(victim, response)

    async def test_callback_in_another_browser(self) -> None:
        """A callback reaching a browser that did not start the sign-in (no sign-in cookie)."""
        seen = await self.browser.call(self._otherBrowser)
        self.assertEqual((seen["status"], seen["h1"]), (400, "Sign-in failed"))
        self.assertIn("was started in another browser", seen["text"])
        self.assertFalse(seen["session"])
        self.assertEqual((await self.provider.counts())["token"], 0)

    def _otherBrowser(self) -> dict[str, Any]:
        page = self.page()
        page.page.goto(self.server.url + "/admin/")
        page.page.wait_for_url(re.compile(r"/interaction/"))
        page.context.clear_cookies(name="pandapush_admin_login")
        return self.refused(page, page.submitLogin("root"))

    async def test_tampered_id_tokens(self) -> None:
        """ID tokens altered between the provider and the console are all refused."""
        expected = {
            "nonce": "The ID token was refused: Invalid claim: 'nonce'.",
            "audience": "The ID token was refused: Invalid claim: 'aud'.",
            "issuer": "The ID token was refused: Invalid claim: 'iss'.",
            "expired": "The ID token was refused: The token is expired.",
            "signature": "The ID token was refused: bad signature.",
            "unknown-key": "The identity provider could not complete the sign-in",
        }
        for mode, message in expected.items():
            await self.provider.setMode(mode)
            seen = await self.browser.call(self._signInAs, "bob", f"sso-refused-{mode}")
            self.assertEqual((seen["status"], seen["h1"]), (502, "Sign-in failed"), mode)
            self.assertIn(message, seen["text"], mode)
            self.assertFalse(seen["session"], mode)
        counts = await self.provider.counts()
        self.assertEqual(counts["token"], len(expected))  # each was redeemed, then refused
        # Unchanged tokens are accepted again.
        await self.provider.setMode("none")
        seen = await self.browser.call(self._signInAs, "bob", None)
        self.assertTrue(seen["session"])

    def _signInAs(self, user: str, screenshot: str | None) -> dict[str, Any]:
        page = self.page()
        response = page.signIn(user)
        if screenshot:
            page.screenshot(screenshot)
        return self.refused(page, response)

    async def test_rotated_key_accepted(self) -> None:
        """A token signed with a key the provider has just published: its key set is fetched again."""
        seen = await self.browser.call(self._signInAs, "bob", None)
        self.assertTrue(seen["session"])
        self.assertEqual((await self.provider.counts())["jwks"], 1)
        await self.provider.setMode("rotated")
        seen = await self.browser.call(self._signInAs, "alice", None)
        self.assertTrue(seen["session"], seen)
        self.assertEqual((await self.provider.counts())["jwks"], 2)


class SessionTests(SSOTestCase):
    environ = {"OIDC_SESSION_LIFETIME": "5"}

    async def test_expired_session_back_to_sign_in(self) -> None:
        """Once the session has ended the console signs in again and comes back to the same view."""
        seen = await self.browser.call(self._expire)
        self.assertTrue(seen["signInAgain"].startswith(self.server.url + "/admin/auth/login?next="))
        self.assertEqual(
            parse_qs(urlsplit(seen["signInAgain"]).query)["next"], [f"/admin/#/app/{self.appA}/keys"]
        )
        self.assertTrue(seen["viaProvider"])
        self.assertEqual(seen["url"], f"{self.server.url}/admin/#/app/{self.appA}/keys")
        self.assertEqual(seen["h1"], "Chat")
        self.assertEqual((await self.provider.counts())["token"], 2)

    def _expire(self) -> dict[str, Any]:
        page = self.page()
        page.signIn("root")
        page.ready()
        signedIn = time.monotonic()
        page.page.locator("table.apps").wait_for()
        time.sleep(max(0.0, 5.5 - (time.monotonic() - signedIn)))
        before = len(page.requests)
        # A view of the console after the end: its API call is refused, and the console
        # goes to sign in (the provider still knows the browser, so no form this time).
        page.page.evaluate("(id) => { location.hash = `#/app/${id}/keys`; }", self.appA)
        page.page.wait_for_url(re.compile(r"/admin/#/app/"), timeout=20000)
        page.ready()
        page.page.locator("main h1").filter(has_text="Chat").wait_for()
        later = page.requests[before:]
        return {
            "signInAgain": next(u for u in later if "/admin/auth/login" in u),
            "viaProvider": any(u.startswith(self.provider.issuer + "/auth") for u in later),
            "url": page.page.url,
            "h1": page.page.locator("main h1").evaluate("(h) => h.firstChild.textContent"),
        }

    async def test_server_refuses_expired_and_foreign_cookies(self) -> None:
        """The server checks the cookie itself: expired, foreign or misused ones name nobody."""
        from pandapush.web.oidc.cookies import SignedCookie

        now = time.time()
        sessions = self.auth.sessions
        cookies = {
            "valid": sessions.sign({"u": ROOT}, now, 60),
            "expired": sessions.sign({"u": ROOT}, now - 120, 60),
            "foreign": SignedCookie(b"another secret of another deployment", "session").sign(
                {"u": ROOT}, now, 60
            ),
            "sign-in cookie": self.auth.logins.sign({"u": ROOT}, now, 60),
        }
        for name, value in cookies.items():
            headers = Headers(
                {b"Cookie": [f"pandapush_admin={value}".encode()], b"Accept": [b"application/json"]}
            )
            response = await treq.get(self.server.url + "/admin/api/info", headers=headers, persistent=False)
            body = json.loads(await response.content())
            if name == "valid":
                self.assertEqual((response.code, body["username"], body["root"]), (200, ROOT, True))
                continue
            self.assertEqual(response.code, 401, name)
            self.assertIn("Sign in at /admin/auth/login", body["message"], name)
            headers.setRawHeaders(b"Accept", [BROWSER_ACCEPT])
            response = await treq.get(
                self.server.url + "/admin/?x=1", headers=headers, allow_redirects=False, persistent=False
            )
            await response.content()
            self.assertEqual(response.code, 303, name)
            self.assertEqual(
                response.headers.getRawHeaders(b"location"), [b"/admin/auth/login?next=/admin/%3Fx%3D1"], name
            )

    async def test_sign_out(self) -> None:
        """Sign out: the session ends here and at the provider; the next visit must sign in again."""
        seen = await self.browser.call(self._signOut)
        endSession = parse_qs(urlsplit(seen["endSession"]).query)
        self.assertEqual(endSession["post_logout_redirect_uri"], [self.server.url + "/admin/auth/signed-out"])
        self.assertEqual(endSession["client_id"], [CLIENT_ID])
        self.assertIn("id_token_hint", endSession)
        self.assertEqual(seen["signedOut"], (self.server.url + "/admin/auth/signed-out", "Signed out"))
        self.assertFalse(seen["session"])
        self.assertTrue(seen["formAgain"])
        # A sign-out is refused unless sent as JSON (no other site can send that).
        response = await treq.post(self.server.url + "/admin/auth/logout", b"", persistent=False)
        await response.content()
        self.assertEqual(response.code, 415)

    def _signOut(self) -> dict[str, Any]:
        page = self.page()
        page.signIn("root")
        page.ready()
        page.page.get_by_role("button", name="Sign out").click()
        page.page.get_by_role("button", name="Yes, sign me out").click()
        page.page.wait_for_url(re.compile(r"/admin/auth/signed-out"))
        page.screenshot("sso-signed-out")
        seen = {
            "endSession": next(
                u for u in page.requests if u.startswith(self.provider.issuer + "/session/end?")
            ),
            "signedOut": (page.page.url, page.page.locator("h1").inner_text()),
            "session": "pandapush_admin" in page.cookies(),
        }
        # The provider's session ended too: it asks for the password again.
        page.page.get_by_role("link", name="Sign in again").click()
        page.page.wait_for_url(re.compile(r"/interaction/"))
        seen["formAgain"] = page.page.locator("input[name=password]").is_visible()
        return seen


class UserInfoTests(SSOTestCase):
    """A provider that keeps scope claims out of the ID token (the spec's strict reading)."""

    conform = True

    async def test_email_from_userinfo(self) -> None:
        seen = await self.browser.call(self._root)
        self.assertIn("Signed in as root@example.com (root admin)", seen)
        self.assertEqual((await self.provider.counts())["userinfo"], 1)

    def _root(self) -> str:
        page = self.page()
        page.signIn("root")
        page.ready()
        return str(page.page.inner_text("#whoami"))
