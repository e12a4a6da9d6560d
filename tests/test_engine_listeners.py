"""
``ListenerRegistry``: the engines' fan-out of events to their listeners.

Each event goes to the listeners that implement it, found once per change of the
listeners (not looked up per listener per event); these tests pin that the index
follows every change and that who hears what, in which order, is as before.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from pandapush.interfaces import IEngineListener
from pandapush.listeners import EVENTS, EngineListener, ListenerRegistry, _hooksFor


class Registry(ListenerRegistry):
    def __init__(self) -> None:
        self._listeners = []

    def notify(self, event: str, *args: Any) -> None:
        self._notify(event, *args)


class Destroys(EngineListener):
    """Hears clients going, nothing else."""

    def __init__(self, heard: list[tuple[Any, ...]], name: str = "destroys") -> None:
        self.heard = heard
        self.name = name

    def clientDestroyed(self, clientId: str, reason: str) -> None:
        self.heard.append((self.name, "clientDestroyed", clientId, reason))


class DestroysAndSubscribes(Destroys):
    def subscribed(self, clientId: str, channel: str) -> None:
        self.heard.append((self.name, "subscribed", clientId, channel))


@implementer(IEngineListener)
class Everything:
    """An IEngineListener of its own (not an EngineListener): every method is its own."""

    def __init__(self, heard: list[tuple[Any, ...]]) -> None:
        self.heard = heard

    def __getattr__(self, name: str) -> Any:
        if name not in EVENTS:
            raise AttributeError(name)
        return lambda *args: self.heard.append(("everything", name, *args))


class ListenerRegistryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.registry = Registry()
        self.heard: list[tuple[Any, ...]] = []

    def test_onlyImplemented(self) -> None:
        """A listener's inherited no-ops are not in an event's list; what it overrides is, at any depth."""
        destroys = Destroys(self.heard)
        both = DestroysAndSubscribes(self.heard)
        hooks = _hooksFor([destroys, both])
        self.assertEqual([listener for listener, _ in hooks["clientDestroyed"]], [destroys, both])
        self.assertEqual([listener for listener, _ in hooks["subscribed"]], [both])
        for event in set(EVENTS) - {"clientDestroyed", "subscribed"}:
            self.assertEqual(hooks[event], ())

    def test_orderAndArguments(self) -> None:
        """Each event reaches the listeners implementing it, in the order added, with its arguments."""
        self.registry.addListener(Destroys(self.heard, "a"))
        self.registry.addListener(Everything(self.heard))
        self.registry.addListener(DestroysAndSubscribes(self.heard, "b"))
        self.registry.notify("subscribed", "c1", "/x")
        self.registry.notify("clientDestroyed", "c1", "disconnect")
        self.registry.notify("memberLeft", "/p", "m1")
        self.assertEqual(
            self.heard,
            [
                ("everything", "subscribed", "c1", "/x"),
                ("b", "subscribed", "c1", "/x"),
                ("a", "clientDestroyed", "c1", "disconnect"),
                ("everything", "clientDestroyed", "c1", "disconnect"),
                ("b", "clientDestroyed", "c1", "disconnect"),
                ("everything", "memberLeft", "/p", "m1"),
            ],
        )

    def test_addedLater(self) -> None:
        """A listener added after events were notified hears the next ones: the index is rebuilt."""
        self.registry.addListener(Destroys(self.heard, "a"))
        self.registry.notify("clientDestroyed", "c1", "expired")
        self.registry.addListener(DestroysAndSubscribes(self.heard, "b"))
        self.registry.notify("subscribed", "c2", "/x")
        self.registry.notify("clientDestroyed", "c2", "expired")
        self.assertEqual(
            self.heard,
            [
                ("a", "clientDestroyed", "c1", "expired"),
                ("b", "subscribed", "c2", "/x"),
                ("a", "clientDestroyed", "c2", "expired"),
                ("b", "clientDestroyed", "c2", "expired"),
            ],
        )

    def test_removed(self) -> None:
        """A removed listener hears nothing more: the index is rebuilt."""
        a = Destroys(self.heard, "a")
        b = Destroys(self.heard, "b")
        self.registry.addListener(a)
        self.registry.addListener(b)
        self.registry.notify("clientDestroyed", "c1", "expired")
        self.registry.removeListener(a)
        self.registry.notify("clientDestroyed", "c2", "expired")
        self.assertEqual(
            self.heard,
            [
                ("a", "clientDestroyed", "c1", "expired"),
                ("b", "clientDestroyed", "c1", "expired"),
                ("b", "clientDestroyed", "c2", "expired"),
            ],
        )

    def test_removedDuringNotify(self) -> None:
        """A listener removing another while an event is told does not make a third miss it."""
        c = Destroys(self.heard, "c")

        class Remover(EngineListener):
            def clientDestroyed(inner, clientId: str, reason: str) -> None:
                self.registry.removeListener(inner)

        remover = Remover()
        self.registry.addListener(remover)
        self.registry.addListener(c)
        self.registry.notify("clientDestroyed", "c1", "expired")
        self.registry.notify("clientDestroyed", "c2", "expired")
        self.assertEqual(
            self.heard, [("c", "clientDestroyed", "c1", "expired"), ("c", "clientDestroyed", "c2", "expired")]
        )

    def test_failureLoggedOthersCalled(self) -> None:
        """A listener that raises is logged; the listeners after it still hear the event."""

        class Failing(EngineListener):
            def clientDestroyed(self, clientId: str, reason: str) -> None:
                raise RuntimeError("boom")

        logged: list[dict[str, Any]] = []
        observer: Any = logged.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.registry.addListener(Failing())
        self.registry.addListener(Destroys(self.heard))
        self.registry.notify("clientDestroyed", "c1", "expired")
        self.assertEqual(self.heard, [("destroys", "clientDestroyed", "c1", "expired")])
        failures = [e for e in logged if e.get("log_level") == LogLevel.critical]
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0]["method"], "clientDestroyed")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
