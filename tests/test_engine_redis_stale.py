"""Stale copies (``pandapush/engines/redis/stale.py``) against a real Redis: a copy whose
hand-over request never reached its node is dropped by that node's sweep; a current one
(an idle long-poller between polls on its owner) is not."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from pandapush.engines.redis import RedisEngine
from tests.engine_suite import RecordingListener, RecordingSink, message
from tests.support.redis import RedisEngineCase
from tests.support.waiting import eventually, sleep


class StaleCopyTests(RedisEngineCase, TestCase):
    """Two nodes on one namespace; B's node channel can be made deaf (its requests lost)."""

    # A sweep every max(expiry, 2 * handoverTimeout) = 1 s.
    handoverTimeout = 0.3

    def setUp(self) -> Any:
        namespace = self.newNamespace()
        self.a, self.b = (self.newEngine(namespace, handoverTimeout=self.handoverTimeout) for _ in range(2))
        self.listener = RecordingListener()
        self.b.addListener(self.listener)
        return defer.gatherResults([self.a.ready(), self.b.ready()])

    async def settle(self) -> None:
        for node in (self.a, self.b):
            await node.settle()

    async def moveLosingHandOver(self) -> tuple[str, RecordingSink]:
        """A client created and subscribed on B moves to A; A's hand-over request never reaches B."""
        a, b = self.a, self.b
        clientId = await b.createClient()
        await b.subscribe(clientId, "/s")
        hear = b._control
        lost: list[str] = []
        b._control = lost.append  # type: ignore[method-assign,assignment]
        sink = RecordingSink(persistent=False)
        a.attach(clientId, sink)
        # The claim ends once A's request has timed out.
        await a.settle()
        b._control = hear  # type: ignore[method-assign]
        self.assertIn("handover", "".join(lost))
        # A long-poller between two polls on its new owner.
        a.detach(clientId, sink)
        self.assertTrue(a.hasLocal(clientId))
        self.assertTrue(b.hasLocal(clientId), "the lost request left B's copy")
        return clientId, sink

    def queued(self, engine: RedisEngine, clientId: str) -> int:
        client = engine._local.get(clientId)
        return -1 if client is None else len(client.queue)

    async def test_lostHandOverCopyDropped(self) -> None:
        """
        B's copy, which nobody asked for, queued every message on its channels for as
        long as B ran; B's sweep now drops it, without events (A owns the client), while
        B's own client and A's current copy stay. (Those two are kept attached meanwhile,
        or the 1 s expiry would end them: ``test_staleTwiceBeforeDropped`` shows that idle
        current copies are kept.)
        """
        a, b = self.a, self.b
        mine = await b.createClient()
        await b.subscribe(mine, "/t")
        b.attach(mine, RecordingSink())
        clientId, _ = await self.moveLosingHandOver()
        moved = RecordingSink()
        a.attach(clientId, moved)
        await a.publish(message("/s", 1))
        await self.settle()
        self.assertEqual(self.queued(b, clientId), 1)
        self.assertTrue(await eventually(lambda: not b.hasLocal(clientId), timeout=5.0))
        await a.publish(message("/s", 2))
        await a.publish(message("/t", 3))
        await self.settle()
        self.assertTrue(b.hasLocal(mine))
        self.assertTrue(a.hasLocal(clientId))
        self.assertTrue(await b.clientExists(clientId))
        self.assertEqual(self.listener.only("destroyed", "unsubscribed", "vacated"), [])
        # The client goes on on A with everything published since it moved.
        self.assertEqual(moved.payloads, [b'{"channel":"/s","data":1}', b'{"channel":"/s","data":2}'])

    async def test_staleTwiceBeforeDropped(self) -> None:
        """
        A copy is dropped only when found stale by two sweeps in a row: at the first, the
        new owner's request for its queue may still be on its way. Current copies (idle, on
        their owner) are never dropped.
        """
        a, b = self.a, self.b
        for engine in (a, b):
            engine._stale.stop()
        mine = await b.createClient()
        clientId, _ = await self.moveLosingHandOver()
        self.assertEqual(await b._stale.sweep(), 0)
        self.assertTrue(b.hasLocal(clientId))
        self.assertEqual(await b._stale.sweep(), 1)
        self.assertFalse(b.hasLocal(clientId))
        for _ in range(2):
            self.assertEqual(await a._stale.sweep(), 0)
            self.assertEqual(await b._stale.sweep(), 0)
        self.assertTrue(a.hasLocal(clientId))
        self.assertTrue(b.hasLocal(mine))

    async def test_attachedBetweenSweepsKept(self) -> None:
        """A stale copy attached again between two sweeps is taken back, not dropped."""
        a, b = self.a, self.b
        for engine in (a, b):
            engine._stale.stop()
        clientId, _ = await self.moveLosingHandOver()
        self.assertEqual(await b._stale.sweep(), 0)
        sink = RecordingSink(persistent=False)
        b.attach(clientId, sink)
        await self.settle()
        b.detach(clientId, sink)
        self.assertEqual(await b._stale.sweep(), 0)
        self.assertEqual(await b._stale.sweep(), 0)
        self.assertTrue(b.hasLocal(clientId))
        self.assertFalse(a.hasLocal(clientId))

    async def test_redisUnavailableSkipped(self) -> None:
        """A sweep that cannot reach Redis drops nothing and forgets what it suspected."""
        a, b = self.a, self.b
        for engine in (a, b):
            engine._stale.stop()
        clientId, _ = await self.moveLosingHandOver()
        self.assertEqual(await b._stale.sweep(), 0)
        shard = b._shards[0]
        eval_ = shard.eval

        def failing(*args: Any, **kwargs: Any) -> defer.Deferred[Any]:
            return defer.fail(ConnectionError("Redis away"))

        shard.eval = failing  # type: ignore[method-assign]
        try:
            self.assertEqual(await b._stale.sweep(), 0)
        finally:
            shard.eval = eval_  # type: ignore[method-assign]
        self.assertTrue(b.hasLocal(clientId))
        self.assertEqual(await b._stale.sweep(), 0)
        self.assertEqual(await b._stale.sweep(), 1)
        await sleep(0)

    async def test_unknownGenerationSkipped(self) -> None:
        """
        A shard whose generation token is not the one B knows may have come back empty
        (every client would look unknown): the restore deals with it, the sweep drops nothing.
        """
        a, b = self.a, self.b
        for engine in (a, b):
            engine._stale.stop()
        clientId, _ = await self.moveLosingHandOver()
        generations = b._restorer._generations
        known = dict(generations)
        generations.clear()
        generations.update({index: "another" for index in known})
        checks: list[int] = []

        def check(index: int) -> defer.Deferred[bool]:
            checks.append(index)
            return defer.succeed(False)

        b._restorer.check = check  # type: ignore[method-assign]
        self.assertEqual(await b._stale.sweep(), 0)
        self.assertEqual(await b._stale.sweep(), 0)
        self.assertTrue(b.hasLocal(clientId))
        self.assertEqual(checks, [0, 0])
