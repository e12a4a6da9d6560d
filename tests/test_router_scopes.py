"""
Extensions that name the messages their hooks act on (``IScopedExtension``).

The router indexes its extensions' hooks by kind of message (each meta channel, the
publishes) when one is added or removed, and sends each message through the hooks of
its kind only. These tests pin which hooks see which messages, in which order, and that
an extension that names nothing (a third-party one) makes every message go through every
hook again, as before the index.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from pandapush.bayeux.context import MessageContext
from pandapush.engines.history import HistorySettings
from pandapush.engines.memory import MemoryEngine
from pandapush.interfaces import PUBLISHES, IExtension, IScopedExtension
from pandapush.router import BayeuxRouter

HANDSHAKE = {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}


@implementer(IExtension)
class Recorder:
    """Records each hook call as (name, direction, channel); names nothing (every message)."""

    def __init__(self, name: str, calls: list[tuple[str, str, Any]]) -> None:
        self.name = name
        self.calls = calls
        self.later: Deferred[Any] | None = None

    def incoming(self, message: dict[str, Any], context: MessageContext) -> Any:
        self.calls.append((self.name, "in", message.get("channel")))
        if self.later is not None:
            later, self.later = self.later, None
            return later.addCallback(lambda _: message)
        return message

    def outgoing(self, reply: dict[str, Any], context: MessageContext) -> Any:
        self.calls.append((self.name, "out", reply.get("channel")))
        return reply


@implementer(IScopedExtension)
class Scoped(Recorder):
    def __init__(
        self, name: str, calls: list[tuple[str, str, Any]], incomingOn: set[str], outgoingOn: set[str]
    ) -> None:
        super().__init__(name, calls)
        self.incomingOn = frozenset(incomingOn)
        self.outgoingOn = frozenset(outgoingOn)


class ScopedExtensionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.engine = MemoryEngine(self.clock, timeout=30, expiry=10, history=HistorySettings(0))
        self.router = BayeuxRouter(self.engine, self.clock, timeout=30)
        self.calls: list[tuple[str, str, Any]] = []
        self.subscribes = Scoped("subscribes", self.calls, {"/meta/subscribe"}, {"/meta/subscribe"})
        self.publishes = Scoped("publishes", self.calls, {PUBLISHES}, set())
        self.replies = Scoped(
            "replies",
            self.calls,
            set(),
            {"/meta/handshake", "/meta/connect", "/meta/subscribe", "/meta/disconnect", PUBLISHES},
        )
        for extension in (self.subscribes, self.publishes, self.replies):
            self.router.addExtension(extension)

    def process(self, message: dict[str, Any]) -> list[Any]:
        return self.successResultOf(self.router.process([message], MessageContext("long-polling")))

    def client(self) -> str:
        clientId: str = self.process(dict(HANDSHAKE))[0]["clientId"]
        self.process({"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"})
        del self.calls[:]
        return clientId

    def test_eachKindItsHooks(self) -> None:
        """Each message goes through the hooks that name its kind, in the extensions' order."""
        self.process(dict(HANDSHAKE))
        self.assertEqual(self.calls, [("replies", "out", "/meta/handshake")])
        clientId = self.client()
        self.process({"channel": "/meta/subscribe", "clientId": clientId, "subscription": "/a/b"})
        self.process({"channel": "/a/b", "clientId": clientId, "data": 1})
        self.process({"channel": "/meta/unsubscribe", "clientId": clientId, "subscription": "/a/b"})
        self.process({"channel": "/meta/disconnect", "clientId": clientId})
        self.assertEqual(
            self.calls,
            [
                ("subscribes", "in", "/meta/subscribe"),
                ("subscribes", "out", "/meta/subscribe"),
                ("replies", "out", "/meta/subscribe"),
                ("publishes", "in", "/a/b"),
                ("replies", "out", "/a/b"),
                ("replies", "out", "/meta/disconnect"),
            ],
        )

    def test_otherChannelsEveryHook(self) -> None:
        """
        A message on a channel that is neither a known meta channel nor outside ``/meta``
        (nor a string) goes through every hook: no extension said it leaves those alone.
        """
        for channel in ["/meta/other", "/meta", "/metadata/x", 7]:
            del self.calls[:]
            self.process({"channel": channel, "clientId": "nobody"})
            self.assertEqual(
                self.calls,
                [(name, "in", channel) for name in ("subscribes", "publishes", "replies")]
                + [(name, "out", channel) for name in ("subscribes", "publishes", "replies")],
            )

    def test_unscopedExtensionEveryHook(self) -> None:
        """
        While one extension names nothing, every message goes through every hook (it may
        change a message's channel); once it is removed, the scopes apply again.
        """
        other = Recorder("other", self.calls)
        self.router.addExtension(other)
        clientId = self.client()
        self.process({"channel": "/a/b", "clientId": clientId, "data": 1})
        names = ("subscribes", "publishes", "replies", "other")
        self.assertEqual(
            self.calls,
            [(name, "in", "/a/b") for name in names] + [(name, "out", "/a/b") for name in names],
        )
        self.router.removeExtension(other)
        del self.calls[:]
        self.process({"channel": "/a/b", "clientId": clientId, "data": 1})
        self.assertEqual(self.calls, [("publishes", "in", "/a/b"), ("replies", "out", "/a/b")])

    def test_addedAndRemovedScoped(self) -> None:
        """Adding or removing a scoped extension changes what the next messages go through."""
        clientId = self.client()
        late = Scoped("late", self.calls, {PUBLISHES}, {PUBLISHES})
        self.router.addExtension(late)
        self.process({"channel": "/a/b", "clientId": clientId, "data": 1})
        self.assertEqual(
            self.calls,
            [
                ("publishes", "in", "/a/b"),
                ("late", "in", "/a/b"),
                ("replies", "out", "/a/b"),
                ("late", "out", "/a/b"),
            ],
        )
        self.router.removeExtension(self.publishes)
        del self.calls[:]
        self.process({"channel": "/a/b", "clientId": clientId, "data": 1})
        self.assertEqual(
            self.calls, [("late", "in", "/a/b"), ("replies", "out", "/a/b"), ("late", "out", "/a/b")]
        )

    def test_answeredLaterGoesOn(self) -> None:
        """A scoped hook answering later resumes at the next hook of the same kind, not of the whole list."""
        clientId = self.client()
        late = Scoped("late", self.calls, {PUBLISHES}, set())
        self.router.addExtension(late)
        source: Deferred[Any] = Deferred()
        self.publishes.later = source
        d = self.router.process(
            [{"channel": "/a/b", "clientId": clientId, "data": 1}], MessageContext("rest")
        )
        self.assertNoResult(d)
        self.assertEqual(self.calls, [("publishes", "in", "/a/b")])
        self.calls.append(("fire", "", None))
        source.callback(None)
        (reply,) = self.successResultOf(d)
        assert isinstance(reply, dict)
        self.assertTrue(reply["successful"])
        self.assertEqual(
            self.calls,
            [
                ("publishes", "in", "/a/b"),
                ("fire", "", None),
                ("late", "in", "/a/b"),
                ("replies", "out", "/a/b"),
            ],
        )

    def test_errorsOnlyHookSkipsSuccesses(self) -> None:
        """
        The last publish hooks, if they act on error replies only (``outgoingErrorsOn``,
        the error counter), see a publish's error replies, an error an earlier hook gave a
        reply included, and not its successful ones; followed by another hook, they see all.
        """
        errors = Scoped("errors", self.calls, set(), {PUBLISHES, "/meta/subscribe"})
        errors.outgoingErrorsOn = frozenset({PUBLISHES})  # type: ignore[attr-defined]
        self.router.addExtension(errors)
        clientId = self.client()
        self.process({"channel": "/a/b", "clientId": clientId, "data": 1})
        self.process({"channel": "/a/b", "clientId": clientId})  # no data: refused
        self.process({"channel": "/meta/subscribe", "clientId": clientId, "subscription": "/a/b"})
        self.assertEqual(
            [call for call in self.calls if call[1] == "out"],
            [
                ("replies", "out", "/a/b"),
                ("replies", "out", "/a/b"),
                ("errors", "out", "/a/b"),
                ("subscribes", "out", "/meta/subscribe"),
                ("replies", "out", "/meta/subscribe"),
                ("errors", "out", "/meta/subscribe"),
            ],
        )
        del self.calls[:]

        def failing(reply: dict[str, Any], context: MessageContext) -> dict[str, Any]:
            self.calls.append(("replies", "out", reply.get("channel")))
            return {**reply, "successful": False, "error": "403::refused"}

        self.replies.outgoing = failing  # type: ignore[method-assign]
        self.router.removeExtension(self.replies)
        self.router.removeExtension(errors)
        for extension in (self.replies, errors):
            self.router.addExtension(extension)
        (reply,) = self.process({"channel": "/a/b", "clientId": clientId, "data": 1})
        self.assertEqual(reply["error"], "403::refused")
        self.assertEqual(self.calls[-2:], [("replies", "out", "/a/b"), ("errors", "out", "/a/b")])
        after = Scoped("after", self.calls, set(), {PUBLISHES})
        self.router.addExtension(after)
        self.replies.outgoing = Recorder.outgoing.__get__(self.replies)  # type: ignore[method-assign]
        self.router.removeExtension(self.replies)
        self.router.addExtension(self.replies)
        del self.calls[:]
        self.process({"channel": "/a/b", "clientId": clientId, "data": 1})
        self.assertEqual(
            [call for call in self.calls if call[1] == "out"],
            [("errors", "out", "/a/b"), ("after", "out", "/a/b"), ("replies", "out", "/a/b")],
        )
