"""
End to end: the real CometD JavaScript client (npm ``cometd`` in Node) with its
``AckExtension``, against a real ``twistd pandapush``, through a proxy that loses one
reply on the way.

The client (``tests/node/cometd-client.mjs``) subscribes to a public channel through a
:class:`~tests.support.proxy.LosingProxy`; the test publishes over REST straight to
the server. The reply carrying the second message is lost: the proxy cuts the connection
instead of passing it on (a long-poll response, or the websocket with its frame). With
acknowledgements the client connects again acknowledging the batch before, and the
server sends the lost batch again: every message arrives, once, in order, in the same
session (no new handshake). Without them (the control) the message is gone, which shows
the loss is real. On the memory engine and the Redis engine, over long-polling and
websocket; and a client moving to another node of a cluster carries on acknowledging.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import treq
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from pandapush.redis import parseRedisHosts
from tests.support.cluster import APP as CLUSTER_APP
from tests.support.cluster import ClusterCase
from tests.support.node import NODE_DIR, NodeScript, requireNode
from tests.support.process import PandapushProcess, seededEnvironment
from tests.support.proxy import LosingProxy
from tests.support.redis import REDIS, deleteNamespace, requireRedis
from tests.support.requirements import missing

Event = dict[str, Any]

APP = "e2eCometdAckApp00001"
KEY = "PSIDe2eCometdAckKey1"
SECRET = "e2e-cometd-ack-secret-0123456789abcdef"
MARKER = "lose-this-reply"


def requireCometD() -> None:
    requireNode()
    if not (NODE_DIR / "node_modules" / "cometd" / "package.json").exists():
        missing(f"the cometd npm package is not installed: run `npm ci` in {NODE_DIR}")


def values(script: NodeScript) -> list[Any]:
    """``n`` of every message the client's subscription callback got, in order."""
    return [e["data"].get("n") for e in script.events if e.get("event") == "message"]


def isConnectReply(event: Event) -> bool:
    message = event.get("message", {})
    return bool(
        event.get("event") == "received"
        and message.get("channel") == "/meta/connect"
        and message.get("successful") is True
    )


async def after(script: NodeScript, since: int, predicate: Callable[[Event], bool]) -> Event:
    """The first event from index ``since`` on for which ``predicate`` holds."""
    earlier = {id(e) for e in script.events[:since]}
    return await script.waitFor(lambda e: id(e) not in earlier and predicate(e))


async def message(script: NodeScript, n: int) -> None:
    """Once the subscription callback got the message ``n``."""
    await script.waitFor(lambda e: e.get("event") == "message" and e["data"].get("n") == n)


async def ready(script: NodeScript) -> None:
    """Subscribed, and a connect answered since: the next one is held."""
    await script.waitForEvent("subscribed", successful=True)
    await after(script, len(script.events), isConnectReply)


def describe(script: NodeScript) -> str:
    return "\n".join(json.dumps(e) for e in script.events)


async def sleep(seconds: float) -> None:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)  # type: ignore[attr-defined]
    await d


def sentConnects(script: NodeScript, since: int = 0) -> list[Event]:
    return [
        e["message"]
        for e in script.events[since:]
        if e.get("event") == "sent" and e["message"].get("channel") == "/meta/connect"
    ]


class CometDAckMixin:
    """The scenario, on whatever server ``self.push``/``self.publishTo`` name."""

    transport = "long-polling"
    proxy: LosingProxy
    addCleanup: Callable[..., Any]
    assertEqual: Callable[..., Any]
    assertIn: Callable[..., Any]
    assertNotIn: Callable[..., Any]

    channel = f"/{APP}/public/room"

    async def publish(self, data: Any) -> None:
        raise NotImplementedError

    def client(self, ack: bool) -> NodeScript:
        script = NodeScript(
            "cometd-client.mjs",
            f"{self.proxy.url}/push",
            self.channel,
            f"--transport={self.transport}",
            *(["--ack"] if ack else []),
        )
        script.start()
        self.addCleanup(script.stop)
        return script

    async def loseOne(self, script: NodeScript) -> int:
        """
        Publishes n=1, n=2 (whose reply the proxy loses) and n=3 once the client is
        connected again; returns the index of the events from the loss on.
        """
        await ready(script)
        await self.publish({"n": 1})
        await message(script, 1)
        lost = self.proxy.loseNext(MARKER.encode())
        await self.publish({"n": 2, "tag": MARKER})
        await lost
        since = len(script.events)
        # Connected again; a client that had to handshake again subscribes again first.
        await after(script, since, isConnectReply)
        if any(e.get("event") == "handshake" for e in script.events[since:]):
            await after(script, since, lambda e: e.get("event") == "subscribed")
        await self.publish({"n": 3})
        await message(script, 3)
        # Time for a duplicate to show up, if there were one.
        await sleep(0.5)
        return since

    async def test_lostReplySentAgain(self) -> None:
        """
        With the AckExtension, the message of a lost reply arrives once the client
        connects again, in order and once, in the same session.
        """
        script = self.client(ack=True)
        since = await self.loseOne(script)
        self.assertEqual(values(script), [1, 2, 3], describe(script))
        handshakes = [e for e in script.events if e.get("event") == "handshake"]
        self.assertEqual(len(handshakes), 1, describe(script))
        # The connect after the loss acknowledged the batch before the lost one: the
        # batch that carried n=1.
        first = next(i for i, e in enumerate(script.events) if e.get("event") == "message")
        carrier = [e["message"] for e in script.events[:first] if isConnectReply(e)][-1]
        acknowledged = [m["ext"]["ack"] for m in sentConnects(script, since)]
        self.assertEqual(acknowledged[0], carrier["ext"]["ack"], describe(script))


class _OneServer(CometDAckMixin, TestCase):
    """One pandapush, on the memory engine or (``redis``) the Redis engine."""

    timeout = 120
    redis = False

    async def setUp(self) -> None:  # type: ignore[override]
        requireCometD()
        args = ["--timeout", "3"]
        env = seededEnvironment(APP, KEY, SECRET, DATABASE="memory")
        if self.redis:
            requireRedis()
            namespace = f"pp-test-{uuid.uuid4().hex}"
            self.addCleanup(deleteNamespace, parseRedisHosts(REDIS), namespace)
            args += ["--redis-hosts", REDIS, "--redis-namespace", namespace]
        self.server = await PandapushProcess.started(self, *args, env=env)
        self.proxy = await LosingProxy.start(self.server.port)
        self.addCleanup(self.proxy.stop)

    async def publish(self, data: Any) -> None:
        response = await treq.post(
            f"{self.server.url}/channel{self.channel}",
            json=data,
            auth=(KEY, SECRET),
            persistent=False,
            timeout=15,
        )
        self.assertEqual(response.code, 200, await response.text())


class LongPollingMemoryTests(_OneServer):
    """Long-polling, memory engine."""

    async def test_withoutAcknowledgementsLost(self) -> None:
        """The control: a plain CometD client loses the message of the lost reply."""
        script = self.client(ack=False)
        await self.loseOne(script)
        got = values(script)
        self.assertIn(1, got)
        self.assertIn(3, got)
        self.assertNotIn(2, got, describe(script))


class WebSocketMemoryTests(_OneServer):
    """Websocket, memory engine."""

    transport = "websocket"

    async def test_withoutAcknowledgementsLost(self) -> None:
        """The control: a plain CometD client's socket closes with the reply, and the message is lost."""
        script = self.client(ack=False)
        await self.loseOne(script)
        self.assertNotIn(2, values(script), describe(script))


class LongPollingRedisTests(_OneServer):
    """Long-polling, Redis engine."""

    redis = True


class WebSocketRedisTests(_OneServer):
    """Websocket, Redis engine."""

    transport = "websocket"
    redis = True


class MovingClientTests(ClusterCase):
    """Two nodes on one Redis: an acknowledging client that moves goes on in its session, either transport."""

    timeout = 120
    channel = f"/{CLUSTER_APP}/public/room"

    async def test_movesAndGoesOnAcknowledging(self) -> None:
        """
        A long-poll client moved to another node (its connections cut, the proxy now
        pointing there) is adopted there from the batch it acknowledges: it does not
        handshake again, gets what was published while it moved, once, and goes on.
        """
        await self.move("long-polling")

    async def test_websocketMovesAndGoesOnAcknowledging(self) -> None:
        """The same over a websocket: its socket cut, it comes back over a new one to the other node."""
        await self.move("websocket")

    async def move(self, transport: str) -> None:
        requireCometD()
        a, b = await self.startNodes(2)
        proxy = await LosingProxy.start(a.port)
        self.addCleanup(proxy.stop)
        script = NodeScript(
            "cometd-client.mjs",
            f"{proxy.url}/push",
            self.channel,
            f"--transport={transport}",
            "--ack",
            # Back within the cluster's one-second client expiry.
            "--backoff=100",
        )
        script.start()
        self.addCleanup(script.stop)
        await ready(script)
        code, body = await self.restPublish(a, "room", {"n": 1})
        self.assertEqual(code, 200, body)
        await message(script, 1)
        proxy.retarget(b.port)
        proxy.cut()
        code, body = await self.restPublish(a, "room", {"n": 2})
        self.assertEqual(code, 200, body)
        await message(script, 2)
        since = len(script.events)
        await after(script, since, isConnectReply)
        code, body = await self.restPublish(b, "room", {"n": 3})
        self.assertEqual(code, 200, body)
        await message(script, 3)
        await sleep(0.5)
        self.assertEqual(values(script), [1, 2, 3], describe(script))
        self.assertEqual(len([e for e in script.events if e.get("event") == "handshake"]), 1)
        # Numbered on from what it acknowledged, with no gap and no reset.
        numbers = [e["message"]["ext"]["ack"] for e in script.events if isConnectReply(e)]
        self.assertEqual(numbers, list(range(1, len(numbers) + 1)), describe(script))
