"""
The admin auth plugin interface's optional part, :class:`IAdminAuthPages`, with a plugin
of the tests' own: a method whose login happens in pages of its own is handed every
request under ``/admin/auth`` (before any admin auth check), its settings come from the
configuration's environment, and the console learns from ``/admin/api/info`` where to sign
in and out. Methods without pages (Basic, the header plugin) are unchanged.
"""

from __future__ import annotations

import importlib
import os
import sys
import uuid
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.plugin import IPlugin
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from zope.interface import alsoProvides, implementer

from pandapush.auth.admin import AdminAuthError
from pandapush.auth.config import TenancyConfig
from pandapush.auth.keycache import KeyCache
from pandapush.bayeux import json
from pandapush.storage.memory import MemoryStorage
from pandapush.web.admin import AdminApp
from pandapush.web.adminauth import (
    AdminAuthority,
    IAdminAuth,
    IAdminAuthPages,
    IAdminAuthPlugin,
    makeAdminAuthority,
)
from pandapush.web.adminui import AdminResource, AdminUIResource
from tests.support.http import StubHTTP, stubTreq

DROPIN = "from tests.test_admin_auth_pages import ticketAuth, pagelessAuth\n"


class _TicketPages(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain")
        return b"ticket pages: " + request.path


@implementer(IAdminAuth, IAdminAuthPages)
class TicketAuth:
    """Admins present a ticket the method's own page hands out (the ticket is the name)."""

    name = "ticket"
    signInPath = "/admin/auth/ticket"
    signOutPath = None

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def authenticate(self, request: Any) -> defer.Deferred[str | None]:
        ticket = request.getCookie(b"ticket")
        return defer.succeed(self.prefix + ticket.decode() if ticket else None)

    def challenge(self, request: Any) -> bytes:
        request.setResponseCode(303)
        request.setHeader(b"Location", self.signInPath.encode())
        return b""

    def pages(self) -> Resource:
        return _TicketPages()


@implementer(IPlugin, IAdminAuthPlugin)
class TicketAuthPlugin:
    name = "ticket"
    description = "tickets from a page of its own"

    def makeAdminAuth(self, config: TenancyConfig) -> IAdminAuth:
        # A plugin's own settings, from the environment the configuration was read from.
        return TicketAuth(config.environ.get("TICKET_PREFIX", ""))


@implementer(IAdminAuth)
class _ClaimsPages:
    """Said to have pages (by its plugin, below), but has no ``pages()``: refused at start."""

    name = "pageless"
    signInPath = "/admin/auth/x"
    signOutPath = None

    def authenticate(self, request: Any) -> defer.Deferred[str | None]:
        return defer.succeed(None)

    def challenge(self, request: Any) -> bytes:
        return b""


@implementer(IPlugin, IAdminAuthPlugin)
class PagelessPlugin:
    name = "pageless"
    description = "broken"

    def makeAdminAuth(self, config: TenancyConfig) -> IAdminAuth:
        # The claim made on the object, as an unchecked third-party plugin could: mypy-zope
        # rightly refuses it in @implementer, and the missing pages() is what this is for.
        method = _ClaimsPages()
        alsoProvides(method, IAdminAuthPages)
        return method


ticketAuth = TicketAuthPlugin()  # noqa: N816 (as a drop-in names it)
pagelessAuth = PagelessPlugin()  # noqa: N816


class AdminAuthPagesTests(SynchronousTestCase):
    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        name = f"pandapush_pages_plugins_{uuid.uuid4().hex}"
        os.makedirs(os.path.join(base, name))
        for filename, text in [("__init__.py", ""), ("ticket.py", DROPIN)]:
            with open(os.path.join(base, name, filename), "w") as f:
                f.write(text)
        sys.path.insert(0, base)
        self.addCleanup(sys.path.remove, base)
        self.package = importlib.import_module(name)
        self.addCleanup(sys.modules.pop, name, None)

    def treq(self, authority: AdminAuthority) -> StubHTTP:
        clock = Clock()
        storage = MemoryStorage()
        api = AdminApp(storage, authority, KeyCache(storage, clock), clock).resource()
        pages = authority.pages()
        return stubTreq(AdminResource(api, AdminUIResource(authority), auth=pages.pages() if pages else None))

    def get(self, treq: StubHTTP, path: str, **kwargs: Any) -> tuple[int, Any, bytes]:
        d = treq.get("http://localhost" + path, **kwargs)
        treq.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(response.content())
        return response.code, response.headers, body

    def test_pages_served_before_auth(self) -> None:
        """``/admin/auth`` and below go to the method's pages, without a login; the rest is guarded."""
        config = TenancyConfig.fromEnvironment({"AUTH_METHOD": "ticket", "TICKET_PREFIX": "t-"})
        authority = makeAdminAuthority(config, self.package, Clock())
        treq = self.treq(authority)
        for path in ("/admin/auth", "/admin/auth/ticket", "/admin/auth/deep/er"):
            code, _, body = self.get(treq, path)
            self.assertEqual((code, body), (200, b"ticket pages: " + path.encode()))
        code, headers, _ = self.get(treq, "/admin/", allow_redirects=False)
        self.assertEqual((code, headers.getRawHeaders(b"location")), (303, [b"/admin/auth/ticket"]))
        code, _, body = self.get(treq, "/admin/api/info", cookies={"ticket": "ada"})
        info = json.loads(body)
        self.assertEqual((code, info["username"]), (200, "t-ada"))  # TICKET_PREFIX read by the plugin
        self.assertEqual(info["auth"], {"method": "ticket", "signIn": "/admin/auth/ticket", "signOut": None})
        # /admin/authx is not the pages': the console's, behind the login, and unknown to it.
        code, _, body = self.get(treq, "/admin/authx", cookies={"ticket": "ada"}, allow_redirects=False)
        self.assertEqual((code, body), (404, b"Not found\n"))

    def test_methods_without_pages(self) -> None:
        """Basic (and any method without pages): /admin/auth is the console's, behind the login."""
        config = TenancyConfig.fromEnvironment({"ADMIN_USERNAME": "a", "ADMIN_PASSWORD": "b"})
        authority = makeAdminAuthority(config, self.package, Clock())
        code, headers, _ = self.get(self.treq(authority), "/admin/auth/ticket")
        self.assertEqual(code, 401)
        self.assertTrue(headers.getRawHeaders(b"www-authenticate"))
        self.assertEqual(authority.consoleAuth(), {"method": "basic", "signIn": None, "signOut": None})

    def test_incomplete_pages_refused(self) -> None:
        """A method that provides IAdminAuthPages without ``pages`` is refused at start."""
        with self.assertRaises(AdminAuthError) as caught:
            makeAdminAuthority(TenancyConfig(authMethod="pageless"), self.package, Clock())
        self.assertIn("pages", str(caught.exception))

    def test_environ_kept_private(self) -> None:
        """The environment is carried for plugins, but never shown or compared."""
        one = TenancyConfig.fromEnvironment({"SECRET_THING": "hunter2"})
        two = TenancyConfig.fromEnvironment({"SECRET_THING": "other"})
        self.assertEqual(one.environ["SECRET_THING"], "hunter2")
        self.assertNotIn("hunter2", repr(one))
        self.assertEqual(one, two)
        self.assertEqual(hash(one), hash(two))
        with self.assertRaises(TypeError):
            one.environ["SECRET_THING"] = "changed"  # type: ignore[index]
