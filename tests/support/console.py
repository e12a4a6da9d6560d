"""
Driving the ``/admin`` console in headless Chromium from trial.

Playwright's sync API blocks, so every browser step runs on the thread of a
:class:`~tests.support.browser.BrowserThread` while the reactor serves the in-process
pandapush (``InProcessServer.withConsole()``). A test writes its browser steps as plain
synchronous functions of a :class:`ConsolePage` and awaits them on that thread; :class:`Http`
is blocking HTTP for those steps. Screenshots go to ``artifacts/admin/``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from base64 import b64encode
from typing import Any

from tests.support.browser import ARTIFACTS
from tests.support.inprocess import ADMIN_PASSWORD, ADMIN_USER

__all__ = ["ConsolePage", "Http"]

SCREENSHOTS = ARTIFACTS / "admin"

#: Recorded in every page before its scripts run: what the console's copy buttons copied
#: (the ``pandapush:copied`` event) and the page's errors.
INIT_SCRIPT = """
window.__copied = [];
document.addEventListener('pandapush:copied', (event) => window.__copied.push(event.detail));
window.__errors = [];
window.addEventListener('error', (event) => window.__errors.push(String(event.message)));
window.addEventListener('unhandledrejection', (event) => window.__errors.push(String(event.reason)));
"""


class ConsolePage:
    """One browser context logged in as the admin, and its page (browser thread only)."""

    def __init__(self, browser: Any, baseURL: str, width: int = 1280, height: int = 900) -> None:
        self.baseURL = baseURL
        self.context = browser.new_context(
            viewport={"width": width, "height": height},
            http_credentials={"username": ADMIN_USER, "password": ADMIN_PASSWORD},
        )
        self.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=baseURL)
        self.context.add_init_script(INIT_SCRIPT)
        self.page = self.context.new_page()
        self.page.set_default_timeout(15000)
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def open(self, hash: str = "#/", query: str = "") -> None:
        self.page.goto(f"{self.baseURL}/admin/{query}{hash}")
        self.page.wait_for_selector("html[data-ready=true]", state="attached")

    def go(self, hash: str) -> None:
        """Navigates inside the console (as a click on a link would)."""
        self.page.evaluate("(h) => { location.hash = h; }", hash)
        self.page.wait_for_function("(h) => location.hash === h", arg=hash)
        self.page.wait_for_selector("main h1")

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def errors(self) -> list[str]:
        """Script errors the page reported (there should be none)."""
        found: list[str] = self.page.evaluate("() => window.__errors")
        return found + [line for line in self.console if line.startswith("pageerror")]

    def close(self) -> None:
        self.context.close()


class Http:
    """Blocking HTTP for steps run on the browser thread (the reactor answers meanwhile)."""

    def __init__(self, baseURL: str) -> None:
        self.baseURL = baseURL

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        auth: tuple[str, str] | None = None,
        token: str | None = None,
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if auth is not None:
            headers["Authorization"] = "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        if token is not None:
            headers["Authorization"] = f"Token {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.baseURL + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as error:
            return error.code, _decode(error.read())

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.request(method, "/admin/api/" + path, body, auth=(ADMIN_USER, ADMIN_PASSWORD))


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
