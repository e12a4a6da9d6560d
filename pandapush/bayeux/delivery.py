"""A published message as its recipients receive it: serialized once, shared by all."""

from __future__ import annotations

from typing import Any

from pandapush.bayeux import json

__all__ = ["Delivery"]


class Delivery:
    """
    One published message on its way to many clients.

    ``payload`` is the JSON of the delivered message object; long-poll responses
    splice it into their arrays and websockets send it as it is. ``frames``
    caches transport-specific encodings (a prepared websocket frame of
    ``[payload]``) so that a message going to many sockets in the same turn is
    framed once.
    """

    __slots__ = ("channel", "exclude", "frames", "payload")

    def __init__(self, channel: str, payload: bytes, exclude: str | None = None) -> None:
        self.channel = channel
        self.payload = payload
        # A client not to deliver to (a presence member's own join announcement).
        self.exclude = exclude
        self.frames: dict[str, Any] = {}

    @classmethod
    def fromMessage(cls, message: dict[str, Any], exclude: str | None = None) -> Delivery:
        return cls(message["channel"], json.dumps(message), exclude)

    def __repr__(self) -> str:
        return f"<Delivery {self.channel} {self.payload[:60]!r}>"
