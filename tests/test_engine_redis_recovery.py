"""Resuming a client whose session another node owns: the recovery goes through the owner.

Two Redis engines on one namespace: the client is attached on A (its owner); its subscribe
with a position is handled by B (a long-poller whose requests are not balanced to one
node). B asks A to hold the client's queue, subscribes, reads the history and hands A what
to put in front: the client gets what it missed, then live messages, none twice.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from pandapush.engines.redis.recovery import RemoteRecovery
from pandapush.interfaces import Position
from tests.engine_suite import RecordingSink
from tests.history_suite import kept
from tests.support.redis import RedisEngineCase
from tests.support.waiting import sleep


class TwoEngines(RedisEngineCase):
    """Two Redis engines (nodes) on one namespace: ``a`` and ``b``."""

    def setUp(self) -> Any:
        namespace = self.newNamespace()
        self.a, self.b = self.newEngine(namespace), self.newEngine(namespace)
        return defer.gatherResults([self.a.ready(), self.b.ready()])

    async def settle(self) -> None:
        await self.a.settle()
        await self.b.settle()


class RemoteRecoveryTests(TwoEngines, TestCase):
    async def test_throughTheOwner(self) -> None:
        """B resumes a client A owns, with live messages published through the seam: in order, once."""
        channel = "/app/public/r"
        for n in range(1, 6):
            await self.a.publish(kept(channel, n))
        epoch = (await self.a.history(channel, None, 0)).epoch
        clientId = await self.a.createClient()
        sink = RecordingSink()
        self.a.attach(clientId, sink)
        await self.settle()

        async def subscribeAndPublish() -> None:
            await self.b.subscribe(clientId, channel)
            await self.b.publish(kept(channel, 6))
            await self.a.publish(kept(channel, 7))
            await self.settle()

        outcome = await self.b.recover(
            clientId,
            lambda: defer.Deferred.fromCoroutine(subscribeAndPublish()),
            {channel: Position(2, epoch)},
            (),
        )
        self.assertIsNone(outcome[channel].missed)
        await self.b.publish(kept(channel, 8))
        await self.settle()
        got = [json.loads(p) for p in sink.payloads]
        self.assertEqual([m["data"] for m in got], [3, 4, 5, 6, 7, 8])
        self.assertEqual([m["ext"]["position"]["offset"] for m in got], [3, 4, 5, 6, 7, 8])

    async def test_ownerCannotHold(self) -> None:
        """A client the owner no longer has: 'unavailable', nothing old sent, the subscription made."""
        channel = "/app/public/gone"
        await self.a.publish(kept(channel, 1))
        epoch = (await self.a.history(channel, None, 0)).epoch
        clientId = await self.a.createClient()
        self.a._node.drop(clientId)  # as if handed over to a node that is not there
        outcome = await self.b.recover(
            clientId, lambda: self.b.subscribe(clientId, channel), {channel: Position(0, epoch)}, ()
        )
        self.assertEqual(outcome[channel].missed, "unavailable")
        self.assertIn(channel, await self.b.subscriptions(clientId))

    async def test_holdEndsByItself(self) -> None:
        """A hold its asker never ends (it died) lets the queue go after HOLD_TIMEOUT."""
        channel = "/app/public/held"
        clientId = await self.a.createClient()
        sink = RecordingSink()
        self.a.attach(clientId, sink)
        await self.a.subscribe(clientId, channel)
        recovery: RemoteRecovery = self.b._recovery
        answer = await recovery._rpc.call(self.a.nodeId, "hold", c=clientId)
        self.assertTrue(answer and answer["held"])
        await self.a.publish(kept(channel, "held back"))
        await self.settle()
        self.assertEqual(sink.payloads, [])
        self.a._recovery._holds[clientId][0][0].reset(0)  # time passes: HOLD_TIMEOUT
        await self.settle()
        self.assertEqual([json.loads(p)["data"] for p in sink.payloads], ["held back"])


class LiveCopiesBehindTests(TwoEngines, TestCase):
    """
    A recovery's READ and the live copies of the messages it read come over different
    connections: the copies may arrive after the READ's answer. Each message must still
    reach the client once (a lagging SUBSCRIBE connection, made so by pausing its reads).
    """

    async def lagging(self, engine: Any, channel: str) -> tuple[str, Any]:
        """Messages 1-3, then 4 and 5 held back in ``engine``'s SUBSCRIBE connection; their epoch."""
        # A subscriber already there: the resuming subscribe needs no SUBSCRIBE to Redis.
        watcher = await engine.createClient()
        await engine.subscribe(watcher, channel)
        for n in (1, 2, 3):
            await self.a.publish(kept(channel, n))
        await self.settle()
        epoch = (await self.a.history(channel, None, 0)).epoch
        transport = engine._node.subscriber._protocol.transport
        transport.pauseProducing()
        self.addCleanup(transport.resumeProducing)
        for n in (4, 5):
            await self.a.publish(kept(channel, n))
        return epoch, transport

    async def resumed(self, engine: Any, clientId: str, channel: str, epoch: str, transport: Any) -> Any:
        from twisted.internet import reactor

        # The copies come in while the recovery waits, or after it, as they would late.
        reactor.callLater(0.3, transport.resumeProducing)  # type: ignore[attr-defined]
        outcome = await engine.recover(
            clientId, lambda: engine.subscribe(clientId, channel), {channel: Position(3, epoch)}, ()
        )
        await sleep(0.5)
        await self.a.publish(kept(channel, 6))
        await self.settle()
        return outcome

    async def test_ownNode(self) -> None:
        """The client is this node's: history 4, 5, then live 6, none twice."""
        channel = "/app/public/late"
        epoch, transport = await self.lagging(self.a, channel)
        clientId = await self.a.createClient()
        sink = RecordingSink()
        self.a.attach(clientId, sink)
        outcome = await self.resumed(self.a, clientId, channel, epoch, transport)
        self.assertIsNone(outcome[channel].missed)
        got = [json.loads(p) for p in sink.payloads]
        self.assertEqual([m["data"] for m in got], [4, 5, 6])
        self.assertEqual([m["ext"]["position"]["offset"] for m in got], [4, 5, 6])

    async def test_throughTheOwner(self) -> None:
        """
        The client is A's, its subscribe came to B: B's call to A comes after A's live
        copies on the same connection (this guards that order).
        """
        channel = "/app/public/late-owner"
        epoch, transport = await self.lagging(self.a, channel)
        clientId = await self.a.createClient()
        sink = RecordingSink()
        self.a.attach(clientId, sink)
        await self.settle()
        outcome = await self.resumed(self.b, clientId, channel, epoch, transport)
        self.assertIsNone(outcome[channel].missed)
        got = [json.loads(p) for p in sink.payloads]
        self.assertEqual([m["data"] for m in got], [4, 5, 6])
        self.assertEqual([m["ext"]["position"]["offset"] for m in got], [4, 5, 6])
