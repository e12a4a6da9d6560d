"""The memory engine's history positions a message exactly as ``Delivery.position`` does."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pandapush.bayeux.delivery import Delivery
from pandapush.engines import history
from pandapush.engines.history import HistorySettings, MemoryHistory


def _messages() -> list[dict[str, Any]]:
    return [
        {"channel": "/h/public/a", "data": "x"},
        {"channel": "/h/public/a", "data": {"n": 1}, "id": "7", "ext": {"mine": True}},
        {"channel": "/h/public/a", "data": [1, "é"], "ext": {}},
        {"channel": "/h/private/b", "data": None, "ext": {"a": {"b": "%d%s"}}},
    ]


class PositionTests(TestCase):
    def assertPositionedAsDelivery(self, epoch: str) -> None:
        self.patch(history, "newEpoch", lambda: epoch)
        store = MemoryHistory(Clock(), HistorySettings(size=3))
        for _ in range(5):
            for message in _messages():
                appended = Delivery.fromMessage(message, history=True)
                appended.frames["websocket"] = b"stale"
                store.append(appended)
                expected = Delivery.fromMessage(message, history=True)
                expected.position(appended.offset, epoch)
                self.assertEqual(appended.payload, expected.payload)
                self.assertEqual((appended.offset, appended.epoch), (expected.offset, expected.epoch))
                self.assertEqual(appended.frames, {})
        page = store.page("/h/public/a", None, 10)
        self.assertEqual([offset for offset, _ in page.messages], [13, 14, 15])
        last = Delivery.fromMessage(_messages()[2], history=True)
        last.position(15, epoch)
        self.assertEqual(page.messages[-1][1], last.payload)
        store.close()

    def test_sameAsDeliveryPosition(self) -> None:
        """Payload, offset, epoch and the kept entry are what ``Delivery.position`` makes; frames cleared."""
        self.assertPositionedAsDelivery(history.newEpoch())

    def test_epochWithPercent(self) -> None:
        """An epoch with ``%`` in it (none is made so, but an epoch is only text) comes out as it is."""
        self.assertPositionedAsDelivery("a%db%s%%")

    def test_unpositionedWithoutHead(self) -> None:
        """A message made without history is neither kept nor changed."""
        store = MemoryHistory(Clock(), HistorySettings())
        plain = Delivery.fromMessage({"channel": "/h/public/a", "data": 1})
        payload = plain.payload
        store.append(plain)
        self.assertEqual((plain.payload, plain.offset, plain.epoch), (payload, 0, None))
        self.assertEqual(len(store), 0)
        store.close()
