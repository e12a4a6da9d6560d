"""
A client's set-up and tear-down on the Redis engine in fewer round trips (issue 17), and
what they must keep: the subscribe's reply position read in the subscribe's own script,
and the destroy as one script that loses no event when its answer is lost (a connection
cut through a proxy between the engine and a real Redis).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from pandapush.engines.redis import RedisEngine
from pandapush.engines.redis.destroy import DESTROY, DESTROY_FINISH, DESTROY_FORGET
from pandapush.engines.redis.history import READ
from pandapush.engines.redis.scripts import UNSUBSCRIBE_CHANNEL
from pandapush.interfaces import Position, Recovery
from pandapush.redis import RedisShard, parseRedisHosts
from tests.engine_suite import RecordingListener, RecordingSink
from tests.history_suite import decoded, kept
from tests.support.proxy import LosingProxy
from tests.support.redis import RedisEngineCase, namespaceKeys
from tests.support.waiting import eventually, sleep


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


class OneStepDestroyTests(SetupCase):
    def destroying(self) -> list[str]:
        """The destroy's scripts run (not the renewals' and the collector's)."""
        return [
            s for s in self.scripts if s in (DESTROY, DESTROY_FINISH, DESTROY_FORGET, UNSUBSCRIBE_CHANNEL)
        ]

    async def member(self, engine: RedisEngine) -> str:
        """A client of ``engine``'s, subscribed to two channels and present on one of them."""
        clientId = await engine.createClient()
        engine.attach(clientId, RecordingSink())
        for channel in ("/app/public/x", "/app/presence/y"):
            self.assertTrue(await engine.subscribe(clientId, channel))
        await engine.presenceJoin(clientId, "/app/presence/y", "ann", {"n": 1})
        await engine.settle()
        return clientId

    def assertDestroyedOnce(self, listener: RecordingListener, clientId: str, reason: str) -> None:
        self.assertEqual(
            sorted(listener.only("destroyed", "unsubscribed", "vacated", "left")),
            sorted(
                [
                    ("destroyed", clientId, reason),
                    ("unsubscribed", clientId, "/app/public/x"),
                    ("unsubscribed", clientId, "/app/presence/y"),
                    ("vacated", "/app/public/x"),
                    ("vacated", "/app/presence/y"),
                    ("left", "/app/presence/y", "ann"),
                ]
            ),
        )

    async def test_oneScript(self) -> None:
        """
        A client whose channels the node holds (all on its shard) is destroyed by one
        script: every event once, and nothing of it left in Redis once its record is
        forgotten (one script for many, a moment later).
        """
        listener = RecordingListener()
        self.engine.addListener(listener)
        clientId = await self.member(self.engine)
        del self.scripts[:]
        await self.engine.destroyClient(clientId, "disconnect")
        self.assertEqual(self.destroying(), [DESTROY])
        self.assertDestroyedOnce(listener, clientId, "disconnect")
        await self.engine.settle()
        self.assertEqual(self.destroying(), [DESTROY, DESTROY_FORGET])
        self.assertEqual(await self.clientKeys(clientId), [])
        self.assertEqual(await self.engine.presenceMembers("/app/presence/y"), {})

    async def test_channelTheNodeDidNotKnow(self) -> None:
        """
        A subscription the owner's mirror lacks (made through another node, its update
        not there yet): the script only begins the destroy, the leaves and DESTROY_FINISH
        follow, and every channel is left all the same.
        """
        listener = RecordingListener()
        self.engine.addListener(listener)
        clientId = await self.member(self.engine)
        owned = self.engine._local.get(clientId)
        assert owned is not None
        owned.subscriptions.discard("/app/public/x")
        del self.scripts[:]
        await self.engine.destroyClient(clientId, "disconnect")
        self.assertEqual(
            self.destroying(), [DESTROY, UNSUBSCRIBE_CHANNEL, UNSUBSCRIBE_CHANNEL, DESTROY_FINISH]
        )
        self.assertDestroyedOnce(listener, clientId, "disconnect")
        await self.engine.settle()
        self.assertEqual(await self.clientKeys(clientId), [])

    async def viaProxy(self) -> tuple[RedisEngine, LosingProxy]:
        proxy = await LosingProxy.start(self.address.host, self.address.port)
        self.addCleanup(proxy.stop)
        engine = self.newEngine(self.namespace, hosts=f"127.0.0.1:{proxy.port}", reconnectMaxDelay=0.2)
        await engine.ready()
        return engine, proxy

    async def test_lostAnswerLosesNoEvent(self) -> None:
        """
        The destroy's answer is lost (its connection cut as Redis sends it): the script
        ran, and its events are reported once all the same, from the record the retry
        reads; then the record is forgotten and nothing of the client is left.
        """
        engine, proxy = await self.viaProxy()
        listener = RecordingListener()
        engine.addListener(listener)
        clientId = await self.member(engine)
        lost = proxy.loseNext(b"lost-in-the-cut")
        await engine.destroyClient(clientId, "lost-in-the-cut")
        await lost
        self.assertFalse(engine.hasLocal(clientId))
        self.assertTrue(await eventually(lambda: engine.dying() == 0, timeout=15, step=0.1))
        self.assertDestroyedOnce(listener, clientId, "lost-in-the-cut")
        await engine.settle()
        self.assertEqual(await self.clientKeys(clientId), [])
        await sleep(0.3)  # more sweeps: nothing is reported twice
        self.assertDestroyedOnce(listener, clientId, "lost-in-the-cut")

    async def test_lostAnswerThenNodeDies(self) -> None:
        """
        The answer is lost and the node dies before trying again: once the dying entry's
        deadline has passed, the collector on another node reports the record's events
        (once) and forgets it.
        """
        engine, proxy = await self.viaProxy()
        heard = RecordingListener()
        self.engine.addListener(heard)  # the other node
        clientId = await self.member(engine)
        engine._sweeper.stop()  # dead: nothing tries again there
        engine._renewer.stop()
        lost = proxy.loseNext(b"lost-in-the-cut")
        await engine.destroyClient(clientId, "lost-in-the-cut")
        await lost
        self.assertTrue(
            await eventually(
                lambda: defer.ensureDeferred(self.clientKeys(clientId)).addCallback(lambda k: not k),
                timeout=15,
                step=0.1,
            )
        )
        self.assertDestroyedOnce(heard, clientId, "lost-in-the-cut")

    async def test_multiStepMeetsOneStep(self) -> None:
        """
        One node's destroy began in steps (DESTROY naming nothing), another's named every
        channel and ended it: the first's DESTROY_FINISH ends nothing (its events were the
        other's), the record stays until its node forgets it, then nothing is left.
        """
        clientId = await self.member(self.engine)
        keys = self.engine._keys
        clients, base, subs, presence = keys.client(clientId)
        common = [clients, keys.dying, base, subs, presence, keys.parked(clientId)]
        args = [clientId, "0", 5, "gone"]
        begun = await self.shard.eval(DESTROY, common, args)
        self.assertEqual(sorted(begun[2]), ["/app/presence/y", "/app/public/x"])
        named = [
            *(keys.subscribers("/app/presence/y"), keys.presence("/app/presence/y")),
            keys.member("/app/presence/y", "ann"),
            *(keys.subscribers("/app/public/x"), keys.presence("/app/public/x"), keys.nothing),
        ]
        ended = await self.shard.eval(
            DESTROY, common + named, [*args, "/app/presence/y", "ann", "/app/public/x", ""]
        )
        self.assertIsInstance(ended, str)
        self.assertEqual(await self.shard.eval(DESTROY, common, args), ended)
        self.assertEqual(
            await self.shard.eval(DESTROY_FINISH, [keys.dying, base, subs, presence], [clientId]), 0
        )
        self.assertEqual(await self.clientKeys(clientId), [base, "dying"])
        await self.shard.eval(DESTROY_FORGET, [keys.dying, base], [clientId])
        self.assertEqual(await self.clientKeys(clientId), [])
        self.assertIsNone(await self.shard.eval(DESTROY, common, args))
