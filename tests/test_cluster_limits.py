"""
``--cluster-limits``: the publish rate and the clients per application counted across nodes
through Redis (:mod:`pandapush.extensions.clusterlimits`).

Two kinds of tests, both on a real Redis: the pieces of two "nodes" in this process (two
:class:`ClusterLimits` on one namespace, each with its own connection), where Redis calls
can be counted and a node can die without a word; and two real ``twistd pandapush`` nodes,
or one with ``--workers 2``, whose limits are reached across both, over real sockets.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, cast

import treq
from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.python import usage
from twisted.trial.unittest import TestCase

from pandapush.extensions.clusterlimits import (
    ClusterConnectionLimiter,
    ClusterLimits,
    ClusterPublishRate,
)
from pandapush.extensions.limits import PublishRateLimiter
from pandapush.interfaces import IEngine
from pandapush.redis import RedisAddress, RedisShard
from pandapush.tap import Options
from tests.support.bayeux import WSClient
from tests.support.cluster import APP, KEY, SECRET, ClusterCase, channel
from tests.support.ports import freePort
from tests.support.redis import deleteNamespace, requireRedis
from tests.support.waiting import eventually, sleep
from tests.test_workers import WorkersCase


class _Engine:
    """What the connection limiter asks of an engine: listeners, broadcasts, clientExists."""

    def __init__(self) -> None:
        self.listeners: list[Any] = []
        self.clients: set[str] = set()
        self.broadcasts: list[tuple[str, Any]] = []

    def addListener(self, listener: Any) -> None:
        self.listeners.append(listener)

    def onBroadcast(self, topic: str, handler: Any) -> None:
        pass

    def broadcast(self, topic: str, data: Any) -> defer.Deferred[None]:
        self.broadcasts.append((topic, data))
        return defer.succeed(None)

    def clientExists(self, clientId: str) -> defer.Deferred[bool]:
        return defer.succeed(clientId in self.clients)

    def destroy(self, clientId: str) -> None:
        self.clients.discard(clientId)
        for listener in self.listeners:
            listener.clientDestroyed(clientId, "disconnect")


async def _resolve(value: Any) -> Any:
    return await value if isinstance(value, defer.Deferred) else value


class OptionTests(TestCase):
    def parse(self, *argv: str, **env: str) -> Options:
        environ = {
            k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "PANDAPUSH_", "ENGINE"))
        }
        self.patch(os, "environ", {**environ, **env})
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_needsRedis(self) -> None:
        """--cluster-limits (or PANDAPUSH_CLUSTER_LIMITS=1) on the memory engine: a usage error."""
        for argv, env in ((["--cluster-limits"], {}), ([], {"PANDAPUSH_CLUSTER_LIMITS": "1"})):
            with self.assertRaises(usage.UsageError) as refused:
                self.parse(*argv, **env)
            self.assertIn(
                "--cluster-limits (or PANDAPUSH_CLUSTER_LIMITS) needs the Redis engine",
                str(refused.exception),
            )
        options = self.parse("--cluster-limits", "--redis-hosts", "127.0.0.1:6379")
        self.assertTrue(options.configuration.tenantLimits.cluster)
        self.assertFalse(self.parse("--redis-hosts", "127.0.0.1:6379").configuration.tenantLimits.cluster)


class ClusterPiecesTests(TestCase):
    """Two nodes' limiters in this process, on the machine's Redis."""

    timeout = 30

    def setUp(self) -> None:
        self.redis = requireRedis()
        self.namespace = f"pp-test-{uuid.uuid4().hex}"
        self.addCleanup(deleteNamespace, [self.redis], self.namespace)

    def node(self, name: str, address: RedisAddress | None = None, **kwargs: Any) -> ClusterLimits:
        cluster = ClusterLimits(_reactor, address or self.redis, self.namespace, name, **kwargs)
        cluster.startService()
        self.addCleanup(lambda: cluster.stopService() if cluster.running else None)
        return cluster

    async def keys(self) -> list[str]:
        shard = RedisShard(_reactor, self.redis)
        try:
            return sorted(await shard.execute("KEYS", f"{self.namespace}:*"))
        finally:
            await shard.close()

    def counted(self, cluster: ClusterLimits) -> list[int]:
        """Every EVAL ``cluster`` sends from now on is counted in the returned list."""
        calls = [0]
        shard = cluster._shard
        assert shard is not None
        original = shard.eval

        def counting(*args: Any) -> Any:
            calls[0] += 1
            return original(*args)

        shard.eval = counting  # type: ignore[method-assign,assignment]
        return calls

    async def test_rateSharedByTwoNodes(self) -> None:
        """
        A key's bucket of 10 (10/s) is one bucket for two nodes: publishing as fast as they
        can, both together get 10 plus what refilled meanwhile, not 20.
        """
        a, b = self.node("a"), self.node("b")
        rates = [
            ClusterPublishRate(cluster, PublishRateLimiter(_reactor, 10, 10), _reactor) for cluster in (a, b)
        ]
        started = time.monotonic()
        allowed = 0
        waits = []
        for _ in range(20):
            for rate in rates:
                wait = await _resolve(rate.acquire("PSIDshared"))
                allowed += wait == 0.0
                if wait:
                    waits.append(wait)
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(allowed, 10)
        self.assertLessEqual(allowed, 10 + int(elapsed * 10) + 1, elapsed)
        self.assertTrue(waits and all(0 < w <= 0.11 for w in waits), waits)

    async def test_fewRedisCallsPerPublish(self) -> None:
        """
        At the default rate a node asks Redis once per slice of publishes, not per publish:
        1,000 publishes of one key cost a few dozen EVALs, and most answer at once.
        """
        a = self.node("a")
        await a.beat()
        calls = self.counted(a)
        rate = ClusterPublishRate(a, PublishRateLimiter(_reactor, 1000, 2000), _reactor)
        immediate = 0
        for _ in range(1000):
            wait = rate.acquire("PSIDbusy")
            if isinstance(wait, defer.Deferred):
                wait = await wait
            else:
                immediate += 1
            self.assertEqual(wait, 0.0)
        self.assertLessEqual(calls[0], 1000 // 50 + 10)
        self.assertGreaterEqual(immediate, 900)

    async def test_connectionsCountedAcrossNodes(self) -> None:
        """
        An application's limit of 3 is reached by two clients on one node and one on the
        other; a client leaving either node frees a place for the other.
        """
        engines = [_Engine(), _Engine()]
        nodes = [self.node("a"), self.node("b")]
        for node in nodes:
            await node.beat()
        limiters = [
            ClusterConnectionLimiter(cast(IEngine, engine), _reactor, node, 3, flushDelay=0.01)
            for engine, node in zip(engines, nodes, strict=True)
        ]
        a, b = limiters
        for engine, name in ((engines[0], "c1"), (engines[0], "c2"), (engines[1], "c3")):
            engine.clients.add(name)
        self.assertTrue(await _resolve(a.reserve("c1", APP)))
        self.assertTrue(await _resolve(a.reserve("c2", APP)))
        self.assertTrue(await _resolve(b.reserve("c3", APP)))
        self.assertTrue(await _resolve(a.reserve("c1", APP)))  # counted already: no Redis call
        engines[1].clients.add("c4")
        self.assertFalse(await _resolve(b.reserve("c4", APP)))
        self.assertFalse(await _resolve(a.reserve("c4", APP)))
        self.assertEqual(engines[1].broadcasts[0], (ClusterConnectionLimiter.SWEEP, {"app": APP}))
        # Another application is not affected.
        self.assertTrue(await _resolve(b.reserve("c4", "otherApp")))
        engines[0].destroy("c1")
        self.assertTrue(await eventually(lambda: not a._dirty and a._flush and not a._flush.active()))
        await sleep(0.05)
        self.assertTrue(await _resolve(b.reserve("c4", APP)))
        self.assertEqual((a.connections(APP), b.connections(APP)), (1, 2))

    async def test_deadNodeCountsExpire(self) -> None:
        """
        A node that dies (no heartbeat, no goodbye) holds its places only until its hash
        expires (3 heartbeats); then the others get them, and none of its keys is left.
        A node that stops cleanly removes its keys at once.
        """
        dead = self.node("dead", interval=0.2)
        alive = self.node("alive", interval=0.2)
        for node in (dead, alive):
            await node.beat()
        engine = _Engine()
        engine.clients.update({"x1", "x2", "y1"})
        gone = ClusterConnectionLimiter(cast(IEngine, engine), _reactor, dead, 2)
        survivor = ClusterConnectionLimiter(cast(IEngine, engine), _reactor, alive, 2)
        self.assertTrue(await _resolve(gone.reserve("x1", APP)))
        self.assertTrue(await _resolve(gone.reserve("x2", APP)))
        self.assertFalse(await _resolve(survivor.reserve("y1", APP)))
        self.assertIn(f"{self.namespace}:lim:n:dead", await self.keys())
        # Dies: the heartbeat stops, the connection is dropped, nothing is cleaned up.
        assert dead._beats is not None and dead._shard is not None
        dead._beats.stop()
        shard, dead._shard = dead._shard, None
        await shard.close()
        started = time.monotonic()
        while f"{self.namespace}:lim:n:dead" in await self.keys():
            self.assertLess(time.monotonic() - started, 0.6 + 1.0, "the dead node's counts outlived it")
            await sleep(0.05)
        self.assertTrue(await _resolve(survivor.reserve("y1", APP)))
        await alive.stopService()
        self.assertEqual(await self.keys(), [])

    async def test_redisAwayFallsBackToPerNodeLimits(self) -> None:
        """
        With Redis unreachable the node applies its own limits at once (no publish waits for a
        command timeout more than once a second), and says so once.
        """
        nowhere = RedisAddress("127.0.0.1", freePort())
        node = self.node("lonely", address=nowhere, commandTimeout=0.3)
        rate = ClusterPublishRate(node, PublishRateLimiter(_reactor, 2, 2), _reactor)
        started = time.monotonic()
        results = [await _resolve(rate.acquire("PSIDx")) for _ in range(3)]
        self.assertEqual([r == 0.0 for r in results], [True, True, False])
        self.assertLess(time.monotonic() - started, 0.3 + 0.5)
        engine = _Engine()
        engine.clients.update({"c1", "c2"})
        limiter = ClusterConnectionLimiter(cast(IEngine, engine), _reactor, node, 1)
        self.assertTrue(await _resolve(limiter.reserve("c1", APP)))
        self.assertFalse(await _resolve(limiter.reserve("c2", APP)))


class TwoNodesTests(ClusterCase):
    """Two real nodes with ``--cluster-limits``: the limits are reached across both."""

    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        self.nodes = await self.startNodes(
            2,
            extra=(
                "--cluster-limits",
                "--max-connections-per-app",
                "3",
                "--max-publish-rate",
                "5",
                "--max-publish-burst",
                "5",
            ),
        )

    async def wsOn(self, node: Any) -> WSClient:
        client = await WSClient(node.url).start()
        self.addCleanup(client.close)
        return client

    async def test_connectionsAcrossNodes(self) -> None:
        """
        Three subscribers, two on one node and one on the other, fill the application: the
        fourth is refused on either node (Bayeux 403 naming the limit); one leaving lets it in.
        """
        news = channel("news")
        a, b = self.nodes
        clients = [await self.wsOn(a), await self.wsOn(a), await self.wsOn(b)]
        for client in clients:
            reply = await client.call({"channel": "/meta/subscribe", "subscription": news})
            self.assertTrue(reply["successful"], reply)
        late = [await self.wsOn(b), await self.wsOn(a)]
        for client in late:
            reply = await client.call({"channel": "/meta/subscribe", "subscription": news})
            self.assertEqual(
                reply.get("error"), f"403:{news}:Too many anonymous connections (limit 3 per application)"
            )
        clients[0].kill()

        async def admitted() -> bool:
            reply = await late[0].call({"channel": "/meta/subscribe", "subscription": news})
            return bool(reply["successful"])

        deadline = time.monotonic() + 5
        while not await admitted():
            self.assertLess(time.monotonic(), deadline, "the place was not freed")
            await sleep(0.1)

    async def test_publishRateAcrossNodes(self) -> None:
        """
        REST publishes alternating between the nodes share the key's 5/s: about five get
        through, not ten, the rest are 429 with Retry-After; a Bayeux publish is 429 too.
        """
        a, b = self.nodes
        started = time.monotonic()
        codes = []
        for n in range(10):
            node = (a, b)[n % 2]
            response = await treq.post(
                f"{node.url}/channel{channel('news')}", json={"n": n}, auth=(KEY, SECRET), persistent=False
            )
            codes.append(response.code)
            if response.code == 429:
                self.assertEqual(response.headers.getRawHeaders("Retry-After"), ["1"])
            await response.content()
        elapsed = time.monotonic() - started
        self.assertEqual(set(codes), {200, 429}, codes)
        self.assertLessEqual(codes.count(200), 5 + int(elapsed * 5) + 1, (codes, elapsed))
        self.assertLess(codes.count(200), 10)
        publisher = await self.wsOn(b)
        reply = await publisher.call(
            {"channel": channel("news"), "data": {}, "ext": {"auth": {"key": KEY, "secret": SECRET}}}
        )
        if reply["successful"]:  # a token came back meanwhile: the next one is refused
            reply = await publisher.call(
                {"channel": channel("news"), "data": {}, "ext": {"auth": {"key": KEY, "secret": SECRET}}}
            )
        self.assertTrue(
            str(reply.get("error", "")).startswith(f"429:{channel('news')}:Too many publishes"), reply
        )


class WorkersTests(WorkersCase):
    """``--workers 2 --cluster-limits``: the processes of one server share the budgets too."""

    async def test_connectionsAcrossWorkers(self) -> None:
        """
        An application's limit of 2 is reached by one subscriber on each worker: a third is
        refused on either (per worker, each would have taken two).
        """
        server = await self.startWorkers(2, extra=("--cluster-limits", "--max-connections-per-app", "2"))
        pids = await self.workerPids(server, 2)
        news = channel("news")
        for worker in (0, 1):
            client = await self.wsOn(server, pids, worker)
            self.assertTrue((await client.subscribe(news))["successful"])
        for worker in (0, 1):
            late = await self.wsOn(server, pids, worker)
            reply = await late.subscribe(news)
            self.assertEqual(
                reply.get("error"), f"403:{news}:Too many anonymous connections (limit 2 per application)"
            )

    async def test_publishRateAcrossWorkers(self) -> None:
        """REST publishes alternating between the workers share the key's 5/s: not 5 on each."""
        server = await self.startWorkers(
            2, extra=("--cluster-limits", "--max-publish-rate", "5", "--max-publish-burst", "5")
        )
        pids = await self.workerPids(server, 2)
        started = time.monotonic()
        codes, workers = [], []
        for n in range(10):
            with self.onlyWorker(pids, n % 2):
                response = await treq.post(
                    f"{server.url}/channel{channel('news')}",
                    json={"n": n},
                    auth=(KEY, SECRET),
                    persistent=False,
                )
                await response.content()
            codes.append(response.code)
            workers += response.headers.getRawHeaders("X-Pandapush-Worker", [])
        elapsed = time.monotonic() - started
        self.assertEqual(workers, ["0", "1"] * 5)
        self.assertEqual(set(codes), {200, 429}, codes)
        self.assertLessEqual(codes.count(200), 5 + int(elapsed * 5) + 1, (codes, elapsed))
