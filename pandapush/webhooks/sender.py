"""Sending what waits in the outbox: every node, each event once, in order per channel.

:class:`WebhookSender` is a service on every node. Every :attr:`~WebhookConfig.poll`
seconds, and at once when this node has written events, it claims due events from the
outbox with a lease (:class:`~pandapush.storage.webhooks.IWebhookOutbox`: each channel's
head, with every earlier event of the channel; channels in flight are left out) and sends
them, one request per endpoint and up to :attr:`~WebhookConfig.batch` events each, with
at most :attr:`~WebhookConfig.perEndpoint` requests in flight to one endpoint and
:attr:`~WebhookConfig.inFlight` in all. A slow or dead endpoint ties up only its own
share: others are claimed and sent meanwhile, and delivery to browsers never waits.

A ``2xx`` answer removes the events. A timeout, connection error, refused address or
other answer reschedules them after an exponential back-off with jitter; events older
than :attr:`~WebhookConfig.maxAge` are given up instead. When a request of an endpoint
fails, the endpoint's later requests of this claim are rescheduled with it (they may hold
later events of the same channels). Each request is recorded for the console.

Signing: ``X-Pandapush-Key`` names the endpoint's key, ``X-Pandapush-Signature`` is the
hex HMAC-SHA256 of the raw body under its secret (from the key cache). A node killed
mid-send loses nothing: its lease ends and another node sends the events again; the
receiver drops a repeat by the events' ids.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

import pandapush
from pandapush.auth.keycache import KeyCache
from pandapush.bayeux import json
from pandapush.storage.webhooks import DeliveryRecord, IWebhookOutbox, Webhook, WebhookEvent, newDeliveryId
from pandapush.webhooks.config import WebhookConfig
from pandapush.webhooks.endpoints import WebhookEndpoints
from pandapush.webhooks.http import AddressRefusedError, WebhookPoster

__all__ = ["WebhookSender", "sign"]

#: Seconds between reads of how many events wait (the metrics' gauge).
WAITING_INTERVAL = 5.0


def sign(secret: str, body: bytes) -> str:
    """``X-Pandapush-Signature``: hex HMAC-SHA256 of the raw body under the key's secret."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class WebhookSender(Service):
    """Claims and sends due events on this node (see the module's docstring)."""

    _log = Logger()

    def __init__(
        self,
        outbox: IWebhookOutbox,
        endpoints: WebhookEndpoints,
        keys: KeyCache,
        poster: WebhookPoster,
        config: WebhookConfig,
        clock: IReactorTime,
        owner: str | None = None,
    ) -> None:
        self.outbox = outbox
        self.endpoints = endpoints
        self.keys = keys
        self.poster = poster
        #: The outbox (tests and the console read its deliveries).
        self.config = config
        self.clock = clock
        self.owner = owner or secrets.token_hex(8)
        self._random = random.Random()
        self._inFlight: Counter[str] = Counter()
        self._sending: set[Deferred[Any]] = set()
        self._polling = False
        self._again = False
        self._wakeCall: IDelayedCall | None = None
        self._loop = task.LoopingCall(self.poll)
        self._loop.clock = clock
        self._lastWaiting = -1e9
        #: Figures for /metrics.
        self.sent = 0
        self.failed = 0
        self.requests: Counter[str] = Counter()
        self.waitingNow = 0

    def _now(self) -> int:
        return int(self.clock.seconds() * 1000)

    # the service

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.config.poll, now=True).addErrback(
            lambda f: self._log.failure("the webhook sender stopped", f)
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        if self._wakeCall is not None and self._wakeCall.active():
            self._wakeCall.cancel()
        waiting = defer.DeferredList(list(self._sending), consumeErrors=True)

        def close(_: Any) -> Deferred[Any]:
            closing = [self.poster.close()]
            closeOutbox = getattr(self.outbox, "close", None)
            if closeOutbox is not None:
                closing.append(closeOutbox())
            return defer.DeferredList(closing, consumeErrors=True)

        return waiting.addBoth(close).addCallback(lambda _: None)

    def wake(self) -> None:
        """Events were just written here: look now rather than at the next poll."""
        if self.running and (self._wakeCall is None or not self._wakeCall.active()):
            self._wakeCall = self.clock.callLater(0, self.poll)

    # claiming

    def poll(self) -> Deferred[None]:
        if self._polling:
            self._again = True
            return defer.succeed(None)
        self._polling = True
        d = Deferred.fromCoroutine(self._poll())

        def done(result: Any) -> None:
            self._polling = False
            if isinstance(result, defer.Failure):
                # Redis down is logged once by its connections; not once per poll here.
                level = self._log.debug if _redisUnavailable(result) else self._log.warn
                level("could not claim webhook events: {e}", e=result.getErrorMessage())
            elif self._again and self.running:
                self._again = False
                self.wake()

        return d.addBoth(done)

    async def _poll(self) -> None:
        await self._countWaiting()
        config = self.config
        capacity = config.inFlight - sum(self._inFlight.values())
        if capacity <= 0 or not self.running:
            return
        busy = {endpointId for endpointId, n in self._inFlight.items() if n >= config.perEndpoint}
        limit = capacity * config.batch
        events = await self.outbox.claim(self.owner, self._now(), int(config.lease * 1000), limit, busy)
        byEndpoint: dict[str, list[WebhookEvent]] = {}
        for event in events:
            byEndpoint.setdefault(event.endpointId, []).append(event)
        for endpointId, mine in byEndpoint.items():
            sending = Deferred.fromCoroutine(self._sendEndpoint(endpointId, mine))
            self._sending.add(sending)
            sending.addBoth(self._sent, sending)
        if len(events) >= limit:
            self._again = True  # more may be due

    def _sent(self, result: Any, sending: Deferred[Any]) -> None:
        self._sending.discard(sending)
        if isinstance(result, defer.Failure):
            self._log.failure("sending webhook events failed", result)
        self.wake()  # a slot is free

    async def _countWaiting(self) -> None:
        now = self.clock.seconds()
        if now - self._lastWaiting < WAITING_INTERVAL:
            return
        self._lastWaiting = now
        self.waitingNow = await self.outbox.waiting()

    # sending

    async def _sendEndpoint(self, endpointId: str, events: list[WebhookEvent]) -> None:
        self._inFlight[endpointId] += 1
        try:
            appId = events[0].appId
            endpoint = next((e for e in await self.endpoints.get(appId) if e.id == endpointId), None)
            if endpoint is None:
                # Made a moment ago on another node, its invalidation not here yet? Ask the storage.
                self.endpoints.forget(appId)
                endpoint = next((e for e in await self.endpoints.get(appId) if e.id == endpointId), None)
            if endpoint is None:
                await self.outbox.discard(self.owner, events)  # deleted since
                return
            size = self.config.batch
            chunks = [events[i : i + size] for i in range(0, len(events), size)]
            for number, chunk in enumerate(chunks):
                if not await self._deliver(endpoint, chunk):
                    later = [e for rest in chunks[number + 1 :] for e in rest]
                    if later:
                        await self.outbox.reschedule(
                            self.owner, later, self._retryAt(later), "after a failed request"
                        )
                    return
        finally:
            self._inFlight[endpointId] -= 1
            if self._inFlight[endpointId] <= 0:
                del self._inFlight[endpointId]

    def _retryAt(self, events: Sequence[WebhookEvent]) -> int:
        attempts = max(e.attempts for e in events) + 1
        config = self.config
        delay = min(config.maxBackoff, config.firstBackoff * 2 ** (attempts - 1))
        return self._now() + int(delay * 1000 * self._random.uniform(0.5, 1.0))

    async def _deliver(self, endpoint: Webhook, events: list[WebhookEvent]) -> bool:
        now = self._now()
        body = json.dumps({"time_ms": now, "events": [e.payload() for e in events]})
        status: int | None = None
        error = ""
        facts = await self.keys.get(endpoint.key_id)
        if facts is None or facts.revoked or facts.appId != endpoint.application_id:
            error = f"signing key {endpoint.key_id} is gone or revoked"
        else:
            headers = {
                b"Content-Type": b"application/json",
                b"User-Agent": f"pandapush-webhooks/{pandapush.__version__}".encode(),
                b"X-Pandapush-Key": endpoint.key_id.encode(),
                b"X-Pandapush-Signature": sign(facts.secret, body).encode(),
            }
            try:
                status = await self.poster.post(endpoint.url, body, headers, endpoint.allow_private)
            except AddressRefusedError as refused:
                error = f"refused: {refused}"
            except (TimeoutError, CancelledError):
                error = f"no answer within {self.config.timeout:g} s"
            except Exception as failure:
                error = f"{type(failure).__name__}: {failure}"
            if status is not None and not 200 <= status < 300:
                error = f"HTTP {status}"
        ok = not error
        attempts = max(e.attempts for e in events) + 1
        if ok:
            await self.outbox.delivered(self.owner, events)
            self.sent += len(events)
            outcome = "delivered"
        else:
            outcome = await self._failed(events, error, now)
        self.requests[outcome] += 1
        record = DeliveryRecord(
            newDeliveryId(),
            endpoint.id,
            now,
            outcome,
            attempts,
            tuple(e.payload() for e in events),
            status,
            error,
        )
        try:
            await self.outbox.recordDelivery(record, self.config.keepDeliveries)
        except Exception as failure:
            self._log.warn("could not record a webhook delivery: {e}", e=failure)
        return ok

    async def _failed(self, events: list[WebhookEvent], error: str, now: int) -> str:
        maxAge = int(self.config.maxAge * 1000)
        expired = [e for e in events if now - e.createdMs >= maxAge]
        retried = [e for e in events if now - e.createdMs < maxAge]
        if expired:
            await self.outbox.discard(self.owner, expired)
            self.failed += len(expired)
            self._log.warn(
                "gave up {n} webhook events for {endpoint} after {hours:g} h: {error}",
                n=len(expired),
                endpoint=expired[0].endpointId,
                hours=self.config.maxAge / 3600,
                error=error,
            )
        if retried:
            await self.outbox.reschedule(self.owner, retried, self._retryAt(retried), error)
        return "retrying" if retried else "failed"

    # /metrics (a prometheus collector)

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "pandapush_webhook_events_sent", "Webhook events delivered (2xx).", self.sent
        )
        yield CounterMetricFamily(
            "pandapush_webhook_events_failed", "Webhook events given up after retrying.", self.failed
        )
        requests = CounterMetricFamily(
            "pandapush_webhook_requests", "Webhook requests by outcome.", labels=["outcome"]
        )
        for outcome in ("delivered", "retrying", "failed"):
            requests.add_metric([outcome], self.requests[outcome])
        yield requests
        yield GaugeMetricFamily(
            "pandapush_webhook_events_waiting", "Webhook events waiting in the outbox.", value=self.waitingNow
        )


def _redisUnavailable(failure: Any) -> bool:
    # Imported only when a poll failed: a server on the memory engine, whose outbox is
    # the storage's, loads nothing of Redis (tests/test_engine_plugins.py).
    from pandapush.redis import RedisUnavailable

    return bool(failure.check(RedisUnavailable))
