"""Presence across nodes when Redis comes back empty (issue 18): members are written back.

Real nodes (``ClusterCase``) on a redis-server of the test's own, killed and started
again empty. Each client's owner holds its presence memberships (channel, member id,
data) and writes them back with its session; before, the clients stayed subscribed
but silently vanished from the member list, and nobody was told when they left.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import treq
from twisted.internet import reactor
from twisted.web.http_headers import Headers

from pandapush.redis import RedisShard
from pandapush.tokens import mintToken
from tests.support.cluster import APP, KEY, ROOM, SECRET, ClusterCase, channel
from tests.support.failover import FailoverPoller, dataOn
from tests.support.process import PandapushProcess
from tests.support.redis import RedisProcess, requireRedisServer
from tests.support.waiting import eventually, sleep

BASIC = "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()


class PresenceRestoredTests(ClusterCase):
    timeout = 90

    async def members(self, node: PandapushProcess) -> dict[str, Any] | None:
        """The room's members as the server API of ``node`` lists them (None while it cannot say)."""
        response = await treq.get(
            f"{node.url}/apps/{APP}/members",
            params={"channel": ROOM},
            headers=Headers({"Authorization": [BASIC]}),
            persistent=False,
            timeout=15,
        )
        body = await response.content()
        if response.code != 200:
            return None
        members: dict[str, Any] = json.loads(body)["members"]
        return members

    async def test_membersListedAgainAndLeavesAnnounced(self) -> None:
        """
        Members on both nodes (websockets, and a long-poller owned by A whose join went
        through B) are listed again, with their data, once Redis is back empty and the
        nodes have written their clients back; a leave after that is announced to the
        others as before, and the member list follows it.
        """
        requireRedisServer()
        redis = RedisProcess()
        self.addCleanup(redis.stop, "KILL")
        await redis.start()
        a, b = await self.startNodes(2, redis=redis.address)
        watcher = await self.ws(a.url, name="watcher")
        watcher.urls = [a.url]
        await self.join(watcher, "watcher")
        self.assertTrue((await watcher.subscribe(channel("probe")))["successful"])
        stayer = await self.ws(b.url, name="stayer")
        stayer.urls = [b.url]
        await self.join(stayer, "stayer")
        leaver = await self.ws(b.url, name="leaver")
        leaver.urls = [b.url]
        await self.join(leaver, "leaver")
        # Owned by A (it handshakes and polls there); its join is handled by B.
        poller = FailoverPoller([a.url], "lp", connectTimeout=10)
        self.clients.append(poller)
        await poller.start()
        token = mintToken(KEY, SECRET, ROOM, sub=True, presence={"id": "lp", "seat": 7})
        response = await treq.post(
            f"{b.url}/push",
            json=[
                {
                    "channel": "/meta/subscribe",
                    "clientId": poller.clientId,
                    "subscription": ROOM,
                    "ext": {"auth": {"token": token}},
                }
            ],
            persistent=False,
            timeout=15,
        )
        (reply,) = json.loads(await response.content())
        self.assertTrue(reply["successful"], reply)
        before = await self.members(a)
        self.assertEqual(
            before,
            {
                "watcher": {"id": "watcher"},
                "stayer": {"id": "stayer"},
                "leaver": {"id": "leaver"},
                "lp": {"id": "lp", "seat": 7},
            },
        )
        ids = [c.clientId for c in (watcher, stayer, leaver, poller)]

        await redis.stop("KILL")
        await sleep(1)
        await redis.start()

        shard = RedisShard(reactor, redis.address)
        self.addCleanup(shard.close)

        async def registered() -> bool:
            try:
                scores = [await shard.execute("ZSCORE", f"{self.namespace}:clients", c) for c in ids]
            except Exception:
                return False
            return all(score is not None for score in scores)

        deadline = time.monotonic() + 15
        while not await registered() and time.monotonic() < deadline:
            await sleep(0.1)
        self.assertTrue(await registered(), a.log() + b.log())

        # Listed again by both nodes, with their data (members vanished for good before).
        for node in (a, b):
            deadline = time.monotonic() + 10
            listed = await self.members(node)
            while listed != before and time.monotonic() < deadline:
                await sleep(0.2)
                listed = await self.members(node)
            self.assertEqual(listed, before, node.log())
        # Messages published before A's SUBSCRIBE connection is back reach nobody there
        # (pub/sub is at-most-once): wait until the watcher receives again.
        deadline = time.monotonic() + 15
        while not dataOn(watcher, channel("probe")) and time.monotonic() < deadline:
            await self.restPublish(b, "probe", {"probe": True})
            await sleep(0.2)
        self.assertTrue(dataOn(watcher, channel("probe")), a.log())
        marks = len(dataOn(watcher, ROOM))

        # Leaving after the restore is announced as any leave (the client's own presence
        # entry came back too), through its node and through another one.
        await leaver.disconnect()
        response = await treq.post(
            f"{b.url}/push",
            json=[{"channel": "/meta/unsubscribe", "clientId": poller.clientId, "subscription": ROOM}],
            persistent=False,
            timeout=15,
        )
        (reply,) = json.loads(await response.content())
        self.assertTrue(reply["successful"], reply)
        left = [{"unsubscribe": {"leaver": None}}, {"unsubscribe": {"lp": None}}]

        def announced() -> bool:
            return all(event in dataOn(watcher, ROOM)[marks:] for event in left)

        self.assertTrue(await eventually(announced, timeout=10), (dataOn(watcher, ROOM), a.log(), b.log()))
        self.assertEqual(await self.members(b), {"watcher": {"id": "watcher"}, "stayer": {"id": "stayer"}})
        await sleep(0.5)
        # Nobody else was announced as leaving or joining across the restart.
        seen = sorted(json.dumps(event) for event in dataOn(watcher, ROOM)[marks:])
        self.assertEqual(seen, sorted(json.dumps(event) for event in left))
        self.assertEqual((stayer.handshakes, poller.handshakes, watcher.handshakes), (1, 1, 1))
