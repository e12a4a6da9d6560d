"""Bayeux messages and replies: their type, the meta channels, and fields several parts read."""

from __future__ import annotations

from typing import Any

from pandapush.bayeux.delivery import Delivery
from pandapush.bayeux.errors import BayeuxError

__all__ = [
    "CONNECT",
    "DISCONNECT",
    "HANDSHAKE",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "Message",
    "Reply",
    "extensionError",
    "fail",
    "makeReply",
    "subscriptionChannels",
]

#: A decoded Bayeux message (or reply): a JSON object.
Message = dict[str, Any]
#: What answers a batch: replies, and for a long-poll connect the deliveries after its reply.
Reply = Message | Delivery

HANDSHAKE = "/meta/handshake"
CONNECT = "/meta/connect"
SUBSCRIBE = "/meta/subscribe"
UNSUBSCRIBE = "/meta/unsubscribe"
DISCONNECT = "/meta/disconnect"


def makeReply(message: Message) -> Message:
    """A reply echoing the request's ``id`` (verbatim, whatever it is), clientId, channel."""
    reply: Message = {}
    if "id" in message:
        reply["id"] = message["id"]
    clientId = message.get("clientId")
    if clientId is not None:
        reply["clientId"] = clientId
    channel = message.get("channel")
    if channel is not None:
        reply["channel"] = channel
    return reply


def fail(reply: Message, error: str | BayeuxError) -> Message:
    """``reply``, made unsuccessful with ``error``."""
    reply["error"] = str(error)
    reply["successful"] = False
    return reply


def extensionError(message: Message) -> str | None:
    """
    The ``error`` an extension set on ``message`` to refuse it, else None. One that is
    not a string (the client may have sent it) becomes a plain 400.
    """
    error = message.get("error")
    if error is None:
        return None
    return error if isinstance(error, str) else str(BayeuxError.badRequest())


def subscriptionChannels(message: Message) -> list[str]:
    """
    The channels named by a ``/meta/subscribe`` or ``/meta/unsubscribe`` message or
    reply: its ``subscription`` is one channel or a list of them (Bayeux allows both).
    Anything that is not a string is left out; the router answers malformed ones.
    """
    subscription = message.get("subscription")
    if isinstance(subscription, str):
        return [subscription]
    if isinstance(subscription, list):
        return [c for c in subscription if isinstance(c, str)]
    return []
