"""The REST publish and admin apps mounted in the real Site, over a real listening port."""

from __future__ import annotations

import base64
import os
from typing import Any

import treq
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from pandapush.auth import TenancyConfig
from pandapush.bayeux import json
from pandapush.storage.memory import MemoryStorage
from pandapush.web.site import HealthApp, PandapushRoot, makeSite
from tests.support.ports import listenLocally, portNumber
from tests.support.tenancy import makeTenancy


class MountedAppsTests(TestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        self.published: list[tuple[str, Any]] = []
        self.storage = MemoryStorage()
        config = TenancyConfig(
            adminUsername="admin", adminPassword="password", dataDir=os.path.abspath(self.mktemp())
        )
        self.tenancy = makeTenancy(self.storage, config, self.publish, reactor)
        root = PandapushRoot(
            Resource(),
            HealthApp().app.resource(),
            {b"channel": self.tenancy.publishApp.resource(), b"admin": self.tenancy.adminApp.resource()},
        )
        self.port = listenLocally(makeSite(root, maxBodySize=4096))
        self.addCleanup(self.port.stopListening)
        self.url = f"http://127.0.0.1:{portNumber(self.port)}"
        self.app = await self.storage.createApplication("testapp", "admin", admins=["admin"])
        self.key = await self.storage.createKey(self.app.id, "admin")
        self.basic = {
            b"Authorization": [b"Basic " + base64.b64encode(f"{self.key.id}:{self.key.secret}".encode())]
        }

    def publish(self, channel: str, data: Any) -> Deferred[int]:
        self.published.append((channel, data))
        return defer.succeed(0)

    async def test_readmeCurl(self) -> None:
        """The README's ``curl -u key:secret -H "Content-Type: application/json" -d '{text:"hello"}'``."""
        response = await treq.post(
            persistent=False,
            url=f"{self.url}/channel/{self.app.id}/private/users/123/messages",
            data=b'{text:"hello"}',
            headers=Headers({**self.basic, b"Content-Type": [b"application/json"]}),
        )
        self.assertEqual((response.code, await response.content()), (200, b"OK"))
        self.assertEqual(self.published, [(f"/{self.app.id}/private/users/123/messages", {"text": "hello"})])

    async def test_tooLarge(self) -> None:
        """Past the site's body limit: 413, nothing published, the server fine afterwards."""
        response = await treq.post(
            persistent=False,
            url=f"{self.url}/channel/{self.app.id}/public/x",
            data=b"[" + b"1," * 5000 + b"1]",
            headers=Headers(self.basic),
        )
        self.assertEqual(response.code, 413)
        await response.content()
        self.assertEqual(self.published, [])
        response = await treq.post(
            persistent=False,
            url=f"{self.url}/channel/{self.app.id}/public/x",
            data=b"{}",
            headers=Headers(self.basic),
        )
        self.assertEqual(response.code, 200)
        await response.content()

    async def test_admin(self) -> None:
        """The README's docker credentials log in to the admin API; the page is behind them too."""
        auth = ("admin", "password")
        response = await treq.get(persistent=False, url=f"{self.url}/admin/api/applications", auth=auth)
        self.assertEqual(response.code, 200)
        self.assertEqual([a["id"] for a in json.loads(await response.content())], [self.app.id])
        response = await treq.get(persistent=False, url=f"{self.url}/admin")
        self.assertEqual(response.code, 401)
        await response.content()
        response = await treq.get(persistent=False, url=f"{self.url}/admin", auth=auth)
        self.assertEqual(response.code, 200)
        await response.content()


class RootDispatchTests(TestCase):
    """``PandapushRoot.resourceFor`` finds what twisted.web's walk finds, with the same paths left."""

    def test_asTheWalk(self) -> None:
        """
        ``/push``, a mounted leaf (``/channel``), a mounted resource that is not a leaf,
        the default, and a path that is not UTF-8: the same resource, prepath and
        postpath as ``getChildForRequest``.
        """
        from twisted.web.resource import getChildForRequest
        from twisted.web.test.requesthelper import DummyRequest

        leaf = Resource()
        leaf.isLeaf = True
        branch = Resource()
        branch.putChild(b"inner", leaf)
        bayeux = Resource()
        bayeux.isLeaf = True
        default = Resource()
        default.isLeaf = True
        root = PandapushRoot(bayeux, default, {b"channel": leaf, b"tree": branch})
        paths = [
            [b"push"],
            [b"channel", b"app", b"private", b"a"],
            [b"channel"],
            [b"tree", b"inner", b"x"],
            [b"elsewhere", b"x"],
            [b"channel", b"\xff"],
            [],
        ]
        for path in paths:
            walked, direct = DummyRequest(list(path)), DummyRequest(list(path))
            expected = getChildForRequest(root, walked)
            found = root.resourceFor(direct)
            # A walk that finds nothing makes a new NoResource each time.
            self.assertIs(type(found), type(expected), path)
            if expected in (leaf, bayeux, default):
                self.assertIs(found, expected, path)
            self.assertEqual((direct.prepath, direct.postpath), (walked.prepath, walked.postpath), path)
