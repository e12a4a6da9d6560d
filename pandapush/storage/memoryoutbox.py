"""The webhook outbox in this process's memory: for the memory storage (tests, throwaway servers).

The same semantics as the SQL and Redis outboxes (one conformance suite), in dicts: events
by ``seq``, a queue of seqs per (endpoint, channel), leases as (owner, until). Nothing
survives a restart; a server that must not lose webhooks uses a database or Redis.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Collection, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from pandapush.storage.errors import NoSuchApplicationError, NoSuchWebhookError
from pandapush.storage.webhooks import (
    CANCELLED_BY,
    DeliveryRecord,
    IWebhookOutbox,
    Webhook,
    WebhookEvent,
    checkEvents,
    newWebhookId,
)

__all__ = ["MemoryOutbox", "MemoryWebhooks"]

#: How far back from a channel's newest event an add looks for one it cancels.
CANCEL_SCAN = 50


@dataclasses.dataclass
class _Entry:
    event: WebhookEvent
    owner: str = ""
    until: int = 0


@implementer(IWebhookOutbox)
class MemoryOutbox:
    def __init__(self) -> None:
        self._seq = 0
        self._entries: dict[int, _Entry] = {}
        self._queues: dict[tuple[str, str], list[int]] = {}
        self._deliveries: dict[str, list[DeliveryRecord]] = {}

    def add(self, events: Sequence[WebhookEvent], nowMs: int) -> Deferred[int]:
        written = 0
        for event in events:
            key = (event.endpointId, event.channel)
            queue = self._queues.setdefault(key, [])
            if event.name in CANCELLED_BY and self._cancel(queue, event, nowMs):
                if not queue:
                    del self._queues[key]
                continue
            self._seq += 1
            self._entries[self._seq] = _Entry(dataclasses.replace(event, seq=self._seq))
            queue.append(self._seq)
            written += 1
        return defer.succeed(written)

    def _cancel(self, queue: list[int], event: WebhookEvent, nowMs: int) -> bool:
        cancels = CANCELLED_BY[event.name]
        for position in range(len(queue) - 1, max(-1, len(queue) - 1 - CANCEL_SCAN), -1):
            entry = self._entries[queue[position]]
            waiting = entry.event
            if entry.until > nowMs:
                return False  # in flight: it and what is before it are going out
            if waiting.name == cancels and waiting.userId == event.userId and waiting.dueMs > nowMs:
                del queue[position]
                del self._entries[waiting.seq]
                return True
        return False

    def claim(
        self, owner: str, nowMs: int, leaseMs: int, limit: int, exclude: Collection[str]
    ) -> Deferred[list[WebhookEvent]]:
        taken: list[_Entry] = []
        for (endpointId, _), queue in sorted(self._queues.items(), key=lambda item: item[1][0]):
            if endpointId in exclude:
                continue
            for seq in queue:
                entry = self._entries[seq]
                if len(taken) >= limit or entry.event.dueMs > nowMs or entry.until > nowMs:
                    break
                taken.append(entry)
        for entry in taken:
            entry.owner, entry.until = owner, nowMs + leaseMs
        return defer.succeed(sorted((e.event for e in taken), key=lambda e: e.seq))

    def _owned(self, owner: str, events: Sequence[WebhookEvent]) -> list[_Entry]:
        found = (self._entries.get(e.seq) for e in events)
        return [entry for entry in found if entry is not None and entry.owner == owner]

    def delivered(self, owner: str, events: Sequence[WebhookEvent]) -> Deferred[None]:
        for entry in self._owned(owner, events):
            event = entry.event
            del self._entries[event.seq]
            key = (event.endpointId, event.channel)
            queue = self._queues[key]
            queue.remove(event.seq)
            if not queue:
                del self._queues[key]
        return defer.succeed(None)

    def reschedule(
        self, owner: str, events: Sequence[WebhookEvent], dueMs: int, error: str
    ) -> Deferred[None]:
        for entry in self._owned(owner, events):
            event = entry.event
            entry.event = dataclasses.replace(
                event, dueMs=dueMs, attempts=event.attempts + 1, lastError=error
            )
            entry.owner, entry.until = "", 0
        return defer.succeed(None)

    def discard(self, owner: str, events: Sequence[WebhookEvent]) -> Deferred[None]:
        return self.delivered(owner, events)

    def waiting(self) -> Deferred[int]:
        return defer.succeed(len(self._entries))

    def recordDelivery(self, record: DeliveryRecord, keep: int) -> Deferred[None]:
        records = self._deliveries.setdefault(record.endpointId, [])
        records.insert(0, record)
        del records[keep:]
        return defer.succeed(None)

    def deliveries(self, endpointId: str) -> Deferred[list[DeliveryRecord]]:
        return defer.succeed(list(self._deliveries.get(endpointId, ())))

    def forgetEndpoint(self, endpointId: str) -> Deferred[None]:
        for key in [k for k in self._queues if k[0] == endpointId]:
            for seq in self._queues.pop(key):
                del self._entries[seq]
        self._deliveries.pop(endpointId, None)
        return defer.succeed(None)


class MemoryWebhooks:
    """The webhook half of the memory storage (:class:`~pandapush.storage.webhooks.IWebhookStorage`)."""

    _apps: dict[str, Any]
    _now: Callable[[], datetime.datetime]

    def _startWebhooks(self) -> None:
        self._webhooks: dict[str, Webhook] = {}
        self._outbox = MemoryOutbox()

    def createWebhook(
        self,
        applicationId: str,
        url: str,
        events: Sequence[str],
        keyId: str,
        createdBy: str,
        allowPrivate: bool = False,
    ) -> Deferred[Webhook]:
        if applicationId not in self._apps:
            return defer.fail(NoSuchApplicationError(applicationId))
        try:
            wanted = checkEvents(list(events))
        except ValueError:
            return defer.fail()
        webhook = Webhook(
            newWebhookId(),
            applicationId,
            url,
            wanted,
            keyId,
            createdBy or "",
            self._now(),
            bool(allowPrivate),
        )
        self._webhooks[webhook.id] = webhook
        return defer.succeed(webhook)

    def listWebhooks(self, applicationId: str) -> Deferred[list[Webhook]]:
        found = [w for w in self._webhooks.values() if w.application_id == applicationId]
        return defer.succeed(sorted(found, key=lambda w: (w.created_at, w.id)))

    def getWebhook(self, webhookId: str) -> Deferred[Webhook | None]:
        return defer.succeed(self._webhooks.get(webhookId))

    def deleteWebhook(self, webhookId: str) -> Deferred[None]:
        if self._webhooks.pop(webhookId, None) is None:
            return defer.fail(NoSuchWebhookError(webhookId))
        return self._outbox.forgetEndpoint(webhookId)

    def _deleteWebhooksOf(self, applicationId: str) -> None:
        for webhook in [w for w in self._webhooks.values() if w.application_id == applicationId]:
            del self._webhooks[webhook.id]
            self._outbox.forgetEndpoint(webhook.id)

    def webhookOutbox(self) -> IWebhookOutbox:
        return self._outbox
