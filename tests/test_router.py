"""The Bayeux router, message by message, with the memory engine and a fake clock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.delivery import Delivery
from pandapush.bayeux.errors import BayeuxError
from pandapush.engines.history import HistorySettings
from pandapush.engines.memory import MemoryEngine
from pandapush.interfaces import EngineUnavailableError, IClientSocket, IExtension, IRouter
from pandapush.router import CONNECTION_TYPES, BayeuxRouter, Limits, publishing

HANDSHAKE = {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}


@implementer(IClientSocket)
class FakeSocket:
    persistent = True
    endsClientOnClose = True

    def __init__(self) -> None:
        self.clientId: str | None = None
        self.sent: list[list[Any]] = []
        self.closed: bool | None = None

    def deliver(self, deliveries: Sequence[Delivery]) -> None:
        self.sent.append(list(deliveries))

    def sendReplies(self, replies: Sequence[Any]) -> None:
        self.sent.append(list(replies))

    def close(self, afterReplies: bool) -> None:
        self.closed = afterReplies


class RouterTestCase(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        # History off: these tests pin delivered bytes; positions are tests/test_resume.py's.
        self.engine = MemoryEngine(self.clock, timeout=30, expiry=10, history=HistorySettings(0))
        self.router = BayeuxRouter(self.engine, self.clock, timeout=30)

    def process(self, messages: Any, socket: Any = None, context: MessageContext | None = None) -> list[Any]:
        return self.successResultOf(
            self.router.process(messages, context or MessageContext("long-polling"), socket)
        )

    def send(self, message: dict[str, Any]) -> dict[str, Any]:
        (reply,) = self.process([message])
        return reply  # type: ignore[no-any-return]

    def handshake(self) -> str:
        clientId = self.send(dict(HANDSHAKE))["clientId"]
        # The first connect is answered at once; later ones are held.
        self.send({"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"})
        return clientId  # type: ignore[no-any-return]

    def connect(self, clientId: str, **extra: Any) -> defer.Deferred[list[Any]]:
        message = {
            "channel": "/meta/connect",
            "clientId": clientId,
            "connectionType": "long-polling",
            **extra,
        }
        return self.router.process([message], MessageContext("long-polling"))


class InterfaceTests(RouterTestCase):
    def test_providesIRouter(self) -> None:
        """The router provides IRouter: what transports and extensions hold of it."""
        self.assertTrue(verifyObject(IRouter, self.router))


class HandshakeTests(RouterTestCase):
    def test_success(self) -> None:
        """A handshake gets version, the five connection types, a client id and retry advice."""
        reply = self.send({**HANDSHAKE, "id": "h1"})
        self.assertEqual(reply["id"], "h1")
        self.assertTrue(reply["successful"])
        self.assertEqual(reply["version"], "1.0")
        self.assertEqual(reply["supportedConnectionTypes"], CONNECTION_TYPES)
        self.assertEqual(reply["advice"], {"reconnect": "retry", "interval": 0, "timeout": 30000})
        self.assertTrue(self.engine.hasClient(reply["clientId"]))

    def test_missingVersion(self) -> None:
        """No version: 402 naming it, and handshake advice."""
        reply = self.send({"channel": "/meta/handshake", "supportedConnectionTypes": ["long-polling"]})
        self.assertEqual(reply["error"], "402:version:Missing required parameter")
        self.assertIs(reply["successful"], False)
        self.assertEqual(reply["advice"], {"reconnect": "handshake"})
        self.assertNotIn("clientId", reply)

    def test_missingTypes(self) -> None:
        reply = self.send({"channel": "/meta/handshake", "version": "1.0"})
        self.assertEqual(reply["error"], "402:supportedConnectionTypes:Missing required parameter")

    def test_noCommonType(self) -> None:
        """Only unsupported types: 301 listing what the client offered."""
        reply = self.send(
            {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["iframe", "flash"]}
        )
        self.assertEqual(reply["error"], "301:iframe,flash:Connection types not supported")

    def test_wrongTypeOfTypes(self) -> None:
        reply = self.send(
            {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": "websocket"}
        )
        self.assertEqual(reply["error"], "400:supportedConnectionTypes:Bad request")

    def test_idEchoedVerbatim(self) -> None:
        """ids are echoed whatever they are, including falsy 0 and "0"."""
        for value in [0, "0", "", None, 1.5, [1], {"a": 1}]:
            self.assertEqual(self.send({**HANDSHAKE, "id": value})["id"], value)


class ConnectTests(RouterTestCase):
    def test_firstConnectAnsweredAtOnce(self) -> None:
        """The first connect after a handshake is answered at once, whatever its advice."""
        clientId = self.send(dict(HANDSHAKE))["clientId"]
        (reply,) = self.successResultOf(self.connect(clientId, id=7))
        self.assertEqual(reply["id"], 7)
        self.assertTrue(reply["successful"])
        self.assertEqual(reply["clientId"], clientId)
        self.assertEqual(reply["advice"], {"reconnect": "retry", "interval": 0, "timeout": 30000})

    def test_handshakesNeverConnectedForgotten(self) -> None:
        """
        A client that handshook here and never connected here (with the Redis engine it may
        go on through another node, and be destroyed there) is not remembered for ever:
        after a minute its first connect here counts as any other and is held.
        """
        self.engine = MemoryEngine(self.clock, timeout=30, expiry=3600)
        self.router = BayeuxRouter(self.engine, self.clock, timeout=30)
        gone = [self.send(dict(HANDSHAKE))["clientId"] for _ in range(100)]
        self.clock.advance(61)
        self.send(dict(HANDSHAKE))
        self.assertEqual(len(self.router._fresh), 1)
        d = self.connect(gone[0])
        self.assertNoResult(d)
        self.clock.advance(30)
        self.successResultOf(d)

    def test_heldUntilTimeout(self) -> None:
        """Later connects are held for the server timeout when nothing arrives."""
        clientId = self.handshake()
        d = self.connect(clientId)
        self.clock.advance(29)
        self.assertNoResult(d)
        self.clock.advance(1)
        (reply,) = self.successResultOf(d)
        self.assertTrue(reply["successful"])

    def test_clientAdviceTimeout(self) -> None:
        """A client may ask for a shorter hold; 0 means answer now."""
        clientId = self.handshake()
        d = self.connect(clientId, advice={"timeout": 5000})
        self.clock.advance(5)
        self.successResultOf(d)
        self.successResultOf(self.connect(clientId, advice={"timeout": 0}))

    def test_answeredByMessage(self) -> None:
        """A held connect is answered on the next turn after a message is queued: reply first."""
        clientId = self.handshake()
        self.send({"channel": "/meta/subscribe", "clientId": clientId, "subscription": "/a"})
        d = self.connect(clientId)
        self.assertNoResult(d)
        self.send({"channel": "/a", "data": {"n": 1}, "clientId": clientId, "id": "m", "ext": {"x": 1}})
        self.assertNoResult(d)
        self.clock.advance(0)
        reply, delivery = self.successResultOf(d)
        self.assertEqual(reply["channel"], "/meta/connect")
        self.assertEqual(delivery.payload, b'{"channel":"/a","data":{"n":1},"id":"m","ext":{"x":1}}')

    def test_queuedMessagesAtConnect(self) -> None:
        """Messages queued between polls are answered at once by the next connect."""
        clientId = self.handshake()
        self.send({"channel": "/meta/subscribe", "clientId": clientId, "subscription": "/a"})
        self.send({"channel": "/a", "data": 1})
        self.send({"channel": "/a", "data": 2})
        replies = self.successResultOf(self.connect(clientId))
        self.assertEqual(
            [r.payload for r in replies[1:]], [b'{"channel":"/a","data":1}', b'{"channel":"/a","data":2}']
        )

    def test_secondConnectAnswersFirst(self) -> None:
        """A second connect while one is held answers the older at once (Faye orphans it)."""
        clientId = self.handshake()
        first = self.connect(clientId, id=1)
        second = self.connect(clientId, id=2)
        (reply,) = self.successResultOf(first)
        self.assertEqual(reply["id"], 1)
        self.assertNoResult(second)
        self.clock.advance(30)
        self.successResultOf(second)

    def test_unknownClient(self) -> None:
        """An unknown client gets 401 with its id, no clientId in the reply, handshake advice."""
        reply = self.send({"channel": "/meta/connect", "clientId": "nope", "connectionType": "long-polling"})
        self.assertEqual(reply["error"], "401:nope:Unknown client")
        self.assertNotIn("clientId", reply)
        self.assertEqual(reply["advice"], {"reconnect": "handshake"})

    def test_missingClientId(self) -> None:
        reply = self.send({"channel": "/meta/connect", "connectionType": "long-polling"})
        self.assertEqual(reply["error"], "402:clientId:Missing required parameter")

    def test_badConnectionType(self) -> None:
        clientId = self.handshake()
        reply = self.send({"channel": "/meta/connect", "clientId": clientId, "connectionType": "iframe"})
        self.assertEqual(reply["error"], "301:iframe:Connection types not supported")
        self.assertNotIn("clientId", reply)
        reply = self.send({"channel": "/meta/connect", "clientId": clientId})
        self.assertEqual(reply["error"], "402:connectionType:Missing required parameter")

    def test_hostileClientId(self) -> None:
        """A clientId that is not a string is an unknown client, not a crash."""
        for value in [{}, [], 5, True]:
            reply = self.send(
                {"channel": "/meta/connect", "clientId": value, "connectionType": "long-polling"}
            )
            self.assertTrue(reply["error"].startswith("401:"), reply)

    def test_eventsourceAdvice(self) -> None:
        """eventsource connects are answered at once with interval = the timeout and timeout 0."""
        clientId = self.handshake()
        d = self.router.process(
            [{"channel": "/meta/connect", "clientId": clientId, "connectionType": "eventsource"}],
            MessageContext("long-polling"),
        )
        replies: list[Any] = self.successResultOf(d)
        self.assertEqual(replies[0]["advice"], {"reconnect": "retry", "interval": 30000, "timeout": 0})

    def test_lostRequestLeavesMessagesQueued(self) -> None:
        """If the long-poll request goes away, the connect stops holding and messages wait."""
        clientId = self.handshake()
        self.send({"channel": "/meta/subscribe", "clientId": clientId, "subscription": "/a"})
        lost: defer.Deferred[None] = defer.Deferred()
        context = MessageContext("long-polling", lost=lost)
        d = self.router.process(
            [{"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"}], context
        )
        lost.callback(None)
        self.successResultOf(d)
        self.send({"channel": "/a", "data": 1})
        self.clock.advance(0)
        self.assertEqual(self.engine.queued(clientId), 1)

    def test_vanishedClientExpires(self) -> None:
        """A long-poll client that stops polling is destroyed after the expiry."""
        clientId = self.handshake()
        self.clock.pump([1] * 11)
        self.assertFalse(self.engine.hasClient(clientId))

    def test_heldClientDoesNotExpire(self) -> None:
        clientId = self.handshake()
        d = self.connect(clientId)
        self.clock.pump([1] * 25)
        self.assertTrue(self.engine.hasClient(clientId))
        self.clock.advance(5)
        self.successResultOf(d)


class SubscribeTests(RouterTestCase):
    def test_subscribeEchoes(self) -> None:
        """The reply echoes the subscription as sent and keeps clientId."""
        clientId = self.handshake()
        for subscription in ["/a", ["/a", "/b/*"]]:
            reply = self.send(
                {"channel": "/meta/subscribe", "clientId": clientId, "subscription": subscription}
            )
            self.assertEqual(reply["subscription"], subscription)
            self.assertEqual(reply["clientId"], clientId)
            self.assertTrue(reply["successful"])
        self.assertEqual(self.successResultOf(self.engine.subscriptions(clientId)), {"/a", "/b/*"})

    def test_errors(self) -> None:
        """Each refusal has Faye's error string; clientId stays in subscribe errors."""
        clientId = self.handshake()
        cases: list[tuple[dict[str, Any], str]] = [
            ({}, "402:subscription:Missing required parameter"),
            ({"subscription": 5}, "400:subscription:Bad request"),
            ({"subscription": [5]}, "400:subscription:Bad request"),
            ({"subscription": "/meta/foo"}, "403:/meta/foo:Forbidden channel"),
            ({"subscription": "/service/x"}, "403:/service/x:Forbidden channel"),
            ({"subscription": "/foo/*/bar"}, "405:/foo/*/bar:Invalid channel"),
        ]
        for extra, error in cases:
            reply = self.send({"channel": "/meta/subscribe", "clientId": clientId, **extra})
            self.assertEqual(reply["error"], error)
            self.assertEqual(reply["clientId"], clientId)
            self.assertIs(reply["successful"], False)
        reply = self.send({"channel": "/meta/subscribe", "clientId": "nope", "subscription": "/a"})
        self.assertEqual(reply["error"], "401:nope:Unknown client")

    def test_inOrder(self) -> None:
        """Channels are checked in order: the first bad one is named, and none is subscribed."""
        clientId = self.handshake()
        reply = self.send(
            {"channel": "/meta/subscribe", "clientId": clientId, "subscription": ["/a", "/meta/x", "/b"]}
        )
        self.assertEqual(reply["error"], "403:/meta/x:Forbidden channel")
        self.assertEqual(self.successResultOf(self.engine.subscriptions(clientId)), set())

    def test_unsubscribeNotSubscribed(self) -> None:
        """Unsubscribing from a channel not subscribed succeeds."""
        clientId = self.handshake()
        reply = self.send({"channel": "/meta/unsubscribe", "clientId": clientId, "subscription": "/never"})
        self.assertTrue(reply["successful"])


class PublishTests(RouterTestCase):
    def test_publishReply(self) -> None:
        reply = self.send({"channel": "/a", "data": None, "id": "p", "clientId": "whoever"})
        self.assertEqual(reply, {"id": "p", "clientId": "whoever", "channel": "/a", "successful": True})

    def test_errors(self) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"channel": "/a"}, "402:data:Missing required parameter"),
            ({"channel": "/a/*", "data": 1}, "405:/a/*:Invalid channel"),
            ({"channel": "/a b", "data": 1}, "405:/a b:Invalid channel"),
            ({"channel": "/meta/x", "data": 1}, "403:/meta/x:Forbidden channel"),
            ({"data": 1}, "402:channel:Missing required parameter"),
            ({"channel": {}, "data": 1}, "400:channel:Bad request"),
        ]
        for message, error in cases:
            self.assertEqual(self.send(message)["error"], error)

    def test_nonObjectInBatch(self) -> None:
        """A non-object in a batch gets an error reply of its own; the rest are handled."""
        replies = self.process([3, {"channel": "/a", "data": 1}])
        self.assertEqual(replies[0], {"error": "400::Bad request", "successful": False})
        self.assertTrue(replies[1]["successful"])

    def test_deliveredCopy(self) -> None:
        """The delivered copy carries channel, data, id and ext, never the publisher's clientId."""
        clientId = self.handshake()
        self.send({"channel": "/meta/subscribe", "clientId": clientId, "subscription": "/a"})
        d = self.connect(clientId)
        self.send({"channel": "/a", "data": 1, "clientId": clientId, "id": 9, "advice": {"x": 1}})
        self.clock.advance(0)
        _, delivery = self.successResultOf(d)
        self.assertEqual(delivery.payload, b'{"channel":"/a","data":1,"id":9}')

    def test_serverPublish(self) -> None:
        """The server's own publish reaches subscribers and reports how many."""
        clientId = self.handshake()
        self.send({"channel": "/meta/subscribe", "clientId": clientId, "subscription": "/a/**"})
        self.assertEqual(self.successResultOf(self.router.publish("/a/b", {"k": 1})), 1)
        self.failureResultOf(self.router.publish("/a/*", 1))
        self.failureResultOf(self.router.publish("/meta/x", 1))


class DisconnectTests(RouterTestCase):
    def test_disconnect(self) -> None:
        """Disconnect destroys the client and answers its held connect successfully."""
        clientId = self.handshake()
        held = self.connect(clientId)
        reply = self.send({"channel": "/meta/disconnect", "clientId": clientId})
        self.assertTrue(reply["successful"])
        self.assertTrue(self.successResultOf(held)[0]["successful"])
        self.assertFalse(self.engine.hasClient(clientId))

    def test_unknown(self) -> None:
        reply = self.send({"channel": "/meta/disconnect", "clientId": "nope"})
        self.assertEqual(reply["error"], "401:nope:Unknown client")
        self.assertNotIn("clientId", reply)

    def test_unknownMeta(self) -> None:
        reply = self.send({"channel": "/meta/foo", "clientId": "x"})
        self.assertEqual(reply["error"], "403:/meta/foo:Forbidden channel")


class SocketTests(RouterTestCase):
    def test_bindAndPush(self) -> None:
        """A socket binds at its first connect; deliveries are pushed to it, connects held."""
        socket = FakeSocket()
        clientId = self.send(dict(HANDSHAKE))["clientId"]
        message = {"channel": "/meta/connect", "clientId": clientId, "connectionType": "websocket"}
        self.assertEqual(self.process([message], socket), [])
        self.assertEqual(socket.clientId, clientId)
        self.assertEqual(socket.sent[0][0]["channel"], "/meta/connect")  # first connect: at once
        self.assertEqual(self.process([message], socket), [])
        self.process([{"channel": "/meta/subscribe", "clientId": clientId, "subscription": "/a"}], socket)
        self.send({"channel": "/a", "data": 1})
        self.clock.advance(0)
        self.assertEqual(socket.sent[-1][0].payload, b'{"channel":"/a","data":1}')
        self.clock.advance(30)
        self.assertEqual(socket.sent[-1][0]["channel"], "/meta/connect")

    def test_closedSocketEndsClient(self) -> None:
        """When a websocket closes, its client is destroyed at once."""
        socket = FakeSocket()
        clientId = self.send(dict(HANDSHAKE))["clientId"]
        self.process(
            [{"channel": "/meta/connect", "clientId": clientId, "connectionType": "websocket"}], socket
        )
        self.router.socketClosed(socket)
        self.assertFalse(self.engine.hasClient(clientId))

    def test_socketClosedDuringBatch(self) -> None:
        """
        A connect whose socket closed while its batch was being processed (waiting on an
        extension, a key lookup, a shared engine) does not bind the dead socket: the
        client is not left attached to it for good, and expires as usual (found by
        bench/fuzz.py on the Redis engine, where attached clients' leases are renewed).
        """
        socket = FakeSocket()
        clientId = self.send(dict(HANDSHAKE))["clientId"]
        gate: defer.Deferred[None] = defer.Deferred()

        @implementer(IExtension)
        class Slow:
            def incoming(self, message: dict[str, Any], context: MessageContext) -> Any:
                return (
                    gate.addCallback(lambda _: message) if message["channel"] == "/meta/connect" else message
                )

            def outgoing(self, reply: dict[str, Any], context: MessageContext) -> Any:
                return reply

        self.router.addExtension(Slow())
        d = self.router.process(
            [{"channel": "/meta/connect", "clientId": clientId, "connectionType": "websocket"}],
            MessageContext("websocket"),
            socket,
        )
        self.router.socketClosed(socket)
        gate.callback(None)
        self.successResultOf(d)
        self.assertIsNone(socket.clientId)
        self.assertEqual(self.router.openSockets(), 0)
        self.clock.advance(60)
        self.assertFalse(self.engine.hasClient(clientId))

    def test_disconnectClosesSocketAfterReply(self) -> None:
        socket = FakeSocket()
        clientId = self.send(dict(HANDSHAKE))["clientId"]
        self.process(
            [{"channel": "/meta/connect", "clientId": clientId, "connectionType": "websocket"}], socket
        )
        self.process([{"channel": "/meta/disconnect", "clientId": clientId}], socket)
        self.assertIs(socket.closed, True)


@implementer(IExtension)
class RecordingExtension:
    def __init__(self) -> None:
        self.incomingSeen: list[str] = []
        self.outgoingSeen: list[str] = []

    def incoming(self, message: dict[str, Any], context: MessageContext) -> Any:
        self.incomingSeen.append(message.get("channel", ""))
        if message.get("channel") == "/secret":
            message["error"] = "403::Nope"
        if message.get("channel") == "/drop":
            return None
        if message.get("channel") == "/later":
            return defer.succeed(message)
        context.attributes["seen"] = True
        return message

    def outgoing(self, reply: dict[str, Any], context: MessageContext) -> dict[str, Any]:
        self.outgoingSeen.append(reply.get("channel", ""))
        if context.attributes.get("seen"):
            reply.setdefault("ext", {})["seen"] = True
        return reply


class ExtensionTests(RouterTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.extension = RecordingExtension()
        self.router.addExtension(self.extension)

    def test_errorRefuses(self) -> None:
        """An incoming error refuses the publish: nothing is delivered."""
        clientId = self.handshake()
        self.send({"channel": "/meta/subscribe", "clientId": clientId, "subscription": "/secret"})
        self.assertEqual(self.send({"channel": "/secret", "data": 1})["error"], "403::Nope")
        self.clock.advance(0)
        self.assertEqual(self.engine.queued(clientId), 0)

    def test_dropAndAsync(self) -> None:
        self.assertEqual(self.process([{"channel": "/drop", "data": 1}]), [])
        self.assertTrue(self.send({"channel": "/later", "data": 1})["successful"])

    def test_outgoingSeesContext(self) -> None:
        """Outgoing hooks run on replies with the context incoming filled, never on deliveries."""
        reply = self.send({"channel": "/a", "data": 1})
        self.assertEqual(reply["ext"], {"seen": True})

    def test_extensionCrash(self) -> None:
        """An extension that raises yields a 500 reply, not a dead batch."""

        @implementer(IExtension)
        class Broken:
            def incoming(self, message: Any, context: Any) -> Any:
                raise RuntimeError("boom")

            def outgoing(self, reply: Any, context: Any) -> Any:
                return reply

        self.router.addExtension(Broken())
        reply = self.send({"channel": "/a", "data": 1, "id": 1})
        self.assertEqual(reply["error"], "500::Internal server error")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


@implementer(IExtension)
class SlowFirstExtension:
    """Answers the first publish late, as a key lookup on a cold cache would."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.outgoingCalls = 0

    def incoming(self, message: dict[str, Any], context: MessageContext) -> Any:
        if message.get("data") == "slow":
            return deferLater(self.clock, 1, lambda: message)
        return message

    def outgoing(self, reply: dict[str, Any], context: MessageContext) -> dict[str, Any]:
        if reply.get("channel") == "/meta/connect":
            self.outgoingCalls += 1
        return reply


class BatchTests(RouterTestCase):
    def test_orderKept(self) -> None:
        """A batch's publishes are delivered in order even if an extension delays the first."""
        extension = SlowFirstExtension(self.clock)
        self.router.addExtension(extension)
        clientId = self.handshake()
        self.send({"channel": "/meta/subscribe", "clientId": clientId, "subscription": "/a"})
        d = self.router.process(
            [{"channel": "/a", "data": "slow"}, {"channel": "/a", "data": "fast"}],
            MessageContext("long-polling"),
        )
        self.clock.advance(1)
        self.assertEqual(len(self.successResultOf(d)), 2)
        (_, *deliveries) = self.successResultOf(self.connect(clientId))
        self.assertEqual(
            [d.payload for d in deliveries],
            [b'{"channel":"/a","data":"slow"}', b'{"channel":"/a","data":"fast"}'],
        )

    def test_heldConnectDoesNotBlockBatch(self) -> None:
        """A held connect batched with a publish: the publish happens now, the reply waits."""
        watcher = self.handshake()
        self.send({"channel": "/meta/subscribe", "clientId": watcher, "subscription": "/a"})
        clientId = self.handshake()
        d = self.router.process(
            [
                {"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"},
                {"channel": "/a", "data": 1},
            ],
            MessageContext("long-polling"),
        )
        self.assertEqual(self.engine.queued(watcher), 1)
        self.assertNoResult(d)
        self.clock.advance(30)
        replies: list[Any] = self.successResultOf(d)
        self.assertEqual([r["channel"] for r in replies], ["/meta/connect", "/a"])

    def test_outgoingOncePerHeldReply(self) -> None:
        """Outgoing hooks see a held connect's reply once, when it is answered."""
        extension = SlowFirstExtension(self.clock)
        self.router.addExtension(extension)
        clientId = self.handshake()
        before = extension.outgoingCalls
        d = self.connect(clientId)
        self.clock.advance(30)
        self.successResultOf(d)
        self.assertEqual(extension.outgoingCalls - before, 1)


@implementer(IExtension)
class CountingExtension:
    """Counts its calls; answers ``waitFor`` messages (incoming) or replies (outgoing) late."""

    def __init__(self, clock: Clock, name: str, waitIncoming: bool = False, waitOutgoing: bool = False):
        self.clock = clock
        self.name = name
        self.waitIncoming = waitIncoming
        self.waitOutgoing = waitOutgoing
        self.incomingCalls: list[Any] = []
        self.outgoingCalls: list[Any] = []

    def incoming(self, message: dict[str, Any], context: MessageContext) -> Any:
        self.incomingCalls.append(message.get("data"))
        if self.waitIncoming and message.get("data") == "slow":
            return deferLater(self.clock, 1, lambda: message)
        return message

    def outgoing(self, reply: dict[str, Any], context: MessageContext) -> Any:
        self.outgoingCalls.append(reply.get("id"))
        reply.setdefault("ext", {}).setdefault("seen", []).append(self.name)
        if self.waitOutgoing and reply.get("id") == "slow":
            return deferLater(self.clock, 1, lambda: reply)
        return reply


class PublishPathTests(RouterTestCase):
    """
    Publishes are handled without a coroutine while every step answers at once; a step
    that answers late hands the rest over. Either way each hook runs once per message
    and a batch keeps its order.
    """

    def setUp(self) -> None:
        super().setUp()
        self.subscriber = self.handshake()
        self.send({"channel": "/meta/subscribe", "clientId": self.subscriber, "subscription": "/a"})

    def delivered(self) -> list[bytes]:
        (_, *deliveries) = self.successResultOf(self.connect(self.subscriber))
        return [d.payload for d in deliveries]

    def test_answeredAtOnce(self) -> None:
        """With synchronous hooks and engine, the replies are there when process returns."""
        first = CountingExtension(self.clock, "first")
        self.router.addExtension(first)
        d = self.router.process([{"channel": "/a", "data": 1, "id": "x"}], MessageContext("websocket"))
        [reply] = self.successResultOf(d)
        self.assertEqual(reply, {"id": "x", "channel": "/a", "successful": True, "ext": {"seen": ["first"]}})

    def test_lateIncomingHookRunsEachHookOnce(self) -> None:
        """A second extension answering late: the first is not run again, the third runs after it."""
        first = CountingExtension(self.clock, "first")
        slow = CountingExtension(self.clock, "slow", waitIncoming=True)
        third = CountingExtension(self.clock, "third")
        for extension in (first, slow, third):
            self.router.addExtension(extension)
        d = self.router.process(
            [{"channel": "/a", "data": "slow", "id": 1}, {"channel": "/a", "data": "fast", "id": 2}],
            MessageContext("websocket"),
        )
        self.assertNoResult(d)
        self.assertEqual(third.incomingCalls, [])
        self.clock.advance(1)
        replies: list[Any] = self.successResultOf(d)
        self.assertEqual([r["id"] for r in replies], [1, 2])
        self.assertEqual([r["ext"]["seen"] for r in replies], [["first", "slow", "third"]] * 2)
        for extension in (first, slow, third):
            self.assertEqual(extension.incomingCalls, ["slow", "fast"], extension.name)
            self.assertEqual(extension.outgoingCalls, [1, 2], extension.name)
        self.assertEqual(
            self.delivered(),
            [b'{"channel":"/a","data":"slow","id":1}', b'{"channel":"/a","data":"fast","id":2}'],
        )

    def test_lateOutgoingHook(self) -> None:
        """An outgoing hook answering late: the reply waits for it, later hooks run once after it."""
        slow = CountingExtension(self.clock, "slow", waitOutgoing=True)
        last = CountingExtension(self.clock, "last")
        self.router.addExtension(slow)
        self.router.addExtension(last)
        d = self.router.process(
            [{"channel": "/a", "data": 1, "id": "slow"}, {"channel": "/a", "data": 2, "id": "next"}],
            MessageContext("websocket"),
        )
        self.assertNoResult(d)
        self.clock.advance(1)
        replies: list[Any] = self.successResultOf(d)
        self.assertEqual([r["id"] for r in replies], ["slow", "next"])
        self.assertEqual([r["ext"]["seen"] for r in replies], [["slow", "last"]] * 2)
        self.assertEqual((slow.outgoingCalls, last.outgoingCalls), (["slow", "next"], ["slow", "next"]))

    def test_lateEngine(self) -> None:
        """An engine that publishes later (Redis): the reply waits for it, the next publish after it."""
        publish = self.engine.publish
        pending: list[defer.Deferred[None]] = []

        def slowPublish(delivery: Delivery) -> defer.Deferred[int]:
            d: defer.Deferred[None] = defer.Deferred()
            pending.append(d)
            return d.addCallback(lambda _: publish(delivery))

        self.engine.publish = slowPublish  # type: ignore[method-assign]
        self.engine.publishNow = None  # type: ignore[assignment, method-assign]
        d = self.router.process(
            [{"channel": "/a", "data": 1}, {"channel": "/a", "data": 2}], MessageContext("websocket")
        )
        self.assertNoResult(d)
        self.assertEqual(len(pending), 1)
        pending[0].callback(None)
        self.assertEqual(len(pending), 2)
        pending[1].callback(None)
        replies: list[Any] = self.successResultOf(d)
        self.assertEqual([r["successful"] for r in replies], [True, True])
        self.assertEqual(self.delivered(), [b'{"channel":"/a","data":1}', b'{"channel":"/a","data":2}'])

    def test_engineFailure(self) -> None:
        """An engine that fails a publish: an error reply for it, the batch goes on."""
        self.engine.publish = lambda delivery: defer.fail(RuntimeError("down"))  # type: ignore[method-assign]
        self.engine.publishNow = None  # type: ignore[assignment, method-assign]
        replies = self.process([{"channel": "/a", "data": 1}, {"channel": "/b", "data": 2}])
        self.assertEqual([r["successful"] for r in replies], [False, False])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_engineFailureNow(self) -> None:
        """An engine answering at once (publishNow) that fails a publish: the same error reply."""

        def down(delivery: Delivery) -> int:
            raise RuntimeError("down")

        self.engine.publishNow = down  # type: ignore[method-assign]
        replies = self.process([{"channel": "/a", "data": 1}, {"channel": "/b", "data": 2}])
        self.assertEqual([r["successful"] for r in replies], [False, False])
        self.assertEqual(replies[0]["error"], str(BayeuxError.publishFailed("/a")))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_serverPublishNow(self) -> None:
        """
        The server's own publish (REST, presence, meta events) on both ways of answering:
        the same count, each observer told once, and an observer's failure or the
        engine's a failed Deferred either way (the engine's error kept: a 503 for REST).
        """
        seen: list[tuple[str, int]] = []
        self.router.addPublishObserver(lambda channel, recipients: seen.append((channel, recipients)))
        now = self.successResultOf(self.router.publish("/a", 1))
        publishNow = self.engine.publishNow
        self.engine.publishNow = None  # type: ignore[assignment, method-assign]
        later = self.successResultOf(self.router.publish("/a", 2))
        self.assertEqual(now, later)
        self.assertEqual(seen, [("/a", now), ("/a", later)])

        def failing(channel: str, recipients: int) -> None:
            raise RuntimeError("observer")

        self.router.addPublishObserver(failing)
        self.failureResultOf(self.router.publish("/a", 3), RuntimeError)
        self.engine.publishNow = publishNow  # type: ignore[method-assign]
        self.failureResultOf(self.router.publish("/a", 4), RuntimeError)

        def down(delivery: Delivery) -> int:
            raise EngineUnavailableError("Redis")

        self.engine.publishNow = down  # type: ignore[method-assign]
        self.failureResultOf(self.router.publish("/a", 5), EngineUnavailableError)

    def answers(self, now: bool, publishNow: Any = None) -> list[Any]:
        """The replies to two publishes, the engine answering at once (``now``) or not."""
        if not now:
            self.engine.publishNow = None  # type: ignore[assignment, method-assign]
        elif publishNow is not None:
            self.engine.publishNow = publishNow  # type: ignore[method-assign]
        return self.process([{"channel": "/a", "data": 1, "id": "1"}, {"channel": "/b", "data": 2}])

    def test_observerFailureNow(self) -> None:
        """
        A publish observer that fails: the same error reply whether the engine answered at
        once (the observers run inline) or through a Deferred; each failure logged.
        """

        def failing(channel: str, recipients: int) -> None:
            raise RuntimeError("observer")

        self.router.addPublishObserver(failing)
        later = self.answers(now=False)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        now = self.answers(now=True)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertEqual(now, later)
        self.assertEqual(now[0]["error"], str(BayeuxError.publishFailed("/a")))

    def test_observersCountNow(self) -> None:
        """Observers see each publish once, with its recipients, on both ways of answering."""
        seen: list[tuple[str, int]] = []
        self.router.addPublishObserver(lambda channel, recipients: seen.append((channel, recipients)))
        self.assertEqual(self.answers(now=True), self.answers(now=False))
        self.assertEqual([channel for channel, _ in seen], ["/a", "/b"] * 2)
        self.assertEqual(seen[:2], seen[2:])

    def test_engineUnavailableNow(self) -> None:
        """An engine answering at once that is unavailable: a 503 reply, nothing logged."""

        def down(delivery: Delivery) -> int:
            raise EngineUnavailableError("Redis")

        replies = self.answers(now=True, publishNow=down)
        self.assertEqual([r["successful"] for r in replies], [False, False])
        self.assertEqual(
            replies[0]["error"], str(BayeuxError(503, ["/a"], "Redis unavailable; try again later"))
        )
        self.assertEqual(self.flushLoggedErrors(), [])


class TerminateTests(RouterTestCase):
    def test_terminate(self) -> None:
        """
        A terminated client's held connect (long-poll or over its socket) is answered with
        advice not to reconnect, and so is every connect of it for a minute, even once the
        engine has forgotten it; other clients carry on.
        """
        clientId = self.handshake()
        held = self.connect(clientId)
        socket = FakeSocket()
        wsClient = self.send(dict(HANDSHAKE))["clientId"]
        self.process(
            [{"channel": "/meta/connect", "clientId": wsClient, "connectionType": "websocket"}], socket
        )
        self.process(
            [{"channel": "/meta/connect", "clientId": wsClient, "connectionType": "websocket"}], socket
        )
        other = self.handshake()
        otherHeld = self.connect(other)
        for terminated in (clientId, wsClient):
            self.router.terminate(terminated)
            self.engine.destroyClient(terminated, "terminated")
        (reply,) = self.successResultOf(held)
        self.assertEqual(reply["advice"], {"reconnect": "none"})
        self.assertEqual(socket.sent[-1][0]["advice"], {"reconnect": "none"})
        self.assertNoResult(otherHeld)
        self.clock.advance(59)
        (reply,) = self.successResultOf(self.connect(clientId))
        self.assertEqual(
            (reply["successful"], reply["error"], reply["advice"]),
            (False, f"401:{clientId}:Connection terminated by the server", {"reconnect": "none"}),
        )
        self.clock.advance(2)
        (reply,) = self.successResultOf(self.connect(clientId))
        self.assertEqual(reply["advice"], {"reconnect": "handshake"})


class DrainTests(RouterTestCase):
    def test_drain(self) -> None:
        """Draining answers held connects with reconnect advice, closes sockets, answers new connects."""
        clientId = self.handshake()
        held = self.connect(clientId)
        socket = FakeSocket()
        wsClient = self.send(dict(HANDSHAKE))["clientId"]
        self.process(
            [{"channel": "/meta/connect", "clientId": wsClient, "connectionType": "websocket"}], socket
        )
        self.router.drain("retry")
        (reply,) = self.successResultOf(held)
        self.assertEqual(reply["advice"], {"reconnect": "retry", "interval": 0})
        self.assertIs(socket.closed, False)
        (reply,) = self.successResultOf(self.connect(clientId))
        self.assertEqual(reply["advice"], {"reconnect": "retry", "interval": 0})
        self.router.socketClosed(socket)
        # The socket closed because the node is going away: its client is kept for another node.
        self.assertTrue(self.engine.hasClient(wsClient))

    def test_drainDetachesSockets(self) -> None:
        """
        A socket a drain closes gets no more deliveries (it could not send them): what is
        published until its close handshake ends stays queued for the client's next sink.
        """
        socket = FakeSocket()
        wsClient = self.send(dict(HANDSHAKE))["clientId"]
        self.process(
            [
                {"channel": "/meta/connect", "clientId": wsClient, "connectionType": "websocket"},
                {"channel": "/meta/subscribe", "clientId": wsClient, "subscription": "/a"},
            ],
            socket,
        )
        self.router.drain("retry")
        self.assertTrue(self.send({"channel": "/a", "data": 1})["successful"])
        self.clock.advance(0)
        self.assertEqual([batch for batch in socket.sent if isinstance(batch[0], Delivery)], [])
        nextSink = FakeSocket()
        self.engine.attach(wsClient, nextSink)
        self.clock.advance(0)
        payloads = [d.payload for batch in nextSink.sent for d in batch]
        self.assertEqual(payloads, [b'{"channel":"/a","data":1}'])


class LimitTests(RouterTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.router.limits = Limits(maxMessageSize=100, maxChannelLength=20, maxSubscriptions=2)
        self.refused: list[str] = []
        self.router.addLimitObserver(self.refused.append)

    def test_messageSize(self) -> None:
        """A message over the size limit is refused with 413 naming the limit, and not delivered."""
        reply = self.send({"channel": "/a", "data": "x" * 200})
        self.assertEqual(reply["error"], "413:/a:Message larger than 100 bytes")
        self.assertTrue(self.send({"channel": "/a", "data": "x" * 10})["successful"])
        self.assertEqual(self.refused, ["message_size"])

    def test_channelLength(self) -> None:
        long = "/" + "a" * 30
        self.assertEqual(
            self.send({"channel": long, "data": 1})["error"],
            f"405:{long[:20]}...:Channel name longer than 20 characters",
        )
        clientId = self.handshake()
        reply = self.send({"channel": "/meta/subscribe", "clientId": clientId, "subscription": long})
        self.assertTrue(reply["error"].endswith("Channel name longer than 20 characters"))
        self.assertEqual(self.refused, ["channel_length", "channel_length"])

    def test_channelDepth(self) -> None:
        """
        A channel of more than 32 segments, however short, is refused on publish and
        subscribe: every engine looks a message up under one key per segment.
        """
        self.router.limits = Limits(maxChannelLength=200)
        deep = "/" + "/".join(["a"] * 33)
        self.assertEqual(
            self.send({"channel": deep, "data": 1})["error"],
            f"405:{deep}:Channel name deeper than 32 segments",
        )
        clientId = self.handshake()
        reply = self.send({"channel": "/meta/subscribe", "clientId": clientId, "subscription": deep + "/**"})
        self.assertTrue(reply["error"].endswith("Channel name deeper than 32 segments"))
        self.assertTrue(self.send({"channel": deep[2:], "data": 1})["successful"])
        self.assertEqual(self.refused, ["channel_depth", "channel_depth"])

    def test_rememberedChannelLimits(self) -> None:
        """
        A channel published to is remembered as passing the channel checks only under
        the length limit it was checked with: a lower limit (a new Limits, or the same
        one changed in place) refuses it again, a higher one lets it through.
        """
        channel = "/abc/" + "d" * 14  # 19 characters
        self.assertTrue(self.send({"channel": channel, "data": 1})["successful"])
        self.assertTrue(self.send({"channel": channel, "data": 2})["successful"])
        self.router.limits = Limits(maxChannelLength=10)
        self.assertEqual(
            self.send({"channel": channel, "data": 3})["error"],
            "405:/abc/ddddd...:Channel name longer than 10 characters",
        )
        self.router.limits.maxChannelLength = 40
        self.assertTrue(self.send({"channel": channel, "data": 4})["successful"])
        self.router.limits.maxChannelLength = 12
        self.assertTrue(self.send({"channel": channel, "data": 5})["error"].startswith("405:"))
        self.assertEqual(self.refused, ["channel_length", "channel_length"])
        # Checked again, a channel keeps its answers: an invalid name is never remembered.
        self.router.limits.maxChannelLength = 200
        for _ in range(2):
            self.assertEqual(self.send({"channel": "/a/*", "data": 1})["error"], "405:/a/*:Invalid channel")
            self.assertEqual(self.send({"channel": channel})["error"], "402:data:Missing required parameter")

    def test_rememberedChannelsBounded(self) -> None:
        """The remembered channels start again past their bound, and keep answering the same."""
        publisher = self.router._publisher
        self.patch(publishing, "MAX_REMEMBERED", 3)
        for i in range(7):
            self.assertTrue(self.send({"channel": f"/c{i}", "data": i})["successful"])
            self.assertLessEqual(len(publisher._publishable), 3)
        self.assertTrue(self.send({"channel": "/c0", "data": 0})["successful"])

    def test_serverPublishChannelLimits(self) -> None:
        """
        The server's own publish (REST, the server API) has the same channel limits as a
        client's: refused before the engine expands anything, and counted.
        """
        for channel, text in [
            ("/" + "a/" * 7000 + "b", "Channel name longer than 20 characters"),
            ("/" + "/".join(["a"] * 40), "Channel name longer than 20 characters"),
        ]:
            failure = self.failureResultOf(self.router.publish(channel, {"x": 1}), BayeuxError)
            self.assertEqual((failure.value.code, failure.value.message), (405, text))
        self.router.limits = Limits(maxChannelLength=200)
        failure = self.failureResultOf(self.router.publish("/" + "/".join(["a"] * 40), 1), BayeuxError)
        self.assertEqual(failure.value.message, "Channel name deeper than 32 segments")
        self.assertEqual(self.successResultOf(self.router.publish("/a/b", 1)), 0)
        self.assertEqual(self.refused, ["channel_length", "channel_length", "channel_depth"])

    def test_serverPublishRemembered(self) -> None:
        """
        The server's publish remembers the channels that passed its checks as a client's
        publish does, under the length limit they passed: a lower one refuses them
        again; meta channels and invalid names are refused every time; a service
        channel still keeps no history. ``publishNow`` answers the count itself.
        """
        channel = "/abc/" + "d" * 14  # 19 characters
        self.assertEqual(self.router.publishNow(channel, 1), 0)
        self.assertIn(channel, self.router._publisher._publishable)
        self.assertEqual(self.router.publishNow(channel, 2), 0)
        self.router.limits.maxChannelLength = 12
        failure = self.failureResultOf(self.router.publishNow(channel, 3), BayeuxError)  # type: ignore[arg-type]
        self.assertEqual(failure.value.message, "Channel name longer than 12 characters")
        self.router.limits.maxChannelLength = 40
        for invalid in ["/meta/connect", "/meta", "/a/*"]:
            for _ in range(2):
                failure = self.failureResultOf(self.router.publishNow(invalid, 1), BayeuxError)  # type: ignore[arg-type]
                self.assertEqual(failure.value.message, "Invalid channel")
            self.assertNotIn(invalid, self.router._publisher._publishable)
        for _ in range(2):
            self.assertEqual(self.successResultOf(self.router.publish("/service/x", 1)), 0)
        self.assertIs(self.router._publisher._publishable["/service/x"], False)
        self.assertEqual(self.refused, ["channel_length"])

    def test_subscriptions(self) -> None:
        """A client may hold so many subscriptions; resubscribing to one it has is free."""
        clientId = self.handshake()
        reply = self.send(
            {"channel": "/meta/subscribe", "clientId": clientId, "subscription": ["/a", "/b", "/a"]}
        )
        self.assertTrue(reply["successful"])
        reply = self.send({"channel": "/meta/subscribe", "clientId": clientId, "subscription": "/c"})
        self.assertEqual(reply["error"], "403:/c:Too many subscriptions (limit 2 per client)")
        self.send({"channel": "/meta/unsubscribe", "clientId": clientId, "subscription": "/a"})
        self.assertTrue(
            self.send({"channel": "/meta/subscribe", "clientId": clientId, "subscription": "/c"})[
                "successful"
            ]
        )

    def test_subscribeAllOrNothing(self) -> None:
        """
        A subscribe to several channels is all or nothing: refused (over the limit, or one
        channel invalid), none of its channels is subscribed, and the error names the
        first channel that could not be.
        """
        clientId = self.handshake()
        self.assertTrue(
            self.send({"channel": "/meta/subscribe", "clientId": clientId, "subscription": "/a"})[
                "successful"
            ]
        )
        for subscription, error in [
            (["/a", "/b", "/c", "/d"], "403:/c:Too many subscriptions (limit 2 per client)"),
            (["/b", "/bad channel"], "405:/bad channel:Invalid channel"),
            (["/b", "/meta/x"], "403:/meta/x:Forbidden channel"),
        ]:
            reply = self.send(
                {"channel": "/meta/subscribe", "clientId": clientId, "subscription": subscription}
            )
            self.assertEqual(reply["error"], error)
            self.assertEqual(self.successResultOf(self.engine.subscriptions(clientId)), {"/a"})
        reply = self.send(
            {"channel": "/meta/subscribe", "clientId": clientId, "subscription": ["/a", "/b", "/b"]}
        )
        self.assertTrue(reply["successful"])
        self.assertEqual(self.successResultOf(self.engine.subscriptions(clientId)), {"/a", "/b"})

    def test_subscribeUndoneWhenTheEngineFails(self) -> None:
        """An engine failing half-way through a subscribe leaves none of its new channels subscribed."""
        clientId = self.handshake()
        subscribe = self.engine.subscribe
        calls: list[str] = []

        def failing(client: str, channel: str) -> defer.Deferred[bool]:
            calls.append(channel)
            if channel == "/c":
                return defer.fail(RuntimeError("engine down"))
            return subscribe(client, channel)

        self.engine.subscribe = failing  # type: ignore[method-assign, assignment]
        reply = self.send({"channel": "/meta/subscribe", "clientId": clientId, "subscription": ["/a", "/c"]})
        self.assertEqual(reply["error"], "500::Internal server error")
        self.assertEqual(calls, ["/a", "/c"])
        self.assertEqual(self.successResultOf(self.engine.subscriptions(clientId)), set())
        self.flushLoggedErrors(RuntimeError)

    def test_noHandshakeWhileDraining(self) -> None:
        """A node that is going away sends new clients elsewhere instead of starting sessions."""
        self.router.drain("handshake")
        reply = self.send(dict(HANDSHAKE))
        self.assertEqual(reply["error"], "500::Server shutting down")
        self.assertEqual(reply["advice"], {"reconnect": "handshake", "interval": 1000})
        self.assertEqual(self.engine.clientCount(), 0)
