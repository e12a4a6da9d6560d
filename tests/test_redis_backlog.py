"""
A Redis behind a backlog is not a Redis down (a real ``redis-server`` of the test's own).

In a reconnect storm a node queues thousands of commands on its one connection: the last
ones wait past the command timeout while Redis answers the others. Those calls fail on
their own, but they used to count as an outage (``/ready`` 503, every handshake answered
"Redis unavailable" while Redis worked) and the periodic PING, stuck behind the same
backlog, aborted the connection and with it every command still queued.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from pandapush.redis import RedisShard, RedisUnavailable
from tests.support.redis import RedisProcess, requireRedisServer
from tests.support.waiting import sleep

#: Busy for ARGV[1] iterations, so that Redis answers scripts one at a time, slowly.
BUSY = "local x = 0 for i = 1, tonumber(ARGV[1]) do x = x + i end return 1"
TIMEOUT = 1.0
#: Redis answers the commands of one read of a connection together, after running them all:
#: a command longer than a read (16 KiB) gets its answer before the next one runs.
PADDING = "x" * 20_000


class BacklogTests(TestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        requireRedisServer()
        self.redis = RedisProcess()
        self.addCleanup(self.redis.stop, "KILL")
        await self.redis.start()
        self.shard = RedisShard(reactor, self.redis.address, commandTimeout=TIMEOUT)
        self.addCleanup(self.shard.close)

    async def iterationsFor(self, seconds: float) -> int:
        """
        How many iterations of BUSY take about ``seconds`` on this machine now: by the
        fastest of three timings, so that a first call (the script loaded) or a moment
        the machine was busy elsewhere does not make the scripts too short for their
        backlog to outlast the command timeout.
        """
        n = 200_000
        took = float("inf")
        for _ in range(3):
            started = time.monotonic()
            await self.shard.eval(BUSY, [], [n])
            took = min(took, time.monotonic() - started)
        return max(int(n * seconds / max(took, 0.001)), 1)

    async def test_backlogIsNotAnOutage(self) -> None:
        """
        Scripts of ~0.1 s queued for ~3 s: the later ones fail alone ("behind"), the health
        stays ok, and the PING sent behind them keeps the connection (same client id after).
        """
        before = await self.shard.execute("CLIENT", "ID")
        iterations = await self.iterationsFor(0.1)
        calls = [self.shard.eval(BUSY, [], [iterations, PADDING]) for _ in range(30)]
        ping = self.shard.ping()
        results: list[Any] = await defer.DeferredList([*calls, ping], consumeErrors=True)
        failures = [result for ok, result in results[:-1] if not ok]
        self.assertTrue(failures, "the backlog did not outlast the command timeout")
        for failure in failures:
            failure.trap(RedisUnavailable)
            self.assertIn("behind", str(failure.value))
        self.assertTrue(self.shard.health.ok, self.shard.health.status())
        # Let Redis work through what it was sent, then ask who we are.
        for _ in range(100):
            try:
                after = await self.shard.execute("CLIENT", "ID")
                break
            except RedisUnavailable:
                await sleep(0.1)
        self.assertEqual(after, before)
        self.assertTrue(self.shard.health.ok, self.shard.health.status())

    async def test_silenceIsAnOutage(self) -> None:
        """A Redis that answers nothing within the timeout is unavailable, as before."""
        await self.shard.execute("CLIENT", "PAUSE", int(TIMEOUT * 2500), "ALL")
        with self.assertRaises(RedisUnavailable):
            await self.shard.execute("GET", "x")
        self.assertFalse(self.shard.health.ok)
