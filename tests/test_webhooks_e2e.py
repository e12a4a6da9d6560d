"""Webhooks end to end in one process: a real pandapush, real subscribers, a real HTTP receiver.

The server keeps events in the memory storage's outbox (the database's and Redis's pass the
same suite, and ``tests/test_webhooks_multinode.py`` runs two nodes on Redis). The receiver
listens on 127.0.0.1, which only a root admin's endpoints may reach: the admin here is root.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import treq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers

from pandapush.tokens import mintToken
from tests.support.bayeux import WSClient
from tests.support.inprocess import APP, KEY, SECRET, InProcessServer, channel
from tests.support.receiver import WebhookReceiver
from tests.support.waiting import eventually

ADMIN = ("admin", "webhooks-admin-password")
ENV = {
    "AUTH_METHOD": "basic",
    "ADMIN_USERNAME": ADMIN[0],
    "ADMIN_PASSWORD": ADMIN[1],
    "PANDAPUSH_WEBHOOK_FIRST_BACKOFF": "0.3",
    "PANDAPUSH_WEBHOOK_MAX_BACKOFF": "1",
}
ROOM = channel("room", "presence")


class WebhookCase(TestCase):
    timeout = 60

    async def setUp(self) -> None:  # type: ignore[override]
        self.server = InProcessServer(environ=ENV)
        await self.server.start()
        self.addCleanup(self.server.stop)
        self.receiver = await WebhookReceiver.start()
        self.addCleanup(self.receiver.stop)
        self.clients: list[WSClient] = []
        self.addCleanup(self._closeClients)

    async def _closeClients(self) -> None:
        for client in self.clients:
            await client.close()

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        auth = "Basic " + base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
        response = await treq.request(
            method,
            f"{self.server.url}/admin/api/{path}",
            data=json.dumps(body).encode() if body is not None else None,
            headers=Headers({"Authorization": [auth], "Content-Type": ["application/json"]}),
            persistent=False,
        )
        content = await response.content()
        try:
            return response.code, json.loads(content)
        except ValueError:
            return response.code, content

    async def endpoint(self, events: list[str], url: str | None = None) -> dict[str, Any]:
        code, made = await self.admin(
            "POST",
            f"application/{APP}/webhooks",
            {"url": url or self.receiver.url, "events": events, "keyId": KEY},
        )
        self.assertEqual(code, 201, made)
        return made  # type: ignore[no-any-return]

    async def ws(self) -> WSClient:
        client = await WSClient(self.server.url).start()
        self.clients.append(client)
        return client

    async def subscribe(self, client: WSClient, name: str, auth: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"channel": "/meta/subscribe", "subscription": name}
        if auth is not None:
            message["ext"] = {"auth": auth}
        reply = await client.call(message)
        self.assertTrue(reply["successful"], reply)

    async def names(self, count: int, timeout: float = 10) -> list[tuple[str, str, str | None]]:
        self.assertTrue(
            await eventually(lambda: len(self.receiver.events()) >= count, timeout=timeout),
            self.receiver.events(),
        )
        return [(e["name"], e["channel"], e.get("user_id")) for e in self.receiver.events()]


class DeliveryTests(WebhookCase):
    async def test_occupiedSignedAndVacatedAfterDebounce(self) -> None:
        """
        channel_occupied arrives within a second, signed with the key and naming it; the
        vacated waits 3 s; a channel left and taken again within 3 s sends neither.
        """
        await self.endpoint(["channel_occupied", "channel_vacated"])
        client = await self.ws()
        started = reactor.seconds()
        await self.subscribe(client, channel("news"))
        (first,) = await self.names(1, timeout=2)
        self.assertLess(reactor.seconds() - started, 1.0)
        self.assertEqual(first, ("channel_occupied", channel("news"), None))
        (request,) = self.receiver.received
        self.assertEqual(request.headers["x-pandapush-key"], KEY)
        self.assertTrue(request.signedWith(SECRET))
        self.assertEqual(request.headers["content-type"], "application/json")
        self.assertEqual(set(request.payload), {"time_ms", "events"})
        self.assertTrue(request.payload["events"][0]["id"].startswith("ev_"))
        # A reload: out and back within the debounce sends nothing.
        await client.call({"channel": "/meta/unsubscribe", "subscription": channel("news")})
        await self.subscribe(client, channel("news"))
        # Patterns and meta channels are never channels of webhooks.
        await self.subscribe(client, channel("*"))
        left = reactor.seconds()
        await client.call({"channel": "/meta/unsubscribe", "subscription": channel("news")})
        names = await self.names(2, timeout=6)
        self.assertGreaterEqual(reactor.seconds() - left, 3.0)
        self.assertEqual(
            names, [("channel_occupied", channel("news"), None), ("channel_vacated", channel("news"), None)]
        )
        await eventually(lambda: False, timeout=0.5)
        self.assertEqual(len(self.receiver.events()), 2)

    async def test_membersAndClientEvents(self) -> None:
        """Member events carry the member (a quick return sends nothing); client events, data and user."""
        await self.endpoint(["member_added", "member_removed", "client_event"])
        token = mintToken(KEY, SECRET, ROOM, sub=True, presence={"id": "u1"})
        tab = await self.ws()
        await self.subscribe(tab, ROOM, {"token": token})
        await tab.call({"channel": "/meta/unsubscribe", "subscription": ROOM})
        await self.subscribe(tab, ROOM, {"token": token})
        publisher = await self.ws()
        pub = mintToken(KEY, SECRET, channel("chat"), pub=True, user="u7")
        reply = await publisher.call(
            {"channel": channel("chat"), "data": {"t": "h\u00e9"}, "ext": {"auth": {"token": pub}}}
        )
        self.assertTrue(reply["successful"], reply)
        # A server's publish (key and secret) is no client event.
        await publisher.call(
            {"channel": channel("chat"), "data": 2, "ext": {"auth": {"key": KEY, "secret": SECRET}}}
        )
        await tab.call({"channel": "/meta/disconnect"})
        names = await self.names(3, timeout=6)
        self.assertEqual(
            names,
            [
                ("member_added", ROOM, "u1"),
                ("client_event", channel("chat"), "u7"),
                ("member_removed", ROOM, "u1"),
            ],
        )
        self.assertEqual(self.receiver.events()[1]["data"], {"t": "h\u00e9"})

    async def test_retriedUntilTaken(self) -> None:
        """Non-2xx answers are retried with back-off; the deliveries record each attempt; events come once."""
        hook = await self.endpoint(["channel_occupied"])
        self.receiver.status = 500
        client = await self.ws()
        await self.subscribe(client, channel("a"))
        await self.subscribe(client, channel("b"))
        self.assertTrue(await eventually(lambda: len(self.receiver.attempts) >= 3, timeout=10))
        self.receiver.status = 204
        names = await self.names(2)
        self.assertEqual(
            sorted(names),
            [("channel_occupied", channel("a"), None), ("channel_occupied", channel("b"), None)],
        )
        code, deliveries = await self.admin("GET", f"application/{APP}/webhooks/{hook['id']}/deliveries")
        self.assertEqual(code, 200)
        self.assertEqual(deliveries[0]["status"], "delivered")
        self.assertEqual(deliveries[0]["http_status"], 204)
        retrying = [d for d in deliveries if d["status"] == "retrying"]
        self.assertTrue(retrying)
        self.assertEqual((retrying[-1]["http_status"], retrying[-1]["error"]), (500, "HTTP 500"))
        self.assertGreaterEqual(deliveries[0]["attempts"], 2)
        ids = [e["id"] for e in self.receiver.events()]
        self.assertEqual(len(ids), len(set(ids)))
        metrics = await (await treq.get(self.server.url + "/metrics", persistent=False)).text()
        self.assertIn("pandapush_webhook_events_sent_total 2.0", metrics)
        self.assertIn('pandapush_webhook_requests_total{outcome="retrying"}', metrics)

    async def test_localhostRefusedForAdmins(self) -> None:
        """
        An endpoint that is not root's, aimed at a name resolving to loopback, is refused when
        connecting (the name was public when it was made, say): nothing reaches the receiver.
        """
        storage: Any = self.server.service.storage
        hook = await storage.createWebhook(
            APP, f"http://localhost:{self.receiver.portNumber}/hook", ["channel_occupied"], KEY, "alice"
        )
        client = await self.ws()
        await self.subscribe(client, channel("x"))
        sender: Any = self.server.service.webhooks
        outbox = sender.outbox

        async def recorded() -> list[Any]:
            return list(await outbox.deliveries(hook.id))

        for _ in range(50):
            if await recorded():
                break
            await eventually(lambda: False, timeout=0.1)
        (delivery, *_) = await recorded()
        self.assertEqual(delivery.status, "retrying")
        self.assertIn("refused: localhost: 127.0.0.1 is loopback", delivery.error)
        self.assertEqual(self.receiver.attempts, [])
