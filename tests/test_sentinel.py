"""Redis Sentinel shards (:mod:`pandapush.redis.sentinel`): parsing, and connections that follow the primary.

The connection tests run real ``redis-server`` processes of their own. Those that must
steer what the sentinels say (a replica named as primary, a ``+switch-master`` while the
old primary still answers) use :class:`~tests.support.sentinel.FakeSentinel`; the last
ones a real primary, replica and three ``redis-server --sentinel`` whose primary is
killed. The cluster test with real nodes is ``tests/test_multinode_sentinel.py``.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from typing import Any

import txredisapi
from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from pandapush.cli.context import CommandError, Context
from pandapush.config import Configuration, ConfigurationError
from pandapush.redis import RedisAddress, RedisShard, RedisSubscriber, RedisUnavailable, parseRedisShards
from pandapush.redis.rolecheck import NotPrimary, PrimaryCheck
from pandapush.redis.sentinel import Sentinels, parseSentinels
from tests.support.sentinel import FakeSentinel, RedisServer, SentinelDeployment
from tests.support.waiting import eventually, sleep


class ParseTests(TestCase):
    def test_sentinelsAndMasters(self) -> None:
        """One shard per master name, each knowing every sentinel (port 26379 by default)."""
        shards = parseSentinels("10.0.0.1:5000, 10.0.0.2,[::1]:26380", "alpha,beta/2")
        sentinels = (("10.0.0.1", 5000), ("10.0.0.2", 26379), ("::1", 26380))
        self.assertEqual(
            shards, [RedisAddress("alpha", 0, 0, sentinels), RedisAddress("beta", 0, 2, sentinels)]
        )
        self.assertEqual([s.name for s in shards], ["sentinel:alpha/0", "sentinel:beta/2"])

    def test_refused(self) -> None:
        """Malformed lists, a master twice, or hosts and sentinels together are ValueErrors."""
        for sentinels, masters in [
            ("", "a"),
            ("h:0", "a"),
            ("h:1", ""),
            ("h:1", "a,a"),
            ("h:1", "a/x"),
            ("h:notaport", "a"),
        ]:
            self.assertRaises(ValueError, parseSentinels, sentinels, masters)
        self.assertRaises(ValueError, parseRedisShards, "h:6379", "s:1", "a")
        self.assertRaises(ValueError, parseRedisShards, None, "s:1", None)
        self.assertRaises(ValueError, parseRedisShards, None, None, "a")
        self.assertIsNone(parseRedisShards(None, None, None))
        self.assertEqual(parseRedisShards("h:1", None, None), [RedisAddress("h", 1)])

    def test_configuration(self) -> None:
        """The Sentinel pair chooses the Redis engine; a half or a mix is a usage error at parse time."""
        env = {"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTERS": "m1,m2", "DATABASE": "memory"}
        config = Configuration.fromOptions({}, env)
        self.assertEqual(config.engineName, "redis")
        self.assertEqual([s.name for s in config.engine.redisShards()], ["sentinel:m1/0", "sentinel:m2/0"])
        options = {"redis-sentinels": "127.0.0.1:1", "redis-sentinel-masters": "x"}
        config = Configuration.fromOptions(options, {"DATABASE": "memory"})
        self.assertEqual(config.engine.redisShards()[0].sentinels, (("127.0.0.1", 1),))
        for bad in (
            {"REDIS_SENTINELS": "127.0.0.1:26379"},
            {"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTERS": "m", "REDIS_HOSTS": "h:1"},
        ):
            with self.assertRaises(ConfigurationError) as caught:
                Configuration.fromOptions({}, {**bad, "DATABASE": "memory"})
            self.assertIn("REDIS_SENTINEL", str(caught.exception))


class RoleCheckTests(TestCase):
    """The ROLE check on a connection of its own (a StringTransport): what it reads, and refuses."""

    def check(self) -> tuple[PrimaryCheck, StringTransport, defer.Deferred[None]]:
        checked: defer.Deferred[None] = defer.Deferred()
        check = PrimaryCheck(Factory.forProtocol(Protocol), checked)
        transport = StringTransport()
        check.makeConnection(transport)
        self.assertEqual(transport.value(), b"*1\r\n$4\r\nROLE\r\n")
        return check, transport, checked

    def test_primaryThenCommands(self) -> None:
        """
        ``master`` (read across any split) passes; the endpoint's own commands are then
        answered as the command connection answers them, an error reply as a value.
        """
        check, transport, checked = self.check()
        for byte in b"*3\r\n$6\r\nmaster\r\n:42\r\n*0\r\n":
            check.dataReceived(bytes([byte]))
        self.successResultOf(checked)
        numsub = check.command("PUBSUB", "NUMSUB", "up")
        zrange = check.command("ZRANGE", "nodes", "0", "-1")
        check.dataReceived(b"*2\r\n$2\r\nup\r\n:1\r\n-WRONGTYPE not a sorted set\r\n+LEFT\r\n")
        self.assertEqual(self.successResultOf(numsub), ["up", 1])
        error = self.successResultOf(zrange)
        self.assertIsInstance(error, txredisapi.ResponseError)
        self.assertEqual(str(error), "WRONGTYPE not a sorted set")
        self.assertFalse(transport.disconnecting)

    def test_notPrimary(self) -> None:
        """A replica, or an error instead of a role, is refused with what it said."""
        for reply, said in [
            (b"*5\r\n$5\r\nslave\r\n$1\r\nh\r\n:1\r\n$9\r\nconnected\r\n:0\r\n", "'slave'"),
            (b"-NOPERM this user has no permissions to run the 'role' command\r\n", "NOPERM this user"),
        ]:
            _check, transport, checked = self.check()
            _check.dataReceived(reply)
            failure = self.failureResultOf(checked, NotPrimary)
            self.assertIn(said, failure.getErrorMessage())
            self.assertTrue(transport.disconnecting)

    def test_hostileRole(self) -> None:
        """
        A ROLE reply no Redis sends, or one that never ends (past 64 KiB), closes the
        connection with RedisUnavailable; deep nesting included (it once escaped the check).
        """
        for reply in [
            b"?\r\n",
            b"$-3\r\n",
            b"*1\r\n" * 5000,
            b"*100000\r\n$6\r\nmaster\r\n" + b"$9\r\n123456789\r\n" * 8000,
        ]:
            check, transport, checked = self.check()
            check.dataReceived(reply)
            self.assertIn("bad ROLE reply", self.failureResultOf(checked, RedisUnavailable).getErrorMessage())
            self.assertTrue(transport.disconnecting)


class FakeSentinelTests(TestCase):
    """Real Redis servers, a sentinel of our own that names whichever the test says."""

    timeout = 60

    async def setUp(self) -> None:  # type: ignore[override]
        self.servers = [RedisServer(), RedisServer()]
        for server in self.servers:
            self.addCleanup(server.stop, "KILL")
            await server.start()
        self.sentinel = FakeSentinel()
        self.sentinelPort = self.sentinel.listen()
        self.addCleanup(self.sentinel.stop)
        self.shard = parseSentinels(f"127.0.0.1:{self.sentinelPort}", "fake")[0]

    def point(self, index: int) -> tuple[str, int]:
        primary = ("127.0.0.1", self.servers[index].port)
        self.sentinel.primaries["fake"] = primary
        return primary

    def newShard(self) -> RedisShard:
        shard = RedisShard(reactor, self.shard, commandTimeout=2.0)
        self.addCleanup(shard.close)
        return shard

    async def test_commandsGoToThePrimaryNamed(self) -> None:
        """A shard asks the sentinel, checks ROLE and runs its commands there."""
        self.point(0)
        shard = self.newShard()
        await shard.execute("SET", "k", "on-0")
        direct = RedisShard(reactor, self.servers[0].address)
        self.addCleanup(direct.close)
        self.assertEqual(await direct.execute("GET", "k"), "on-0")
        self.assertGreaterEqual(self.sentinel.asked, 1)

    async def test_commandTellsServersThroughSentinels(self) -> None:
        """
        The ``pandapush`` command given REDIS_SENTINELS and REDIS_SENTINEL_MASTERS sends
        its key invalidation to the primary the sentinels name, where the servers listen.
        """
        self.point(0)
        heard: list[str] = []
        listener = RedisSubscriber(reactor, self.servers[0].address, lambda c, m: heard.append(m))
        self.addCleanup(listener.close)
        await listener.subscribe("pp-sentinel:keys")
        environ = {
            "REDIS_SENTINELS": f"127.0.0.1:{self.sentinelPort}",
            "REDIS_SENTINEL_MASTERS": "fake",
            "REDIS_NAMESPACE": "pp-sentinel",
        }
        err = io.StringIO()
        context = Context(argparse.Namespace(), environ, io.StringIO(), reactor, err)
        await context.keysChanged(keyId="PSIDrevoked")
        self.assertTrue(await eventually(lambda: bool(heard), timeout=5), err.getvalue())
        self.assertEqual(json.loads(heard[0])["key"], "PSIDrevoked")
        self.assertEqual(err.getvalue(), "")
        self.assertEqual(Sentinels._shared, {}, "the command left connections to the sentinels open")
        half = Context(argparse.Namespace(), {"REDIS_SENTINELS": "h:1"}, io.StringIO(), reactor, err)
        self.assertRaises(CommandError, half.checkRedisHosts)

    async def test_gateHoldsAReconnection(self) -> None:
        """
        A gate set with ``gateReconnections`` is not asked on the first connection; on
        one made again (a failover) it runs its own commands on the checked connection,
        and the commands that waited reach the new primary only once it has finished.
        The SUBSCRIBE marker is subscribed on every connection of a subscriber.
        """
        old, new = self.point(0), ("127.0.0.1", self.servers[1].port)
        shard = self.newShard()
        release: defer.Deferred[None] = defer.Deferred()
        asked: list[Any] = []

        def gate(command: Any) -> defer.Deferred[None]:
            d = command("PUBSUB", "NUMSUB", "marker")
            d.addCallback(asked.append)
            return d.addCallback(lambda _: release)

        shard.gateReconnections(gate)
        subscriber = RedisSubscriber(reactor, self.shard, lambda c, m: None)
        self.addCleanup(subscriber.close)
        subscriber.setMarker("marker")
        await subscriber.subscribe("news")
        await shard.execute("SET", "k", "old")
        self.assertEqual(asked, [], "the first connection was gated")

        self.point(1)
        self.sentinel.announce("fake", old, new)
        self.assertTrue(await eventually(lambda: bool(asked), timeout=5), "the gate was not asked")
        waited = shard.execute("SET", "k", "new")
        await sleep(0.3)
        self.assertNoResult(waited)
        control = RedisShard(reactor, self.servers[1].address)
        self.addCleanup(control.close)
        self.assertIsNone(await control.execute("GET", "k"))
        release.callback(None)
        await waited
        self.assertEqual(await control.execute("GET", "k"), "new")
        # The gate's own command was answered (by the new primary); the subscriber, moved
        # too, subscribes the marker there again.
        self.assertEqual(asked[0][0], "marker")
        self.assertIsInstance(asked[0][1], int, "the gate reads what the command connection reads")
        for _ in range(100):
            if await control.execute("PUBSUB", "NUMSUB", "marker") == ["marker", 1]:
                break
            await sleep(0.05)
        self.assertEqual(await control.execute("PUBSUB", "NUMSUB", "marker"), ["marker", 1])
        self.assertEqual(await control.execute("PUBSUB", "NUMSUB", "news"), ["news", 1])

    async def test_replicaNamedIsRefused(self) -> None:
        """
        A server that answers ROLE as a replica never sees a command: the endpoint
        keeps asking until the sentinel names a primary, and then connects there.
        """
        other = self.servers[1]
        replicaOf = RedisShard(reactor, other.address)
        self.addCleanup(replicaOf.close)
        await replicaOf.execute("REPLICAOF", "127.0.0.1", str(self.servers[0].port))
        self.point(1)
        shard = self.newShard()
        first = shard.execute("SET", "k", "where")
        self.assertTrue(await eventually(lambda: self.sentinel.asked >= 3, timeout=5))
        self.assertFalse(first.called, "a command was answered by the replica")
        self.point(0)
        await first
        self.assertEqual((await shard.execute("ROLE"))[0], "master")
        direct = RedisShard(reactor, self.servers[0].address)
        self.addCleanup(direct.close)
        self.assertEqual(await direct.execute("GET", "k"), "where")

    async def test_readOnlyFindsTheNewPrimary(self) -> None:
        """A primary demoted under an open connection: READONLY fails that command and reconnects."""
        self.point(0)
        shard = self.newShard()
        await shard.execute("SET", "k", "1")
        # Demoted without a sentinel to close its clients (a partition, a manual REPLICAOF).
        for server, target in ((self.servers[1], None), (self.servers[0], self.servers[1])):
            control = RedisShard(reactor, server.address)
            self.addCleanup(control.close)
            if target is None:
                await control.execute("REPLICAOF", "NO", "ONE")
            else:
                await control.execute("REPLICAOF", "127.0.0.1", str(target.port))
        self.point(1)
        with self.assertRaises(Exception) as caught:
            await shard.execute("SET", "k", "2")
        self.assertIn("read-only", str(caught.exception))
        started = time.monotonic()
        while True:
            try:
                await shard.execute("SET", "k", "3")
                break
            except Exception:
                self.assertLess(time.monotonic() - started, 5)
                await sleep(0.1)
        direct = RedisShard(reactor, self.servers[1].address)
        self.addCleanup(direct.close)
        self.assertEqual(await direct.execute("GET", "k"), "3")

    async def test_switchMasterMovesOpenConnections(self) -> None:
        """
        ``+switch-master`` closes connections to the old primary even while it still
        answers as one (a partition: two primaries), for the command and SUBSCRIBE
        connections alike, and both reconnect to the new one.
        """
        old, new = self.point(0), ("127.0.0.1", self.servers[1].port)
        shard = self.newShard()
        await shard.execute("SET", "k", "old")
        received: list[tuple[str, str]] = []
        subscriber = RedisSubscriber(reactor, self.shard, lambda c, m: received.append((c, m)))
        self.addCleanup(subscriber.close)
        await subscriber.subscribe("news")
        # One +switch-master subscription per sentinel, shared by both connections.
        self.assertTrue(await eventually(lambda: len(self.sentinel.subscribers) == 1, timeout=5))

        self.sentinel.announce("fake", old, new)

        async def onNew() -> bool:
            try:
                await shard.execute("SET", "k", "new")
            except Exception:
                return False
            control = RedisShard(reactor, self.servers[1].address)
            try:
                return bool(await control.execute("GET", "k") == "new")
            finally:
                await control.close()

        deadline = time.monotonic() + 5
        while not await onNew():
            self.assertLess(time.monotonic() - deadline, 0, "the shard stayed on the old primary")
            await sleep(0.1)
        publisher = RedisShard(reactor, self.servers[1].address)
        self.addCleanup(publisher.close)

        async def heard() -> bool:
            await publisher.execute("PUBLISH", "news", "on the new one")
            await sleep(0.1)
            return ("news", "on the new one") in received

        deadline = time.monotonic() + 5
        while not await heard():
            self.assertLess(time.monotonic() - deadline, 0, "the subscriber stayed on the old primary")
        self.assertEqual(len(self.sentinel.subscribers), 1)


class SentinelFailoverTests(TestCase):
    """A real primary, replica and three sentinels; the primary is killed."""

    timeout = 90

    async def test_shardAndSubscriberFollowAFailover(self) -> None:
        """
        After SIGKILL of the primary, commands fail only until the sentinels have
        promoted the replica, then succeed there with the data replicated before; the
        subscriber is back on the new primary; the sentinels' connections close with
        the last shard.
        """
        deployment = SentinelDeployment()
        self.addCleanup(deployment.stop)
        await deployment.start()
        address = deployment.shards[0]
        shard = RedisShard(reactor, address, commandTimeout=2.0)
        received: list[str] = []
        subscriber = RedisSubscriber(reactor, address, lambda c, m: received.append(m))
        await subscriber.subscribe("news")
        await shard.execute("SET", "kept", "yes")
        await shard.execute("WAIT", 1, 2000)
        primary = await deployment.primary()

        await primary.stop("KILL")
        killed = time.monotonic()
        while True:
            try:
                await shard.execute("INCR", "counter")
                break
            except Exception:
                self.assertLess(time.monotonic() - killed, 20, "commands never succeeded again")
                await sleep(0.1)
        recovered = time.monotonic() - killed
        self.assertNotEqual((await deployment.primary()).port, primary.port)
        self.assertEqual(await shard.execute("GET", "kept"), "yes")
        self.assertEqual((await shard.execute("ROLE"))[0], "master")
        # down-after-milliseconds 1000 + the election: a few seconds, not the backoff's maximum.
        self.assertLess(recovered, 12)

        async def heard() -> bool:
            await shard.execute("PUBLISH", "news", "after")
            await sleep(0.1)
            return "after" in received

        deadline = time.monotonic() + 10
        while not await heard():
            self.assertLess(time.monotonic(), deadline, "the subscriber never reached the new primary")

        await subscriber.close()
        await shard.close()
        self.assertEqual(Sentinels._shared, {})
