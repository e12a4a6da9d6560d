"""The IEngine history contract (positions, ``history``, ``recover``), part of the engine suite.

Mixed into :class:`tests.engine_suite.EngineTestsMixin`, so every engine runs it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from pandapush.bayeux.delivery import Delivery
from pandapush.interfaces import Position

if TYPE_CHECKING:
    from twisted.trial.unittest import TestCase

    _Base = TestCase
else:
    _Base = object


def kept(channel: str, data: Any = "x", ext: dict[str, Any] | None = None) -> Delivery:
    """A message as a client's or the REST API's publish makes it: kept in history."""
    message: dict[str, Any] = {"channel": channel, "data": data}
    if ext is not None:
        message["ext"] = ext
    return Delivery.fromMessage(message, history=True)


def decoded(payloads: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(p) for p in payloads]


class HistoryTestsMixin(_Base):
    """
    Positions and history, on ``self.engine`` (see EngineTestsMixin). Each test ends with a
    ``turn``: on Redis it waits for the engine's background work, which a test ending at
    once would leave running (a dirty reactor under load).
    """

    engine: Any

    def turn(self) -> defer.Deferred[None]:
        raise NotImplementedError

    def wait(self, seconds: float) -> defer.Deferred[None]:
        raise NotImplementedError

    def sinkOf(self, clientId: str) -> Any:
        from tests.engine_suite import RecordingSink

        sink = RecordingSink()
        self.engine.attach(clientId, sink)
        return sink

    async def test_positionsDelivered(self) -> None:
        """Each message carries its channel's offset (from 1, +1 a publish) and epoch in ``ext.position``."""
        clientId = await self.engine.createClient()
        sink = self.sinkOf(clientId)
        await self.engine.subscribe(clientId, "/h/public/**")
        for i in range(3):
            await self.engine.publish(kept("/h/public/a", i, ext={"mine": True}))
        await self.engine.publish(kept("/h/public/b", "b"))
        await self.turn()
        got = decoded(sink.payloads)
        self.assertEqual([m["ext"]["position"]["offset"] for m in got], [1, 2, 3, 1])
        epochs = {m["ext"]["position"]["epoch"] for m in got[:3]}
        self.assertEqual(len(epochs), 1)
        self.assertIsInstance(epochs.pop(), str)
        self.assertEqual(got[0]["ext"]["mine"], True)
        self.assertEqual([m["data"] for m in got], [0, 1, 2, "b"])
        await self.turn()

    async def test_publishGivesPosition(self) -> None:
        """``publish`` and ``publishBatch`` leave each delivery with its offset and epoch."""
        one = kept("/h/public/p")
        await self.engine.publish(one)
        batch = [kept("/h/public/p"), kept("/h/public/q"), kept("/h/public/p")]
        await self.engine.publishBatch(batch)
        self.assertEqual([one.offset] + [d.offset for d in batch], [1, 2, 1, 3])
        self.assertEqual(one.epoch, batch[2].epoch)
        self.assertEqual(json.loads(batch[2].payload)["ext"]["position"], {"offset": 3, "epoch": one.epoch})
        await self.turn()

    async def test_noPositionWithoutHead(self) -> None:
        """A message made without history (presence notices, meta) is delivered as it was, unpositioned."""
        clientId = await self.engine.createClient()
        sink = self.sinkOf(clientId)
        await self.engine.subscribe(clientId, "/h/presence/r")
        plain = Delivery.fromMessage({"channel": "/h/presence/r", "data": {"subscribe": {}}})
        await self.engine.publish(plain)
        await self.turn()
        self.assertEqual(decoded(sink.payloads), [{"channel": "/h/presence/r", "data": {"subscribe": {}}}])
        page = await self.engine.history("/h/presence/r", None, 10)
        self.assertEqual(page.messages, [])
        await self.turn()

    async def test_history(self) -> None:
        """``history`` answers the position and the messages after ``since`` (or the latest), oldest first."""
        for i in range(5):
            await self.engine.publish(kept("/h/public/log", i))
        page = await self.engine.history("/h/public/log", 2, 10)
        self.assertEqual(page.offset, 5)
        self.assertEqual([o for o, _ in page.messages], [3, 4, 5])
        self.assertEqual([json.loads(p)["data"] for _, p in page.messages], [2, 3, 4])
        self.assertEqual(
            json.loads(page.messages[0][1])["ext"]["position"], {"offset": 3, "epoch": page.epoch}
        )
        latest = await self.engine.history("/h/public/log", None, 2)
        self.assertEqual([o for o, _ in latest.messages], [4, 5])
        limited = await self.engine.history("/h/public/log", 0, 2)
        self.assertEqual([o for o, _ in limited.messages], [1, 2])
        await self.turn()

    async def test_historyBoundedBySize(self) -> None:
        """A channel keeps its last ``size`` messages."""
        self.engine.historySettings.setApp("small", 3, None)
        for i in range(10):
            await self.engine.publish(kept("/small/public/a", i))
        page = await self.engine.history("/small/public/a", 0, 100)
        self.assertEqual(page.offset, 10)
        self.assertEqual([o for o, _ in page.messages], [8, 9, 10])
        await self.turn()

    async def test_historyBoundedByAge(self) -> None:
        """Messages older than the application's ``ttl`` are not answered."""
        self.engine.historySettings.setApp("brief", None, 1.0)
        await self.engine.publish(kept("/brief/public/a", "old"))
        await self.wait(1.5)
        await self.engine.publish(kept("/brief/public/a", "new"))
        page = await self.engine.history("/brief/public/a", 0, 100)
        self.assertEqual([o for o, _ in page.messages], [2])
        await self.turn()

    async def test_historyOff(self) -> None:
        """Size 0: no position, no history (the page's epoch is empty)."""
        self.engine.historySettings.setApp("off", 0, None)
        clientId = await self.engine.createClient()
        sink = self.sinkOf(clientId)
        await self.engine.subscribe(clientId, "/off/public/a")
        await self.engine.publish(kept("/off/public/a", 1))
        await self.turn()
        self.assertEqual(decoded(sink.payloads), [{"channel": "/off/public/a", "data": 1}])
        page = await self.engine.history("/off/public/a", None, 10)
        self.assertEqual(page.epoch, "")
        await self.turn()

    async def test_positionBeforeFirstPublish(self) -> None:
        """A quiet channel has a position (offset 0) that stays its epoch when messages come."""
        page = await self.engine.history("/h/public/quiet", None, 10)
        self.assertEqual(page.offset, 0)
        self.assertTrue(page.epoch)
        one = kept("/h/public/quiet")
        await self.engine.publish(one)
        self.assertEqual((one.offset, one.epoch), (1, page.epoch))
        await self.turn()

    async def test_forgetHistory(self) -> None:
        """``forgetHistory`` drops the application's channels at once: a new epoch, offset from 1 again."""
        first = kept("/gone/public/a")
        await self.engine.publish(first)
        other = kept("/kept/public/a")
        await self.engine.publish(other)
        await self.engine.forgetHistory("gone")
        page = await self.engine.history("/gone/public/a", 0, 10)
        self.assertEqual(page.messages, [])
        self.assertNotEqual(page.epoch, first.epoch)
        again = kept("/gone/public/a")
        await self.engine.publish(again)
        self.assertEqual(again.offset, 1)
        self.assertEqual(len((await self.engine.history("/kept/public/a", 0, 10)).messages), 1)
        await self.turn()

    async def _subscribed(self, clientId: str, channels: list[str]) -> Any:
        async def subscribe() -> None:
            for channel in channels:
                await self.engine.subscribe(clientId, channel)

        return lambda: defer.Deferred.fromCoroutine(subscribe())

    async def test_recover(self) -> None:
        """A resumed subscription gets what it missed, in order, then live messages, nothing twice."""
        for i in range(1, 6):
            await self.engine.publish(kept("/h/public/r", i))
        page = await self.engine.history("/h/public/r", None, 0)
        clientId = await self.engine.createClient()
        sink = self.sinkOf(clientId)
        subscribe = await self._subscribed(clientId, ["/h/public/r"])
        outcome = await self.engine.recover(clientId, subscribe, {"/h/public/r": Position(2, page.epoch)}, ())
        self.assertEqual(outcome["/h/public/r"].missed, None)
        self.assertEqual(outcome["/h/public/r"].position, Position(5, page.epoch))
        await self.engine.publish(kept("/h/public/r", 6))
        await self.turn()
        self.assertEqual([m["data"] for m in decoded(sink.payloads)], [3, 4, 5, 6])
        await self.turn()

    async def test_recoverSeam(self) -> None:
        """
        Live messages published while the history is read are held back and put after it,
        those it already holds dropped: no gap, no duplicate at the seam.
        """
        for i in range(1, 4):
            await self.engine.publish(kept("/h/public/seam", i))
        epoch = (await self.engine.history("/h/public/seam", None, 0)).epoch
        clientId = await self.engine.createClient()
        sink = self.sinkOf(clientId)

        async def subscribeThenPublish() -> None:
            await self.engine.subscribe(clientId, "/h/public/seam")
            # Published once subscribed, before the history is read: both the history
            # and the live path carry them.
            await self.engine.publish(kept("/h/public/seam", 4))
            await self.engine.publish(kept("/h/public/seam", 5))
            await self.turn()

        outcome = await self.engine.recover(
            clientId,
            lambda: defer.Deferred.fromCoroutine(subscribeThenPublish()),
            {"/h/public/seam": Position(1, epoch)},
            (),
        )
        self.assertIsNone(outcome["/h/public/seam"].missed)
        await self.engine.publish(kept("/h/public/seam", 6))
        await self.turn()
        got = decoded(sink.payloads)
        self.assertEqual([m["data"] for m in got], [2, 3, 4, 5, 6])
        self.assertEqual([m["ext"]["position"]["offset"] for m in got], [2, 3, 4, 5, 6])
        await self.turn()

    async def test_recoverFailures(self) -> None:
        """Another epoch, a position older than history, an offset not reached yet: each is said."""
        self.engine.historySettings.setApp("few", 2, None)
        for i in range(1, 6):
            await self.engine.publish(kept("/few/public/a", i))
        epoch = (await self.engine.history("/few/public/a", None, 0)).epoch
        clientId = await self.engine.createClient()
        sink = self.sinkOf(clientId)
        subscribe = await self._subscribed(clientId, ["/few/public/a"])
        outcome = await self.engine.recover(clientId, subscribe, {"/few/public/a": Position(1, "other")}, ())
        self.assertEqual(outcome["/few/public/a"].missed, "epoch changed")
        outcome = await self.engine.recover(clientId, subscribe, {"/few/public/a": Position(9, epoch)}, ())
        self.assertEqual(outcome["/few/public/a"].missed, "future")
        await self.turn()
        self.assertEqual(sink.payloads, [])
        outcome = await self.engine.recover(clientId, subscribe, {"/few/public/a": Position(1, epoch)}, ())
        self.assertEqual(outcome["/few/public/a"].missed, "position too old")
        await self.turn()
        # What is left is sent, flagged as incomplete.
        self.assertEqual([m["data"] for m in decoded(sink.payloads)], [4, 5])
        await self.turn()

    async def test_latest(self) -> None:
        """A cache channel subscription gets the latest message at once, and its position."""
        for i in range(1, 4):
            await self.engine.publish(kept("/h/public/cache", i))
        clientId = await self.engine.createClient()
        sink = self.sinkOf(clientId)
        subscribe = await self._subscribed(clientId, ["/h/public/cache"])
        outcome = await self.engine.recover(
            clientId, subscribe, {"/h/public/cache": None}, ["/h/public/cache"]
        )
        self.assertEqual(outcome["/h/public/cache"].position.offset, 3)
        await self.turn()
        self.assertEqual([m["data"] for m in decoded(sink.payloads)], [3])
        await self.turn()

    async def test_recoverWithoutResumeSendsNothing(self) -> None:
        """A subscription with no position asked for learns the channel's position, and gets no history."""
        await self.engine.publish(kept("/h/public/fresh", 1))
        clientId = await self.engine.createClient()
        sink = self.sinkOf(clientId)
        subscribe = await self._subscribed(clientId, ["/h/public/fresh"])
        outcome = await self.engine.recover(clientId, subscribe, {"/h/public/fresh": None}, ())
        self.assertEqual(outcome["/h/public/fresh"].position.offset, 1)
        self.assertIsNone(outcome["/h/public/fresh"].missed)
        await self.turn()
        self.assertEqual(sink.payloads, [])
        await self.turn()

    async def test_recoverSubscribeFails(self) -> None:
        """If the subscription fails, so does the recovery, and the client's queue is not left held."""
        await self.engine.publish(kept("/h/public/f", 1))
        epoch = (await self.engine.history("/h/public/f", None, 0)).epoch
        clientId = await self.engine.createClient()
        sink = self.sinkOf(clientId)
        await self.engine.subscribe(clientId, "/h/public/other")
        with self.assertRaises(ZeroDivisionError):
            await self.engine.recover(
                clientId, lambda: defer.fail(ZeroDivisionError()), {"/h/public/f": Position(0, epoch)}, ()
            )
        await self.engine.publish(kept("/h/public/other", "live"))
        await self.turn()
        self.assertEqual([m["data"] for m in decoded(sink.payloads)], ["live"])
        await self.turn()

    async def test_idempotentPublish(self) -> None:
        """A key seen within five minutes: acknowledged with the first's position, not delivered again."""
        clientId = await self.engine.createClient()
        sink = self.sinkOf(clientId)
        await self.engine.subscribe(clientId, "/h/public/once")
        first = kept("/h/public/once", 1)
        first.idempotencyKey = "h:k1"
        self.assertEqual(await self.engine.publish(first), 1)
        again = kept("/h/public/once", 2)
        again.idempotencyKey = "h:k1"
        self.assertEqual(await self.engine.publish(again), 0)
        self.assertTrue(again.duplicate)
        self.assertFalse(first.duplicate)
        self.assertEqual((again.offset, again.epoch), (first.offset, first.epoch))
        other = kept("/h/public/once", 3)
        other.idempotencyKey = "other:k1"  # the same key in another application
        batch = [kept("/h/public/once", 4), kept("/h/public/once", 5)]
        batch[0].idempotencyKey = "h:k1"
        batch[1].idempotencyKey = "h:k2"
        await self.engine.publish(other)
        self.assertEqual(await self.engine.publishBatch(batch), [0, 1])
        self.assertTrue(batch[0].duplicate)
        await self.turn()
        self.assertEqual([m["data"] for m in decoded(sink.payloads)], [1, 3, 5])
        page = await self.engine.history("/h/public/once", 0, 10)
        self.assertEqual(len(page.messages), 3)
        await self.turn()

    async def test_positionOnlyKeptForTtl(self) -> None:
        """A channel only asked for its position (never published to) is forgotten after its ttl."""
        self.engine.historySettings.setApp("asked", None, 1.0)
        first = await self.engine.history("/asked/public/a", None, 10)
        again = await self.engine.history("/asked/public/a", None, 10)
        self.assertEqual(first.epoch, again.epoch)
        await self.wait(1.5)
        self.sweepHistory()
        later = await self.engine.history("/asked/public/a", None, 10)
        self.assertNotEqual(later.epoch, first.epoch)
        await self.turn()

    def sweepHistory(self) -> None:
        """Let the engine drop what expired (the memory engine sweeps on a timer; Redis expires keys)."""
