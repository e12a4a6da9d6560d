"""The webhook sender with a clock and a poster that records: back-off, giving up, stale endpoint caches."""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pandapush.auth.keycache import KeyCache
from pandapush.storage.memory import MemoryStorage
from pandapush.storage.webhooks import WebhookEvent
from pandapush.webhooks.config import WebhookConfig
from pandapush.webhooks.endpoints import WebhookEndpoints
from pandapush.webhooks.sender import WebhookSender, sign

T0 = 1_800_000_000.0


class Poster:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[bytes, bytes]]] = []
        self.status = 200

    async def post(self, url: str, body: bytes, headers: dict[bytes, bytes], allowPrivate: bool) -> int:
        self.sent.append((url, body, headers))
        return self.status

    def close(self) -> Any:
        return defer.succeed(None)


class SenderTests(TestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        self.clock = Clock()
        self.clock.advance(T0)
        self.storage = MemoryStorage()
        self.app = await self.storage.createApplication("a", "alice")
        self.key = await self.storage.createKey(self.app.id, "alice")
        self.keys = KeyCache(self.storage, self.clock)
        self.endpoints = WebhookEndpoints(self.storage, self.clock, self.keys)
        self.outbox: Any = self.storage.webhookOutbox()
        self.poster = Poster()
        poster: Any = self.poster
        config = WebhookConfig(maxAge=100.0, firstBackoff=2.0, maxBackoff=8.0)
        self.sender = WebhookSender(
            self.outbox,
            self.endpoints,
            self.keys,
            poster,
            config,
            self.clock,
            "node1",  # type: ignore[arg-type]
        )

    async def event(self, endpointId: str, channel: str = "c") -> None:
        now = int(self.clock.seconds() * 1000)
        event = WebhookEvent(
            "ev_" + channel,
            endpointId,
            self.app.id,
            f"/{self.app.id}/public/{channel}",
            "channel_occupied",
            now,
            now,
        )
        await self.outbox.add([event], now)

    async def test_staleCacheIsAskedAgain(self) -> None:
        """An endpoint this node's cache does not know (made on another node) is read again, not dropped."""
        self.assertEqual(await self.endpoints.get(self.app.id), ())  # cached: none
        hook = await self.storage.createWebhook(
            self.app.id, "https://example.com/h", ["channel_occupied"], self.key.id, "a"
        )
        await self.event(hook.id)
        self.sender.startService()
        self.addCleanup(self.sender.stopService)
        ((url, body, headers),) = self.poster.sent
        self.assertEqual((url, headers[b"X-Pandapush-Key"]), ("https://example.com/h", self.key.id.encode()))
        self.assertEqual(headers[b"X-Pandapush-Signature"], sign(self.key.secret, body).encode())
        self.assertEqual(await self.outbox.waiting(), 0)

    async def test_backOffThenGiveUp(self) -> None:
        """Failures are retried after doubling waits, with jitter; past the maximum age they are given up."""
        hook = await self.storage.createWebhook(
            self.app.id, "https://example.com/h", ["channel_occupied"], self.key.id, "a"
        )
        self.poster.status = 503
        await self.event(hook.id)
        self.sender.startService()
        self.addCleanup(self.sender.stopService)
        times: list[float] = []
        while len(times) < 5:
            before = len(self.poster.sent)
            self.clock.advance(0.05)
            if len(self.poster.sent) > before:
                times.append(self.clock.seconds())
        # The first attempt went out as the service started; these are the 2nd to 6th.
        waits = [later - earlier for earlier, later in itertools.pairwise(times)]
        for wait, ceiling in zip(waits, (4, 8, 8, 8), strict=True):
            self.assertTrue(ceiling / 2 <= wait <= ceiling + 0.6, waits)  # plus a poll interval
        latest = (await self.outbox.deliveries(hook.id))[0]
        self.assertEqual((latest.status, latest.httpStatus, latest.error), ("retrying", 503, "HTTP 503"))
        self.assertEqual(self.sender.failed, 0)
        self.clock.advance(100)
        self.assertEqual(await self.outbox.waiting(), 0)
        self.assertEqual(self.sender.failed, 1)
        self.assertEqual((await self.outbox.deliveries(hook.id))[0].status, "failed")
