"""The engine contract on the in-memory engine, with a fake clock."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pandapush.engines.memory import MemoryEngine
from tests.engine_suite import EngineTestsMixin, RecordingSink, message


class MemoryEngineTests(EngineTestsMixin, TestCase):
    engineName = "memory"

    def makeEngine(self) -> MemoryEngine:
        self.clock = Clock()
        return MemoryEngine(self.clock, timeout=30, expiry=self.expiry)

    def turn(self) -> defer.Deferred[None]:
        self.clock.advance(0)
        return defer.succeed(None)

    def wait(self, seconds: float) -> defer.Deferred[None]:
        for _ in range(int(seconds)):
            self.clock.advance(1)
        self.clock.advance(seconds - int(seconds))
        return defer.succeed(None)

    def sweepHistory(self) -> None:
        self.clock.advance(60)  # the history's sweep interval

    async def test_oneTimerPerTurn(self) -> None:
        """However many clients receive messages in a turn, one flush call is scheduled."""
        sinks = []
        for _ in range(50):
            clientId = await self.engine.createClient()
            sink = RecordingSink()
            sinks.append(sink)
            self.engine.attach(clientId, sink)
            await self.engine.subscribe(clientId, "/a")
        pendingBefore = len(self.clock.getDelayedCalls())
        await self.engine.publish(message("/a"))
        await self.engine.publish(message("/a"))
        self.assertEqual(len(self.clock.getDelayedCalls()), pendingBefore + 1)
        self.clock.advance(0)
        self.assertTrue(all(len(s.batches) == 1 and len(s.payloads) == 2 for s in sinks))

    async def test_sharedDelivery(self) -> None:
        """Every recipient gets the same Delivery object: serialized once, not per client."""
        seen = []

        class Sink(RecordingSink):
            def deliver(self, deliveries):  # type: ignore[no-untyped-def]
                seen.extend(deliveries)

        for _ in range(3):
            clientId = await self.engine.createClient()
            self.engine.attach(clientId, Sink())
            await self.engine.subscribe(clientId, "/a")
        await self.engine.publish(message("/a"))
        self.clock.advance(0)
        self.assertEqual(len(seen), 3)
        self.assertTrue(all(d is seen[0] for d in seen))

    async def test_expiryScansOnlyExpired(self) -> None:
        """Attaching removes a client from the expiry list, so living clients cost the sweep nothing."""
        ids = [await self.engine.createClient() for _ in range(5)]
        for clientId in ids[:4]:
            self.engine.attach(clientId, RecordingSink())
        self.assertEqual(list(self.engine._deadlines), ids[4:])

    async def test_boundedQueue(self) -> None:
        """A client that lets more than maxQueue messages pile up is dropped, not kept growing."""
        self.engine.maxQueue = 5
        slow, fine = await self.engine.createClient(), await self.engine.createClient()
        sink = RecordingSink()
        self.engine.attach(fine, sink)
        for clientId in (slow, fine):
            await self.engine.subscribe(clientId, "/a")
        for i in range(6):
            await self.engine.publish(message("/a", i))
            self.clock.advance(0)
        self.assertFalse(self.engine.hasClient(slow))
        self.assertIn(("destroyed", slow, "slow consumer"), self.listener.events)
        self.assertEqual(len(sink.payloads), 6)
