"""Two real pandapush processes on two Redis shards of their own, serving as one (issue 5).

``tests/test_engine_redis.py`` runs the engine contract on two shards inside one process;
this runs the whole thing: two redis-servers on free ports (started and killed here; the
machine's Redis is not used) and two ``twistd pandapush --redis-hosts a,b`` children. It
checks that state really is spread over both shards (each key where the hash ring says,
and nowhere else), and that fan-out, a long-poller moving between nodes and presence
behave as on one shard, with channels chosen on each side of the ring. Shard 0 also
carries pub/sub, so channels on shard 1 prove that the subscriber sets and the message
path live on different servers.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor

from pandapush.redis import HashRing, RedisShard
from tests.support.cluster import KEY, SECRET, ClusterCase, channel
from tests.support.failover import AlternatingPoller, FailoverWS, dataOn
from tests.support.process import PandapushProcess
from tests.support.redis import RedisProcess, requireRedisServer
from tests.support.waiting import eventually, sleep


class TwoShardCase(ClusterCase):
    """Two redis-servers of our own as shards, two nodes on them; ``onShard[i]`` channels hash to shard i."""

    timeout = 60

    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        requireRedisServer()
        self.redis = [RedisProcess(), RedisProcess()]
        for process in self.redis:
            self.addCleanup(process.stop, "KILL")
        for process in self.redis:
            await process.start()
        self.shards = [p.address for p in self.redis]
        # The engine's ring (same names, same default number of points): where it puts each key.
        self.ring = HashRing([s.name for s in self.shards])
        self.a, self.b = await self.startNodes(2, redis=self.shards)

    def onShard(self, index: int, count: int, kind: str = "public", prefix: str = "s") -> list[str]:
        """``count`` channel names whose subscribers live on shard ``index``."""
        found: list[str] = []
        n = 0
        while len(found) < count:
            name = channel(f"{prefix}{n}", kind)
            if self.ring.index(name) == index:
                found.append(name)
            n += 1
        return found

    async def keysOn(self, index: int, kind: str) -> set[str]:
        """This test's keys of a kind (``c`` client, ``s`` subscribers, ``p`` presence) on shard ``index``."""
        shard = RedisShard(reactor, self.shards[index])
        found: set[str] = set()
        try:
            cursor = "0"
            while True:
                cursor, keys = await shard.execute(
                    "SCAN", cursor, "MATCH", f"{self.namespace}:{kind}:*", "COUNT", 1000
                )
                found.update(keys)
                if str(cursor) == "0":
                    return found
        finally:
            await shard.close()

    async def restPublishTo(self, node: PandapushProcess, name: str, data: Any) -> None:
        code, body = await self.restPublish(node, name.split("/public/", 1)[1], data)
        self.assertEqual(code, 200, body)


class TwoShardTests(TwoShardCase):
    async def test_spreadOverBothShards(self) -> None:
        """Clients, subscriber sets and presence land on the shard the ring names; both shards get some."""
        a, b = self.a, self.b
        names = self.onShard(0, 2) + self.onShard(1, 2)
        rooms = self.onShard(0, 1, "presence", "room") + self.onShard(1, 1, "presence", "room")
        clients: list[Any] = []
        # Enough clients that each shard holds at least one (the ring decides, by clientId).
        while len(clients) < 2 or len({self.ring.index(c.clientId) for c in clients}) < 2:
            self.assertLess(len(clients), 20, "twenty clientIds all on one shard: the ring is broken")
            node = (a, b)[len(clients) % 2]
            client = await (
                self.ws(node.url, name=f"c{len(clients)}") if len(clients) % 2 else self.lp(node.url)
            )
            clients.append(client)
            for name in names:
                if isinstance(client, FailoverWS):
                    reply = await client.subscribe(name)
                else:
                    reply = await client.call({"channel": "/meta/subscribe", "subscription": name})
                self.assertTrue(reply["successful"], reply)
        for i, room in enumerate(rooms):
            await self.join(clients[i], f"member{i}", room)

        found = {kind: [await self.keysOn(i, kind) for i in (0, 1)] for kind in ("c", "s", "p")}
        for kind, label in (("c", "client"), ("s", "subscriber set"), ("p", "presence")):
            self.assertTrue(all(found[kind]), f"both shards hold {label} keys: {found[kind]}")
        for client in clients:
            key = f"{self.namespace}:c:{client.clientId}"
            home = self.ring.index(client.clientId)
            self.assertIn(key, found["c"][home])
            self.assertNotIn(key, found["c"][1 - home])
        for name in names + rooms:
            key = f"{self.namespace}:s:{name}"
            home = self.ring.index(name)
            self.assertIn(key, found["s"][home])
            self.assertNotIn(key, found["s"][1 - home])
        for room in rooms:
            home = self.ring.index(room)
            self.assertIn(f"{self.namespace}:p:{room}", found["p"][home])

    async def test_publishOnAReachesB(self) -> None:
        """REST and Bayeux publishes on A reach websocket and long-poll subscribers on B, on both shards."""
        a, b = self.a, self.b
        names = self.onShard(0, 2) + self.onShard(1, 2)
        ws = await self.ws(b.url, name="ws-b")
        poller = await self.lp(b.url)
        for name in names:
            self.assertTrue((await ws.subscribe(name))["successful"])
            self.assertTrue(
                (await poller.call({"channel": "/meta/subscribe", "subscription": name}))["successful"]
            )
        publisher = await self.ws(a.url, name="publisher-a")
        expected: dict[str, list[Any]] = {name: [] for name in names}
        for i in range(3):
            for name in names:
                await self.restPublishTo(a, name, {"rest": i})
                expected[name].append({"rest": i})
                reply = await publisher.call(
                    {"channel": name, "data": {"bayeux": i}, "ext": {"auth": {"key": KEY, "secret": SECRET}}}
                )
                self.assertTrue(reply["successful"], reply)
                expected[name].append({"bayeux": i})
        subscribers = (ws, poller)
        self.assertTrue(
            await eventually(
                lambda: all(len(dataOn(s, n)) >= len(expected[n]) for s in subscribers for n in names),
                timeout=10,
            ),
            {n: [dataOn(s, n) for s in subscribers] for n in names},
        )
        await sleep(0.3)  # a duplicate would have arrived by now
        for subscriber in subscribers:
            for name in names:
                self.assertEqual(dataOn(subscriber, name), expected[name], name)

    async def test_alternatingPollerAndPresence(self) -> None:
        """A poller alternating A and B sees every message in order; presence is seen alike on both nodes."""
        a, b = self.a, self.b
        (feed,) = self.onShard(1, 1, prefix="feed")
        poller = AlternatingPoller([a.url, b.url])
        self.clients.append(poller)
        await poller.start(feed)
        sent = []
        for i in range(20):
            await self.restPublishTo((a, b)[i % 2], feed, {"n": i})
            sent.append({"n": i})
            await sleep(0.03)
        self.assertTrue(await eventually(lambda: len(dataOn(poller, feed)) >= len(sent), timeout=10))
        await sleep(0.3)
        self.assertEqual(dataOn(poller, feed), sent)
        self.assertEqual(poller.failures, [])
        self.assertIn(a.url, poller.nodesUsed)
        self.assertIn(b.url, poller.nodesUsed)

        for shard in (0, 1):
            (room,) = self.onShard(shard, 1, "presence", f"room{shard}-")
            await self.presenceSeenAlike(room, f"shard {shard}")

    async def presenceSeenAlike(self, room: str, label: str) -> None:
        """Watchers on A and B see the same joins and leaves of members on B and A, in the same order."""
        a, b = self.a, self.b
        watchers = [await self.ws(n.url, name=f"watch-{label}-{i}") for i, n in enumerate((a, b))]
        for i, watcher in enumerate(watchers):
            await self.join(watcher, f"w{i}", room)
        self.assertTrue(await eventually(lambda: len(dataOn(watchers[0], room)) >= 1, timeout=5))
        await sleep(0.2)
        marks = [len(w.messages) for w in watchers]
        member = await self.lp(b.url)
        reply = await self.join(member, "lp-member", room)
        self.assertEqual(set(reply["ext"]["presence"]["subscribe"]), {"w0", "w1", "lp-member"})
        other = await self.ws(a.url, name=f"ws-member-{label}")
        await self.join(other, "ws-member", room)
        await member.call({"channel": "/meta/unsubscribe", "subscription": room})
        await other.disconnect()
        expected = [
            {"subscribe": {"lp-member": {"id": "lp-member"}}},
            {"subscribe": {"ws-member": {"id": "ws-member"}}},
            {"unsubscribe": {"lp-member": None}},
            {"unsubscribe": {"ws-member": None}},
        ]

        def seen(i: int) -> list[Any]:
            return [m["data"] for m in watchers[i].messages[marks[i] :] if m.get("channel") == room]

        self.assertTrue(await eventually(lambda: all(len(seen(i)) >= 4 for i in (0, 1)), timeout=10))
        await sleep(0.2)
        for i in (0, 1):
            self.assertEqual(seen(i), expected, f"{label}, watcher on node {i}")
