"""``encodeReplies``: one plain reply takes orjson's array, the same bytes as the general join."""

from __future__ import annotations

from typing import Any

import orjson
from twisted.trial.unittest import TestCase

from pandapush.bayeux import json
from pandapush.bayeux.delivery import Delivery


def _joined(replies: list[Any]) -> bytes:
    """The general path: each reply or delivery on its own, joined."""
    parts = [r.payload if isinstance(r, Delivery) else orjson.dumps(r) for r in replies]
    return b"[" + b",".join(parts) + b"]"


class EncodeRepliesTests(TestCase):
    def test_sameBytes(self) -> None:
        """Any batch of replies and deliveries encodes as each one's JSON, joined into an array."""
        delivery = Delivery.fromMessage({"channel": "/a/public/b", "data": {"x": 1}}, history=True)
        delivery.position(3, "epoch123")
        replies: list[dict[str, Any]] = [
            {"id": "1", "channel": "/a/public/b", "successful": True},
            {"channel": "/meta/connect", "successful": False, "error": "402::é", "advice": {"n": 1.5}},
            {},
            {"payload": "not a delivery", "id": 2},
        ]
        batches: list[list[Any]] = [[r] for r in replies]
        batches += [replies, [delivery], [replies[0], delivery], [delivery, replies[1]], []]
        for batch in batches:
            self.assertEqual(json.encodeReplies(batch), _joined(batch))

    def test_unserializable(self) -> None:
        """A reply orjson cannot write fails the same way alone or among others."""
        for batch in ([{"x": object()}], [{"ok": 1}, {"x": object()}]):
            self.assertRaises(orjson.JSONEncodeError, json.encodeReplies, batch)


class DecodeMessagesTests(TestCase):
    def test_batchesOnly(self) -> None:
        """A frame or body is a batch (an array) or one message (an object); anything else is None."""
        self.assertEqual(json.decodeMessages(b'[{"channel":"/a"}]'), [{"channel": "/a"}])
        self.assertEqual(json.decodeMessages('{"channel":"/a"}'), {"channel": "/a"})
        self.assertEqual(json.decodeMessages(b"[]"), [])
        for raw in (b'"text"', b"1", b"1.5", b"true", b"null", b"", b"{", None, 12):
            self.assertIsNone(json.decodeMessages(raw), raw)  # type: ignore[arg-type]
