"""The failover gate (:mod:`pandapush.engines.redis.nodes`): which nodes it waits for, and for how long.

The gate's timing is tested here on a fake clock with a fake ``command``; the registry and
the SUBSCRIBE marker on a real Redis; the gate holding a real reconnected connection in
``tests/test_sentinel.py``; and a node stopped through a real failover in
``tests/test_multinode_sentinel.py`` (``test_stalledNodeMissesNothing``).
"""

from __future__ import annotations

import json
import socket
from typing import Any

import txredisapi
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from pandapush.engines.redis.keys import RedisKeys
from pandapush.engines.redis.nodes import FailoverGate, liveNodes
from pandapush.redis import RedisShard, RedisUnavailable, parseRedisHosts
from tests.engine_suite import RecordingSink, message
from tests.support.proxy import TCPProxy
from tests.support.redis import RedisEngineCase
from tests.support.waiting import sleep


class _Node:
    """What the gate reads of a node."""

    def __init__(self, clock: Clock, nodeId: str = "me") -> None:
        self.reactor = clock
        self.id = nodeId
        self.keys = RedisKeys("ns")

        class _Pubsub:
            commandTimeout = 2.0

            class address:  # noqa: N801 - an attribute that looks like RedisAddress
                name = "redis-test"

        class _Shards:
            pubsub = _Pubsub()

        self.shards = _Shards()


def _scores(**nodes: float) -> list[str]:
    # As the command connection's reader gives ZRANGE ... WITHSCORES: text.
    flat: list[str] = []
    for nodeId, score in nodes.items():
        flat += [nodeId, repr(score)]
    return flat


class _Redis:
    """Answers the gate's ZRANGE and PUBSUB NUMSUB; records what it was asked."""

    def __init__(self, entries: Any, listening: set[str]) -> None:
        self.entries = entries
        self.listening = listening
        self.asked: list[tuple[str, ...]] = []

    def command(self, *args: str) -> defer.Deferred[Any]:
        self.asked.append(args)
        if args[0] == "ZRANGE":
            return defer.succeed(self.entries)
        assert args[:2] == ("PUBSUB", "NUMSUB")
        reply: list[str | int] = []
        for channel in args[2:]:
            reply += [channel, 1 if channel in self.listening else 0]
        return defer.succeed(reply)


class _Registry:
    def __init__(self, interval: float = 5.0, known: list[str] | None = None) -> None:
        self.interval = interval
        self.known = known or ["me"]


class LiveNodesTests(TestCase):
    def test_reference(self) -> None:
        """
        Nodes within two intervals and a second of this node's own entry are live; older
        ones (stopped before the outage) are not; this node always is, first.
        """
        entries = _scores(me=100_000, peer=95_000, late=111_000, old=88_999, edge=89_000)
        self.assertEqual(liveNodes(entries, "me", 5.0), ["me", "edge", "late", "peer"])
        # Bytes too (a member that is not UTF-8 stays bytes).
        raw = [e.encode() for e in entries]
        self.assertEqual(liveNodes(raw, "me", 5.0), ["me", "edge", "late", "peer"])

    def test_withoutOwnEntry(self) -> None:
        """This node's entry not replicated (it started just before): the newest entry is the reference."""
        self.assertEqual(liveNodes(_scores(a=50_000, b=47_500, c=46_000), "me", 1.0), ["me", "a", "b"])
        self.assertEqual(liveNodes([], "me", 1.0), ["me"])
        self.assertEqual(liveNodes(txredisapi.ResponseError("WRONGTYPE"), "me", 1.0), ["me"])

    def test_garbage(self) -> None:
        """Entries that are not (id, score) pairs are skipped, not fatal."""
        self.assertEqual(
            liveNodes([b"me", b"10", b"x", b"not a number", b"\xff", b"3", b"odd"], "me", 1.0), ["me"]
        )


class WaitingTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.node = _Node(self.clock)
        self.registry = _Registry()
        self.gate = FailoverGate(self.node, self.registry, patience=2.0, poll=0.01)  # type: ignore[arg-type]
        self.logged: list[dict[str, Any]] = []
        observer: Any = self.logged.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def said(self, text: str) -> bool:
        return any(text in e.get("log_format", "") for e in self.logged)

    def test_releasesOnceEveryNodeListens(self) -> None:
        """The gate fires as soon as the last live node's marker is subscribed, not before."""
        redis = _Redis(_scores(me=10_000, peer=9_000), {"ns:up:me"})
        d = self.gate(redis.command)
        self.clock.advance(0.5)
        self.assertNoResult(d)
        redis.listening.add("ns:up:peer")
        self.clock.advance(0.01)
        self.successResultOf(d)
        self.assertTrue(self.said("listens again"))
        self.assertEqual(redis.asked[-1], ("PUBSUB", "NUMSUB", "ns:up:me", "ns:up:peer"))

    def test_givesUpAfterPatience(self) -> None:
        """A node that never comes back (killed) holds the connection for ``patience``, then is named."""
        redis = _Redis(_scores(me=10_000, dead=9_000), {"ns:up:me"})
        d = self.gate(redis.command)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.successResultOf(d)
        warned = [e for e in self.logged if "do not listen" in e.get("log_format", "")]
        self.assertEqual([e["missing"] for e in warned], ["dead"])

    def test_waitsForItself(self) -> None:
        """This node's own SUBSCRIBE connection counts too (its own clients)."""
        redis = _Redis([], set())
        d = self.gate(redis.command)
        self.clock.advance(0.1)
        self.assertNoResult(d)
        redis.listening.add("ns:up:me")
        self.clock.advance(0.01)
        self.successResultOf(d)

    def test_unreadableRegistry(self) -> None:
        """A registry that is not a sorted set (an error reply): the nodes last seen are waited for."""
        redis = _Redis(txredisapi.ResponseError("WRONGTYPE not a sorted set"), {"ns:up:me"})
        self.successResultOf(self.gate(redis.command))
        self.assertTrue(self.said("cannot read the live nodes"))

    def test_remembered(self) -> None:
        """
        A server back empty (no registry) still makes the gate wait for the nodes this
        node saw at its last write, not only for itself.
        """
        self.registry.known = ["me", "peer"]
        redis = _Redis([], {"ns:up:me"})
        d = self.gate(redis.command)
        self.clock.advance(0.5)
        self.assertNoResult(d)
        redis.listening.add("ns:up:peer")
        self.clock.advance(0.01)
        self.successResultOf(d)

    def test_unanswered(self) -> None:
        """A server that does not answer the gate fails it after the command timeout (it reconnects)."""
        d = self.gate(lambda *args: defer.Deferred())
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.failureResultOf(d, RedisUnavailable)

    def test_connectionLost(self) -> None:
        """A command that fails (the connection went) fails the gate: the endpoint connects again."""

        def lost(*args: str) -> defer.Deferred[Any]:
            return defer.fail(ConnectionError("gone"))

        self.failureResultOf(self.gate(lost), ConnectionError)


class RegistryTests(RedisEngineCase, TestCase):
    """The registry and the marker, on the real Redis the other engine tests use."""

    async def test_registeredAndListening(self) -> None:
        """
        A node is in ``<ns>:nodes`` (scored by Redis's clock, in ms) and its SUBSCRIBE
        connection on ``<ns>:up:<id>`` once ready; it leaves the registry when closed.
        """
        engine = self.newEngine(self.newNamespace())
        await engine.ready()
        shard = RedisShard(reactor, parseRedisHosts(self.hosts)[0])
        self.addCleanup(shard.close)
        keys = RedisKeys(engine.namespace)
        score = None
        for _ in range(100):
            score = await shard.execute("ZSCORE", keys.nodes, engine.nodeId)
            if score is not None:
                break
            await sleep(0.05)
        self.assertIsNotNone(score)
        seconds, micros = await shard.execute("TIME")
        self.assertLess(abs(int(seconds) * 1000 + int(micros) // 1000 - float(score or 0)), 5_000)
        numsub = await shard.execute("PUBSUB", "NUMSUB", keys.up(engine.nodeId))
        self.assertEqual([str(x) for x in numsub], [keys.up(engine.nodeId), "1"])
        # A node gone for longer than the registry keeps anyone is dropped by the next announce.
        await shard.execute("ZADD", keys.nodes, "1", "long-gone")
        await engine._nodes.announce()
        self.assertIsNone(await shard.execute("ZSCORE", keys.nodes, "long-gone"))

        await engine.close()
        for _ in range(100):
            if await shard.execute("EXISTS", keys.nodes) == 0:
                break
            await sleep(0.05)
        self.assertEqual(await shard.execute("EXISTS", keys.nodes), 0)


class CutConnectionsTests(RedisEngineCase, TestCase):
    """Two engines on the machine's Redis, each through a proxy of its own, whose connections are cut."""

    timeout = 60

    async def test_lateNodeMissesNothing(self) -> None:
        """
        Both nodes' connections are cut at once; B's come back at once, A's only 1.5 s
        later. Everything B acknowledged meanwhile reaches A's client: B's publishes
        waited until A's SUBSCRIBE connection was back. Before, they ran as soon as B's
        command connection was back, and A's client missed them.
        """
        redis = parseRedisHosts(self.hosts)[0]
        proxies = [await TCPProxy.start(redis.host, redis.port) for _ in range(2)]
        for proxy in proxies:
            self.addCleanup(proxy.stop)
        namespace = self.newNamespace()
        a, b = (self.newEngine(namespace, hosts=f"127.0.0.1:{p.port}", expiry=5.0) for p in proxies)
        await defer.gatherResults([a.ready(), b.ready()])
        clientId = await a.createClient()
        sink = RecordingSink()
        a.attach(clientId, sink)
        await a.subscribe(clientId, "/x")
        shard = RedisShard(reactor, redis)
        self.addCleanup(shard.close)
        keys = RedisKeys(namespace)
        for _ in range(100):
            if len(await shard.execute("ZRANGE", keys.nodes, "0", "-1")) == 2:
                break
            await sleep(0.05)
        await b.publish(message("/x", "before"))
        for _ in range(100):
            if sink.payloads:
                break
            await sleep(0.05)
        self.assertEqual(len(sink.payloads), 1)

        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        self.addCleanup(closed.close)
        proxies[0].retarget(closed.getsockname()[1])  # A's connections find nobody for now
        for proxy in proxies:
            proxy.cut()
        acknowledged: list[int] = []

        async def publish(n: int) -> None:
            try:
                await b.publish(message("/x", n))
            except Exception:
                return
            acknowledged.append(n)

        publishes = []
        for n in range(60):
            if n == 30:
                proxies[0].retarget(redis.port)
            publishes.append(defer.ensureDeferred(publish(n)))
            await sleep(0.05)
        await defer.DeferredList(publishes)
        self.assertTrue(acknowledged, "B never published again")

        def received() -> set[int]:
            return {json.loads(p)["data"] for p in sink.payloads[1:]}

        for _ in range(100):
            if set(acknowledged) <= received():
                break
            await sleep(0.05)
        self.assertEqual(sorted(set(acknowledged) - received()), [], f"acknowledged {acknowledged}")
