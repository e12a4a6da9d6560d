"""Engine listeners: a no-op base to subclass, and the registry half engines share.

Beside :mod:`pandapush.interfaces` (not in ``pandapush.engines``) so that the router and
the extensions, which listen to an engine, need not import the engines package.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from pandapush.interfaces import IEngineListener

__all__ = ["EVENTS", "EngineListener", "ListenerRegistry"]


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


#: The events of IEngineListener, each a method name.
EVENTS = tuple(IEngineListener.names())


def _hooksFor(listeners: list[IEngineListener]) -> dict[str, tuple[tuple[IEngineListener, Any], ...]]:
    """
    Per event, the listeners that do something with it and their bound methods, in
    the order they registered. A listener that inherits :class:`EngineListener`'s
    no-op for an event is left out of its list: most listeners hear one or two of the
    eight events, and a reconnect storm spent 5 % of its time calling the no-ops
    (``getattr`` and a call per listener per event).
    """
    hooks: dict[str, tuple[tuple[IEngineListener, Any], ...]] = {}
    for event in EVENTS:
        noop = getattr(EngineListener, event)
        found = []
        for listener in listeners:
            method = getattr(listener, event, None)
            if method is None or getattr(method, "__func__", None) is noop:
                continue
            found.append((listener, method))
        hooks[event] = tuple(found)
    return hooks


class ListenerRegistry:
    """
    The listener half of an engine: ``addListener``/``removeListener``, and
    ``_notify`` that calls every listener implementing the event and keeps going
    when one fails. The engine sets ``self._listeners = []`` in its constructor.
    """

    _listeners: list[IEngineListener]
    # Built from _listeners when an event is first notified after a change (_hooksFor).
    _hooks: dict[str, tuple[tuple[IEngineListener, Any], ...]] | None = None
    _log = Logger()

    def addListener(self, listener: IEngineListener) -> None:
        self._listeners.append(listener)
        self._hooks = None

    def removeListener(self, listener: IEngineListener) -> None:
        self._listeners.remove(listener)
        self._hooks = None

    def _notify(self, method: str, *args: Any) -> None:
        hooks = self._hooks
        if hooks is None:
            hooks = self._hooks = _hooksFor(self._listeners)
        called = hooks.get(method)
        if called is None:  # not an IEngineListener event: asked of every listener, as it was
            called = tuple((listener, getattr(listener, method, None)) for listener in self._listeners)
        # A snapshot: a listener added or removed by one of these calls hears from the next event on.
        for listener, hook in called:
            try:
                hook(*args)
            except Exception:
                self._log.failure(
                    "engine listener {listener!r} failed in {method}", listener=listener, method=method
                )
