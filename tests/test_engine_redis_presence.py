"""Presence memberships held by each client's owner, and written back when Redis lost them (issue 18).

Three Redis engines on one namespace of the machine's Redis. "Redis lost its data" is
played by deleting every key of the namespace (its generation token included), as a
restart without persistence would. The cluster test with real nodes is
``tests/test_multinode_presence.py``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from pandapush.redis import RedisShard, parseRedisHosts
from tests.engine_suite import RecordingListener, RecordingSink
from tests.support.redis import REDIS, RedisEngineCase, namespaceKeys
from tests.support.waiting import sleep

ROOM = "/app/presence/room"


class PresenceRestoreTests(RedisEngineCase, TestCase):
    def setUp(self) -> Any:
        namespace = self.newNamespace()
        self.nodes = [self.newEngine(namespace) for _ in range(3)]
        self.listener = RecordingListener()
        for node in self.nodes:
            node.addListener(self.listener)
        return defer.gatherResults([n.ready() for n in self.nodes])

    async def settle(self) -> None:
        for node in self.nodes:
            await node.settle()

    async def join(self, via: Any, clientId: str, memberId: str, **data: Any) -> None:
        await via.subscribe(clientId, ROOM)
        await via.presenceJoin(clientId, ROOM, memberId, {"id": memberId, **data})

    async def renewed(self, *nodes: Any) -> None:
        """Past the next lease renewal of ``nodes`` (all), and the restores it started."""
        await sleep(self.expiry / 2 + 0.2)
        for node in nodes or self.nodes:
            await node.settle()

    async def loseEverything(self) -> None:
        """Every key of the namespace gone at once, as after a restart without persistence."""
        address = parseRedisHosts(REDIS)[0]
        keys = await namespaceKeys(address, self.nodes[0].namespace)
        shard = RedisShard(reactor, address)
        self.addCleanup(shard.close)
        await shard.execute("DEL", *keys)

    async def test_ownersWriteMembershipsBack(self) -> None:
        """
        Joins through the owner and through another node, and a client that moved to
        another owner (handed over with its memberships), are all listed again with
        their data once Redis lost everything; a leave afterwards is announced.
        """
        a, b, c = self.nodes
        onOwner, elsewhere, mover = [await a.createClient() for _ in range(3)]
        for clientId in (onOwner, elsewhere, mover):
            a.attach(clientId, RecordingSink())
        await self.join(a, onOwner, "m-owner", seat=1)
        await self.join(c, elsewhere, "m-elsewhere", seat=2)  # C tells A, the owner
        await self.join(a, mover, "m-mover", seat=3)
        b.attach(mover, RecordingSink())  # claimed by B; A hands it over, memberships too
        await self.settle()
        self.assertTrue(b.hasLocal(mover) and not a.hasLocal(mover))
        before = await c.presenceMembers(ROOM)
        self.assertEqual(len(before), 3)

        await self.loseEverything()
        self.assertEqual(await c.presenceMembers(ROOM), {})
        # The owners find out (at their next lease renewal: they answer for clients they
        # confirmed a moment ago without asking Redis) and write them back.
        await self.renewed()
        self.assertTrue(await a.clientExists(onOwner))
        self.assertTrue(await b.clientExists(mover))
        self.assertEqual(await c.presenceMembers(ROOM), before)
        self.assertEqual(self.listener.only("left", "joined")[3:], [])

        await c.unsubscribe(mover, ROOM)
        await b.destroyClient(elsewhere)
        await self.settle()
        self.assertEqual(
            self.listener.only("left"), [("left", ROOM, "m-mover"), ("left", ROOM, "m-elsewhere")]
        )
        self.assertEqual(await c.presenceMembers(ROOM), {"m-owner": {"id": "m-owner", "seat": 1}})

    async def test_takenOverFromAGoneOwner(self) -> None:
        """
        A client claimed after its owner has gone (nobody answers the hand-over) gets
        its memberships from Redis, so its new owner can write them back too.
        """
        a, b, _ = self.nodes
        clientId = await a.createClient()
        a.attach(clientId, RecordingSink())
        await self.join(a, clientId, "orphan", seat=9)
        await a.close()
        b.attach(clientId, RecordingSink())
        await b.settle()
        self.assertTrue(b.hasLocal(clientId))

        await self.loseEverything()
        await self.renewed(b)
        self.assertTrue(await b.clientExists(clientId))
        self.assertEqual(await b.presenceMembers(ROOM), {"orphan": {"id": "orphan", "seat": 9}})
        await b.unsubscribe(clientId, ROOM)
        self.assertIn(("left", ROOM, "orphan"), self.listener.only("left"))
