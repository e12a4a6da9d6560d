"""CometD's acknowledgement extension on the real router and memory engine, with a fake clock.

The CometD client itself, over real sockets with a reply lost on the way, is
``tests/test_e2e_cometd.py``; here each rule of the protocol, one message at a time.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.delivery import Delivery
from pandapush.engines.memory import MemoryEngine
from pandapush.extensions.acknowledge import MAX_BATCH, Acknowledgements
from pandapush.interfaces import IConnectBatches, IExtension
from pandapush.router import BayeuxRouter
from tests.test_router import FakeSocket

HANDSHAKE = {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}
CHANNEL = "/room"


def data(replies: list[Any]) -> list[Any]:
    """The data of the deliveries among ``replies``, in order."""
    return [json.loads(r.payload)["data"] for r in replies if isinstance(r, Delivery)]


class AcknowledgementTestCase(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.engine = MemoryEngine(self.clock, timeout=30, expiry=10)
        self.router = BayeuxRouter(self.engine, self.clock, timeout=30)
        self.acks = Acknowledgements(self.router, self.clock, idle=80, maxUnacknowledged=5)
        self.router.addExtension(self.acks)

    def process(self, messages: Any, socket: Any = None, transport: str = "long-polling") -> list[Any]:
        return self.successResultOf(self.router.process(messages, MessageContext(transport), socket))

    def send(self, message: dict[str, Any]) -> dict[str, Any]:
        (reply,) = self.process([message])
        return reply  # type: ignore[no-any-return]

    def handshake(self, ack: Any = True) -> str:
        reply = self.send({**HANDSHAKE, "ext": {"ack": ack}})
        self.send({"channel": "/meta/subscribe", "clientId": reply["clientId"], "subscription": CHANNEL})
        return reply["clientId"]  # type: ignore[no-any-return]

    def connect(self, clientId: str, ack: Any, **extra: Any) -> defer.Deferred[list[Any]]:
        message = {
            "channel": "/meta/connect",
            "clientId": clientId,
            "connectionType": "long-polling",
            "ext": {"ack": ack},
            **extra,
        }
        return self.router.process([message], MessageContext("long-polling"))

    def connectNow(self, clientId: str, ack: Any) -> list[Any]:
        """A connect that must be answered at once."""
        return self.successResultOf(self.connect(clientId, ack))

    def publish(self, *values: Any) -> None:
        for value in values:
            self.router.publish(CHANNEL, value)
        self.clock.advance(0)


class NegotiationTests(AcknowledgementTestCase):
    def test_interfaces(self) -> None:
        """The extension provides IExtension and IConnectBatches."""
        self.assertTrue(verifyObject(IExtension, self.acks))
        self.assertTrue(verifyObject(IConnectBatches, self.acks))

    def test_handshakeAnswered(self) -> None:
        """A handshake with ``ext.ack: true`` is answered with ``ext.ack: true``; others are not."""
        self.assertEqual(self.send({**HANDSHAKE, "ext": {"ack": True}})["ext"], {"ack": True})
        for ext in ({"ack": False}, {"ack": "true"}, {"ack": 1}, {}, None, "ack"):
            reply = self.send({**HANDSHAKE, "ext": ext})
            self.assertTrue(reply["successful"])
            self.assertNotIn("ext", reply)
        self.assertEqual(len(self.acks), 1)

    def test_refusedHandshakeRemembersNothing(self) -> None:
        """An unsuccessful handshake keeps nothing, and says nothing of acknowledgements."""
        reply = self.send({"channel": "/meta/handshake", "ext": {"ack": True}})
        self.assertFalse(reply["successful"])
        self.assertNotIn("ext", reply)
        self.assertEqual(len(self.acks), 0)

    def test_plainClientUnchanged(self) -> None:
        """A client that did not ask gets no batch numbers and its messages as before."""
        clientId = self.handshake(ack=False)
        (reply,) = self.successResultOf(
            self.router.process(
                [{"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"}],
                MessageContext("long-polling"),
            )
        )
        self.assertNotIn("ext", reply)


class BatchTests(AcknowledgementTestCase):
    def test_repliesNumbered(self) -> None:
        """Each connect reply carries the next batch number and the messages of its batch."""
        clientId = self.handshake()
        first = self.connectNow(clientId, 0)
        self.assertEqual(first[0]["ext"], {"ack": 1})
        held = self.connect(clientId, 1)
        self.assertNoResult(held)
        self.publish("m1")
        replies = self.successResultOf(held)
        self.assertEqual(replies[0]["ext"], {"ack": 2})
        self.assertEqual(data(replies), ["m1"])
        self.assertEqual(self.acks.batchesOf(clientId).unacknowledged, 1)  # type: ignore[union-attr]
        held = self.connect(clientId, 2)
        self.assertNoResult(held)  # nothing left unacknowledged: held as usual
        self.assertEqual(self.acks.batchesOf(clientId).unacknowledged, 0)  # type: ignore[union-attr]
        self.clock.advance(30)
        self.assertEqual(self.successResultOf(held)[0]["ext"], {"ack": 3})

    def test_lostReplySentAgainAtOnce(self) -> None:
        """
        A reply the client never read (it acknowledges the batch before) is sent again
        with the next connect, answered at once, before newer messages and in order.
        """
        clientId = self.handshake()
        self.connectNow(clientId, 0)
        held = self.connect(clientId, 1)
        self.publish("m1", "m2")
        lost = self.successResultOf(held)
        self.assertEqual((lost[0]["ext"]["ack"], data(lost)), (2, ["m1", "m2"]))
        self.publish("m3")  # queued in the engine meanwhile
        again = self.connectNow(clientId, 1)
        self.assertEqual(again[0]["ext"], {"ack": 3})
        self.assertEqual(data(again), ["m1", "m2", "m3"])
        # Lost once more: still there, still first.
        self.publish("m4")
        third = self.connectNow(clientId, 1)
        self.assertEqual((third[0]["ext"]["ack"], data(third)), (4, ["m1", "m2", "m3", "m4"]))
        held = self.connect(clientId, 4)
        self.assertNoResult(held)

    def test_partialAcknowledgement(self) -> None:
        """Acknowledging an older batch keeps only the batches after it."""
        clientId = self.handshake()
        self.connectNow(clientId, 0)
        held = self.connect(clientId, 1)
        self.publish("m1")
        self.successResultOf(held)  # batch 2: m1, read
        held = self.connect(clientId, 2)
        self.publish("m2")
        self.successResultOf(held)  # batch 3: m2, lost
        held = self.connect(clientId, 2)
        self.assertEqual(data(self.successResultOf(held)), ["m2"])

    def test_acknowledgedNumberAdopted(self) -> None:
        """
        A known client acknowledging a number this node never sent (it came from another
        node) is adopted: its batches go on from that number.
        """
        clientId = self.send(dict(HANDSHAKE))["clientId"]  # no ack asked here
        self.send({"channel": "/meta/subscribe", "clientId": clientId, "subscription": CHANNEL})
        first = self.connectNow(clientId, 41)
        self.assertEqual(first[0]["ext"], {"ack": 42})
        held = self.connect(clientId, 42)
        self.publish("m1")
        self.assertEqual(self.successResultOf(held)[0]["ext"], {"ack": 43})

    def test_unknownClientRemembersNothing(self) -> None:
        """A connect naming an unknown client, with a batch number, is refused and kept nowhere."""
        (reply,) = self.connectNow("nobody", 3)
        self.assertFalse(reply["successful"])
        self.assertEqual(len(self.acks), 0)

    def test_badBatchNumbers(self) -> None:
        """
        A batch number that is not a non-negative integer a JavaScript number holds
        exactly refuses the connect with a 400 (no traceback); the client carries on
        with a good one.
        """
        clientId = self.handshake()
        for bad in ("1", -1, True, 1.5, None, [1], {"n": 1}, MAX_BATCH + 1, 10**100):
            (reply,) = self.connectNow(clientId, bad)
            self.assertFalse(reply["successful"], bad)
            self.assertEqual(reply["error"], "400::ext.ack must be the number of a batch received")
        (reply,) = self.connectNow(clientId, 0)
        self.assertTrue(reply["successful"])

    def test_tooManyUnacknowledgedEndsClient(self) -> None:
        """A client that leaves more messages unacknowledged than allowed is ended."""
        clientId = self.handshake()
        self.connectNow(clientId, 0)
        for n in range(4):
            held = self.connect(clientId, 1)  # never acknowledges what it gets
            self.publish(f"a{n}", f"b{n}")
            self.successResultOf(held)
        self.assertFalse(self.engine.hasClient(clientId))
        self.assertIsNone(self.acks.batchesOf(clientId))

    def test_forgotten(self) -> None:
        """
        A client's batches are forgotten when it is destroyed here, or once it has not
        connected here for ``idle`` seconds (it moved to another node, which destroyed it).
        """
        gone = self.handshake()
        self.send({"channel": "/meta/disconnect", "clientId": gone})
        self.assertIsNone(self.acks.batchesOf(gone))
        # One that connected here once and went on elsewhere (the engine has it no more).
        context = MessageContext("long-polling")
        moved = {"channel": "/meta/connect", "clientId": "moved", "ext": {"ack": 5}}
        self.acks.incoming(moved, context)
        self.assertTrue(self.acks.connecting("moved", context))
        active = self.handshake()
        ack = self.connectNow(active, 0)[0]["ext"]["ack"]
        for _ in range(3):
            held = self.connect(active, ack)
            self.clock.advance(30)
            ack = self.successResultOf(held)[0]["ext"]["ack"]
            self.acks.forgetIdle()
        self.assertIsNone(self.acks.batchesOf("moved"))
        self.assertIsNotNone(self.acks.batchesOf(active))


class SocketTests(AcknowledgementTestCase):
    def wsConnect(self, socket: FakeSocket, clientId: str, ack: int) -> None:
        message = {
            "channel": "/meta/connect",
            "clientId": clientId,
            "connectionType": "websocket",
            "ext": {"ack": ack},
        }
        self.assertEqual(self.process([message], socket, "websocket"), [])

    def test_messagesOnlyWithConnectReplies(self) -> None:
        """Over a websocket, an acknowledging client's messages travel with its connect replies."""
        socket = FakeSocket()
        clientId = self.handshake()
        self.wsConnect(socket, clientId, 0)
        self.assertEqual(socket.sent[-1][0]["ext"], {"ack": 1})
        self.publish("m1")  # no connect held: waits
        self.assertEqual(len(socket.sent), 1)
        self.wsConnect(socket, clientId, 1)
        (sent,) = socket.sent[1:]
        self.assertEqual((sent[0]["channel"], sent[0]["ext"]), ("/meta/connect", {"ack": 2}))
        self.assertEqual(data(sent), ["m1"])
        self.wsConnect(socket, clientId, 2)
        self.publish("m2")
        self.assertEqual((socket.sent[-1][0]["ext"], data(socket.sent[-1])), ({"ack": 3}, ["m2"]))

    def test_newSocketGetsLostBatch(self) -> None:
        """
        The socket closing does not end the client: over a new socket, its connect
        acknowledging the batch before the lost one gets that batch again at once.
        """
        socket = FakeSocket()
        clientId = self.handshake()
        self.wsConnect(socket, clientId, 0)
        self.wsConnect(socket, clientId, 1)
        self.publish("m1")
        self.router.socketClosed(socket)  # with batch 2 unread
        self.assertTrue(self.engine.hasClient(clientId))
        self.publish("m2")
        second = FakeSocket()
        self.wsConnect(second, clientId, 1)
        self.assertEqual((second.sent[0][0]["ext"], data(second.sent[0])), ({"ack": 3}, ["m1", "m2"]))

    def test_closedSocketClientExpires(self) -> None:
        """A client whose socket closed and that never comes back expires as usual."""
        socket = FakeSocket()
        clientId = self.handshake()
        self.wsConnect(socket, clientId, 0)
        self.wsConnect(socket, clientId, 1)
        self.router.socketClosed(socket)
        self.clock.advance(11)
        self.assertFalse(self.engine.hasClient(clientId))
        self.assertIsNone(self.acks.batchesOf(clientId))

    def test_noticeInBatch(self) -> None:
        """A message from the server to the client alone travels in a batch too."""
        socket = FakeSocket()
        clientId = self.handshake()
        self.wsConnect(socket, clientId, 0)
        self.router.notify(clientId, {"channel": "/meta/unsubscribe", "subscription": CHANNEL, "data": "n"})
        self.assertEqual(len(socket.sent), 1)
        self.wsConnect(socket, clientId, 1)
        self.assertEqual((socket.sent[-1][0]["ext"], data(socket.sent[-1])), ({"ack": 2}, ["n"]))
