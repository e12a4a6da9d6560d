"""
End to end: idempotent REST publishes (``Idempotency-Key``) on real nodes, over real sockets.

A publisher retrying after a timeout sends the same key again, maybe to another node: the
subscriber gets the message once. On the Redis engine the key is checked and set inside the
publish script, so two nodes cannot both publish it.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet import defer
from twisted.web.http_headers import Headers

from tests.support.cluster import APP, KEY, SECRET, ClusterCase, channel
from tests.support.failover import dataOn
from tests.support.process import PandapushProcess, seededEnvironment
from tests.support.waiting import eventually, sleep


async def publish(node: PandapushProcess, path: str, data: Any, key: str | None) -> tuple[int, bytes]:
    headers = Headers({b"Idempotency-Key": [key.encode()]}) if key is not None else None
    response = await treq.post(
        f"{node.url}/channel{channel(path)}",
        json=data,
        auth=(KEY, SECRET),
        headers=headers,
        persistent=False,
        timeout=15,
    )
    return response.code, await response.content()


async def apiCall(node: PandapushProcess, route: str, body: Any, key: str | None) -> tuple[int, bytes]:
    headers = {b"Content-Type": [b"application/json"]}
    if key is not None:
        headers[b"Idempotency-Key"] = [key.encode()]
    response = await treq.post(
        f"{node.url}/apps/{APP}/{route}",
        data=json.dumps(body).encode(),
        auth=(KEY, SECRET),
        headers=Headers(headers),
        persistent=False,
        timeout=15,
    )
    return response.code, await response.content()


class IdempotentRESTTests(ClusterCase):
    async def _checkServerAPI(self, nodes: list[PandapushProcess]) -> None:
        """``events`` and ``batch_events`` retried with their key: each message delivered once."""
        a, b = channel("a"), channel("b")
        subscriber = await self.ws(nodes[-1].url, name="api-subscriber")
        for name in (a, b):
            self.assertTrue((await subscriber.subscribe(name))["successful"])
        for attempt in range(3):
            node = nodes[attempt % len(nodes)]
            code, body = await apiCall(node, "events", {"channels": [a, b], "data": "e"}, "ev-1")
            self.assertEqual(code, 200, body)
            batch = {
                "batch": [
                    {"channel": a, "data": "b1"},
                    {"channel": b, "data": "b2"},
                    {"channel": a, "data": "b3"},
                ]
            }
            code, body = await apiCall(node, "batch_events", batch, "batch-1")
            self.assertEqual(code, 200, body)
        code, body = await apiCall(nodes[0], "events", {"channels": [a], "data": "x"}, "k" * 201)
        self.assertEqual(code, 400, body)
        self.assertTrue(
            await eventually(lambda: len(dataOn(subscriber, a)) + len(dataOn(subscriber, b)) >= 5, timeout=10)
        )
        await sleep(0.5)
        self.assertEqual(dataOn(subscriber, a), ["e", "b1", "b3"])
        self.assertEqual(dataOn(subscriber, b), ["e", "b2"])

    async def _check(self, nodes: list[PandapushProcess]) -> None:
        room = channel("room")
        subscriber = await self.ws(nodes[-1].url, name="subscriber")
        self.assertTrue((await subscriber.subscribe(room))["successful"])
        sent = []
        for i in range(4):
            # Each publish is tried three times, through the nodes in turn, with its key.
            for attempt in range(3):
                code, body = await publish(nodes[attempt % len(nodes)], "room", {"n": i}, f"order-{i}")
                self.assertEqual(code, 200, body)
            sent.append({"n": i})
        # Concurrent retries of one key, through every node at once: one of them publishes.
        results = await defer.gatherResults(
            [
                defer.ensureDeferred(publish(nodes[j % len(nodes)], "room", {"n": 4}, "order-4"))
                for j in range(6)
            ]
        )
        self.assertEqual([code for code, _ in results], [200] * 6)
        sent.append({"n": 4})
        code, body = await publish(nodes[0], "room", {"n": 5}, "k" * 201)
        self.assertEqual(code, 400, body)
        self.assertIn(b"Idempotency key too long", body)
        code, body = await publish(nodes[0], "room", {"n": 6}, None)
        self.assertEqual(code, 200, body)
        sent.append({"n": 6})
        self.assertTrue(await eventually(lambda: len(dataOn(subscriber, room)) >= len(sent), timeout=10))
        await sleep(0.5)  # a duplicate would have arrived by now
        self.assertEqual(dataOn(subscriber, room), sent)

    async def test_memoryEngine(self) -> None:
        """One node on the memory engine: retries with the same key are delivered once."""
        node = PandapushProcess("--timeout", "2", env=seededEnvironment(APP, KEY, SECRET, DATABASE="memory"))
        self.addCleanup(node.removeScratch)
        self.addCleanup(node.stop)
        await node.start()
        self.addCleanup(self._stopClients)
        await self._check([node])
        await self._checkServerAPI([node])

    async def test_twoNodes(self) -> None:
        """Two Redis nodes: retries through either node, even concurrent ones, are delivered once."""
        nodes = await self.startNodes(2)
        await self._check(nodes)
        await self._checkServerAPI(nodes)
