"""Engine listeners: a no-op base to subclass, and the registry half engines share.

Beside :mod:`pandapush.interfaces` (not in ``pandapush.engines``) so that the router and
the extensions, which listen to an engine, need not import the engines package.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from pandapush.interfaces import IEngineListener

__all__ = ["EngineListener", "ListenerRegistry"]


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


class ListenerRegistry:
    """
    The listener half of an engine: ``addListener``/``removeListener``, and
    ``_notify`` that calls every listener and keeps going when one fails.
    The engine sets ``self._listeners = []`` in its constructor.
    """

    _listeners: list[IEngineListener]
    _log = Logger()

    def addListener(self, listener: IEngineListener) -> None:
        self._listeners.append(listener)

    def removeListener(self, listener: IEngineListener) -> None:
        self._listeners.remove(listener)

    def _notify(self, method: str, *args: Any) -> None:
        for listener in self._listeners:
            try:
                getattr(listener, method)(*args)
            except Exception:
                self._log.failure(
                    "engine listener {listener!r} failed in {method}", listener=listener, method=method
                )
