"""Third-party admin auth methods found as Twisted plugins and checked before use."""

from __future__ import annotations

import importlib
import os
import sys
import uuid
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from pandapush.auth.admin import AdminAuthError
from pandapush.auth.config import TenancyConfig
from pandapush.auth.keycache import KeyCache
from pandapush.bayeux import json
from pandapush.storage.memory import MemoryStorage
from pandapush.web.admin import AdminApp
from pandapush.web.adminauth import findAdminAuthPlugins, makeAdminAuthority
from tests.support_auth import HeaderAdminAuthPlugin

DROPIN = "from tests.support_auth import headerAdminAuth\n"
BROKEN = "from tests.support_auth import brokenAdminAuth\n"


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
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
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
            treq = StubTreq(AdminApp(storage, authority, KeyCache(storage, clock), clock).resource())
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
