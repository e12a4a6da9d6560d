"""
Destroying clients on the Redis engine while Redis answers late (issue 18, defect 1), on
a Redis of the test's own that ``CLIENT PAUSE`` stops answering for longer than the
engines' command timeout: whatever Redis did with the scripts meanwhile, nothing of a
destroyed client is left on the node or in Redis, and each event fires once.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from pandapush.engines.redis import RedisEngine
from pandapush.redis import RedisShard
from tests.engine_suite import RecordingListener, RecordingSink, message
from tests.support.redis import RedisEngineCase, RedisProcess, requireRedisServer
from tests.support.waiting import eventually


class LateRedisCase(RedisEngineCase, TestCase):
    """Engines on a Redis of the test's own, with a short command timeout."""

    async def setUp(self) -> None:  # type: ignore[override]
        requireRedisServer()
        self.redis = RedisProcess()
        self.addCleanup(self.redis.stop, "KILL")
        await self.redis.start()
        self.hosts = f"127.0.0.1:{self.redis.port}"
        self.namespace = self.newNamespace()
        self.shard = RedisShard(reactor, self.redis.address, commandTimeout=10)
        self.addCleanup(self.shard.close)

    def engine(self) -> RedisEngine:
        # Short enough to pause Redis past it, long enough for the tries after the pause
        # to be answered in time on a busy machine.
        return self.newEngine(self.namespace, commandTimeout=1.0)

    def pause(self, seconds: float) -> defer.Deferred[Any]:
        """Redis answers nobody for ``seconds`` (its scripts sent meanwhile run afterwards)."""
        return self.shard.execute("CLIENT", "PAUSE", int(seconds * 1000), "ALL")

    async def keysOf(self, clientIds: set[str]) -> list[str]:
        keys = await self.shard.execute("KEYS", f"{self.namespace}:*")
        return [k for k in keys if any(c in k for c in clientIds) or k.endswith(":dying")]


class LateDestroyTests(LateRedisCase):
    async def test_destroysAnsweredLateLeaveNothing(self) -> None:
        """
        200 subscribed clients are destroyed while Redis is paused past the command
        timeout: the calls succeed, the node holds none of them at once (they queue
        nothing more), and once Redis answers every one is out of the registry, the
        subscriber set and Redis altogether, with one ``clientDestroyed`` and one
        ``unsubscribed`` each and one ``channelVacated``.
        """
        engine = self.engine()
        listener = RecordingListener()
        engine.addListener(listener)
        await engine.ready()
        ids = [await engine.createClient() for _ in range(200)]
        for clientId in ids:
            engine.attach(clientId, RecordingSink())
            await engine.subscribe(clientId, "/a")
        await self.pause(2.5)
        await defer.gatherResults([engine.destroyClient(c, "socket closed") for c in ids])
        self.assertEqual(engine.statistics()["clients"], 0)
        self.assertGreater(engine.dying(), 0)

        self.assertTrue(await eventually(lambda: engine.dying() == 0, timeout=15, step=0.1))
        self.assertTrue(
            await eventually(
                lambda: defer.ensureDeferred(self.keysOf(set(ids))).addCallback(lambda k: not k),
                timeout=15,
                step=0.1,
            )
        )
        self.assertEqual(await self.shard.execute("EXISTS", f"{self.namespace}:s:/a"), 0)
        destroyed = listener.only("destroyed")
        self.assertEqual(sorted(e[1] for e in destroyed), sorted(ids))
        self.assertEqual({e[2] for e in destroyed}, {"socket closed"})
        self.assertEqual(sorted(e[1] for e in listener.only("unsubscribed")), sorted(ids))
        # Once: each destroy was one script (the node held the client's one channel), and
        # the tries after the pause read what the one that ran changed.
        self.assertEqual(listener.only("vacated"), [("vacated", "/a")])
        self.assertEqual(await engine.publish(message("/a")), 0)

    async def test_collectorFinishesWhatADeadNodeBegan(self) -> None:
        """
        A node begins destroys that Redis runs late, then dies before trying again: the
        collector on another node finishes them once their deadline has passed (subscriber
        set and keys gone, ``clientDestroyed`` with the reason the node gave, heard once).
        """
        a, b = self.engine(), self.engine()
        heard = RecordingListener()
        b.addListener(heard)
        await defer.gatherResults([a.ready(), b.ready()])
        ids = [await a.createClient() for _ in range(20)]
        for clientId in ids:
            await a.subscribe(clientId, "/b")
        await self.pause(2.0)
        await defer.gatherResults([a.destroyClient(c) for c in ids])
        self.assertEqual(a.statistics()["clients"], 0)
        a._sweeper.stop()  # A is dead: nothing tries again there
        a._renewer.stop()

        self.assertTrue(
            await eventually(
                lambda: defer.ensureDeferred(self.keysOf(set(ids))).addCallback(lambda k: not k),
                timeout=15,
                step=0.1,
            )
        )
        self.assertEqual(await self.shard.execute("EXISTS", f"{self.namespace}:s:/b"), 0)
        destroyed = heard.only("destroyed")
        self.assertEqual(sorted(e[1] for e in destroyed), sorted(ids))
        self.assertEqual({e[2] for e in destroyed}, {"disconnect"})

    async def test_brokenRetryGivenUp(self) -> None:
        """
        A postponed destroy failing for another reason than Redis is logged and given up
        (the collector finishes it after its deadline), not tried again every second in
        silence.
        """
        engine = self.engine()
        destroyer = engine._destroyer

        async def broken(clientId: str, reason: str, onlyIfExpired: bool, named: Any = None) -> bool:
            raise ValueError("a malformed answer")

        destroyer._run = broken  # type: ignore[method-assign]
        destroyer.dying["someone"] = "disconnect"
        destroyer.retry()
        await engine.settle()
        self.assertEqual(destroyer.dying, {})
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
