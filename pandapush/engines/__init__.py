"""Engines: where clients, subscriptions, queues and presence live.

``memory`` serves one process; ``redis`` serves many nodes sharing Redis.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from pandapush.interfaces import IEngineListener

__all__ = ["EngineListener"]


@implementer(IEngineListener)
class EngineListener:
    """An IEngineListener that ignores everything: subclass and override what you need."""

    def clientCreated(self, clientId: str) -> None:
        pass

    def clientDestroyed(self, clientId: str, reason: str) -> None:
        pass

    def subscribed(self, clientId: str, channel: str) -> None:
        pass

    def unsubscribed(self, clientId: str, channel: str) -> None:
        pass

    def channelOccupied(self, channel: str) -> None:
        pass

    def channelVacated(self, channel: str) -> None:
        pass

    def memberJoined(self, channel: str, memberId: str, data: Any, clientId: str) -> None:
        pass

    def memberLeft(self, channel: str, memberId: str) -> None:
        pass
