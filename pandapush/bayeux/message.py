"""Bayeux messages: their type, and fields several parts read."""

from __future__ import annotations

from typing import Any

__all__ = ["Message", "subscriptionChannels"]

#: A decoded Bayeux message (or reply): a JSON object.
Message = dict[str, Any]


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
