"""
The ``oidc`` admin auth method's parts, without a provider: signed cookies, claim
matching, the ``OIDC_*`` settings, where a browser may be sent back to, the challenge,
the provider's discovery and keys (cached, refreshed on an unknown key, shared fetches),
the flow's checks on a hand-made provider's answers, and that it is a plugin built on the
public plugin interface only. ``tests/test_admin_sso.py`` runs it against a real provider.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

import pandapush.web.adminauth as adminauth
from pandapush.auth.admin import AdminAuthError
from pandapush.auth.config import TenancyConfig
from pandapush.bayeux import json
from pandapush.web.adminauth import IAdminAuthPages, findAdminAuthPlugins, makeAdminAuthority
from pandapush.web.oidc import OIDCConfig, OIDCConfigError, oidcAdminAuth
from pandapush.web.oidc.claims import LoginRefusedError, adminName
from pandapush.web.oidc.cookies import MAX_COOKIE, CookieError, SignedCookie, cookieHeader
from tests.support.http import FakeRequest
from tests.support.logs import captureLogs
from tests.support.oidc import requireAuthlib

OIDC_DIR = Path(__file__).resolve().parents[1] / "pandapush" / "web" / "oidc"
ISSUER = "https://login.example.com/realms/ops"
ENV = {
    "AUTH_METHOD": "oidc",
    "OIDC_ISSUER": ISSUER,
    "OIDC_CLIENT_ID": "pandapush",
    "OIDC_CLIENT_SECRET": "a client secret",
    "ROOT_ADMINS": "root@example.com",
}


class SignedCookieTests(SynchronousTestCase):
    """Signed values with an expiry, one key per purpose."""

    def setUp(self) -> None:
        self.cookie = SignedCookie(b"the secret", "session")

    def test_round_trip(self) -> None:
        value = self.cookie.sign({"u": "ada@example.com"}, 1000.0, 60)
        self.assertEqual(self.cookie.verify(value, 1030.0), {"u": "ada@example.com"})
        self.assertEqual(self.cookie.verify(value.encode(), 1059.0), {"u": "ada@example.com"})
        self.assertTrue(value.startswith("v1."))

    def test_expiry(self) -> None:
        """Refused from ``exp`` on, and when issued more than a minute in the future."""
        value = self.cookie.sign({"u": "a"}, 1000.0, 60)
        self.assertRaises(CookieError, self.cookie.verify, value, 1060.0)
        self.assertRaises(CookieError, self.cookie.verify, value, 5000.0)
        self.assertRaises(CookieError, self.cookie.verify, value, 900.0)  # iat 1000 > 900 + 60
        self.assertEqual(self.cookie.verify(value, 941.0), {"u": "a"})

    def test_tampered(self) -> None:
        """Any change to the payload or the MAC is a bad signature: the payload is not even read."""
        value = self.cookie.sign({"u": "bob@example.com"}, 1000.0, 60)
        version, payload, mac = value.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["v"]["u"] = "root@example.com"
        forged = base64.urlsafe_b64encode(json.dumps(claims)).rstrip(b"=").decode()
        for bad in (
            f"{version}.{forged}.{mac}",
            f"{version}.{payload}.{mac[:-2]}AA",
            f"{version}.{payload}.",
            f"v2.{payload}.{mac}",
            f"{payload}.{mac}",
            "",
            "v1..",
            "\xff",
            "v1." + "A" * MAX_COOKIE,
        ):
            with self.assertRaises(CookieError, msg=bad[:40]):
                self.cookie.verify(bad, 1000.0)
        self.assertRaises(CookieError, self.cookie.verify, None, 1000.0)
        self.assertRaises(CookieError, self.cookie.verify, b"\xff\xfe", 1000.0)

    def test_keys(self) -> None:
        """Another secret, or the same secret for another purpose, signs nothing this one accepts."""
        value = self.cookie.sign({"u": "a"}, 1000.0, 60)
        self.assertRaises(CookieError, SignedCookie(b"another secret", "session").verify, value, 1000.0)
        self.assertRaises(CookieError, SignedCookie(b"the secret", "login").verify, value, 1000.0)
        # Two nodes with the same secret accept each other's cookies (nothing kept server-side).
        self.assertEqual(SignedCookie(b"the secret", "session").verify(value, 1000.0), {"u": "a"})

    def test_header(self) -> None:
        """HttpOnly, SameSite=Lax, the path and lifetime; Secure only over https; Max-Age 0 deletes."""
        self.assertEqual(
            cookieHeader("pandapush_admin", "v1.x.y", "/admin", 3600, True),
            b"pandapush_admin=v1.x.y; Path=/admin; Max-Age=3600; HttpOnly; SameSite=Lax; Secure",
        )
        self.assertEqual(
            cookieHeader("pandapush_admin", "", "/admin", -5, False),
            b"pandapush_admin=; Path=/admin; Max-Age=0; HttpOnly; SameSite=Lax",
        )


class AdminNameTests(SynchronousTestCase):
    """Which admin the claims name (``OIDC_CLAIM``), and who may sign in at all."""

    def test_email(self) -> None:
        """E-mail addresses are matched in lower case, as providers spell them differently."""
        claims = {"sub": "1", "email": " Alice@Example.COM ", "email_verified": True}
        self.assertEqual(adminName(claims, "email"), "alice@example.com")
        self.assertEqual(adminName({"email": "bob@example.com"}, "email"), "bob@example.com")  # no flag

    def test_unverified_email(self) -> None:
        """``email_verified: false`` (or "false") names nobody: anyone could register that address."""
        for flag in (False, "false", "False"):
            with self.assertRaises(LoginRefusedError):
                adminName({"email": "root@example.com", "email_verified": flag}, "email")

    def test_other_claims(self) -> None:
        """Another claim is used as it is (no case folding), e.g. a username or an object id."""
        claims = {"preferred_username": "Ada.Lovelace", "email": "x@example.com"}
        self.assertEqual(adminName(claims, "preferred_username"), "Ada.Lovelace")

    def test_unusable(self) -> None:
        for claims in (
            {},
            {"email": ""},
            {"email": "   "},
            {"email": ["a@example.com"]},
            {"email": 42},
            {"email": "a@example.com\n"[:-1] + "\x00"},
            {"email": "a" * 400 + "@example.com"},
        ):
            with self.assertRaises(LoginRefusedError, msg=repr(claims)[:60]):
                adminName(claims, "email")

    def test_allowed_domains(self) -> None:
        """With ``OIDC_ALLOWED_DOMAINS`` only those domains' addresses (and Google's ``hd``) pass."""
        allowed = frozenset({"example.com"})
        self.assertEqual(adminName({"email": "a@Example.com"}, "email", allowed), "a@example.com")
        for claims in (
            {"email": "a@example.org"},
            {"email": "a@sub.example.com"},
            {"email": "example.com"},
            {"email": "@example.com"},
            {"email": "a@example.com", "hd": "other.com"},
        ):
            with self.assertRaises(LoginRefusedError, msg=repr(claims)):
                adminName(claims, "email", allowed)


class ConfigTests(SynchronousTestCase):
    """``OIDC_*`` read and checked before the server starts; errors name the variable."""

    def test_defaults(self) -> None:
        config = OIDCConfig.fromEnvironment(ENV)
        self.assertEqual(
            (config.issuer, config.clientId, config.claim, config.scopes, config.sessionLifetime),
            (ISSUER, "pandapush", "email", ("openid", "email", "profile"), 8 * 3600.0),
        )
        self.assertIsNone(config.redirectURI)
        self.assertNotIn("a client secret", repr(config))

    def test_settings(self) -> None:
        config = OIDCConfig.fromEnvironment(
            {
                **ENV,
                "OIDC_CLAIM": "preferred_username",
                "OIDC_SCOPES": "email,profile groups",
                "OIDC_REDIRECT_URI": "https://push.example.com/admin/auth/callback",
                "OIDC_SESSION_LIFETIME": "600",
                "OIDC_ALLOWED_DOMAINS": "Example.com, @example.org",
            }
        )
        self.assertEqual(config.claim, "preferred_username")
        self.assertEqual(config.scopes, ("openid", "email", "profile", "groups"))
        self.assertEqual(config.sessionLifetime, 600.0)
        self.assertEqual(config.allowedDomains, frozenset({"example.com", "example.org"}))

    def test_refused(self) -> None:
        cases = {
            "OIDC_ISSUER and OIDC_CLIENT_ID": {"AUTH_METHOD": "oidc"},
            "OIDC_CLIENT_ID": {"OIDC_ISSUER": ISSUER},
            "must use https": {**ENV, "OIDC_ISSUER": "http://login.example.com"},
            "absolute https URL": {**ENV, "OIDC_ISSUER": "login.example.com"},
            "credentials": {**ENV, "OIDC_ISSUER": "https://u:p@login.example.com"},
            "OIDC_REDIRECT_URI must end": {**ENV, "OIDC_REDIRECT_URI": "https://push.example.com/cb"},
            "at least 32": {**ENV, "OIDC_SESSION_SECRET": "short"},
            "needs OIDC_SESSION_SECRET": {k: v for k, v in ENV.items() if k != "OIDC_CLIENT_SECRET"},
            "must be seconds": {**ENV, "OIDC_SESSION_LIFETIME": "a day"},
            "between 1 and": {**ENV, "OIDC_SESSION_LIFETIME": "0"},
        }
        for expected, environ in cases.items():
            with self.assertRaises(OIDCConfigError, msg=expected) as caught:
                OIDCConfig.fromEnvironment(environ)
            self.assertIn(expected, str(caught.exception))
            self.assertIsInstance(caught.exception, AdminAuthError)  # stops the server with the message

    def test_loopback_http(self) -> None:
        """Plain http only to a provider on this machine (a test or a local Keycloak)."""
        for issuer in ("http://127.0.0.1:8080/realms/x", "http://localhost:9000", "http://[::1]:1"):
            self.assertEqual(OIDCConfig.fromEnvironment({**ENV, "OIDC_ISSUER": issuer}).issuer, issuer)

    def test_session_key(self) -> None:
        """Derived from the client secret unless given: every node configured alike agrees."""
        one = OIDCConfig.fromEnvironment(ENV)
        two = OIDCConfig.fromEnvironment(dict(ENV))
        other = OIDCConfig.fromEnvironment({**ENV, "OIDC_CLIENT_SECRET": "rotated"})
        explicit = OIDCConfig.fromEnvironment({**ENV, "OIDC_SESSION_SECRET": "s" * 32})
        value = SignedCookie(one.sessionSecret, "session").sign({"u": "a"}, 1000, 60)
        self.assertEqual(SignedCookie(two.sessionSecret, "session").verify(value, 1000), {"u": "a"})
        for config in (other, explicit):
            self.assertRaises(CookieError, SignedCookie(config.sessionSecret, "session").verify, value, 1000)
        public = OIDCConfig.fromEnvironment(
            {"OIDC_ISSUER": ISSUER, "OIDC_CLIENT_ID": "spa", "OIDC_SESSION_SECRET": "p" * 40}
        )
        self.assertIsNone(public.clientSecret)


class PluginTests(SynchronousTestCase):
    """``AUTH_METHOD=oidc`` through the plugin machinery every admin auth method goes through."""

    def setUp(self) -> None:
        requireAuthlib()

    def authority(self, **extra: str) -> Any:
        return makeAdminAuthority(TenancyConfig.fromEnvironment({**ENV, **extra}), clock=Clock())

    def test_chosen_by_name(self) -> None:
        from pandapush.web.oidc.method import OIDCAdminAuth

        authority = self.authority()
        self.assertIsInstance(authority.method, OIDCAdminAuth)
        self.assertTrue(IAdminAuthPages.providedBy(authority.method))
        self.assertIsNone(authority.login)  # no generated password, no banner
        self.assertEqual(authority.rootAdmins, frozenset({"root@example.com"}))
        self.assertEqual(
            authority.consoleAuth(),
            {"method": "oidc", "signIn": "/admin/auth/login", "signOut": "/admin/auth/logout"},
        )

    def test_root_admins_spelled_in_capitals(self) -> None:
        """E-mail names are lower case: a ROOT_ADMINS entry with capitals could never match; said at start."""
        logged = captureLogs(self)
        self.authority(ROOT_ADMINS="Root@Example.com,ops@example.com")
        [warning] = logged.matching("lower case")
        self.assertEqual(warning["names"], ["Root@Example.com"])

    def test_basic_has_no_pages(self) -> None:
        authority = makeAdminAuthority(
            TenancyConfig.fromEnvironment({"ADMIN_USERNAME": "a", "ADMIN_PASSWORD": "b"}), clock=Clock()
        )
        self.assertIsNone(authority.pages())
        self.assertEqual(authority.consoleAuth(), {"method": "basic", "signIn": None, "signOut": None})

    def test_bad_settings_stop_the_server(self) -> None:
        with self.assertRaises(AdminAuthError) as caught:
            self.authority(OIDC_ISSUER="")
        self.assertIn("OIDC_ISSUER", str(caught.exception))

    def test_without_the_extra(self) -> None:
        """Without authlib installed the error says which extra to install."""
        saved = sys.modules.get("pandapush.web.oidc.method")
        sys.modules["pandapush.web.oidc.method"] = None  # type: ignore[assignment]
        try:
            with self.assertRaises(AdminAuthError) as caught:
                self.authority()
        finally:
            if saved is not None:
                sys.modules["pandapush.web.oidc.method"] = saved
            else:
                sys.modules.pop("pandapush.web.oidc.method", None)
        self.assertIn("pip install 'pandapush[oidc]'", str(caught.exception))

    def test_a_plain_plugin(self) -> None:
        """
        The same object works as a third party's drop-in would (found by ``getPlugins`` in a
        plugin package, checked with ``verifyObject``), and ``AUTH_METHOD=plugins`` still
        means the one third-party plugin installed: the built-in is not counted.
        """
        import importlib

        base = os.path.abspath(self.mktemp())
        name = f"pandapush_oidc_plugins_{uuid.uuid4().hex}"
        dropin = "from pandapush.web.oidc import oidcAdminAuth\n"
        for folder, files in [
            (name, {"__init__.py": "", "sso.py": dropin}),
            (name + "_none", {"__init__.py": ""}),
        ]:
            os.makedirs(os.path.join(base, folder))
            for filename, text in files.items():
                with open(os.path.join(base, folder, filename), "w") as f:
                    f.write(text)
            self.addCleanup(sys.modules.pop, folder, None)
        sys.path.insert(0, base)
        self.addCleanup(sys.path.remove, base)
        package, none = importlib.import_module(name), importlib.import_module(name + "_none")
        self.assertIs(findAdminAuthPlugins(package)["oidc"], oidcAdminAuth)
        with self.assertRaises(AdminAuthError) as caught:
            makeAdminAuthority(TenancyConfig.fromEnvironment({"AUTH_METHOD": "plugins"}), none, Clock())
        self.assertIn("found none", str(caught.exception))

    def test_public_interface_only(self) -> None:
        """
        The plugin is built as a third party's would be: from pandapush it imports only the
        public names of the admin auth interface and of small shared helpers, nothing private
        and nothing of the web layer.
        """
        allowed = {
            "pandapush.web.adminauth": set(adminauth.__all__),
            "pandapush.auth.admin": {"AdminAuthError"},
            "pandapush.web.http": {"errorBody", "jsonResponse"},
            "pandapush.web.pages": {"personPage"},
            "pandapush.bayeux": {"json"},
        }
        for path in sorted(OIDC_DIR.glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        self.assertFalse(
                            alias.name.startswith("pandapush"), f"{path.name}: import {alias.name}"
                        )
                if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("pandapush"):
                    continue
                module = node.module or ""
                if module.startswith("pandapush.web.oidc"):
                    continue
                self.assertIn(module, allowed, f"{path.name} imports from {module}")
                for alias in node.names:
                    self.assertIn(alias.name, allowed[module], f"{path.name}: {module}.{alias.name}")


class ChallengeAndPathsTests(SynchronousTestCase):
    """What a request without a session gets, and where a browser may be sent back to."""

    def setUp(self) -> None:
        requireAuthlib()
        from pandapush.web.oidc.method import OIDCAdminAuth

        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.auth = OIDCAdminAuth(OIDCConfig.fromEnvironment(ENV), self.clock)

    def request(self, uri: bytes, accept: bytes | None, method: bytes = b"GET") -> FakeRequest:
        return FakeRequest(uri, method, headers={b"accept": accept} if accept else None)

    def test_browser_sent_to_sign_in(self) -> None:
        request = self.request(b"/admin/?statsInterval=300", b"text/html,*/*;q=0.8")
        body = self.auth.challenge(request.asIRequest())
        self.assertEqual(request.responseCode, 303)
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"location"),
            [b"/admin/auth/login?next=/admin/%3FstatsInterval%3D300"],
        )
        self.assertEqual(body, b"Sign in first.\n")

    def test_programs_get_401(self) -> None:
        for uri, accept, method in [
            (b"/admin/api/info", b"text/html", b"GET"),
            (b"/admin/", b"application/json", b"GET"),
            (b"/admin/", None, b"GET"),
            (b"/admin/", b"text/html", b"POST"),
        ]:
            request = self.request(uri, accept, method)
            body = json.loads(self.auth.challenge(request.asIRequest()))
            self.assertEqual((request.responseCode, body["code"]), (401, 401), uri)
            self.assertIn("/admin/auth/login", body["message"])

    def test_session(self) -> None:
        """A valid session cookie names its admin; anything else names nobody."""
        now = self.clock.seconds()
        for cookie, expected in [
            (self.auth.sessions.sign({"u": "ada@example.com"}, now, 60), "ada@example.com"),
            (self.auth.sessions.sign({"u": "ada@example.com"}, now - 61, 60), None),
            (self.auth.sessions.sign({"u": ""}, now, 60), None),
            (self.auth.sessions.sign({"name": "x"}, now, 60), None),
            (self.auth.logins.sign({"u": "ada@example.com"}, now, 60), None),
            ("garbage", None),
        ]:
            request = self.request(b"/admin/api/info", None)
            request.received_cookies[b"pandapush_admin"] = cookie.encode()
            self.assertEqual(self.successResultOf(self.auth.authenticate(request.asIRequest())), expected)
        bare = self.request(b"/admin/", None).asIRequest()
        self.assertIsNone(self.successResultOf(self.auth.authenticate(bare)))

    def test_safe_next(self) -> None:
        """Only the console's own paths; never another site, never the sign-in pages (a loop)."""
        from pandapush.web.oidc.method import safeNext

        for good in ("/admin", "/admin/", "/admin/#/app/x/keys", "/admin/?statsInterval=300#/"):
            self.assertEqual(safeNext(good), good)
        for bad in (
            None,
            "",
            "https://evil.example/admin",
            "//evil.example/admin",
            "/adminx",
            "/admin\\@evil",
            "/admin/auth/login?next=/admin",
            "/admin/\r\nSet-Cookie: x",
            "/admin/ x",
            "/channel/x",
            "/admin/" + "a" * 3000,
        ):
            self.assertEqual(safeNext(bad), "/admin/", repr(bad)[:40])

    def test_redirect_uri(self) -> None:
        """From the request's host (https when the request is), or the configured one."""
        request = self.request(b"/admin/auth/login", None)
        request.requestHeaders.setRawHeaders(b"host", [b"push.example.com:8443"])
        self.assertEqual(
            self.auth.redirectURI(request.asIRequest()), "http://push.example.com:8443/admin/auth/callback"
        )
        request.requestHeaders.setRawHeaders(b"host", [b"evil.example/x?"])
        from pandapush.web.oidc.login import LoginFailedError

        self.assertRaises(LoginFailedError, self.auth.redirectURI, request.asIRequest())


class _FakeHTTP:
    """The provider's answers, by method and URL; records every request."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], Any] = {}
        self.requests: list[dict[str, Any]] = []
        self.hold: defer.Deferred[None] | None = None

    async def request(
        self, method: str, url: str, data: Any = None, headers: Any = None, auth: Any = None
    ) -> Any:
        from pandapush.web.oidc.provider import Answer

        self.requests.append({"method": method, "url": url, "data": data, "headers": headers or {}})
        if self.hold is not None:
            await self.hold
        answer = self.answers[(method, url)]
        if callable(answer):
            answer = answer(data, headers or {})
        code, body = answer
        return Answer(code, body)

    def count(self, url: str) -> int:
        return sum(1 for r in self.requests if r["url"] == url)


class ProviderAndFlowTests(TestCase):
    """Discovery, keys and the flow's checks against a hand-made provider (signed with joserfc)."""

    def setUp(self) -> None:
        requireAuthlib()
        from joserfc import jwt
        from joserfc.jwk import RSAKey

        from pandapush.web.oidc.login import OIDCLogin
        from pandapush.web.oidc.provider import Provider

        self.jwt = jwt
        self.clock = Clock()
        self.clock.advance(time.time())
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig"})
        self.newKey = RSAKey.generate_key(2048, parameters={"kid": "k2", "use": "sig"})
        self.http = _FakeHTTP()
        self.discovery = ISSUER + "/.well-known/openid-configuration"
        self.metadata = {
            "issuer": ISSUER,
            "authorization_endpoint": ISSUER + "/auth",
            "token_endpoint": ISSUER + "/token",
            "jwks_uri": ISSUER + "/jwks",
            "userinfo_endpoint": ISSUER + "/userinfo",
            "id_token_signing_alg_values_supported": ["RS256", "HS256"],
        }
        self.http.answers[("GET", self.discovery)] = (200, self.metadata)
        self.keys = [self.key]
        self.http.answers[("GET", ISSUER + "/jwks")] = lambda d, h: (
            200,
            {"keys": [k.as_dict(private=False) for k in self.keys]},
        )
        self.config = OIDCConfig.fromEnvironment(ENV)
        self.provider = Provider(ISSUER, self.clock, self.http)
        self.flow = OIDCLogin(self.config, self.provider, self.clock)

    def idToken(self, key: Any = None, alg: str = "RS256", **changes: Any) -> str:
        now = int(self.clock.seconds())
        claims = {
            "iss": ISSUER,
            "sub": "u1",
            "aud": "pandapush",
            "iat": now,
            "exp": now + 300,
            "nonce": self.kept["nonce"],
            "email": "Ada@example.com",
            **changes,
        }
        claims = {k: v for k, v in claims.items() if v is not None}
        signer = key or self.key
        header = {"alg": alg}
        kid: str | None = getattr(signer, "kid", None)
        if kid:
            header["kid"] = kid
        return str(self.jwt.encode(header, claims, signer, algorithms=[alg]))

    async def begin(self) -> dict[str, str]:
        url, self.kept = await self.flow.begin("https://push.example.com/admin/auth/callback", "/admin/")
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        self.assertTrue(url.startswith(ISSUER + "/auth?"))
        self.assertEqual(query["code_challenge_method"], "S256")
        digest = hashlib.sha256(self.kept["verifier"].encode()).digest()
        self.assertEqual(query["code_challenge"], base64.urlsafe_b64encode(digest).rstrip(b"=").decode())
        self.assertEqual((query["state"], query["nonce"]), (self.kept["state"], self.kept["nonce"]))
        self.assertEqual(query["scope"], "openid email profile")
        return query

    def answerToken(self, token: str | None, code: int = 200) -> None:
        body: dict[str, Any] = {"access_token": "at", "token_type": "Bearer"}
        if token is not None:
            body["id_token"] = token
        self.http.answers[("POST", ISSUER + "/token")] = (code, body)

    async def finish(self, **query: str) -> Any:
        return await self.flow.finish(self.kept, {"state": self.kept["state"], "code": "c0de", **query})

    async def assertFails(self, status: int, text: str, **query: str) -> None:
        from pandapush.web.oidc.login import LoginFailedError

        try:
            await self.finish(**query)
        except LoginFailedError as error:
            self.assertEqual(error.status, status, error.message)
            self.assertIn(text, error.message)
        else:
            self.fail(f"signed in, expected {status} {text}")

    async def test_success(self) -> None:
        """The code is redeemed with the verifier and the client's credentials (form-encoded, RFC 6749)."""
        await self.begin()
        self.answerToken(self.idToken())
        identity = await self.finish()
        self.assertEqual(identity.name, "ada@example.com")
        [token] = [r for r in self.http.requests if r["method"] == "POST"]
        self.assertEqual(token["data"]["code_verifier"], self.kept["verifier"])
        self.assertEqual(token["data"]["redirect_uri"], "https://push.example.com/admin/auth/callback")
        self.assertNotIn("client_secret", token["data"])
        basic = base64.b64encode(b"pandapush:a%20client%20secret")
        self.assertEqual(token["headers"][b"Authorization"], [b"Basic " + basic])

    async def test_state_checked_first(self) -> None:
        """A wrong or missing state is refused before anything is asked of the provider."""
        await self.begin()
        for state in ("forged", ""):
            await self.assertFails(400, "state does not match", state=state)
        self.assertEqual([r["method"] for r in self.http.requests], ["GET"])  # discovery, in begin

    async def test_provider_errors_and_mixups(self) -> None:
        await self.begin()
        await self.assertFails(
            403, "did not sign you in: access_denied: no", error="access_denied", error_description="no"
        )
        await self.assertFails(400, "from another identity provider", iss="https://other.example")
        await self.assertFails(400, "no authorization code", code="")
        self.answerToken(None, 400)
        await self.assertFails(502, "refused the authorization code")
        self.answerToken(None)
        await self.assertFails(502, "sent no ID token")

    async def test_id_token_checks(self) -> None:
        """Nonce, audience, issuer, expiry, signature, algorithm: each refuses the token."""
        await self.begin()
        now = int(self.clock.seconds())
        cases = {
            "'nonce'": self.idToken(nonce="another"),
            "'aud'": self.idToken(aud="someone-else"),
            "'iss'": self.idToken(iss="https://evil.example"),
            "expired": self.idToken(exp=now - 120, iat=now - 600),
            "issued in the future": self.idToken(iat=now + 600),
            "'azp'": self.idToken(aud=["pandapush", "other"]),
            "bad signature": self.idToken()[:-6] + "AAAAAA",
            "'sub'": self.idToken(sub=None),
        }
        for text, token in cases.items():
            self.answerToken(token)
            await self.assertFails(502, text)
        # HS256 signed with the client secret: a client could forge that, so never accepted.
        from joserfc.jwk import OctKey

        self.answerToken(self.idToken(OctKey.import_key(b"a client secret" * 3), alg="HS256"))
        await self.assertFails(502, "signed in a way not accepted")
        self.answerToken("not.a-token")
        await self.assertFails(502, "malformed")

    async def test_keys_refreshed_on_unknown_kid_once(self) -> None:
        """A new kid: the key set is fetched again (a rotation), but only once per interval."""
        await self.begin()
        self.answerToken(self.idToken())
        await self.finish()
        jwks = ISSUER + "/jwks"
        self.assertEqual(self.http.count(jwks), 1)
        self.keys = [self.key, self.newKey]  # rotated in at the provider
        self.answerToken(self.idToken(self.newKey))
        self.assertEqual((await self.finish()).name, "ada@example.com")
        self.assertEqual(self.http.count(jwks), 2)
        from joserfc.jwk import RSAKey

        stranger = RSAKey.generate_key(2048, parameters={"kid": "k3"})
        self.answerToken(self.idToken(stranger))
        await self.assertFails(502, "could not complete")
        self.assertEqual(self.http.count(jwks), 2)  # within the interval: not fetched again
        self.clock.advance(61)
        await self.assertFails(502, "could not complete")
        self.assertEqual(self.http.count(jwks), 3)
        self.assertEqual(self.http.count(self.discovery), 1)  # cached for an hour

    async def test_userinfo(self) -> None:
        """A claim missing from the ID token is read from userinfo, for the same subject only."""
        await self.begin()
        self.answerToken(self.idToken(email=None))
        self.http.answers[("GET", ISSUER + "/userinfo")] = (200, {"sub": "u1", "email": "ada@example.com"})
        self.assertEqual((await self.finish()).name, "ada@example.com")
        self.http.answers[("GET", ISSUER + "/userinfo")] = (200, {"sub": "u2", "email": "root@example.com"})
        await self.assertFails(502, "could not complete")

    async def test_discovery_checks(self) -> None:
        """The document must be this issuer's, with https endpoints; it is fetched once for everyone."""
        from pandapush.web.oidc.provider import ProviderError

        self.http.hold = defer.Deferred()
        first, second = self.provider.metadata(), self.provider.metadata()
        self.http.hold.callback(None)
        self.assertEqual((await first)["issuer"], ISSUER)
        self.assertEqual(await second, await self.provider.metadata())
        self.assertEqual(self.http.count(self.discovery), 1)
        for bad in (
            {**self.metadata, "issuer": "https://evil.example"},
            {**self.metadata, "token_endpoint": "http://login.example.com/token"},
            {k: v for k, v in self.metadata.items() if k != "jwks_uri"},
        ):
            with self.assertRaises(ProviderError):
                self.provider.checkMetadata(dict(bad))
        self.assertEqual(self.provider.algorithms(self.metadata), ["RS256"])  # never HS256
        with self.assertRaises(ProviderError):
            self.provider.algorithms({"id_token_signing_alg_values_supported": ["HS256", "none"]})

    async def test_callback_pages(self) -> None:
        """The callback: the session cookie set, the sign-in cookie deleted, back to ``next``, escaped."""
        from pandapush.web.oidc.method import OIDCAdminAuth

        auth = OIDCAdminAuth(self.config, self.clock, self.provider)
        await self.begin()
        self.kept["next"] = "/admin/#/app/ünïcode/keys"
        self.answerToken(self.idToken())
        query = f"state={self.kept['state']}&code=c0de".encode()
        login = auth.logins.sign(self.kept, self.clock.seconds(), 600).encode()
        request = FakeRequest(
            b"/admin/auth/callback?" + query, cookies={b"pandapush_admin_login": login}, secure=True
        )
        finished = request.notifyFinish()
        auth.pages().render(request)
        await finished
        self.assertEqual(request.responseCode, 303)
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"location"), [b"/admin/#/app/%C3%BCn%C3%AFcode/keys"]
        )
        [cleared, signedIn] = request.responseHeaders.getRawHeaders(b"set-cookie", [])
        self.assertTrue(cleared.startswith(b"pandapush_admin_login=; Path=/admin/auth; Max-Age=0"))
        session = signedIn.split(b";")[0].split(b"=", 1)[1]
        self.assertIn(b"; Secure", signedIn)  # the callback was https
        self.assertEqual(auth.sessions.verify(session, self.clock.seconds())["u"], "ada@example.com")
