"""SIGTERM on one of two nodes under traffic: its clients move on and miss nothing (issue 7).

A draining node on the Redis engine tells its clients to reconnect (held connects answered
with ``reconnect: retry``, websockets closed with 1001) and then stays subscribed for the
clients it still owns until other nodes have claimed them (each claim hands over what was
queued meanwhile), within ``--shutdown-grace``. Without that wait, messages published
between the node closing and a long-poller's next connect reaching another node were
acknowledged and never delivered (``bench/faults.py`` counted 60 of them at 200 msgs/s).
"""

from __future__ import annotations

import signal
import time
from typing import Any

import treq
from twisted.internet import defer

from tests.support.cluster import KEY, SECRET, ClusterCase, channel
from tests.support.failover import AlternatingPoller
from tests.support.waiting import eventually, sleep


class MovingPoller(AlternatingPoller):
    """A long-poller that uses its first node until a request to it fails, then the next (a balancer)."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(urls)
        self.index = 0
        self.handshakes = 0

    def _nextUrl(self) -> str:
        return self.urls[self.index]

    async def start(self, subscription: str) -> MovingPoller:
        self.handshakes = 1
        await super().start(subscription)
        return self

    async def _poll(self) -> None:
        while self.polling:
            connect = {"channel": "/meta/connect", "clientId": self.clientId}
            connect["connectionType"] = "long-polling"
            try:
                replies = await self.post([connect])
            except Exception:
                self.index = (self.index + 1) % len(self.urls)
                continue
            for reply in replies:
                if "successful" not in reply:
                    self.messages.append(reply["data"])
                elif not reply["successful"]:
                    self.failures.append(reply)


class DrainUnderTrafficTests(ClusterCase):
    async def test_sigtermLosesNoAcknowledgedMessage(self) -> None:
        """
        SIGTERM on B while A publishes 100 messages a second: B's long-poller and websocket
        client carry on through A with their sessions, and get every message acknowledged
        with a 200, once and in order; B exits well within its grace.
        """
        a, b = await self.startNodes(2)
        feed = channel("drain")
        poller = await MovingPoller([b.url, a.url]).start(feed)
        self.clients.append(poller)
        ws = await self.ws(b.url, a.url, name="ws")
        self.assertTrue((await ws.subscribe(feed))["successful"])
        await sleep(0.3)

        acknowledged: list[Any] = []
        stopping: defer.Deferred[int | None] | None = None
        exited: list[float] = []
        started = 0.0

        def stopped(code: int | None) -> int | None:
            exited.append(time.monotonic() - started)
            return code

        for i in range(150):
            if i == 50:
                started = time.monotonic()
                stopping = defer.ensureDeferred(b.stop(signal.SIGTERM)).addCallback(stopped)
            response = await treq.post(
                f"{a.url}/channel{feed}", json={"n": i}, auth=(KEY, SECRET), persistent=False, timeout=15
            )
            await response.content()
            if response.code == 200:
                acknowledged.append({"n": i})
            await sleep(0.01)
        assert stopping is not None
        await stopping
        self.assertEqual(len(acknowledged), 150)
        self.assertLess(exited[0], 4.0, "B exited within its 5 s grace")

        def got() -> list[list[Any]]:
            return [poller.messages, [m["data"] for m in ws.messages if m.get("channel") == feed]]

        def missing() -> list[list[Any]]:
            return [[m["n"] for m in acknowledged if m not in received] for received in got()]

        self.assertTrue(
            await eventually(lambda: all(len(m) >= len(acknowledged) for m in got()), timeout=10),
            f"acknowledged, never received (long-poller, websocket): {missing()}",
        )
        await sleep(0.3)
        self.assertEqual(poller.messages, acknowledged)
        self.assertEqual([m["data"] for m in ws.messages if m.get("channel") == feed], acknowledged)
        self.assertEqual((poller.handshakes, ws.handshakes), (1, 1), "both kept their sessions")
        self.assertEqual(poller.failures, [])
        self.assertIn("drained", b.log())
