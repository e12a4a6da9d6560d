"""Resuming subscriptions over Bayeux, through the router on the memory engine (a fake clock).

The same over real sockets with Faye's Node client, on the Redis engine and across two
nodes, is tests/test_resume_e2e.py's.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock

from pandapush.engines.memory import MemoryEngine
from pandapush.router import BayeuxRouter
from pandapush.router.resume import ResumeRequest, resumeRequest
from tests.test_router import RouterTestCase

CHANNEL = "/app/public/room"


class ResumeTestCase(RouterTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.engine = MemoryEngine(self.clock, timeout=30, expiry=10)
        self.router = BayeuxRouter(self.engine, self.clock, timeout=30)

    def subscribe(self, clientId: str, subscription: Any, **ext: Any) -> dict[str, Any]:
        message: dict[str, Any] = {
            "channel": "/meta/subscribe",
            "clientId": clientId,
            "subscription": subscription,
        }
        if ext:
            message["ext"] = ext
        return self.send(message)

    def publish(self, channel: str, data: Any) -> None:
        self.successResultOf(self.router.publish(channel, data))

    def received(self, clientId: str) -> list[dict[str, Any]]:
        """The messages the client's next connect brings (after the clock moved a turn)."""
        d = self.connect(clientId)
        self.clock.advance(0)
        if not d.called:
            # Held: nothing waited; let its timeout end it.
            self.clock.advance(31)
        replies = self.successResultOf(d)
        return [json.loads(d.payload) for d in replies[1:]]


class PositionTests(ResumeTestCase):
    def test_replyReportsPosition(self) -> None:
        """A subscribe to a concrete channel is told the channel's position, even before any message."""
        clientId = self.handshake()
        reply = self.subscribe(clientId, CHANNEL)
        self.assertTrue(reply["successful"], reply)
        position = reply["ext"]["positions"][CHANNEL]
        self.assertEqual(position["offset"], 0)
        self.publish(CHANNEL, "a")
        (message,) = self.received(clientId)
        self.assertEqual(message["ext"]["position"], {"offset": 1, "epoch": position["epoch"]})
        self.assertNotIn("recovered", reply["ext"])

    def test_wildcardGetsNoPositions(self) -> None:
        """A wildcard subscription has no single position: the reply has none."""
        clientId = self.handshake()
        reply = self.subscribe(clientId, "/app/public/*")
        self.assertTrue(reply["successful"], reply)
        self.assertNotIn("ext", reply)

    def test_askingNothing(self) -> None:
        """
        A subscribe whose ``ext`` asks nothing of history (none, not an object, other keys,
        ``resume``/``latest`` null) wants every concrete channel's position, resumes
        nothing, and is the same request whichever way it got there (the shortcut).
        """
        requested = ["/a/b", "/a/*", "/a/c", "/a/**", "/a/x*"]
        expected = ResumeRequest({"/a/b": None, "/a/c": None, "/a/x*": None}, [], False)
        exts: list[Any] = [[], None, "e", 5, {}, {"auth": "k"}, {"resume": None}, {"latest": None}]
        for ext in exts:
            message: dict[str, Any] = {"channel": "/meta/subscribe", "subscription": requested}
            if ext != []:
                message["ext"] = ext
            self.assertEqual(resumeRequest(message, requested, 128), expected, ext)
        asked = resumeRequest({"ext": {"latest": True}}, requested, 128)
        self.assertEqual(asked, ResumeRequest(expected.wanted, ["/a/b", "/a/c", "/a/x*"], True))


class ResumeTests(ResumeTestCase):
    def _missed(self) -> tuple[str, dict[str, Any]]:
        """A client saw messages 1-2 of CHANNEL and left; 3-5 were published meanwhile."""
        first = self.handshake()
        self.subscribe(first, CHANNEL)
        self.publish(CHANNEL, 1)
        self.publish(CHANNEL, 2)
        seen = self.received(first)
        self.send({"channel": "/meta/disconnect", "clientId": first})
        for n in (3, 4, 5):
            self.publish(CHANNEL, n)
        return self.handshake(), seen[-1]["ext"]["position"]

    def test_resumeConcrete(self) -> None:
        """The shorthand position: messages 3-5 in order, then live ones; recovered."""
        clientId, last = self._missed()
        reply = self.subscribe(clientId, CHANNEL, resume=last)
        self.assertTrue(reply["successful"], reply)
        self.assertIs(reply["ext"]["recovered"], True)
        self.assertEqual(reply["ext"]["positions"][CHANNEL]["offset"], 5)
        self.publish(CHANNEL, 6)
        got = self.received(clientId)
        self.assertEqual([m["data"] for m in got], [3, 4, 5, 6])
        self.assertEqual([m["ext"]["position"]["offset"] for m in got], [3, 4, 5, 6])

    def test_resumeWildcard(self) -> None:
        """A wildcard subscription resumes each concrete channel it names; the others are live only."""
        clientId, last = self._missed()
        self.publish("/app/public/other", "o")
        reply = self.subscribe(clientId, "/app/public/*", resume={CHANNEL: last})
        self.assertIs(reply["ext"]["recovered"], True)
        self.assertEqual(reply["ext"]["positions"][CHANNEL]["offset"], 5)
        self.publish("/app/public/other", "live")
        got = self.received(clientId)
        self.assertEqual([m["data"] for m in got], [3, 4, 5, "live"])

    def test_epochChanged(self) -> None:
        """A position of another epoch: not recovered, said so, nothing old sent."""
        clientId, last = self._missed()
        reply = self.subscribe(clientId, CHANNEL, resume={"offset": last["offset"], "epoch": "gone1234"})
        self.assertTrue(reply["successful"])
        self.assertIs(reply["ext"]["recovered"], False)
        self.assertEqual(reply["ext"]["unrecovered"], {CHANNEL: "epoch changed"})
        self.assertEqual(self.received(clientId), [])

    def test_positionTooOld(self) -> None:
        """Older than the history: not recovered, said so; what is kept is sent."""
        self.engine.historySettings.setApp("app", 2, None)
        clientId, last = self._missed()
        reply = self.subscribe(clientId, CHANNEL, resume=last)
        self.assertEqual(reply["ext"]["unrecovered"], {CHANNEL: "position too old"})
        self.assertEqual([m["data"] for m in self.received(clientId)], [4, 5])

    def test_noHistory(self) -> None:
        """An application without history: resuming is answered 'no history'."""
        self.engine.historySettings.setApp("app", 0, None)
        clientId = self.handshake()
        reply = self.subscribe(clientId, CHANNEL, resume={"offset": 1, "epoch": "abcdefgh"})
        self.assertEqual(reply["ext"]["unrecovered"], {CHANNEL: "no history"})

    def test_tooManyMissed(self) -> None:
        """
        A subscribe recovers at most MAX_RECOVERED messages over its channels (each at least
        100): a wildcard resuming 101 channels that each missed 101 gets the oldest 100 of each
        and is told, per channel, that it missed too many.
        """
        self.engine.historySettings.setApp("app", 1000, None)
        clientId = self.handshake()
        channels = [f"/app/public/c{i}" for i in range(101)]
        reply = self.subscribe(clientId, channels)
        positions = reply["ext"]["positions"]
        self.send({"channel": "/meta/unsubscribe", "clientId": clientId, "subscription": channels})
        for name in channels:
            for n in range(101):
                self.publish(name, n)
        reply = self.subscribe(clientId, "/app/public/*", resume=positions)
        self.assertIs(reply["ext"]["recovered"], False)
        self.assertEqual(set(reply["ext"]["unrecovered"].values()), {"too many missed"})
        self.assertEqual(len(reply["ext"]["unrecovered"]), 101)
        got = self.received(clientId)
        self.assertEqual(len(got), 101 * 100)
        self.assertEqual([m["data"] for m in got if m["channel"] == channels[0]], list(range(100)))

    def test_latest(self) -> None:
        """``ext.latest``: the channel's latest message at once (a cache channel)."""
        self.publish(CHANNEL, "old")
        self.publish(CHANNEL, "newest")
        clientId = self.handshake()
        reply = self.subscribe(clientId, CHANNEL, latest=True)
        self.assertIs(reply["ext"]["recovered"], True)
        self.assertEqual([m["data"] for m in self.received(clientId)], ["newest"])

    def test_presenceNoticesUnpositioned(self) -> None:
        """The server's own publishes without history (presence notices) carry no position."""
        clientId = self.handshake()
        self.subscribe(clientId, "/app/presence/room")
        self.successResultOf(self.router.publish("/app/presence/room", {"subscribe": {}}, history=False))
        (message,) = self.received(clientId)
        self.assertNotIn("ext", message)


class BadResumeTests(ResumeTestCase):
    def assertRefused(self, reply: dict[str, Any], error: str) -> None:
        self.assertIs(reply["successful"], False, reply)
        self.assertEqual(reply["error"], error)

    def test_wrongTypes(self) -> None:
        """Positions of the wrong type: 400 naming the channel; nothing subscribed."""
        clientId = self.handshake()
        cases = [
            ({"offset": "1", "epoch": "e"}, "offset must be an integer >= 0"),
            ({"offset": -1, "epoch": "e"}, "offset must be an integer >= 0"),
            ({"offset": True, "epoch": "e"}, "offset must be an integer >= 0"),
            ({"offset": 1.5, "epoch": "e"}, "offset must be an integer >= 0"),
            ({"offset": 1, "epoch": 7}, "epoch must be a short string"),
            ({"offset": 1, "epoch": "x" * 65}, "epoch must be a short string"),
        ]
        for position, reason in cases:
            reply = self.subscribe(clientId, CHANNEL, resume=position)
            self.assertRefused(reply, f"400:{CHANNEL}:Invalid position: {reason}")
        for resume in ([1, 2], "17", 5):
            reply = self.subscribe(clientId, CHANNEL, resume=resume)
            self.assertRefused(reply, f"400:{CHANNEL}:Invalid resume: an object of positions")
        reply = self.subscribe(clientId, CHANNEL, resume={CHANNEL: 3})
        self.assertRefused(reply, f"400:{CHANNEL}:Invalid position: an object with offset and epoch")
        reply = self.subscribe(clientId, CHANNEL, latest="yes")
        self.assertRefused(reply, f"400:{CHANNEL}:Invalid latest: true or false")
        self.assertEqual(self.successResultOf(self.engine.subscriptions(clientId)), set())

    def test_otherChannel(self) -> None:
        """A position for a channel the subscription does not cover: 400 naming that channel."""
        clientId = self.handshake()
        reply = self.subscribe(
            clientId, "/app/public/*", resume={"/app/private/x": {"offset": 1, "epoch": "e"}}
        )
        self.assertRefused(reply, "400:/app/private/x:Invalid resume: channel not in this subscription")
        reply = self.subscribe(clientId, "/app/public/*", resume={"offset": 1, "epoch": "e"})
        self.assertRefused(reply, "400:/app/public/*:Invalid resume: name the channel of each position")

    def test_future(self) -> None:
        """An offset the channel has not reached (same epoch): 400, and the subscription undone."""
        self.publish(CHANNEL, 1)
        clientId = self.handshake()
        epoch = self.subscribe(clientId, CHANNEL)["ext"]["positions"][CHANNEL]["epoch"]
        self.send({"channel": "/meta/unsubscribe", "clientId": clientId, "subscription": CHANNEL})
        reply = self.subscribe(clientId, CHANNEL, resume={"offset": 99, "epoch": epoch})
        self.assertRefused(reply, f"400:{CHANNEL}:Invalid position: beyond the channel's last message")
        self.assertEqual(self.successResultOf(self.engine.subscriptions(clientId)), set())

    def test_tooManyChannels(self) -> None:
        """A resume map larger than the subscriptions a client may hold is refused."""
        clientId = self.handshake()
        resume = {f"/app/public/c{i}": {"offset": 0, "epoch": "e"} for i in range(200)}
        reply = self.subscribe(clientId, "/app/public/*", resume=resume)
        self.assertRefused(reply, "400:/app/public/*:Invalid resume: more than 128 channels")


class IdempotentPublishTests(ResumeTestCase):
    def publishWith(self, clientId: str, data: Any, key: Any, channel: str = CHANNEL) -> dict[str, Any]:
        return self.send(
            {
                "channel": channel,
                "clientId": clientId,
                "data": data,
                "ext": {"idempotencyKey": key, "mine": 1},
            }
        )

    def test_secondPublishNotDelivered(self) -> None:
        """The same ``ext.idempotencyKey`` twice: both acknowledged, delivered once, the key not delivered."""
        subscriber = self.handshake()
        self.subscribe(subscriber, "/app/public/*")
        publisher = self.handshake()
        self.assertTrue(self.publishWith(publisher, "first", "k-1")["successful"])
        self.assertTrue(self.publishWith(publisher, "retry", "k-1")["successful"])
        self.assertTrue(self.publishWith(publisher, "other", "k-2")["successful"])
        # Another channel of the same application: the same key is the same publish.
        self.assertTrue(self.publishWith(publisher, "elsewhere", "k-1", "/app/public/b")["successful"])
        got = self.received(subscriber)
        self.assertEqual([m["data"] for m in got], ["first", "other"])
        self.assertEqual(got[0]["ext"]["mine"], 1)
        self.assertNotIn("idempotencyKey", got[0]["ext"])

    def test_otherApplication(self) -> None:
        """Keys are per application: another application's identical key publishes."""
        subscriber = self.handshake()
        self.subscribe(subscriber, ["/app/public/room", "/app2/public/room"])
        publisher = self.handshake()
        self.publishWith(publisher, 1, "same")
        self.publishWith(publisher, 2, "same", "/app2/public/room")
        self.assertEqual([m["data"] for m in self.received(subscriber)], [1, 2])

    def test_forgottenAfterFiveMinutes(self) -> None:
        """After five minutes the key is forgotten: the same key publishes again."""
        subscriber = self.handshake()
        self.subscribe(subscriber, CHANNEL)
        publisher = self.handshake()
        self.publishWith(publisher, 1, "k")
        self.clock.advance(301)
        subscriber = self.handshake()
        self.subscribe(subscriber, CHANNEL)
        publisher = self.handshake()
        self.publishWith(publisher, 2, "k")
        self.assertEqual([m["data"] for m in self.received(subscriber)], [2])

    def test_badKeys(self) -> None:
        """A key over 200 characters, empty or not a string: 400 naming the channel; nothing published."""
        subscriber = self.handshake()
        self.subscribe(subscriber, CHANNEL)
        publisher = self.handshake()
        reply = self.publishWith(publisher, 1, "k" * 201)
        self.assertEqual(reply["error"], f"400:{CHANNEL}:Idempotency key too long (at most 200 characters)")
        for key in ("", 5, None, ["k"]):
            reply = self.publishWith(publisher, 1, key)
            self.assertEqual(reply["error"], f"400:{CHANNEL}:Invalid idempotency key: a non-empty string")
        self.assertTrue(self.publishWith(publisher, 2, "k" * 200)["successful"])
        self.assertEqual([m["data"] for m in self.received(subscriber)], [2])
