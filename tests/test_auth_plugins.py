"""Third-party admin auth methods found as Twisted plugins and checked before use.

This module also holds the example third-party admin auth method (:class:`HeaderAdminAuthPlugin`,
what docs/extending.md points to): admins are named by a trusted reverse proxy (an SSO
gateway) in a request header. A real plugin ships the two classes in its own package and a
one-line drop-in in ``twisted/plugins/`` (``from mypackage.pandapush_auth import
headerAdminAuth``), or names the plugin object in its packaging::

    [project.entry-points."pandapush.admin_auth"]
    header = "mypackage.pandapush_auth:headerAdminAuth"

Then ``AUTH_METHOD=header`` selects it.
"""

from __future__ import annotations

import importlib
import os
import sys
import uuid
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.plugin import IPlugin
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from pandapush.auth.admin import AdminAuthError
from pandapush.auth.config import TenancyConfig
from pandapush.auth.keycache import KeyCache
from pandapush.bayeux import json
from pandapush.storage.memory import MemoryStorage
from pandapush.web.admin import AdminApp
from pandapush.web.adminauth import IAdminAuth, IAdminAuthPlugin, findAdminAuthPlugins, makeAdminAuthority
from pandapush.web.http import errorBody, jsonResponse
from tests.support.http import stubTreq


@implementer(IAdminAuth)
class HeaderAdminAuth:
    """Trusts ``X-Remote-User`` as set by an authenticating proxy in front of pandapush."""

    name = "header"

    def __init__(self, headerName: bytes = b"x-remote-user") -> None:
        self.headerName = headerName

    def authenticate(self, request: Any) -> Deferred[str | None]:
        value = request.getHeader(self.headerName)
        return defer.succeed(value.decode("utf-8") if value else None)

    def challenge(self, request: Any) -> bytes:
        return jsonResponse(request, 403, errorBody(403, "Log in through the SSO gateway"))


@implementer(IPlugin, IAdminAuthPlugin)
class HeaderAdminAuthPlugin:
    name = "header"
    description = "Admins named by a trusted proxy's X-Remote-User header"

    def makeAdminAuth(self, config: Any) -> IAdminAuth:
        return HeaderAdminAuth()


headerAdminAuth = HeaderAdminAuthPlugin()  # noqa: N816 (as a drop-in names it)


@implementer(IPlugin, IAdminAuthPlugin)
class BrokenAdminAuthPlugin:  # type: ignore[misc]  # broken on purpose
    """Declares the interface but lacks ``makeAdminAuth``: refused by verifyObject."""

    name = "broken"
    description = "missing its factory"


brokenAdminAuth = BrokenAdminAuthPlugin()  # noqa: N816


DROPIN = "from tests.test_auth_plugins import headerAdminAuth\n"
BROKEN = "from tests.test_auth_plugins import brokenAdminAuth\n"


class AdminAuthPluginTests(SynchronousTestCase):
    def setUp(self) -> None:
        # A plugin package of our own, like ``twisted/plugins/`` with one drop-in each.
        base = os.path.abspath(self.mktemp())
        name = f"pandapush_test_plugins_{uuid.uuid4().hex}"
        os.makedirs(os.path.join(base, name))
        for filename, text in [("__init__.py", ""), ("example.py", DROPIN), ("broken.py", BROKEN)]:
            with open(os.path.join(base, name, filename), "w") as f:
                f.write(text)
        sys.path.insert(0, base)
        self.addCleanup(sys.path.remove, base)
        self.package = importlib.import_module(name)
        self.addCleanup(sys.modules.pop, name, None)

    def test_found(self) -> None:
        """The drop-in is found by name; the broken one is refused with a logged reason."""
        events: list[dict[str, Any]] = []
        observer: Any = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        found = findAdminAuthPlugins(self.package)
        self.assertEqual(sorted(found), ["header"])
        self.assertIsInstance(found["header"], HeaderAdminAuthPlugin)
        refusals = [e for e in events if "ignoring admin auth plugin" in e.get("log_format", "")]
        self.assertEqual(len(refusals), 1)
        self.assertIn("makeAdminAuth", refusals[0]["reason"])

    def test_selectedByName(self) -> None:
        """AUTH_METHOD=header (or =plugins, with one installed) uses it for the admin API."""
        for method in ("header", "plugins"):
            authority = makeAdminAuthority(TenancyConfig(authMethod=method), pluginPackage=self.package)
            clock = Clock()
            storage = MemoryStorage()
            treq = stubTreq(AdminApp(storage, authority, KeyCache(storage, clock), clock).resource())
            d = treq.get("http://localhost/admin/api/info", headers={b"X-Remote-User": [b"carol"]})
            treq.flush()
            response = self.successResultOf(d)
            self.assertEqual(response.code, 200)
            self.assertEqual(json.loads(self.successResultOf(response.content()))["username"], "carol")
            d = treq.get("http://localhost/admin/api/info")
            treq.flush()
            self.assertEqual(self.successResultOf(d).code, 403)

    def test_unknown(self) -> None:
        """An AUTH_METHOD naming no plugin is a clear configuration error."""
        with self.assertRaises(AdminAuthError) as caught:
            makeAdminAuthority(TenancyConfig(authMethod="cas"), pluginPackage=self.package)
        self.assertIn("header", str(caught.exception))
