"""
A client's set-up on the Redis engine in fewer round trips (issue 17), and what it must
keep: the subscribe's reply position read in the subscribe's own script.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from pandapush.engines.redis import RedisEngine
from pandapush.engines.redis.history import READ
from pandapush.interfaces import Position, Recovery
from pandapush.redis import RedisShard, parseRedisHosts
from tests.engine_suite import RecordingSink
from tests.history_suite import decoded, kept
from tests.support.redis import RedisEngineCase, namespaceKeys
from tests.support.waiting import sleep


def positionOf(outcomes: dict[str, Recovery], channel: str) -> Position:
    position = outcomes[channel].position
    assert position is not None
    return position


class SetupCase(RedisEngineCase, TestCase):
    """Engines on one shard (the machine's Redis), the scripts they run recorded."""

    def setUp(self) -> Any:
        self.namespace = self.newNamespace()
        self.scripts: list[str] = []
        self.engine = self.recorded(self.newEngine(self.namespace))
        self.address = parseRedisHosts(self.hosts)[0]
        self.shard = RedisShard(reactor, self.address)
        self.addCleanup(self.shard.close)
        return self.engine.ready()

    def recorded(self, engine: RedisEngine) -> RedisEngine:
        for shard in engine._shards:
            self.patch(shard, "eval", self._recording(shard.eval))
        return engine

    def _recording(self, evaluate: Any) -> Any:
        def recorded(script: str, keys: Any, args: Any = ()) -> Any:
            self.scripts.append(script)
            return evaluate(script, keys, args)

        return recorded

    async def clientKeys(self, clientId: str) -> list[str]:
        """The client's keys left in Redis, and its entries in the registry and the dying set."""
        keys = [k for k in await namespaceKeys(self.address, self.namespace) if clientId in k]
        for registry in ("clients", "dying"):
            if await self.shard.execute("ZSCORE", f"{self.namespace}:{registry}", clientId) is not None:
                keys.append(registry)
        return keys

    async def until(self, predicate: Any, seconds: float = 15) -> None:
        for _ in range(int(seconds * 10)):
            result = predicate()
            if isinstance(result, defer.Deferred):
                result = await result
            if result:
                return
            await sleep(0.1)
        self.fail(f"not within {seconds}s")


class SubscribePositionTests(SetupCase):
    async def subscriber(self, channel: str) -> tuple[str, RecordingSink]:
        clientId = await self.engine.createClient()
        sink = RecordingSink()
        self.engine.attach(clientId, sink)
        await self.engine.settle()
        return clientId, sink

    async def test_positionReadInTheSubscribe(self) -> None:
        """
        A subscribe that reports a channel's position (no resume) reads it in its own
        script, not in a READ after: the position is where the subscription began, so a
        message published once the subscribe is done is delivered with the next offset.
        """
        channel = "/app/public/p"
        for n in (1, 2):
            await self.engine.publish(kept(channel, n))
        clientId, sink = await self.subscriber(channel)
        del self.scripts[:]

        async def subscribeThenPublish() -> None:
            await self.engine.subscribe(clientId, channel)
            await self.engine.publish(kept(channel, 3))

        outcomes = await self.engine.recover(
            clientId, lambda: defer.Deferred.fromCoroutine(subscribeThenPublish()), {channel: None}, ()
        )
        self.assertNotIn(READ, self.scripts)
        self.assertEqual(positionOf(outcomes, channel).offset, 2)
        await self.engine.settle()
        got = decoded(sink.payloads)
        self.assertEqual([(m["data"], m["ext"]["position"]["offset"]) for m in got], [(3, 3)])
        self.assertEqual(got[0]["ext"]["position"]["epoch"], positionOf(outcomes, channel).epoch)
        self.assertEqual(self.engine._fanout.history._asked, {})

    async def test_newChannelPositioned(self) -> None:
        """A channel never published to gets its position (offset 0) from the subscribe, kept for its ttl."""
        channel = "/app/public/new"
        clientId, _ = await self.subscriber(channel)
        subscribe = lambda: self.engine.subscribe(clientId, channel)  # noqa: E731
        outcomes = await self.engine.recover(clientId, subscribe, {channel: None}, ())
        self.assertEqual(positionOf(outcomes, channel).offset, 0)
        page = await self.engine.history(channel, None, 0)
        self.assertEqual(page.epoch, positionOf(outcomes, channel).epoch)
        ttl = await self.shard.execute("PTTL", f"{self.namespace}:hm:{channel}")
        self.assertTrue(0 < ttl <= 300_000, ttl)
        # Subscribed already: the subscribe answers False, and still reads the position.
        again = await self.engine.recover(clientId, subscribe, {channel: None}, ())
        self.assertEqual(positionOf(again, channel), positionOf(outcomes, channel))

    async def test_concurrentRecoveries(self) -> None:
        """Two subscribes of one client at once each get their channel's position; nothing is kept after."""
        clientId, _ = await self.subscriber("/app/public/a")
        await self.engine.publish(kept("/app/public/b", 1))
        del self.scripts[:]
        recoveries = [
            self.engine.recover(clientId, partial(self.engine.subscribe, clientId, c), {c: None}, ())
            for c in ("/app/public/a", "/app/public/b")
        ]
        first, second = await defer.gatherResults(recoveries)
        self.assertEqual(positionOf(first, "/app/public/a").offset, 0)
        self.assertEqual(positionOf(second, "/app/public/b").offset, 1)
        self.assertNotIn(READ, self.scripts)
        self.assertEqual(self.engine._fanout.history._asked, {})

    async def test_resumeStillReads(self) -> None:
        """A subscribe resuming from a position reads the history as before (and the rest still folds)."""
        for n in (1, 2, 3):
            await self.engine.publish(kept("/app/public/r", n))
        epoch = (await self.engine.history("/app/public/r", None, 0)).epoch
        clientId, sink = await self.subscriber("/app/public/r")
        channels = ["/app/public/r", "/app/public/q"]

        async def subscribe() -> None:
            for channel in channels:
                await self.engine.subscribe(clientId, channel)

        del self.scripts[:]
        outcomes = await self.engine.recover(
            clientId,
            lambda: defer.Deferred.fromCoroutine(subscribe()),
            {"/app/public/r": Position(1, epoch), "/app/public/q": None},
            (),
        )
        self.assertEqual(self.scripts.count(READ), 1)
        self.assertEqual(positionOf(outcomes, "/app/public/r").offset, 3)
        self.assertEqual(positionOf(outcomes, "/app/public/q").offset, 0)
        await self.engine.settle()
        self.assertEqual([m["data"] for m in decoded(sink.payloads)], [2, 3])

    async def test_unknownClientStillPositioned(self) -> None:
        """A subscribe Redis refuses (an unknown client) still lets the recovery report positions."""
        outcomes = await self.engine.recover(
            "nobody", lambda: self.engine.subscribe("nobody", "/app/public/u"), {"/app/public/u": None}, ()
        )
        self.assertEqual(positionOf(outcomes, "/app/public/u").offset, 0)
        self.assertEqual(self.engine._fanout.history._asked, {})
