"""A published message as its recipients receive it: serialized once, shared by all."""

from __future__ import annotations

from time import time as _now
from typing import Any

import orjson

from pandapush.bayeux import json

__all__ = ["Delivery", "positionSuffix"]

_EXT = b',"ext":'
_EXT_OPEN = _EXT + b"{"


def positionSuffix(offset: int, epoch: str) -> bytes:
    """What closes an open delivery (``Delivery.head``) once its position is known."""
    return b'"position":{"offset":%d,"epoch":"%s"}}}' % (offset, epoch.encode())


class Delivery:
    """
    One published message on its way to many clients.

    ``payload`` is the JSON of the delivered message object; long-poll responses
    splice it into their arrays and websockets send it as it is. ``frames``
    caches transport-specific encodings (a prepared websocket frame of
    ``[payload]``) so that a message going to many sockets in the same turn is
    framed once. ``accepted`` is when the publish was accepted (wall clock, so
    that nodes on one machine agree): metrics measure delivery latency from it.

    A message kept in its channel's history carries its position in ``ext.position``,
    known only once the engine has appended it (on Redis, inside the publish script).
    For it ``head`` is the JSON left open inside ``ext`` (``{..., "ext":{...,``): the
    engine closes it with :func:`positionSuffix` and sets ``offset``/``epoch``, so the
    message is still serialized once. ``head`` is None for a message without history
    (meta channels, presence notices, ``/service``).
    """

    __slots__ = (
        "accepted",
        "channel",
        "duplicate",
        "epoch",
        "exclude",
        "frames",
        "head",
        "idempotencyKey",
        "offset",
        "payload",
    )

    def __init__(
        self,
        channel: str,
        payload: bytes,
        exclude: str | None = None,
        head: bytes | None = None,
        accepted: float | None = None,
    ) -> None:
        self.channel = channel
        self.payload = payload
        # A client not to deliver to (a presence member's own join announcement).
        self.exclude = exclude
        self.frames: dict[str, Any] = {}
        self.head = head
        # The message's position in its channel's history (0: none).
        self.offset = 0
        self.epoch: str | None = None
        # Set by the router (``<appId>:<key>``): a second publish with the key within five
        # minutes is acknowledged, not delivered, and the engine sets ``duplicate``.
        self.idempotencyKey: str | None = None
        self.duplicate = False
        self.accepted = _now() if accepted is None else accepted

    @classmethod
    def fromMessage(
        cls, message: dict[str, Any], exclude: str | None = None, history: bool = False
    ) -> Delivery:
        if not history:
            return cls(message["channel"], json.dumps(message), exclude)
        ext = message.get("ext")
        if ext is not None:
            body = {k: v for k, v in message.items() if k != "ext"}
            if isinstance(ext, dict) and ext:
                head = json.dumps(body)[:-1] + _EXT + json.dumps(ext)[:-1] + b","
                # Until positioned (history off, an engine without history), the message as it was.
                return cls(message["channel"], head[:-1] + b"}}", exclude, head)
            message = body
        # Without an ext (every publish but one whose ext says something): the payload until
        # positioned is the message's JSON as it is, and the head that JSON left open, so
        # history's append, which replaces the payload at once, costs no second build.
        # orjson's own dumps, json.dumps less its frame: this runs for every publish.
        payload = orjson.dumps(message)
        return cls(message["channel"], payload, exclude, payload[:-1] + _EXT_OPEN)

    def position(self, offset: int, epoch: str) -> None:
        """Give the message its position: its payload now carries it."""
        assert self.head is not None
        self.offset = offset
        self.epoch = epoch
        self.payload = self.head + positionSuffix(offset, epoch)
        self.frames.clear()

    def __repr__(self) -> str:
        return f"<Delivery {self.channel} {self.payload[:60]!r}>"
