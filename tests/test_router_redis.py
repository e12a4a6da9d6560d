"""Two Bayeux routers, each on its own Redis engine, as two pandapush nodes behind a load balancer."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from pandapush.bayeux.context import MessageContext
from pandapush.router import BayeuxRouter
from tests.support.redis import RedisEngineCase
from tests.support.waiting import sleep

HANDSHAKE = {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}


class TwoNodeRouterTests(RedisEngineCase, TestCase):
    def setUp(self) -> Any:
        namespace = self.newNamespace()
        self.engines = [self.newEngine(namespace) for _ in range(2)]
        self.routers = [BayeuxRouter(engine, reactor, timeout=2.0) for engine in self.engines]
        for router in self.routers:
            self.addCleanup(router.close)
        return defer.gatherResults([e.ready() for e in self.engines])

    async def send(self, node: int, message: dict[str, Any]) -> list[Any]:
        return list(await self.routers[node].process([message], MessageContext("long-polling")))

    def connect(self, node: int, clientId: str) -> defer.Deferred[list[Any]]:
        message = {"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"}
        return self.routers[node].process([message], MessageContext("long-polling"))

    async def test_longPollerAlternatingNodes(self) -> None:
        """A long-poller alternating between nodes keeps its session and every message, in order."""
        (handshake,) = await self.send(0, dict(HANDSHAKE))
        clientId = handshake["clientId"]
        (subscribed,) = await self.send(
            1, {"channel": "/meta/subscribe", "clientId": clientId, "subscription": "/chat/*"}
        )
        self.assertTrue(subscribed["successful"])
        (first,) = await self.connect(0, clientId)  # the first connect is answered at once
        self.assertTrue(first["successful"])
        received: list[bytes] = []
        sent = 0
        for poll in range(6):
            node = (poll + 1) % 2
            # Published while the client is between two connects, through either node.
            await self.routers[poll % 2].publish("/chat/room", sent)
            sent += 1
            replies = await self.connect(node, clientId)
            self.assertTrue(replies[0]["successful"], replies[0])
            received.extend(d.payload for d in replies[1:])
            # Published while the connect is held on the other node.
            held = self.connect(1 - node, clientId)
            await sleep(0.05)
            await self.routers[node].publish("/chat/room", sent)
            sent += 1
            replies = await held
            received.extend(d.payload for d in replies[1:])
        messages = [json.loads(p) for p in received]
        self.assertEqual([m["data"] for m in messages], list(range(sent)))
        self.assertEqual([m["ext"]["position"]["offset"] for m in messages], list(range(1, sent + 1)))

    async def test_unknownEverywhereAfterDisconnect(self) -> None:
        """A client that disconnected through one node is unknown on the other."""
        (handshake,) = await self.send(0, dict(HANDSHAKE))
        clientId = handshake["clientId"]
        (reply,) = await self.send(1, {"channel": "/meta/disconnect", "clientId": clientId})
        self.assertTrue(reply["successful"])
        (reply,) = await self.send(
            0, {"channel": "/meta/subscribe", "clientId": clientId, "subscription": "/a"}
        )
        self.assertFalse(reply["successful"])
        self.assertTrue(reply["error"].startswith("401"), reply)
