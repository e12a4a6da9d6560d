"""
A real OpenID provider (npm's ``oidc-provider``, ``tests/node/oidc-provider.mjs``) and the
console signing in through it, for the single sign-on tests.

The provider starts first (its issuer URL is needed to configure pandapush); the console
starts with ``AUTH_METHOD=oidc``, then registers itself at the provider with its real
callback URL (dynamic client registration, with the client id and secret the console was
configured with).

Browser steps run on :class:`~tests.support.browser.BrowserThread`'s thread. Every page
may only reach 127.0.0.1: the provider's login page imports a web font from the internet,
and nothing here may leave the machine.
"""

from __future__ import annotations

import json
import re
import urllib.request
from typing import TYPE_CHECKING, Any

import treq
from twisted.internet import defer
from twisted.web.http_headers import Headers

from tests.support.console import INIT_SCRIPT, SCREENSHOTS
from tests.support.inprocess import InProcessServer
from tests.support.node import NODE_DIR, NodeScript, requireNode
from tests.support.requirements import missing

if TYPE_CHECKING:
    from pandapush.web.oidc.method import OIDCAdminAuth

CLIENT_ID = "pandapush-console"
CLIENT_SECRET = "console-client-secret-for-the-sso-tests"
ROOT = "root@example.com"
#: Anything not on the loopback: aborted before it is sent.
ELSEWHERE = re.compile(r"^(?!https?://(127\.0\.0\.1|localhost)[:/])")


def requireAuthlib() -> None:
    """The flow's libraries are the ``oidc`` extra: skip without them (fail under run-tests)."""
    try:
        import authlib  # noqa: F401
        import joserfc  # noqa: F401
    except ImportError as absent:
        missing(f"{absent.name} is not installed (pip install 'pandapush[oidc]')")


def requireProvider() -> None:
    requireAuthlib()
    requireNode()
    if not (NODE_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        missing(f"oidc-provider is not installed: run `npm ci` in {NODE_DIR}")


class OpenIDProvider:
    """``node tests/node/oidc-provider.mjs``: test users root, alice, bob, mallory."""

    def __init__(self, conform: bool = False) -> None:
        env = {"CLIENT_ID": CLIENT_ID, "CLIENT_SECRET": CLIENT_SECRET, "CONFORM": "1" if conform else "0"}
        self.script = NodeScript("oidc-provider.mjs", env=env, timeout=600)
        self.issuer = ""

    async def start(self) -> str:
        self.script.start()
        event = await self.script.waitFor(lambda e: "issuer" in e)
        self.issuer = str(event["issuer"])
        return self.issuer

    async def stop(self) -> None:
        await self.script.stop()

    async def _post(self, path: str, body: Any) -> Any:
        response = await treq.post(
            self.issuer + path,
            json.dumps(body).encode(),
            headers=Headers({b"Content-Type": [b"application/json"]}),
            persistent=False,
        )
        answer = await response.json()
        assert response.code in (200, 201), (response.code, answer)
        return answer

    async def register(self, consoleURL: str) -> Any:
        """Registers the console's callback and sign-out landing page as the client's."""
        return await self._post(
            "/reg",
            {
                "redirect_uris": [consoleURL + "/admin/auth/callback"],
                "post_logout_redirect_uris": [consoleURL + "/admin/auth/signed-out"],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            },
        )

    async def setMode(self, mode: str) -> None:
        """How the token endpoint alters the next ID tokens (see oidc-provider.mjs)."""
        await self._post("/test/mode", {"mode": mode})

    async def counts(self) -> dict[str, int]:
        response = await treq.get(self.issuer + "/test/counts", persistent=False)
        return dict(await response.json())

    def countsNow(self) -> dict[str, int]:
        """(Browser thread.) The same, blocking."""
        with urllib.request.urlopen(self.issuer + "/test/counts", timeout=10) as answer:
            return dict(json.loads(answer.read()))


async def startSSO(
    test: Any, conform: bool = False, environ: dict[str, str] | None = None
) -> tuple[OpenIDProvider, InProcessServer]:
    """A provider and a console signing in through it, both stopped after ``test``."""
    requireProvider()
    provider = OpenIDProvider(conform)
    await provider.start()
    test.addCleanup(provider.stop)
    server = InProcessServer.withConsole(
        environ={
            "AUTH_METHOD": "oidc",
            "OIDC_ISSUER": provider.issuer,
            "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "ROOT_ADMINS": ROOT,
            **(environ or {}),
        }
    )
    await server.start()
    test.addCleanup(server.stop)
    await provider.register(server.url)
    return provider, server


def oidcMethod(server: InProcessServer) -> OIDCAdminAuth:
    """The admin auth method of a server :func:`startSSO` started (its sessions, its cookies' keys)."""
    from pandapush.web.oidc.method import OIDCAdminAuth

    method = server.service.adminAuthority.method
    assert isinstance(method, OIDCAdminAuth), method
    return method


class SSOPage:
    """(Browser thread.) A fresh browser context (no cookies) and its page, loopback only."""

    def __init__(self, browser: Any, baseURL: str, width: int = 1280, height: int = 900) -> None:
        self.baseURL = baseURL
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.context.route(ELSEWHERE, lambda route: route.abort())
        self.context.add_init_script(INIT_SCRIPT)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20000)
        self.console: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def signIn(self, user: str, path: str = "/admin/") -> Any:
        """Opens ``path``, is sent to the provider, types ``user`` and any password; the response."""
        self.page.goto(self.baseURL + path)
        self.page.wait_for_url(re.compile(r"/interaction/"))
        return self.submitLogin(user)

    def submitLogin(self, user: str) -> Any:
        self.page.locator("input[name=login]").fill(user)
        self.page.locator("input[name=password]").fill("any password")
        with self.page.expect_navigation(url=re.compile(r"/admin/")) as navigation:
            self.page.locator("button[type=submit]").click()
        return navigation.value

    def ready(self) -> None:
        self.page.wait_for_selector("html[data-ready=true]", state="attached")

    def cookies(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.context.cookies(self.baseURL + "/admin/")}

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def errors(self) -> list[str]:
        return [line for line in self.console if line.startswith("pageerror")]

    def close(self) -> None:
        self.context.close()


def createApplication(server: InProcessServer, name: str, admins: list[str]) -> defer.Deferred[Any]:
    """(Reactor thread.) An application straight in the server's storage."""
    storage = server.service.adminApp.storage
    created: defer.Deferred[Any] = storage.createApplication(
        name, admins[0] if admins else "test", admins=admins
    )
    return created
