"""
End to end: Faye's Node client resumes through the history, on the memory engine, the
Redis engine and across two nodes (real ``twistd pandapush`` children, real sockets).

``tests/node/resume-client.js`` plays one application: client A subscribes and receives,
leaves; messages are published while nobody listens; client B (a new session, on the same
or another node) subscribes with the positions A saw in ``ext.resume``. While B
subscribes, a publisher keeps publishing through REST, so the seam between history and
live messages is crossed under load: B must get every message after A's last, in order,
exactly once, and be told it recovered everything.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet import defer

from tests.support.bayeux import LPClient
from tests.support.cluster import APP, KEY, SECRET, ClusterCase, channel
from tests.support.failover import dataOn
from tests.support.node import NodeScript, requireNode
from tests.support.process import PandapushProcess, seededEnvironment
from tests.support.waiting import eventually, sleep

Event = dict[str, Any]


def messages(events: list[Event], client: str) -> list[Event]:
    return [e for e in events if e.get("event") == "message" and e.get("client") == client]


def subscribed(events: list[Event], client: str) -> Event:
    (event,) = [e for e in events if e.get("event") == "subscribed" and e.get("client") == client]
    return event


class Publisher:
    """Publishes ``{"n": i}`` through REST, one after another, to the nodes in turn, while running."""

    def __init__(self, nodes: list[PandapushProcess], channels: list[str]) -> None:
        self.nodes = nodes
        self.channels = channels
        self.sent: dict[str, list[int]] = {c: [] for c in channels}
        self.count = 0
        self._running = False
        self._done: defer.Deferred[None] | None = None

    async def publish(self, n: int = 1) -> None:
        for _ in range(n):
            node = self.nodes[self.count % len(self.nodes)]
            target = self.channels[self.count % len(self.channels)]
            response = await treq.post(
                f"{node.url}/channel{target}",
                json={"n": self.count},
                auth=(KEY, SECRET),
                persistent=False,
                timeout=15,
            )
            body = await response.content()
            assert response.code == 200, (response.code, body)
            self.sent[target].append(self.count)
            self.count += 1

    def start(self) -> None:
        self._running = True

        async def loop() -> None:
            while self._running:
                await self.publish()
                await sleep(0.005)

        self._done = defer.ensureDeferred(loop())

    async def stop(self) -> None:
        self._running = False
        if self._done is not None:
            await self._done


class ResumeScenario:
    """Drives resume-client.js through its steps."""

    def __init__(self, testCase: ClusterCase, subscription: str, urls: list[str], transport: str) -> None:
        requireNode()
        self.testCase = testCase
        self.script = NodeScript(
            "resume-client.js", subscription, *urls, f"--transport={transport}", timeout=60
        ).start()

    async def ready(self, name: str) -> None:
        await self.script.waitFor(lambda e: e.get("event") == "ready" and e.get("name") == name)

    @property
    def events(self) -> list[Event]:
        return self.script.events

    async def run(self, publisher: Publisher) -> None:
        await self.ready("first")
        await publisher.publish(6)
        await self.received("A", publisher.count)
        self.script.send("leave")
        await self.ready("left")
        await publisher.publish(6)  # missed by A, for B to recover
        publisher.start()
        self.script.send("back")
        await self.ready("resumed")
        await sleep(0.3)
        await publisher.stop()
        await publisher.publish(3)
        await self.received("B", publisher.count - len(messages(self.events, "A")))
        await sleep(0.3)  # a duplicate would have arrived by now
        self.script.send("end")
        result = await self.script.whenFinished()
        self.testCase.assertEqual(result.code, 0, result.describe())

    async def received(self, client: str, count: int) -> None:
        arrived = await eventually(lambda: len(messages(self.events, client)) >= count, timeout=20)
        self.testCase.assertTrue(arrived, self.events)

    def check(self, publisher: Publisher) -> None:
        """B got, on each channel, everything after A's last message there: in order, once, positioned."""
        a, b = messages(self.events, "A"), messages(self.events, "B")
        reply = subscribed(self.events, "B")
        self.testCase.assertTrue(reply["successful"], reply)
        self.testCase.assertIs(reply["ext"]["recovered"], True, reply)
        for target, sent in publisher.sent.items():
            seenByA = [m["data"]["n"] for m in a if m["channel"] == target]
            gotByB = [m for m in b if m["channel"] == target]
            self.testCase.assertEqual(seenByA, sent[: len(seenByA)])
            self.testCase.assertEqual([m["data"]["n"] for m in gotByB], sent[len(seenByA) :])
            offsets = [m["position"]["offset"] for m in a + b if m["channel"] == target]
            self.testCase.assertEqual(offsets, list(range(1, len(sent) + 1)))
            self.testCase.assertEqual(
                len({m["position"]["epoch"] for m in a + b if m["channel"] == target}), 1
            )


class MemoryEngineResumeTests(ClusterCase):
    """One node on the memory engine."""

    async def startMemoryNode(self) -> PandapushProcess:
        env = seededEnvironment(APP, KEY, SECRET, DATABASE="memory")
        node = PandapushProcess("--timeout", "2", env=env)
        self.addCleanup(node.removeScratch)
        self.addCleanup(node.stop)
        await node.start()
        return node

    async def test_websocket(self) -> None:
        """Faye over websocket resumes a concrete channel: the missed messages, then live, none twice."""
        node = await self.startMemoryNode()
        room = channel("room")
        scenario = ResumeScenario(self, room, [node.push], "websocket")
        publisher = Publisher([node], [room])
        await scenario.run(publisher)
        scenario.check(publisher)

    async def test_longPollingWildcard(self) -> None:
        """Faye long-polling resumes a wildcard subscription, each channel from its own position."""
        node = await self.startMemoryNode()
        scenario = ResumeScenario(self, channel("*"), [node.push], "long-polling")
        publisher = Publisher([node], [channel("one"), channel("two")])
        await scenario.run(publisher)
        scenario.check(publisher)


class RedisEngineResumeTests(ClusterCase):
    """Nodes on the Redis engine: the second client arrives at another node."""

    async def test_otherNode(self) -> None:
        """A on node 1, B on node 2, messages published through both: B recovers from the shared history."""
        first, second = await self.startNodes(2)
        room = channel("room")
        scenario = ResumeScenario(self, room, [first.push, second.push], "websocket")
        publisher = Publisher([first, second], [room])
        await scenario.run(publisher)
        scenario.check(publisher)

    async def test_otherNodeWildcardLongPolling(self) -> None:
        """The same with a long-polling wildcard subscriber."""
        first, second = await self.startNodes(2)
        scenario = ResumeScenario(self, channel("*"), [first.push, second.push], "long-polling")
        publisher = Publisher([second, first], [channel("one"), channel("two")])
        await scenario.run(publisher)
        scenario.check(publisher)

    async def test_subscribeThroughAnotherNode(self) -> None:
        """
        A long-poller polling node A sends its resuming subscribe to node B (no sticky
        balancing): B has A, the owner, hold the queue and put the history in front.
        """
        first, second = await self.startNodes(2)
        room = channel("room")
        publisher = Publisher([first, second], [room])
        await publisher.publish(5)
        response = await treq.get(
            f"{first.url}/apps/{APP}/history", params={"channel": room}, auth=(KEY, SECRET), persistent=False
        )
        epoch = json.loads(await response.content())["epoch"]
        poller = await self.lp(first.url)
        await sleep(0.3)  # its first connect has made A its owner
        publisher.start()
        onB = LPClient(second.url)
        onB.clientId = poller.clientId
        reply = await onB.call(
            {
                "channel": "/meta/subscribe",
                "subscription": room,
                "ext": {"resume": {"offset": 2, "epoch": epoch}},
            }
        )
        await publisher.stop()
        await publisher.publish(2)
        self.assertTrue(reply["successful"], reply)
        self.assertIs(reply["ext"]["recovered"], True, reply)
        expected = [{"n": n} for n in publisher.sent[room][2:]]
        self.assertTrue(await eventually(lambda: len(dataOn(poller, room)) >= len(expected), timeout=10))
        await sleep(0.3)
        self.assertEqual(dataOn(poller, room), expected)
        offsets = [m["ext"]["position"]["offset"] for m in poller.messages if m.get("channel") == room]
        self.assertEqual(offsets, list(range(3, publisher.count + 1)))

    async def test_oneNode(self) -> None:
        """One Redis node: the same."""
        (node,) = await self.startNodes(1)
        room = channel("room")
        scenario = ResumeScenario(self, room, [node.push], "websocket")
        publisher = Publisher([node], [room])
        await scenario.run(publisher)
        scenario.check(publisher)
