"""
Webhooks on two real pandapush processes sharing Redis (the outbox) and an SQLite file (the
endpoints): a receiver that is down, then stuck, then up; a node SIGKILLed while events wait
and while it holds some mid-send. Every event arrives once, each channel's in order.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import uuid
from collections import defaultdict
from typing import Any

import treq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers

from pandapush.redis import RedisShard
from pandapush.tokens import mintToken
from tests.support.bayeux import WSClient
from tests.support.process import PandapushProcess
from tests.support.receiver import WebhookReceiver
from tests.support.redis import deleteNamespace, requireRedis
from tests.support.waiting import eventually

APP = "whapp000000000000001"
KEY = "PSIDwebhookkey000001"
SECRET = "webhook-multinode-secret-0123456789"
ADMIN = ("admin", "webhook-multinode-admin")


def channel(path: str, kind: str = "public") -> str:
    return f"/{APP}/{kind}/{path}"


class TwoNodeTests(TestCase):
    timeout = 120

    async def setUp(self) -> None:  # type: ignore[override]
        address = requireRedis()
        self.namespace = f"pp-test-{uuid.uuid4().hex}"
        self.addCleanup(deleteNamespace, [address], self.namespace)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        args = (
            "--redis-hosts",
            f"{address.host}:{address.port}",
            "--redis-namespace",
            self.namespace,
            "--database",
            "sqlite",
            "--database-path",
            os.path.join(directory, "db.sqlite"),
        )
        env = {
            "DEV_APPLICATION_ID": APP,
            "DEV_KEY_ID": KEY,
            "DEV_KEY_SECRET": SECRET,
            "AUTH_METHOD": "basic",
            "ADMIN_USERNAME": ADMIN[0],
            "ADMIN_PASSWORD": ADMIN[1],
            # Short enough for a test: a dead node's leases end in 3 s, retries come quickly.
            "PANDAPUSH_WEBHOOK_LEASE": "3",
            "PANDAPUSH_WEBHOOK_FIRST_BACKOFF": "0.5",
            "PANDAPUSH_WEBHOOK_MAX_BACKOFF": "1.5",
        }
        self.a = PandapushProcess(*args, env=env)
        self.b = PandapushProcess(*args, env=env)
        for node in (self.a, self.b):
            self.addCleanup(node.removeScratch)
            self.addCleanup(node.stop)
        await self.a.start()  # migrates the file and seeds the key first
        await self.b.start()
        self.clients: list[WSClient] = []
        self.addCleanup(self._closeClients)

    async def _closeClients(self) -> None:
        for client in self.clients:
            if not client.closed:
                await client.close()

    async def ws(self, node: PandapushProcess) -> WSClient:
        client = await WSClient(node.url).start()
        self.clients.append(client)
        return client

    async def subscribe(self, client: WSClient, name: str, auth: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"channel": "/meta/subscribe", "subscription": name}
        if auth is not None:
            message["ext"] = {"auth": auth}
        reply = await client.call(message)
        self.assertTrue(reply["successful"], reply)

    async def waiting(self) -> int:
        """Events in the outbox, as Redis has it."""
        shard = RedisShard(reactor, requireRedis())
        try:
            return int(await shard.execute("GET", f"{self.namespace}:wh:n") or 0)
        finally:
            await shard.close()

    async def test_downStuckKilledThenUp(self) -> None:
        receiver = WebhookReceiver()
        self.addCleanup(receiver.stop)
        await receiver.listen()
        await receiver.stop()  # down: its port refuses connections
        auth = "Basic " + base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
        body = {
            "url": receiver.url,
            "events": ["channel_occupied", "channel_vacated", "member_added"],
            "keyId": KEY,
        }
        response = await treq.post(
            self.a.url + f"/admin/api/application/{APP}/webhooks",
            data=json.dumps(body).encode(),
            headers=Headers({"Authorization": [auth], "Content-Type": ["application/json"]}),
            persistent=False,
        )
        self.assertEqual(response.code, 201, await response.text())

        # Events on both nodes: six channels occupied, three of them vacated, a member joins.
        expected: dict[str, list[str]] = defaultdict(list)
        clients = []
        for i in range(6):
            client = await self.ws(self.a if i % 2 == 0 else self.b)
            await self.subscribe(client, channel(f"c{i}"))
            expected[channel(f"c{i}")].append("channel_occupied")
            clients.append(client)
        for i in range(3):
            await clients[i].call({"channel": "/meta/unsubscribe", "subscription": channel(f"c{i}")})
            expected[channel(f"c{i}")].append("channel_vacated")
        room = channel("room", "presence")
        member = await self.ws(self.b)
        await self.subscribe(
            member, room, {"token": mintToken(KEY, SECRET, room, sub=True, presence={"id": "u1"})}
        )
        expected[room] += ["channel_occupied", "member_added"]
        total = sum(len(v) for v in expected.values())

        # While the receiver is down they wait (the vacated ones 3 s more), tried again and again.
        await eventually(lambda: False, timeout=4)
        self.assertEqual(await self.waiting(), total)

        # The receiver comes back stuck: requests are held open, unanswered. Node B is paused
        # so that node A claims everything; A is killed mid-send, B resumes: A's leases run
        # out and B sends those events too.
        self.b._transport.signalProcess(signal.SIGSTOP)
        receiver.hang = True
        await receiver.listen()
        self.assertTrue(await eventually(lambda: len(receiver.hung) >= 1, timeout=10))
        await self.a.stop(signal.SIGKILL)
        self.b._transport.signalProcess(signal.SIGCONT)
        await receiver.stop()
        receiver.hang = False
        receiver.attempts.clear()
        await receiver.listen()

        self.assertTrue(
            await eventually(lambda: len(receiver.events()) >= total, timeout=40),
            (len(receiver.events()), total, receiver.events()),
        )
        await eventually(lambda: False, timeout=2)  # nothing more comes
        events = receiver.events()
        ids = [e["id"] for e in events]
        self.assertEqual(len(ids), len(set(ids)), "an event arrived twice")
        self.assertEqual(len(events), total)
        got: dict[str, list[str]] = defaultdict(list)
        for event in events:
            got[event["channel"]].append(event["name"])
        self.assertEqual(dict(got), dict(expected))
        for request in receiver.received:
            self.assertTrue(request.signedWith(SECRET))
        self.assertEqual(await self.waiting(), 0)
        await receiver.stop()
