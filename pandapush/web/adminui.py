"""The operator's console: ``GET /admin`` (and ``/admin/``) and its files under ``/admin/ui/``.

The console is plain HTML, CSS and ES modules in ``static/admin/`` (no build step, no
third-party code); it talks to the admin API (``/admin/api/...``, :mod:`pandapush.web.admin`)
and, for the live console, to ``/push`` through ``/client.mjs``.

Everything here sits behind the same admin auth as the API: the resource is given the
:class:`~pandapush.web.adminauth.AdminAuthority` (anything with its ``authenticate(request)``
and ``challenge(request)``) and asks it about every request, files included, so a page
that cannot use the API cannot even be read. A refused request gets the authority's own
answer (a Basic challenge, a refusal), exactly as the API would give, except that a browser
loading a page reads it as a short HTML page (:func:`refusalPage`) rather than raw JSON.

Mounting: :func:`adminResource` builds what goes at ``admin`` on the root, the API for
``/admin/api[/...]``, the login method's own pages for ``/admin/auth[/...]`` when it has
some (:class:`~pandapush.web.adminauth.IAdminAuthPages`), and this console for the rest
of ``/admin``::

    root.mount(b"admin", adminResource(adminApp, adminAuthority))

The console routes on ``request.path`` (not on ``postpath``), so it works as a leaf wherever
it is mounted, as long as the path it sees starts with ``prefix`` (``/admin``); it answers
404 for anything it does not know, ``/admin/api/...`` included.

Caching: every answer is ``Cache-Control: no-cache`` with a strong ETag (a hash of the
bytes), so a browser revalidates each file with ``If-None-Match`` and a deploy shows at
once; the files are re-read when their modification time or size changes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET

from pandapush.auth.throttle import LoginThrottledError
from pandapush.bayeux import json
from pandapush.web.admin import AdminApp
from pandapush.web.adminauth import prefersPage, throttledAnswer
from pandapush.web.pages import personPage
from pandapush.web.webhooks import WebhookAdmin, isWebhookPath

__all__ = [
    "ADMIN_STATIC_DIR",
    "AdminResource",
    "AdminUIResource",
    "IAuthenticates",
    "adminResource",
    "refusalPage",
]

ADMIN_STATIC_DIR = Path(__file__).resolve().parent / "static" / "admin"

CONTENT_TYPES: dict[str, bytes] = {
    ".html": b"text/html; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".mjs": b"text/javascript; charset=utf-8",
    ".json": b"application/json; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".txt": b"text/plain; charset=utf-8",
    ".woff2": b"font/woff2",
}

#: The console loads only its own files and talks only to its own origin (websocket
#: included: CSP 3 lets ``'self'`` cover ``ws:``/``wss:`` to the same host). No inline
#: scripts or styles, so an injected ``<script>`` in an application name could not run
#: even if one slipped past the DOM-only rendering.
CONTENT_SECURITY_POLICY = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    b"frame-ancestors 'none'"
)

#: What a person is told, by status, above the server's own message.
_REFUSAL_TITLES = {
    401: ("Sign-in required", "The user name or password was not accepted, or the sign-in was cancelled."),
    403: ("Access refused", ""),
    429: ("Too many failed sign-ins", ""),
}

# One path segment of a file name: no dot files, no "..", nothing a shell or URL would mangle.
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class IAuthenticates(Protocol):
    """What this resource needs of an :class:`~pandapush.web.adminauth.AdminAuthority`."""

    def authenticate(self, request: IRequest) -> Any:
        """A Deferred (or value) firing with the admin user, or None for nobody."""

    def challenge(self, request: IRequest) -> bytes:
        """Answer a request that identified nobody (sets the code and headers)."""


@dataclass(frozen=True)
class _Loaded:
    stamp: tuple[int, int]
    body: bytes
    etag: bytes


class AdminUIResource(Resource):
    """
    Serves the console's ``index.html`` at ``<prefix>`` and ``<prefix>/``, and the files of
    its ``ui/`` folder at ``<prefix>/ui/<path>``, to authenticated admins only. ``authority`` is the server's
    ``AdminAuthority``, used as is.
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self,
        authority: IAuthenticates,
        directory: Path = ADMIN_STATIC_DIR,
        prefix: bytes = b"/admin",
    ) -> None:
        super().__init__()
        self.authority = authority
        self.directory = directory.resolve()
        self.prefix = prefix.rstrip(b"/")
        self._cache: dict[Path, _Loaded] = {}

    # routing

    def fileFor(self, path: bytes) -> Path | None:
        """The file a request path names, or None (unknown, hidden, or outside the folder)."""
        if path in (self.prefix, self.prefix + b"/"):
            return self.directory / "index.html"
        base = self.prefix + b"/ui/"
        if not path.startswith(base):
            return None
        try:
            segments = path[len(base) :].decode("ascii").split("/")
        except UnicodeDecodeError:
            return None
        if not segments or not all(_SEGMENT.match(s) and ".." not in s for s in segments):
            return None
        candidate = self.directory.joinpath("ui", *segments).resolve()
        if self.directory not in candidate.parents or not candidate.is_file():
            return None
        return candidate

    # answering

    def render(self, request: Any) -> Any:
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(http.NOT_ALLOWED)
            request.setHeader(b"Allow", b"GET, HEAD")
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"Method not allowed\n"
        finished: list[bool] = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))
        d = defer.maybeDeferred(self.authority.authenticate, request)
        d.addCallback(self._authenticated, request)
        d.addErrback(self._failed, request)
        d.addCallback(self._write, request, finished)
        return NOT_DONE_YET

    def _authenticated(self, user: Any, request: Any) -> bytes:
        if user is None:
            return refusalPage(request, self.authority.challenge(request))
        return self._serve(request, request.path)

    def _failed(self, failure: Failure, request: Any) -> bytes:
        if failure.check(LoginThrottledError):
            return refusalPage(request, throttledAnswer(request, failure.value))  # type: ignore[arg-type]
        self._log.failure("admin UI request {path} failed", failure, path=request.path)
        request.setResponseCode(http.INTERNAL_SERVER_ERROR)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"Internal server error\n"

    def _write(self, body: bytes, request: Any, finished: list[bool]) -> None:
        if finished:
            return  # the client went away while we authenticated
        # Twisted sends no body for HEAD, but keeps the length we announce.
        if getattr(request, "code", None) != http.NOT_MODIFIED:
            request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
        if body:
            request.write(body)
        request.finish()

    def _serve(self, request: Any, path: bytes) -> bytes:
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Referrer-Policy", b"no-referrer")
        request.setHeader(b"X-Frame-Options", b"DENY")
        found = self.fileFor(path)
        if found is None:
            request.setResponseCode(http.NOT_FOUND)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            request.setHeader(b"Cache-Control", b"no-store")
            return b"Not found\n"
        loaded = self._load(found)
        request.setHeader(b"Content-Type", CONTENT_TYPES.get(found.suffix, b"application/octet-stream"))
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"ETag", loaded.etag)
        if found.suffix == ".html":
            request.setHeader(b"Content-Security-Policy", CONTENT_SECURITY_POLICY)
        if _matches(request.getHeader(b"if-none-match"), loaded.etag):
            request.setResponseCode(http.NOT_MODIFIED)
            return b""
        return loaded.body

    def _load(self, path: Path) -> _Loaded:
        """The file's bytes and ETag, re-read only when its mtime or size changed."""
        status = path.stat()
        stamp = (status.st_mtime_ns, status.st_size)
        cached = self._cache.get(path)
        if cached is not None and cached.stamp == stamp:
            return cached
        body = path.read_bytes()
        etag = f'"{hashlib.sha256(body).hexdigest()[:20]}"'.encode("ascii")
        loaded = _Loaded(stamp, body, etag)
        self._cache[path] = loaded
        return loaded


def refusalPage(request: Any, body: bytes) -> bytes:
    """
    The admin auth's answer to a request it refused (``body``, with the code and headers
    already set), made readable when a browser asked for a page: a JSON error such as
    ``{"code": 401, "message": "Admin login required"}`` becomes a short HTML page with
    the same status and headers (a Basic challenge still makes the browser ask again)
    saying what happened and linking back. Programs, and answers that are not JSON (a
    redirect to a login page), get ``body`` unchanged.
    """
    contentType = (request.responseHeaders.getRawHeaders(b"content-type") or [b""])[0]
    if not prefersPage(request) or not contentType.startswith(b"application/json"):
        return body
    try:
        decoded = json.loads(body)
    except ValueError:
        return body
    message = decoded.get("message") if isinstance(decoded, dict) else None
    status = getattr(request, "code", None) or 401
    title, explanation = _REFUSAL_TITLES.get(status, ("The admin console is not available", ""))
    again = (request.path or b"/admin").decode("ascii", "replace")
    if not again.startswith("/admin"):
        again = "/admin"
    return personPage(request, status, title, [str(message or ""), explanation], ("Try again", again))


def _matches(ifNoneMatch: bytes | None, etag: bytes) -> bool:
    if not ifNoneMatch:
        return False
    candidates = [c.strip().removeprefix(b"W/") for c in ifNoneMatch.split(b",")]
    return b"*" in candidates or etag in candidates


class AdminResource(Resource):
    """
    Everything under ``/admin``: ``/admin/api`` and ``/admin/api/...`` to the API (``api``,
    the admin Klein app's resource), ``/admin/auth`` and below to the admin auth method's
    own pages (``auth``, an :class:`~pandapush.web.adminauth.IAdminAuthPages`' resource,
    when the method has pages; they check what they need themselves), the rest to the
    console (``ui``). Each sees the whole path, as
    :class:`~pandapush.web.site.PandapushRoot` hands it over.
    """

    isLeaf = True

    def __init__(
        self,
        api: IResource,
        ui: IResource,
        prefix: bytes = b"/admin",
        more: Sequence[tuple[Callable[[bytes], bool], IResource]] = (),
        auth: IResource | None = None,
    ) -> None:
        super().__init__()
        self.api = api
        self.ui = ui
        self.auth = auth
        self.apiPrefix = prefix.rstrip(b"/") + b"/api"
        self.authPrefix = prefix.rstrip(b"/") + b"/auth"
        # More APIs, each with the test of the paths it answers (webhooks).
        self.more = tuple(more)

    def render(self, request: Any) -> Any:
        path: bytes = request.path
        if self.auth is not None and (path == self.authPrefix or path.startswith(self.authPrefix + b"/")):
            return self.auth.render(request)
        for answers, resource in self.more:
            if answers(path):
                return resource.render(request)
        isAPI = path == self.apiPrefix or path.startswith(self.apiPrefix + b"/")
        return (self.api if isAPI else self.ui).render(request)


def adminResource(
    api: AdminApp, authority: IAuthenticates, webhooks: WebhookAdmin | None = None
) -> AdminResource:
    """
    What to mount at ``admin`` on the root: the admin API (and its webhook routes) and the
    console, all under ``authority`` (the server's :class:`~pandapush.web.adminauth.AdminAuthority`),
    and the admin auth method's own pages if it has some::

        root.mount(b"admin", adminResource(adminApp, adminAuthority, webhookAdmin))
    """
    more = [(isWebhookPath, webhooks.resource())] if webhooks is not None else []
    pages = authority.pages() if hasattr(authority, "pages") else None
    return AdminResource(
        api.app.resource(),
        AdminUIResource(authority),
        more=more,
        auth=pages.pages() if pages is not None else None,
    )
