"""The IExtension contract, as tests every router extension must pass.

From the interface's docstring (``pandapush/interfaces.py``), ``MessageContext``'s and the
contract (``shared/spec/pandapush.md``; the README's tables for pandapush's own limits):

- an extension provides IExtension;
- a message it has no business with goes through ``incoming`` unchanged, and a reply it
  has no business with through ``outgoing``: the meta messages other than subscribe,
  whatever an implementation adds (``ignoredMessages``), and every message the server
  itself made (``context.trusted``);
- it refuses by setting the message's ``error`` (``<code>:<params>:<text>``, the text the
  contract gives: Faye clients show it) and returning the message, not by dropping it;
- a refusal made earlier in the chain is the one the client reads: it stays as it is;
- an extension that refuses nothing never sets ``error``.

A concrete test case mixes :class:`ExtensionTestsMixin` (first) into a ``TestCase`` and provides
``makeExtension`` and ``refusals``. Everything is answered synchronously here (fired
Deferreds are fine): implementations wire memory storage and the memory engine.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from zope.interface.verify import verifyObject

from pandapush.bayeux.context import MessageContext
from pandapush.interfaces import PUBLISHES, IExtension, IScopedExtension

if TYPE_CHECKING:
    from twisted.trial.unittest import TestCase

    _Base = TestCase
else:
    _Base = object

Message = dict[str, Any]

#: A Bayeux error: a three-digit code, the parameters, the text.
_ERROR = re.compile(r"^\d{3}:[^:]*:.+$")

#: Meta messages no extension has business with (subscribes are where they act).
META_MESSAGES: list[Message] = [
    {
        "channel": "/meta/handshake",
        "version": "1.0",
        "supportedConnectionTypes": ["websocket", "long-polling"],
        "ext": {"client": "conformance"},
        "id": "1",
    },
    {
        "channel": "/meta/connect",
        "clientId": "c1",
        "connectionType": "long-polling",
        "advice": {"timeout": 0},
        "id": "2",
    },
    {"channel": "/meta/unsubscribe", "clientId": "c1", "subscription": "/app/private/room", "id": "3"},
    {"channel": "/meta/disconnect", "clientId": "c1", "id": "4"},
]

#: Replies no extension has business with (subscribe replies are where they act).
REPLIES: list[Message] = [
    {
        "channel": "/meta/handshake",
        "version": "1.0",
        "supportedConnectionTypes": ["long-polling"],
        "clientId": "c1",
        "successful": True,
        "advice": {"reconnect": "retry", "interval": 0, "timeout": 30000},
    },
    {
        "channel": "/meta/connect",
        "clientId": "c1",
        "successful": True,
        "advice": {"reconnect": "retry", "interval": 0, "timeout": 30000},
    },
    {"channel": "/app/public/room", "id": "5", "successful": True},
    {"channel": "/app/public/room", "id": "6", "successful": False, "error": "405::Invalid channel name"},
    {
        "channel": "/meta/unsubscribe",
        "clientId": "c1",
        "subscription": "/app/private/room",
        "successful": True,
    },
    {"channel": "/meta/disconnect", "clientId": "c1", "successful": True},
]


#: What an IScopedExtension may name: the five meta channels and the publishes.
KINDS = frozenset(
    {
        "/meta/handshake",
        "/meta/connect",
        "/meta/subscribe",
        "/meta/unsubscribe",
        "/meta/disconnect",
        PUBLISHES,
    }
)


def kindOf(message: Message) -> str | None:
    """The kind a router chooses an IScopedExtension's hooks by (None: every hook)."""
    channel = message.get("channel")
    if channel in KINDS:
        return str(channel)
    if isinstance(channel, str) and not channel.startswith("/meta"):
        return PUBLISHES
    return None


def _busyContext(transport: str = "websocket") -> MessageContext:
    """A context with whatever extensions leave for each other, as after a granted token publish."""
    context = MessageContext(transport, {"origin": "https://evil.example"}, "127.0.0.1")
    context.attributes.update(
        {
            "keyId": "PSIDkey",
            "authenticated": {"app"},
            "presence": {"id": "m1"},
            "user": "u1",
            "tokenExpires": 2_000_000_000.0,
            "keyExpires": 2_000_000_000.0,
            "byToken": True,
            "clientEvent": ("/app/public/room", {"text": "hi"}),
        }
    )
    return context


class ExtensionTestsMixin(_Base):
    """What every IExtension does. ``self.extension`` is made in ``setUp`` (``makeExtension``)."""

    extension: Any

    #: The application whose channels the implementation's messages use.
    appId: str = "app"

    def makeExtension(self) -> Any:
        raise NotImplementedError

    def refusals(self) -> list[tuple[Message, MessageContext, str]]:
        """
        Messages the extension refuses, each with its context and the exact ``error`` the
        contract says (may prime ``self.extension`` first). Empty if it refuses nothing.
        """
        raise NotImplementedError

    def ignoredMessages(self) -> list[Message]:
        """Client messages this extension has no business with, besides :data:`META_MESSAGES`."""
        return []

    def clientMessages(self) -> list[Message]:
        """Subscribes and publishes on the application's channels, of the kinds a client sends."""
        app = self.appId
        return [
            {"channel": "/meta/subscribe", "clientId": "c1", "subscription": f"/{app}/public/room"},
            {
                "channel": "/meta/subscribe",
                "clientId": "c1",
                "subscription": [f"/{app}/private/a", f"/{app}/meta/b"],
            },
            {"channel": f"/{app}/public/room", "clientId": "c1", "data": {"text": "hi"}, "id": "7"},
        ]

    def setUp(self) -> Any:
        super().setUp()  # the test case's own wiring first
        self.extension = self.makeExtension()

    def answer(self, result: Any) -> Any:
        """What a hook answered, waiting for it if it answered with a Deferred (fired here)."""
        if isinstance(result, Deferred):
            return self.successResultOf(result)
        return result

    def incoming(self, message: Message, context: MessageContext | None = None) -> Any:
        return self.answer(self.extension.incoming(message, context or MessageContext("long-polling")))

    def outgoing(self, reply: Message, context: MessageContext | None = None) -> Any:
        return self.answer(self.extension.outgoing(reply, context or MessageContext("long-polling")))

    def test_providesIExtension(self) -> None:
        """The extension provides IExtension."""
        self.assertTrue(verifyObject(IExtension, self.extension))

    def test_scopeHonest(self) -> None:
        """
        An extension naming the messages its hooks act on (IScopedExtension) leaves every
        other message and reply as it is, whatever the context holds, and refuses only
        messages it names: the router does not call it for the others.
        """
        if not IScopedExtension.providedBy(self.extension):
            return
        self.assertTrue(verifyObject(IScopedExtension, self.extension))
        incomingOn, outgoingOn = self.extension.incomingOn, self.extension.outgoingOn
        self.assertLessEqual(incomingOn, KINDS)
        self.assertLessEqual(outgoingOn, KINDS)
        refusals = self.refusals()
        for message, _, _ in refusals:
            self.assertIn(kindOf(message), incomingOn)
        messages = META_MESSAGES + self.clientMessages() + [m for m, _, _ in refusals]
        contexts = [c for _, c, _ in refusals]
        for original in messages:
            if kindOf(original) in incomingOn:
                continue
            for context in [MessageContext("long-polling"), _busyContext(), *contexts]:
                self.assertEqual(self.incoming(copy.deepcopy(original), context), original)
        replies = REPLIES + [
            {**m, "successful": True} for m in self.clientMessages() + [m for m, _, _ in refusals]
        ]
        for original in replies:
            if kindOf(original) in outgoingOn:
                continue
            for context in [MessageContext("long-polling"), _busyContext(), *contexts]:
                self.assertEqual(self.outgoing(copy.deepcopy(original), context), original)

    def test_unrelatedMessagesUnchanged(self) -> None:
        """Messages the extension has no business with come out of ``incoming`` as they went in."""
        for original in META_MESSAGES + self.ignoredMessages():
            message = copy.deepcopy(original)
            self.assertEqual(self.incoming(message), original)

    def test_trustedMessagesUnchanged(self) -> None:
        """Messages the server itself made (``context.trusted``) go through every extension."""
        for original in self.clientMessages():
            message = copy.deepcopy(original)
            context = MessageContext("rest", trusted=True)
            self.assertEqual(self.incoming(message, context), original)

    def test_unrelatedRepliesUnchanged(self) -> None:
        """Replies the extension has no business with come out of ``outgoing`` as they went in."""
        for original in REPLIES:
            reply = copy.deepcopy(original)
            self.assertEqual(self.outgoing(reply), original)

    def test_refusalsUseContractTexts(self) -> None:
        """
        A refusal sets the message's ``error`` to the contract's text (a Bayeux error:
        code, parameters, text) and keeps the message, so the client gets a reply. An
        extension that refuses nothing leaves every client message without an error.
        """
        refusals = self.refusals()
        for message, context, expected in refusals:
            refused = self.incoming(message, context)
            self.assertIsNotNone(refused, f"{message!r} was dropped, not refused")
            self.assertEqual(refused.get("error"), expected)
            self.assertRegex(refused["error"], _ERROR)
        if not refusals:
            for message in self.clientMessages():
                self.assertNotIn("error", self.incoming(message))

    def test_earlierRefusalKept(self) -> None:
        """A message refused earlier in the chain keeps that refusal: the client reads the first."""
        earlier = "401::No auth supplied"
        cases: list[tuple[Message, MessageContext | None]] = [(m, c) for m, c, _ in self.refusals()]
        cases = cases or [(m, None) for m in self.clientMessages()]
        for message, context in cases:
            message["error"] = earlier
            refused = self.incoming(message, context)
            self.assertIsNotNone(refused)
            self.assertEqual(refused["error"], earlier)
