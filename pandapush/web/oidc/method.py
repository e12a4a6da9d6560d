"""
``AUTH_METHOD=oidc``: who is signed in (a signed session cookie), and the pages that sign
people in and out under ``/admin/auth/``.

- ``GET /admin/auth/login?next=/admin/...``: starts a sign-in: a signed, ten-minute cookie
  keeps its state, nonce and PKCE verifier (path ``/admin/auth``), and the browser goes to
  the provider.
- ``GET /admin/auth/callback``: where the provider sends the browser back; on success the
  session cookie is set (path ``/admin``, ``HttpOnly``, ``SameSite=Lax``, ``Secure`` over
  https, lasting ``OIDC_SESSION_LIFETIME``) and the browser goes on to ``next``. Any
  failure is a page saying what went wrong, with a link to try again.
- ``POST /admin/auth/logout`` (``Content-Type: application/json``, which no other site can
  send without a preflight): ends the session here and answers ``{"redirect": url}``, the
  provider's ``end_session_endpoint`` when it advertises one (with the ID token as hint,
  coming back to ``/admin/auth/signed-out``), else ``/admin/auth/signed-out`` itself.

A request for the console without a session is sent to the sign-in when it is a browser
loading a page, and answered 401 (JSON) otherwise; the console follows ``signInPath`` then.
Nothing is kept on the server: a session ends when its cookie expires, and signing out
deletes the cookie in that browser (a copy taken elsewhere lasts until it expires, which
is why the lifetime is bounded).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import http
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from pandapush.bayeux import json
from pandapush.web.adminauth import AUTH_PAGES_PREFIX, IAdminAuth, IAdminAuthPages, prefersPage
from pandapush.web.http import errorBody, jsonResponse
from pandapush.web.oidc.config import OIDCConfig
from pandapush.web.oidc.cookies import CookieError, SignedCookie, cookieHeader
from pandapush.web.oidc.login import LoginFailedError, OIDCLogin
from pandapush.web.oidc.provider import Provider, ProviderError
from pandapush.web.pages import personPage

__all__ = ["LOGIN_COOKIE", "SESSION_COOKIE", "OIDCAdminAuth", "safeNext"]

SESSION_COOKIE = "pandapush_admin"
LOGIN_COOKIE = "pandapush_admin_login"
#: How long a sign-in may take at the provider (typing a password, a second factor).
LOGIN_LIFETIME = 600
#: An ID token longer than this is not kept for the logout hint (a cookie holds 4096 bytes).
MAX_KEPT_ID_TOKEN = 2500

_PREFIX = AUTH_PAGES_PREFIX.decode("ascii")
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def safeNext(value: str | None) -> str:
    """
    ``value`` if it is a path of the console to come back to after signing in, else
    ``/admin/``: never another site (``//evil``, ``/\\evil``, a scheme), never the sign-in
    pages themselves.
    """
    if not value or len(value) > 2000 or not value.startswith("/admin"):
        return "/admin/"
    if value.startswith("//") or "\\" in value or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return "/admin/"
    path = urlsplit(value).path
    if path.startswith(_PREFIX) or not (path == "/admin" or path.startswith("/admin/")):
        return "/admin/"
    return value


@implementer(IAdminAuth, IAdminAuthPages)
class OIDCAdminAuth:
    """OpenID Connect sign-in for the console (see the module docstring)."""

    name = "oidc"
    signInPath = _PREFIX + "/login"
    signOutPath = _PREFIX + "/logout"
    _log = Logger()

    def __init__(
        self, config: OIDCConfig, clock: IReactorTime | None = None, provider: Provider | None = None
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = reactor  # type: ignore[assignment]
        assert clock is not None
        self.config = config
        self.clock = clock
        self.provider = provider or Provider(config.issuer, clock)
        self.flow = OIDCLogin(config, self.provider, clock)
        self.sessions = SignedCookie(config.sessionSecret, "session")
        self.logins = SignedCookie(config.sessionSecret, "login")

    # IAdminAuth

    def session(self, request: IRequest) -> dict[str, Any] | None:
        """The signed session the request carries, or None."""
        try:
            value = self.sessions.verify(request.getCookie(SESSION_COOKIE.encode()), self.clock.seconds())
        except CookieError:
            return None
        return value if isinstance(value.get("u"), str) and value["u"] else None

    def authenticate(self, request: IRequest) -> Deferred[str | None]:
        session = self.session(request)
        return defer.succeed(session["u"] if session is not None else None)

    def challenge(self, request: IRequest) -> bytes:
        if prefersPage(request) and request.method in (b"GET", b"HEAD"):
            target = safeNext(request.uri.decode("latin-1"))
            request.setResponseCode(http.SEE_OTHER)
            request.setHeader(
                b"Location", f"{self.signInPath}?next={quote(target, safe='/')}".encode("ascii")
            )
            request.setHeader(b"Cache-Control", b"no-store")
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"Sign in first.\n"
        return jsonResponse(
            request, 401, errorBody(401, f"Sign in at {self.signInPath} (no session, or it has ended)")
        )

    # IAdminAuthPages

    def pages(self) -> Resource:
        return _Pages(self)

    # helpers for the pages

    def redirectURI(self, request: IRequest) -> str:
        """The callback URL registered at the provider: configured, or this request's own host."""
        if self.config.redirectURI:
            return self.config.redirectURI
        host = (request.getHeader(b"host") or b"").decode("latin-1")
        if not _HOST.match(host):
            raise LoginFailedError(400, "This request has no usable Host header.")
        scheme = "https" if request.isSecure() else "http"
        return f"{scheme}://{host}{_PREFIX}/callback"

    def secure(self, redirectURI: str) -> bool:
        """Cookies are ``Secure`` whenever the console is reached over https."""
        return redirectURI.startswith("https:")

    def cookie(self, request: IRequest, name: str, value: str, path: str, maxAge: int, secure: bool) -> None:
        request.responseHeaders.addRawHeader(b"Set-Cookie", cookieHeader(name, value, path, maxAge, secure))


class _Pages(Resource):
    """``/admin/auth/...`` (a leaf: it routes on the whole path)."""

    isLeaf = True
    _log = Logger()

    def __init__(self, auth: OIDCAdminAuth) -> None:
        super().__init__()
        self.auth = auth
        self.routes = {
            f"{_PREFIX}/login": (b"GET", self._login),
            f"{_PREFIX}/callback": (b"GET", self._callback),
            f"{_PREFIX}/logout": (b"POST", self._logout),
            f"{_PREFIX}/signed-out": (b"GET", self._signedOut),
        }

    def render(self, request: Any) -> Any:
        path = request.path.decode("latin-1")
        route = self.routes.get(path)
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Referrer-Policy", b"no-referrer")
        if route is None:
            return personPage(
                request, 404, "Not found", ["There is no such sign-in page."], ("Console", "/admin/")
            )
        method, handler = route
        allowed = (method, b"HEAD") if method == b"GET" else (method,)
        if request.method not in allowed:
            request.setResponseCode(http.NOT_ALLOWED)
            request.setHeader(b"Allow", b", ".join(allowed))
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"Method not allowed\n"
        finished: list[bool] = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))
        d = Deferred.fromCoroutine(handler(request))
        d.addErrback(self._failed, request)
        d.addCallback(self._write, request, finished)
        return NOT_DONE_YET

    def _failed(self, failure: Any, request: Any) -> bytes:
        if failure.check(LoginFailedError):
            error: LoginFailedError = failure.value
            self._log.info("admin sign-in failed: {reason}", reason=str(error))
            return personPage(
                request,
                error.status,
                "Sign-in failed",
                [error.message],
                ("Sign in again", self.auth.signInPath),
            )
        self._log.failure("admin sign-in page {path} failed", failure, path=request.path)
        return personPage(request, 500, "Sign-in failed", ["Something went wrong on the server."])

    def _write(self, body: bytes, request: Any, finished: list[bool]) -> None:
        if finished:
            return
        request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
        if body:
            request.write(body)
        request.finish()

    def _query(self, request: Any) -> dict[str, str]:
        query = urlsplit(request.uri.decode("latin-1")).query
        fields = parse_qs(query, max_num_fields=20)
        return {k: v[0] for k, v in fields.items() if v}

    async def _login(self, request: Any) -> bytes:
        auth = self.auth
        redirectURI = auth.redirectURI(request)
        url, kept = await auth.flow.begin(redirectURI, safeNext(self._query(request).get("next")))
        now = auth.clock.seconds()
        value = auth.logins.sign(kept, now, LOGIN_LIFETIME)
        auth.cookie(request, LOGIN_COOKIE, value, _PREFIX, LOGIN_LIFETIME, auth.secure(redirectURI))
        request.setResponseCode(http.SEE_OTHER)
        request.setHeader(b"Location", url.encode("ascii"))
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"Signing in at the identity provider.\n"

    async def _callback(self, request: Any) -> bytes:
        auth = self.auth
        now = auth.clock.seconds()
        raw = request.getCookie(LOGIN_COOKIE.encode())
        secure = auth.secure(auth.config.redirectURI or ("https:" if request.isSecure() else "http:"))
        # Single use: whatever happens next, this sign-in is over.
        auth.cookie(request, LOGIN_COOKIE, "", _PREFIX, 0, secure)
        try:
            kept = auth.logins.verify(raw, now)
        except CookieError as error:
            raise LoginFailedError(
                400,
                "This sign-in has expired, or was started in another browser. Sign in again.",
                f"login cookie: {error}",
            ) from None
        identity = await auth.flow.finish(kept, self._query(request))
        session: dict[str, Any] = {"u": identity.name}
        if len(identity.idToken) <= MAX_KEPT_ID_TOKEN:
            session["t"] = identity.idToken
        lifetime = int(auth.config.sessionLifetime)
        secure = auth.secure(str(kept.get("redirect") or ""))
        auth.cookie(
            request, SESSION_COOKIE, auth.sessions.sign(session, now, lifetime), "/admin", lifetime, secure
        )
        self._log.info("admin {user} signed in", user=identity.name)
        request.setResponseCode(http.SEE_OTHER)
        # Characters outside ASCII (an application name in the view's hash) are escaped, the
        # rest of the path kept as it was.
        target = quote(safeNext(str(kept.get("next") or "")), safe="/#?&=%:;,@!$'()*+~-._")
        request.setHeader(b"Location", target.encode("ascii"))
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"Signed in.\n"

    async def _logout(self, request: Any) -> bytes:
        auth = self.auth
        contentType = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if contentType != b"application/json":
            return jsonResponse(request, 415, errorBody(415, "Sign out with Content-Type: application/json"))
        session = auth.session(request)
        redirectURI = auth.redirectURI(request)
        auth.cookie(request, SESSION_COOKIE, "", "/admin", 0, auth.secure(redirectURI))
        if session is not None:
            self._log.info("admin {user} signed out", user=session["u"])
        parts = urlsplit(redirectURI)
        signedOut = urlunsplit((parts.scheme, parts.netloc, f"{_PREFIX}/signed-out", "", ""))
        redirect = f"{_PREFIX}/signed-out"
        try:
            metadata = await auth.provider.metadata()
        except ProviderError as error:
            self._log.warn("signed out here only, the provider is unreachable: {error}", error=str(error))
            metadata = {}
        endSession = metadata.get("end_session_endpoint")
        if isinstance(endSession, str):
            # RP-Initiated Logout 1.0: the hint names the session to end at the provider,
            # client_id lets it check the way back without one.
            hint = session.get("t") if session is not None else None
            params = {"client_id": auth.config.clientId, "post_logout_redirect_uri": signedOut}
            if isinstance(hint, str):
                params["id_token_hint"] = hint
            query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
            redirect = endSession + ("&" if "?" in endSession else "?") + query
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        return json.dumps({"redirect": redirect})

    async def _signedOut(self, request: Any) -> bytes:
        return personPage(
            request,
            200,
            "Signed out",
            ["You have signed out of the pandapush console."],
            ("Sign in again", "/admin/"),
        )
