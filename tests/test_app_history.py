"""
Each application's history limits, end to end: set over the admin API (or the command line),
applied by the engine of every node, and a deleted application's history gone at once.

On one in-process server (memory engine), and on two real nodes sharing Redis and an SQLite
file, where a change made through one node reaches the other through key sync.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers

from pandapush.redis import RedisShard
from tests.support.cluster import ADMIN, ClusterCase
from tests.support.cluster import APP as CLUSTER_APP
from tests.support.cluster import KEY as CLUSTER_KEY
from tests.support.cluster import SECRET as CLUSTER_SECRET
from tests.support.inprocess import APP, KEY, SECRET, InProcessServer, channel
from tests.support.waiting import eventually, sleep

ADMIN_ENV = {"AUTH_METHOD": "basic", "ADMIN_USERNAME": "admin", "ADMIN_PASSWORD": "sesame"}


async def adminPost(url: str, appId: str, body: Any, auth: tuple[str, str]) -> tuple[int, Any]:
    response = await treq.post(
        f"{url}/admin/api/application/{appId}",
        data=json.dumps(body).encode(),
        headers=Headers({"Content-Type": ["application/json"]}),
        auth=auth,
        persistent=False,
    )
    return response.code, json.loads(await response.content())


async def publish(url: str, name: str, data: Any, auth: tuple[str, str]) -> None:
    response = await treq.post(f"{url}/channel{name}", json=data, auth=auth, persistent=False)
    assert response.code == 200, (response.code, await response.content())


async def history(url: str, appId: str, name: str, auth: tuple[str, str]) -> tuple[int, Any]:
    response = await treq.get(
        f"{url}/apps/{appId}/history", params={"channel": name}, auth=auth, persistent=False
    )
    return response.code, json.loads(await response.content())


class AdminHistoryLimitsTests(TestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        self.server = InProcessServer("--history-size", "50", environ=ADMIN_ENV)
        await self.server.start()
        self.addCleanup(self.server.stop)

    async def limits(self, body: Any) -> tuple[int, Any]:
        return await adminPost(self.server.url, APP, body, ("admin", "sesame"))

    async def kept(self, name: str) -> list[Any]:
        code, answer = await history(self.server.url, APP, name, (KEY, SECRET))
        self.assertEqual(code, 200, answer)
        return [m["data"] for m in answer["messages"]]

    async def test_setOverAdminAPI(self) -> None:
        """Set, shown, applied to the next publishes; history off; back to the server's default."""
        news = channel("news")
        self.assertEqual((await self.limits({"history": {"size": 2, "ttl": None}}))[0], 200)
        response = await treq.get(
            f"{self.server.url}/admin/api/application/{APP}", auth=("admin", "sesame"), persistent=False
        )
        self.assertEqual(json.loads(await response.content())["history"], {"size": 2, "ttl": None})
        for n in range(5):
            await publish(self.server.url, news, n, (KEY, SECRET))
        self.assertEqual(await self.kept(news), [3, 4])
        self.assertEqual((await self.limits({"history": {"size": 0}}))[0], 200)
        await publish(self.server.url, channel("quiet"), "x", (KEY, SECRET))
        code, answer = await history(self.server.url, APP, channel("quiet"), (KEY, SECRET))
        self.assertEqual(code, 200)
        self.assertEqual(answer, {"epoch": None, "offset": 0, "messages": []})
        self.assertEqual((await self.limits({"history": {"size": None, "ttl": None}}))[0], 200)
        for n in range(60):
            await publish(self.server.url, news, n, (KEY, SECRET))
        self.assertEqual(len(await self.kept(news)), 50)  # the server's --history-size

    async def test_badLimits(self) -> None:
        """Limits out of range or of the wrong shape: 400 saying why, nothing changed."""
        for body, words in [
            ({"history": {"size": -1}}, "from 0 to 10000"),
            ({"history": {"size": 10_001}}, "from 0 to 10000"),
            ({"history": {"size": "5"}}, "from 0 to 10000"),
            ({"history": {"ttl": 0}}, "from 1 to 86400"),
            ({"history": {"ttl": 1e12}}, "from 1 to 86400"),
            ({"history": 5}, "history must be an object"),
            ({"history": {"size": 1, "age": 2}}, "history must be an object"),
        ]:
            code, answer = await self.limits(body)
            self.assertEqual(code, 400, (body, answer))
            self.assertIn(words, answer["message"])
        application = await self.server.service.storage.getApplication(APP)
        assert application is not None
        self.assertEqual(application.history.publicDict(), {"size": None, "ttl": None})

    async def test_deletedApplicationsHistoryGone(self) -> None:
        """Deleting an application drops its channels' history at once; another's stays."""
        news = channel("news")
        for n in range(3):
            await publish(self.server.url, news, n, (KEY, SECRET))
        engine = self.server.engine
        other = "/otherApp000000000001/public/x"
        await self.server.router.publish(other, "kept")
        before = await engine.history(news, 0, 10)
        self.assertEqual(len(before.messages), 3)
        response = await treq.delete(
            f"{self.server.url}/admin/api/application/{APP}", auth=("admin", "sesame"), persistent=False
        )
        self.assertEqual(response.code, 200)
        gone = await eventually(lambda: len(engine._history.page(news, 0, 10).messages) == 0, timeout=2)
        self.assertTrue(gone)
        after = await engine.history(news, 0, 10)
        self.assertNotEqual(after.epoch, before.epoch)
        self.assertEqual(len((await engine.history(other, 0, 10)).messages), 1)


class ClusterHistoryLimitsTests(ClusterCase):
    async def test_changeReachesEveryNode(self) -> None:
        """Limits set through node A apply to publishes through node B; deleting the app clears Redis."""
        a, b = await self.startNodes(2)
        news = f"/{CLUSTER_APP}/public/news"
        credentials = (CLUSTER_KEY, CLUSTER_SECRET)
        code, answer = await adminPost(a.url, CLUSTER_APP, {"history": {"size": 3}}, ADMIN)
        self.assertEqual(code, 200, answer)

        async def kept() -> int:
            for n in range(6):
                await publish(b.url, news, n, credentials)
            _, answer = await history(a.url, CLUSTER_APP, news, credentials)
            return len(answer["messages"])

        # Key sync carries the change to B a moment later: publish until B keeps 3.
        for _ in range(20):
            if await kept() == 3:
                break
        else:
            self.fail("node B never applied the limit set through node A")
        shard = RedisShard(reactor, self.mainRedis)
        self.addCleanup(shard.close)
        pattern = f"{self.namespace}:h*:/{CLUSTER_APP}/*"
        self.assertTrue(await shard.execute("KEYS", pattern))
        response = await treq.delete(
            f"{a.url}/admin/api/application/{CLUSTER_APP}", auth=ADMIN, persistent=False
        )
        self.assertEqual(response.code, 200)

        for _ in range(100):
            if not await shard.execute("KEYS", pattern):
                break
            await sleep(0.05)
        self.assertEqual(await shard.execute("KEYS", pattern), [])
