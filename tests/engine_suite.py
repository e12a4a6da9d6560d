"""The IEngine contract, as tests every engine must pass (``memory``, ``redis``, any plugin).

A concrete test case mixes ``EngineTestsMixin`` into a ``TestCase`` and provides
``makeEngine`` plus two ways of letting time pass: ``turn`` (let one reactor
turn's deliveries flush) and ``wait`` (let seconds pass).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from zope.interface import implementer
from zope.interface.verify import verifyClass, verifyObject

from pandapush.bayeux.delivery import Delivery
from pandapush.engines import EngineConfig, findEngineFactory
from pandapush.interfaces import IDeliverySink, IEngine, IEngineFactory
from pandapush.listeners import EngineListener
from tests.history_suite import HistoryTestsMixin

if TYPE_CHECKING:
    from twisted.trial.unittest import TestCase

    _Base = TestCase
else:
    _Base = object


@implementer(IDeliverySink)
class RecordingSink:
    def __init__(self, persistent: bool = True) -> None:
        self.persistent = persistent
        self.batches: list[list[bytes]] = []

    def deliver(self, deliveries: Sequence[Delivery]) -> None:
        self.batches.append([d.payload for d in deliveries])

    @property
    def payloads(self) -> list[bytes]:
        return [p for batch in self.batches for p in batch]


class RecordingListener(EngineListener):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def clientCreated(self, clientId: str) -> None:
        self.events.append(("created", clientId))

    def clientDestroyed(self, clientId: str, reason: str) -> None:
        self.events.append(("destroyed", clientId, reason))

    def subscribed(self, clientId: str, channel: str) -> None:
        self.events.append(("subscribed", clientId, channel))

    def unsubscribed(self, clientId: str, channel: str) -> None:
        self.events.append(("unsubscribed", clientId, channel))

    def channelOccupied(self, channel: str) -> None:
        self.events.append(("occupied", channel))

    def channelVacated(self, channel: str) -> None:
        self.events.append(("vacated", channel))

    def memberJoined(self, channel: str, memberId: str, data: Any, clientId: str) -> None:
        self.events.append(("joined", channel, memberId, data, clientId))

    def memberLeft(self, channel: str, memberId: str) -> None:
        self.events.append(("left", channel, memberId))

    def only(self, *kinds: str) -> list[tuple[Any, ...]]:
        return [e for e in self.events if e[0] in kinds]


def message(channel: str, data: Any = "x") -> Delivery:
    return Delivery.fromMessage({"channel": channel, "data": data})


class EngineTestsMixin(HistoryTestsMixin, _Base):
    """Behaviour every IEngine must have. ``self.engine`` is made in ``setUp``."""

    engine: Any
    expiry: float = 10.0
    #: The registered name (``pandapush.engines``) of the engine under test.
    engineName: str = ""

    def makeEngine(self) -> Any:
        raise NotImplementedError

    def turn(self) -> Deferred[None]:
        raise NotImplementedError

    def wait(self, seconds: float) -> Deferred[None]:
        raise NotImplementedError

    def setUp(self) -> Any:
        self.engine = self.makeEngine()
        self.listener = RecordingListener()
        self.engine.addListener(self.listener)
        self.addCleanup(self.engine.close)

    def test_verifyObject(self) -> None:
        """The engine provides IEngine."""
        self.assertTrue(verifyObject(IEngine, self.engine))

    def test_healthOk(self) -> None:
        """A working engine says so in ``health()``, cheaply and JSON-able (health checks call it)."""
        health = self.engine.health()
        self.assertEqual(health["status"], "ok", health)
        self.assertEqual(json.loads(json.dumps(health)), health)

    def test_namedEngine(self) -> None:
        """The factory registered as ``engineName`` makes engines of this class, which provides IEngine."""
        self.assertTrue(verifyClass(IEngine, type(self.engine)))
        factory = findEngineFactory(self.engineName)
        self.assertTrue(verifyObject(IEngineFactory, factory))
        made = factory.makeEngine(
            self.engine._reactor, EngineConfig(redisNamespace=f"pandapush-test-{uuid.uuid4().hex}")
        )
        self.addCleanup(made.close)
        self.assertIs(type(made), type(self.engine))

    async def test_clientIds(self) -> None:
        """Client ids are distinct, long and known to the engine until destroyed."""
        first = await self.engine.createClient()
        second = await self.engine.createClient()
        self.assertNotEqual(first, second)
        self.assertGreaterEqual(len(first), 22)
        self.assertTrue(await self.engine.clientExists(first))
        await self.engine.destroyClient(first, "disconnect")
        self.assertFalse(await self.engine.clientExists(first))
        self.assertFalse(await self.engine.clientExists("never-was"))
        # An engine that answers at once may say so (clientExistsNow): the same answers.
        existsNow = getattr(self.engine, "clientExistsNow", None)
        if existsNow is not None:
            self.assertEqual(
                [existsNow(first), existsNow(second), existsNow("never-was")],
                [
                    await self.engine.clientExists(first),
                    await self.engine.clientExists(second),
                    await self.engine.clientExists("never-was"),
                ],
            )
            self.assertTrue(existsNow(second))

    async def test_deliverToAttachedSink(self) -> None:
        """A message published to a subscribed channel reaches the client's sink."""
        clientId = await self.engine.createClient()
        sink = RecordingSink()
        self.engine.attach(clientId, sink)
        await self.engine.subscribe(clientId, "/a/b")
        count = await self.engine.publish(message("/a/b", 1))
        await self.turn()
        self.assertEqual(count, 1)
        self.assertEqual(sink.payloads, [b'{"channel":"/a/b","data":1}'])

    async def test_flushObserversSeeEachMessageOnce(self) -> None:
        """
        After a turn's flush, flush observers (metrics' delivery latency) are given each
        message it wrote once, however many recipients and subscription keys it had, with
        the time its publish was accepted (carried through Redis, not the copy's arrival).
        """
        seen: list[Delivery] = []
        self.engine.addFlushObserver(seen.extend)
        sinks = []
        for _ in range(3):
            clientId = await self.engine.createClient()
            sink = RecordingSink()
            self.engine.attach(clientId, sink)
            await self.engine.subscribe(clientId, "/a/b")
            sinks.append(sink)
        # One more through a wildcard: on Redis, a second copy of the message (for /a/*).
        clientId = await self.engine.createClient()
        sinks.append(RecordingSink())
        self.engine.attach(clientId, sinks[-1])
        await self.engine.subscribe(clientId, "/a/*")
        published = message("/a/b", 1)
        published.accepted -= 100  # a publish accepted long ago, whatever the engine
        self.assertEqual(await self.engine.publish(published), 4)
        await self.turn()
        self.assertEqual([len(sink.payloads) for sink in sinks], [1, 1, 1, 1])
        self.assertEqual([d.payload for d in seen], [published.payload])
        self.assertAlmostEqual(seen[0].accepted, published.accepted, places=5)

    async def test_oncePerClient(self) -> None:
        """A client whose several subscriptions match receives the message once."""
        clientId = await self.engine.createClient()
        sink = RecordingSink()
        self.engine.attach(clientId, sink)
        for channel in ["/a/b/c", "/a/b/*", "/a/**", "/**"]:
            await self.engine.subscribe(clientId, channel)
        self.assertEqual(await self.engine.publish(message("/a/b/c")), 1)
        await self.turn()
        self.assertEqual(len(sink.payloads), 1)

    async def test_wildcards(self) -> None:
        """* matches one more segment, ** any number; matching is by segment."""
        one, many = await self.engine.createClient(), await self.engine.createClient()
        oneSink, manySink = RecordingSink(), RecordingSink()
        self.engine.attach(one, oneSink)
        self.engine.attach(many, manySink)
        await self.engine.subscribe(one, "/users/1/*")
        await self.engine.subscribe(many, "/users/1/**")
        for channel in ["/users/1", "/users/1/foo", "/users/1/foo/bar", "/users/10/foo"]:
            await self.engine.publish(message(channel, channel))
        await self.turn()
        self.assertEqual(oneSink.payloads, [b'{"channel":"/users/1/foo","data":"/users/1/foo"}'])
        self.assertEqual(len(manySink.payloads), 2)

    async def test_batchedPerTurn(self) -> None:
        """Messages published in one turn reach a client in one batch, in order."""
        clientId = await self.engine.createClient()
        sink = RecordingSink()
        self.engine.attach(clientId, sink)
        await self.engine.subscribe(clientId, "/a")
        for i in range(3):
            await self.engine.publish(message("/a", i))
        await self.turn()
        self.assertEqual(len(sink.batches), 1)
        self.assertEqual(
            sink.payloads,
            [b'{"channel":"/a","data":0}', b'{"channel":"/a","data":1}', b'{"channel":"/a","data":2}'],
        )

    async def test_queuedUntilAttached(self) -> None:
        """Without a sink messages queue, and a sink attached later gets them all."""
        clientId = await self.engine.createClient()
        await self.engine.subscribe(clientId, "/a")
        await self.engine.publish(message("/a", 1))
        await self.engine.publish(message("/a", 2))
        await self.turn()
        sink = RecordingSink()
        self.engine.attach(clientId, sink)
        await self.turn()
        self.assertEqual(len(sink.payloads), 2)

    async def test_slowConsumerDropped(self) -> None:
        """
        A client without a sink that lets more than ``maxQueue`` messages pile up is
        destroyed ("slow consumer") rather than kept growing; one at the cap is kept,
        and an attached client gets every message.
        """
        self.engine.maxQueue = 5
        slow, fine = await self.engine.createClient(), await self.engine.createClient()
        sink = RecordingSink()
        self.engine.attach(fine, sink)
        for clientId in (slow, fine):
            await self.engine.subscribe(clientId, "/a")
        for i in range(5):
            await self.engine.publish(message("/a", i))
            await self.turn()
        self.assertTrue(await self.engine.clientExists(slow))
        self.assertEqual(self.engine.statistics()["queued_messages"], 5)
        await self.engine.publish(message("/a", 5))
        await self.turn()
        self.assertFalse(await self.engine.clientExists(slow))
        self.assertIn(("destroyed", slow, "slow consumer"), self.listener.events)
        self.assertEqual(self.engine.statistics()["queued_messages"], 0)
        self.assertEqual(len(sink.payloads), 6)

    async def test_oneShotSink(self) -> None:
        """A non-persistent sink gets one batch; later messages queue for the next sink."""
        clientId = await self.engine.createClient()
        await self.engine.subscribe(clientId, "/a")
        first = RecordingSink(persistent=False)
        self.engine.attach(clientId, first)
        await self.engine.publish(message("/a", 1))
        await self.turn()
        await self.engine.publish(message("/a", 2))
        await self.turn()
        self.assertEqual(first.payloads, [b'{"channel":"/a","data":1}'])
        second = RecordingSink(persistent=False)
        self.engine.attach(clientId, second)
        await self.turn()
        self.assertEqual(second.payloads, [b'{"channel":"/a","data":2}'])

    async def test_detachKeepsMessages(self) -> None:
        """Messages published after a sink detaches wait for the next one."""
        clientId = await self.engine.createClient()
        await self.engine.subscribe(clientId, "/a")
        sink = RecordingSink()
        self.engine.attach(clientId, sink)
        self.engine.detach(clientId, sink)
        await self.engine.publish(message("/a", 1))
        await self.turn()
        self.assertEqual(sink.payloads, [])
        later = RecordingSink()
        self.engine.attach(clientId, later)
        await self.turn()
        self.assertEqual(len(later.payloads), 1)

    async def test_detachOtherSinkIgnored(self) -> None:
        """Detaching a sink that was already replaced leaves the new one attached."""
        clientId = await self.engine.createClient()
        await self.engine.subscribe(clientId, "/a")
        old, new = RecordingSink(), RecordingSink()
        self.engine.attach(clientId, old)
        self.engine.attach(clientId, new)
        self.engine.detach(clientId, old)
        await self.engine.publish(message("/a"))
        await self.turn()
        self.assertEqual((len(old.payloads), len(new.payloads)), (0, 1))

    async def test_unsubscribe(self) -> None:
        """After unsubscribing, nothing more arrives; unknown unsubscriptions are harmless."""
        clientId = await self.engine.createClient()
        sink = RecordingSink()
        self.engine.attach(clientId, sink)
        self.assertTrue(await self.engine.subscribe(clientId, "/a"))
        self.assertFalse(await self.engine.subscribe(clientId, "/a"))
        self.assertTrue(await self.engine.unsubscribe(clientId, "/a"))
        self.assertFalse(await self.engine.unsubscribe(clientId, "/a"))
        self.assertEqual(await self.engine.publish(message("/a")), 0)
        await self.turn()
        self.assertEqual(sink.payloads, [])
        self.assertEqual(await self.engine.subscriptions(clientId), set())

    async def test_listenerEvents(self) -> None:
        """Listeners hear of clients and subscriptions, and destruction ends subscriptions first."""
        clientId = await self.engine.createClient()
        await self.engine.subscribe(clientId, "/a")
        await self.engine.subscribe(clientId, "/a")
        await self.engine.destroyClient(clientId, "disconnect")
        self.assertEqual(
            self.listener.events,
            [
                ("created", clientId),
                ("subscribed", clientId, "/a"),
                ("occupied", "/a"),
                ("unsubscribed", clientId, "/a"),
                ("vacated", "/a"),
                ("destroyed", clientId, "disconnect"),
            ],
        )

    async def test_detachedClientExpires(self) -> None:
        """A client with no sink for longer than the expiry is destroyed."""
        clientId = await self.engine.createClient()
        await self.engine.subscribe(clientId, "/a")
        await self.wait(self.expiry + 2)
        self.assertFalse(await self.engine.clientExists(clientId))
        self.assertIn(("destroyed", clientId, "expired"), self.listener.events)

    async def test_attachedClientLives(self) -> None:
        """A client with a sink attached does not expire; its clock starts at detach."""
        clientId = await self.engine.createClient()
        sink = RecordingSink()
        self.engine.attach(clientId, sink)
        await self.wait(self.expiry * 2)
        self.assertTrue(await self.engine.clientExists(clientId))
        self.engine.detach(clientId, sink)
        await self.wait(self.expiry / 2)
        self.assertTrue(await self.engine.clientExists(clientId))
        await self.wait(self.expiry)
        self.assertFalse(await self.engine.clientExists(clientId))

    async def test_destroyedClientGetsNothing(self) -> None:
        """Publishing after a client is destroyed reaches nobody and does not fail."""
        clientId = await self.engine.createClient()
        await self.engine.subscribe(clientId, "/a")
        await self.engine.destroyClient(clientId, "disconnect")
        self.assertEqual(await self.engine.publish(message("/a")), 0)
        await self.engine.destroyClient(clientId, "disconnect")

    async def test_occupancy(self) -> None:
        """A channel is occupied by its first subscriber and vacated by its last, once each."""
        one, two = await self.engine.createClient(), await self.engine.createClient()
        await self.engine.subscribe(one, "/room")
        await self.engine.subscribe(two, "/room")
        await self.engine.unsubscribe(one, "/room")
        self.assertEqual(self.listener.only("occupied", "vacated"), [("occupied", "/room")])
        await self.engine.destroyClient(two, "expired")
        self.assertEqual(
            self.listener.only("occupied", "vacated"), [("occupied", "/room"), ("vacated", "/room")]
        )

    async def test_presenceJoin(self) -> None:
        """Joining returns every member, itself included, and is announced once per member."""
        one, two = await self.engine.createClient(), await self.engine.createClient()
        await self.engine.subscribe(one, "/p")
        await self.engine.subscribe(two, "/p")
        members = await self.engine.presenceJoin(one, "/p", "u1", {"id": "u1", "name": "Joe"})
        self.assertEqual(members, {"u1": {"id": "u1", "name": "Joe"}})
        members = await self.engine.presenceJoin(two, "/p", "u2", {"id": "u2"})
        self.assertEqual(members, {"u1": {"id": "u1", "name": "Joe"}, "u2": {"id": "u2"}})
        self.assertEqual(await self.engine.presenceMembers("/p"), members)
        self.assertEqual(
            self.listener.only("joined"),
            [
                ("joined", "/p", "u1", {"id": "u1", "name": "Joe"}, one),
                ("joined", "/p", "u2", {"id": "u2"}, two),
            ],
        )

    async def test_presenceTabs(self) -> None:
        """Two clients of one member: one join, and the member leaves only with its last client."""
        tab1, tab2 = await self.engine.createClient(), await self.engine.createClient()
        for tab in (tab1, tab2):
            await self.engine.subscribe(tab, "/p")
            await self.engine.presenceJoin(tab, "/p", "u1", {"id": "u1"})
        self.assertEqual(len(self.listener.only("joined")), 1)
        await self.engine.unsubscribe(tab1, "/p")
        self.assertEqual(self.listener.only("left"), [])
        self.assertEqual(await self.engine.presenceMembers("/p"), {"u1": {"id": "u1"}})
        await self.engine.destroyClient(tab2, "socket closed")
        self.assertEqual(self.listener.only("left"), [("left", "/p", "u1")])
        self.assertEqual(await self.engine.presenceMembers("/p"), {})

    async def test_presenceEndsWithExpiry(self) -> None:
        """A client that vanishes takes its presence with it when it expires."""
        clientId = await self.engine.createClient()
        await self.engine.subscribe(clientId, "/p")
        await self.engine.presenceJoin(clientId, "/p", "u1", {"id": "u1"})
        await self.wait(self.expiry + 2)
        self.assertEqual(self.listener.only("left"), [("left", "/p", "u1")])
        self.assertEqual(await self.engine.presenceMembers("/p"), {})

    async def test_presencePerChannel(self) -> None:
        """Presence on one channel is independent of another."""
        clientId = await self.engine.createClient()
        for channel in ("/p1", "/p2"):
            await self.engine.subscribe(clientId, channel)
            await self.engine.presenceJoin(clientId, channel, "u1", {"id": "u1"})
        await self.engine.unsubscribe(clientId, "/p1")
        self.assertEqual(await self.engine.presenceMembers("/p1"), {})
        self.assertEqual(await self.engine.presenceMembers("/p2"), {"u1": {"id": "u1"}})

    async def test_exclude(self) -> None:
        """A delivery naming a client to exclude reaches every other subscriber only."""
        one, two = await self.engine.createClient(), await self.engine.createClient()
        sinks = {one: RecordingSink(), two: RecordingSink()}
        for clientId, sink in sinks.items():
            self.engine.attach(clientId, sink)
            await self.engine.subscribe(clientId, "/p")
        self.assertEqual(
            await self.engine.publish(Delivery.fromMessage({"channel": "/p", "data": 1}, one)), 1
        )
        await self.turn()
        self.assertEqual((len(sinks[one].payloads), len(sinks[two].payloads)), (0, 1))

    async def test_channelCounts(self) -> None:
        """
        An application's occupied channels, each with its subscribers and presence members;
        patterns and meta channels are not listed, and a channel leaves the list when vacated.
        """
        app = "countApp0000000001"
        a, b = f"/{app}/public/a", f"/{app}/presence/room"
        one, two, three = [await self.engine.createClient() for _ in range(3)]
        for client in (one, two):
            await self.engine.subscribe(client, a)
            await self.engine.subscribe(client, b)
            await self.engine.presenceJoin(client, b, "u1", {"id": "u1"})
        await self.engine.subscribe(three, b)
        await self.engine.presenceJoin(three, b, "u2", {"id": "u2"})
        await self.engine.subscribe(three, f"/{app}/public/*")
        await self.engine.subscribe(three, f"/{app}/meta/statistics")
        await self.engine.subscribe(three, "/otherApp0000000001/public/a")
        await self.turn()
        self.assertEqual(await self.engine.channelOccupancy(a), (2, 0))
        self.assertEqual(await self.engine.channelOccupancy(b), (3, 2))
        self.assertEqual(await self.engine.channelOccupancy(f"/{app}/public/none"), (0, 0))
        self.assertEqual(await self.engine.occupiedChannels(app, f"/{app}/"), {a: (2, 0), b: (3, 2)})
        self.assertEqual(await self.engine.occupiedChannels(app, f"/{app}/presence/"), {b: (3, 2)})
        self.assertEqual(await self.engine.occupiedChannels("nobody", "/nobody/"), {})
        await self.engine.unsubscribe(one, a)
        await self.engine.destroyClient(two, "disconnect")
        await self.turn()
        self.assertEqual(await self.engine.occupiedChannels(app, f"/{app}/"), {b: (2, 2)})
        self.assertEqual(await self.engine.channelOccupancy(a), (0, 0))

    async def test_broadcast(self) -> None:
        """A broadcast reaches the topic's handlers (on this node too) as JSON, others' not."""
        heard: list[tuple[str, Any]] = []
        ready = getattr(self.engine, "ready", None)
        if ready is not None:
            await ready()  # a node hears broadcasts once it listens for them
        self.engine.onBroadcast("one", lambda data: heard.append(("one", data)))
        self.engine.onBroadcast("two", lambda data: heard.append(("two", data)))
        await self.engine.broadcast("one", {"user": "u1", "n": (1, 2)})
        await self.turn()
        self.assertEqual(heard, [("one", {"user": "u1", "n": [1, 2]})])

    async def test_publishBatch(self) -> None:
        """A batch reaches each subscriber in its order, counts each message's recipients, honours exclude."""
        one, two = await self.engine.createClient(), await self.engine.createClient()
        sinks = {one: RecordingSink(), two: RecordingSink()}
        for clientId, sink in sinks.items():
            self.engine.attach(clientId, sink)
        await self.engine.subscribe(one, "/b/x")
        await self.engine.subscribe(two, "/b/**")
        batch = [
            message("/b/x", 1),
            message("/b/y", 2),
            Delivery.fromMessage({"channel": "/b/x", "data": 3}, one),
            message("/b/x", 4),
            message("/nobody", 5),
        ]
        self.assertEqual(await self.engine.publishBatch(batch), [2, 1, 1, 2, 0])
        await self.turn()
        data = lambda sink: [json.loads(p)["data"] for p in sink.payloads]  # noqa: E731
        self.assertEqual(data(sinks[one]), [1, 4])
        self.assertEqual(data(sinks[two]), [1, 2, 3, 4])
