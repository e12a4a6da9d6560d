"""The memory engine's history positions a message exactly as ``Delivery.position`` does."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pandapush.bayeux import json
from pandapush.bayeux.delivery import Delivery, positionSuffix
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

    def test_unpositionedPayloadAndHead(self) -> None:
        """
        Before its position, a message with history is delivered as it was (an ext moved
        last, an empty one left out), and its head closed by a position gives the message
        with ``ext.position``, exact in bytes: the payload is not built twice any more.
        """
        for message in [*_messages(), {"channel": "/h/public/a", "data": 2, "ext": "odd"}]:
            delivery = Delivery.fromMessage(message, history=True)
            body = {k: v for k, v in message.items() if k != "ext"}
            ext = message.get("ext")
            kept = {**body, "ext": ext} if isinstance(ext, dict) and ext else body
            self.assertEqual(delivery.payload, json.dumps(kept))
            positioned = delivery.head + positionSuffix(4, "ep")  # type: ignore[operator]
            extended = {**(ext if isinstance(ext, dict) else {}), "position": {"offset": 4, "epoch": "ep"}}
            self.assertEqual(positioned, json.dumps({**body, "ext": extended}))


class SizeChangeTests(TestCase):
    def test_settingsChanged(self) -> None:
        """
        An application's size set, lowered, turned off and back while its channel is
        published to: every publish kept and positioned under the settings of its moment.
        """
        settings = HistorySettings(size=3)
        store = MemoryHistory(Clock(), settings)

        def publish(n: int) -> Delivery:
            delivery = Delivery.fromMessage({"channel": "/h/public/a", "data": n}, history=True)
            store.append(delivery)
            return delivery

        def kept() -> list[int]:
            return [offset for offset, _ in store.page("/h/public/a", None, 100).messages]

        for n in range(5):
            publish(n)
        self.assertEqual(kept(), [3, 4, 5])
        settings.setApp("other", 1, None)
        publish(5)
        self.assertEqual(kept(), [4, 5, 6])
        settings.setApp("h", 2, None)
        self.assertEqual(publish(6).offset, 7)
        self.assertEqual(kept(), [6, 7])
        settings.setApp("h", 0, None)
        off = publish(7)
        self.assertEqual((off.offset, off.epoch), (0, None))
        self.assertEqual(off.payload, json.dumps({"channel": "/h/public/a", "data": 7}))
        settings.setApp("h", None, None)
        self.assertEqual(publish(8).offset, 8)
        self.assertEqual(kept(), [6, 7, 8])
        settings.setApp("h", 5, None)
        for n in range(9, 12):
            publish(n)
        self.assertEqual(kept(), [7, 8, 9, 10, 11])
        store.close()
