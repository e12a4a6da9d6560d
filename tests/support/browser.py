"""
Headless Chromium for trial tests: Debian's ``/usr/bin/chromium`` driven by Playwright (Python).

Playwright's sync API blocks, so :class:`BrowserThread` runs it on one thread of its own
(every Playwright call for a browser must come from the thread that started it) and hands
results back to the reactor as Deferreds: a test ``await``s browser steps while the
reactor keeps serving the page server and watching the pandapush child process.

Nothing here downloads a browser: ``playwright install`` is never run; the executable is
``$CHROMIUM`` or ``/usr/bin/chromium``.

:class:`PageServer` serves the test pages of ``tests/browser/`` (and the client files) on
another port of 127.0.0.1, i.e. from another origin than the server under test. The
admin console's page helpers are in :mod:`tests.support.console`; Faye's browser client
is driven from Node instead (:mod:`tests.support.node`, ``requireBrowser``).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

from twisted.internet import defer, reactor
from twisted.internet.interfaces import IListeningPort
from twisted.web.server import Site
from twisted.web.static import File

from pandapush.web.clientjs import STATIC_DIR, ClientScriptResource
from tests.support import REPO_ROOT
from tests.support.ports import listenLocally, portNumber

__all__ = [
    "ARTIFACTS",
    "BROWSER_DIR",
    "CHROMIUM",
    "BrowserThread",
    "NetworkLog",
    "PageServer",
    "chromiumAvailable",
]

T = TypeVar("T")

#: The test pages (``index.html``, ``module.html``, ``harness.js``).
BROWSER_DIR = REPO_ROOT / "tests" / "browser"
#: Screenshots (not committed).
ARTIFACTS = REPO_ROOT / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # Same-origin pages are answered by the browser itself (a Playwright route, no server
    # behind them), which Local Network Access counts as public: it would then refuse the
    # page's requests to 127.0.0.1. These tests are about the client, not that policy.
    "--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests",
]


def chromiumAvailable() -> str | None:
    """Why browser tests cannot run here, or None if they can."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (set $CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; never `playwright install`)"
    return None


class NetworkLog:
    """
    What a page put on the wire, recorded on the Playwright thread: HTTP requests to the
    Bayeux endpoint and websocket frames. ``sent()`` decodes every Bayeux message the page
    sent, whatever the transport (JSON body, ``message=`` form body, websocket frame).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.frames: list[dict[str, Any]] = []
        self.sockets: list[str] = []

    def attach(self, page: Any) -> None:
        page.on("request", self._request)
        page.on("websocket", self._websocket)

    def _request(self, request: Any) -> None:
        if "/push" not in request.url:
            return
        with self._lock:
            self.requests.append(
                {
                    "method": request.method,
                    "url": request.url,
                    "headers": dict(request.headers),
                    "body": request.post_data,
                    # For all_headers() later, on the browser thread (cookies, Origin...).
                    "request": request,
                }
            )

    def _websocket(self, ws: Any) -> None:
        with self._lock:
            self.sockets.append(ws.url)
        ws.on("framesent", lambda payload: self._frame("sent", payload))
        ws.on("framereceived", lambda payload: self._frame("received", payload))

    def _frame(self, direction: str, payload: Any) -> None:
        with self._lock:
            self.frames.append({"direction": direction, "payload": payload})

    @staticmethod
    def _decode(body: str | bytes | None, contentType: str = "") -> list[dict[str, Any]]:
        if not body:
            return []
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        if not contentType.startswith("application/json"):
            fields = parse_qs(text)
            if "message" in fields:
                text = fields["message"][0]
        try:
            value = json.loads(text)
        except ValueError:
            return []
        return value if isinstance(value, list) else [value]

    def sent(self) -> list[dict[str, Any]]:
        """Every Bayeux message sent, in order per transport."""
        with self._lock:
            messages: list[dict[str, Any]] = []
            for request in self.requests:
                if request["method"] == "POST":
                    messages += self._decode(request["body"], request["headers"].get("content-type", ""))
            for frame in self.frames:
                if frame["direction"] == "sent":
                    messages += self._decode(frame["payload"], "application/json")
            return messages

    def sentOn(self, channel: str) -> list[dict[str, Any]]:
        return [m for m in self.sent() if m.get("channel") == channel]

    def subscribesTo(self, channel: str) -> list[dict[str, Any]]:
        return [m for m in self.sentOn("/meta/subscribe") if m.get("subscription") == channel]

    def sentFrames(self) -> list[list[dict[str, Any]]]:
        with self._lock:
            return [
                self._decode(f["payload"], "application/json")
                for f in self.frames
                if f["direction"] == "sent"
            ]

    def posts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["method"] == "POST"]


class BrowserThread:
    """
    One Chromium, driven from one dedicated thread. ``call(fn, ...)`` runs ``fn`` there
    and returns a Deferred firing (in the reactor thread) with its result.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="playwright")
        self._playwright: Any = None
        self.browser: Any = None

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> defer.Deferred[T]:
        d: defer.Deferred[T] = defer.Deferred()

        def done(future: Future[T]) -> None:
            error = future.exception()
            if error is not None:
                reactor.callFromThread(d.errback, error)  # type: ignore[attr-defined]
            else:
                reactor.callFromThread(d.callback, future.result())  # type: ignore[attr-defined]

        self._executor.submit(fn, *args, **kwargs).add_done_callback(done)
        return d

    def _start(self) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self.browser = self._playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )

    async def start(self) -> None:
        await self.call(self._start)

    def _stop(self) -> None:
        try:
            if self.browser is not None:
                self.browser.close()
        finally:
            if self._playwright is not None:
                self._playwright.stop()

    async def stop(self) -> None:
        try:
            await self.call(self._stop)
        finally:
            self._executor.shutdown(wait=False)

    def newPage(self, routes: dict[str, Path] | None = None) -> tuple[Any, NetworkLog]:
        """
        (On the browser thread.) A page in a fresh context, its network recorded and its
        console mirrored into ``consoleLines``. ``routes`` maps URLs the browser answers
        itself to local files (pages of the server's origin that the server does not serve).
        """
        context = self.browser.new_context(viewport={"width": 1000, "height": 700})
        page = context.new_page()
        log = NetworkLog()
        log.attach(page)
        page.consoleLines = []  # type: ignore[attr-defined]
        page.on("console", lambda m: page.consoleLines.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: page.consoleLines.append(f"pageerror: {e}"))
        for url, path in (routes or {}).items():
            page.route(url, _fulfilFrom(path))
        return page, log


def _fulfilFrom(path: Path) -> Callable[[Any], None]:
    types = {
        ".html": "text/html; charset=utf-8",
        ".js": "application/javascript; charset=utf-8",
        ".mjs": "application/javascript; charset=utf-8",
    }

    def fulfil(route: Any) -> None:
        route.fulfill(
            status=200,
            headers={"Content-Type": types.get(path.suffix, "text/plain"), "Cache-Control": "no-store"},
            body=path.read_bytes(),
        )

    return fulfil


class PageServer:
    """The pages of ``tests/browser/`` plus ``/client.js``/``/client.mjs``, on 127.0.0.1:<free port>."""

    def __init__(self) -> None:
        root = File(str(BROWSER_DIR))
        scripts = ClientScriptResource()
        root.putChild(b"client.js", scripts)
        root.putChild(b"client.mjs", scripts)
        self.site = Site(root)
        self.port: IListeningPort | None = None

    def start(self) -> str:
        self.port = listenLocally(self.site)
        return self.url

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{portNumber(self.port)}"

    async def stop(self) -> None:
        if self.port is not None:
            await defer.maybeDeferred(self.port.stopListening)


def clientFile(name: str = "client.js") -> Path:
    """A file the server serves as the browser client (``client.js``, ``client.mjs``, ``client.d.ts``)."""
    return STATIC_DIR / name
