"""Webhooks in SQL: endpoints, the outbox and recent deliveries (SQLite and PostgreSQL).

:class:`WebhookQueries` holds the transactions (``*_txn``, run in a database thread as
:mod:`pandapush.storage._queries`' are); :class:`SQLWebhooks` is the
:class:`~pandapush.storage.webhooks.IWebhookStorage` half of ``SQLStorage``, and
:class:`SQLOutbox` the outbox, both reaching the database through ``SQLStorage._run``.

A claim must not interleave with another node's: two claims reading the same heads
would both send them. PostgreSQL takes a transaction-scoped advisory lock first
(``Dialect.lockOutbox_txn``); SQLite's write transactions (``BEGIN IMMEDIATE``) are
serialised already.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from pandapush.bayeux import json
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

if TYPE_CHECKING:
    from pandapush.storage._sql import Dialect

__all__ = ["SQLOutbox", "SQLWebhooks", "WebhookQueries"]

_WEBHOOK_COLUMNS = "id, application_id, url, events, key_id, created_by, created_at, allow_private"
_EVENT_COLUMNS = ", ".join(
    "seq event_id endpoint_id app_id channel name user_id data created_ms due_ms attempts last_error".split()
)
#: How far back from a channel's newest event an add looks for one it cancels.
CANCEL_SCAN = 50


class WebhookQueries:
    def __init__(self, dialect: Dialect, now: Callable[[], datetime.datetime]) -> None:
        self.dialect = dialect
        self.now = now

    def execute(self, txn: Any, query: str, params: Sequence[Any] = ()) -> None:
        txn.execute(self.dialect.sql(query), tuple(params))

    def webhook(self, row: Sequence[Any]) -> Webhook:
        created = self.dialect.fromDb(row[6])
        assert created is not None
        return Webhook(
            row[0], row[1], row[2], tuple(row[3].split()), row[4], row[5] or "", created, bool(row[7])
        )

    @staticmethod
    def event(row: Sequence[Any]) -> WebhookEvent:
        return WebhookEvent(
            id=row[1],
            endpointId=row[2],
            appId=row[3],
            channel=row[4],
            name=row[5],
            userId=row[6],
            data=json.loads(row[7]) if row[7] is not None else None,
            createdMs=int(row[8]),
            dueMs=int(row[9]),
            attempts=int(row[10]),
            lastError=row[11] or "",
            seq=int(row[0]),
        )

    # endpoints

    def createWebhook_txn(
        self, txn: Any, appId: str, url: str, events: tuple[str, ...], keyId: str, createdBy: str, allow: bool
    ) -> Webhook:
        self.execute(txn, "SELECT 1 FROM applications WHERE id = ?", (appId,))
        if txn.fetchone() is None:
            raise NoSuchApplicationError(appId)
        webhookId = newWebhookId()
        self.execute(
            txn,
            f"INSERT INTO webhooks ({_WEBHOOK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (webhookId, appId, url, " ".join(events), keyId, createdBy, self.dialect.toDb(self.now()), allow),
        )
        found = self.getWebhook_txn(txn, webhookId)
        assert found is not None
        return found

    def listWebhooks_txn(self, txn: Any, appId: str) -> list[Webhook]:
        self.execute(
            txn,
            f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE application_id = ? ORDER BY created_at, id",
            (appId,),
        )
        return [self.webhook(row) for row in txn.fetchall()]

    def getWebhook_txn(self, txn: Any, webhookId: str) -> Webhook | None:
        self.execute(txn, f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?", (webhookId,))
        row = txn.fetchone()
        return None if row is None else self.webhook(row)

    def deleteWebhook_txn(self, txn: Any, webhookId: str) -> None:
        self.forgetEndpoint_txn(txn, webhookId)
        self.execute(txn, "DELETE FROM webhooks WHERE id = ?", (webhookId,))
        if txn.rowcount == 0:
            raise NoSuchWebhookError(webhookId)

    # the outbox

    def add_txn(self, txn: Any, events: Sequence[WebhookEvent], nowMs: int) -> int:
        written = 0
        for event in events:
            if event.name in CANCELLED_BY and self._cancel_txn(txn, event, nowMs):
                continue
            self.execute(
                txn,
                "INSERT INTO webhook_outbox (event_id, endpoint_id, app_id, channel, name, user_id, data,"
                " created_ms, due_ms, attempts, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event.id,
                    event.endpointId,
                    event.appId,
                    event.channel,
                    event.name,
                    event.userId,
                    None if event.data is None else json.dumps(event.data).decode(),
                    event.createdMs,
                    event.dueMs,
                    event.attempts,
                    event.lastError,
                ),
            )
            written += 1
        return written

    def _cancel_txn(self, txn: Any, event: WebhookEvent, nowMs: int) -> bool:
        self.execute(
            txn,
            "SELECT seq, name, user_id, due_ms, leased_until_ms FROM webhook_outbox"
            " WHERE endpoint_id = ? AND channel = ? ORDER BY seq DESC LIMIT ?",
            (event.endpointId, event.channel, CANCEL_SCAN),
        )
        cancels = CANCELLED_BY[event.name]
        for seq, name, userId, dueMs, leasedUntil in txn.fetchall():
            if int(leasedUntil) > nowMs:
                return False  # in flight: it and what is before it are going out
            if name == cancels and userId == event.userId and int(dueMs) > nowMs:
                self.execute(txn, "DELETE FROM webhook_outbox WHERE seq = ?", (seq,))
                return True
        return False

    def anyDue_txn(self, txn: Any, nowMs: int) -> bool:
        self.execute(
            txn,
            "SELECT 1 FROM webhook_outbox WHERE due_ms <= ? AND leased_until_ms <= ? LIMIT 1",
            (nowMs, nowMs),
        )
        return txn.fetchone() is not None

    def claim_txn(
        self, txn: Any, owner: str, nowMs: int, leaseMs: int, limit: int, exclude: Collection[str]
    ) -> list[WebhookEvent]:
        self.dialect.lockOutbox_txn(txn)
        excluded = ""
        if exclude:
            excluded = f" AND o.endpoint_id NOT IN ({', '.join('?' for _ in exclude)})"
        self.execute(
            txn,
            f"SELECT {', '.join('o.' + c for c in _EVENT_COLUMNS.split(', '))} FROM webhook_outbox o"
            f" WHERE o.due_ms <= ? AND o.leased_until_ms <= ?{excluded}"
            " AND NOT EXISTS (SELECT 1 FROM webhook_outbox p WHERE p.endpoint_id = o.endpoint_id"
            " AND p.channel = o.channel AND p.seq < o.seq AND (p.due_ms > ? OR p.leased_until_ms > ?))"
            " ORDER BY o.seq LIMIT ?",
            (nowMs, nowMs, *exclude, nowMs, nowMs, limit),
        )
        events = [self.event(row) for row in txn.fetchall()]
        for event in events:
            self.execute(
                txn,
                "UPDATE webhook_outbox SET lease_owner = ?, leased_until_ms = ? WHERE seq = ?",
                (owner, nowMs + leaseMs, event.seq),
            )
        return events

    def remove_txn(self, txn: Any, owner: str, seqs: Sequence[int]) -> None:
        for seq in seqs:
            self.execute(txn, "DELETE FROM webhook_outbox WHERE seq = ? AND lease_owner = ?", (seq, owner))

    def reschedule_txn(self, txn: Any, owner: str, seqs: Sequence[int], dueMs: int, error: str) -> None:
        for seq in seqs:
            self.execute(
                txn,
                "UPDATE webhook_outbox SET due_ms = ?, attempts = attempts + 1, last_error = ?,"
                " lease_owner = '', leased_until_ms = 0 WHERE seq = ? AND lease_owner = ?",
                (dueMs, error[:1000], seq, owner),
            )

    def waiting_txn(self, txn: Any) -> int:
        self.execute(txn, "SELECT COUNT(*) FROM webhook_outbox")
        return int(txn.fetchone()[0])

    def recordDelivery_txn(self, txn: Any, record: DeliveryRecord, keep: int) -> None:
        self.execute(
            txn,
            "INSERT INTO webhook_deliveries (id, endpoint_id, time_ms, status, http_status, attempts, error,"
            " events) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.endpointId,
                record.timeMs,
                record.status,
                record.httpStatus,
                record.attempts,
                record.error[:1000],
                json.dumps(list(record.events)).decode(),
            ),
        )
        self.execute(
            txn,
            "DELETE FROM webhook_deliveries WHERE endpoint_id = ? AND id NOT IN (SELECT id FROM"
            " webhook_deliveries WHERE endpoint_id = ? ORDER BY time_ms DESC, id DESC LIMIT ?)",
            (record.endpointId, record.endpointId, keep),
        )

    def deliveries_txn(self, txn: Any, endpointId: str) -> list[DeliveryRecord]:
        self.execute(
            txn,
            "SELECT id, endpoint_id, time_ms, status, attempts, events, http_status, error FROM"
            " webhook_deliveries WHERE endpoint_id = ? ORDER BY time_ms DESC, id DESC",
            (endpointId,),
        )
        return [
            DeliveryRecord(r[0], r[1], int(r[2]), r[3], int(r[4]), tuple(json.loads(r[5])), r[6], r[7] or "")
            for r in txn.fetchall()
        ]

    def forgetEndpoint_txn(self, txn: Any, endpointId: str) -> None:
        self.execute(txn, "DELETE FROM webhook_outbox WHERE endpoint_id = ?", (endpointId,))
        self.execute(txn, "DELETE FROM webhook_deliveries WHERE endpoint_id = ?", (endpointId,))


_Run = Callable[..., Deferred[Any]]


@implementer(IWebhookOutbox)
class SQLOutbox:
    """The outbox in the database, through the storage's ``_run`` (one transaction per call)."""

    def __init__(self, run: _Run, queries: WebhookQueries) -> None:
        self._run = run
        self._queries = queries

    def add(self, events: Sequence[WebhookEvent], nowMs: int) -> Deferred[int]:
        return self._run(True, self._queries.add_txn, list(events), nowMs)

    def claim(
        self, owner: str, nowMs: int, leaseMs: int, limit: int, exclude: Collection[str]
    ) -> Deferred[list[WebhookEvent]]:
        # Every node asks twice a second: a read says whether anything is due, and only
        # then a write transaction claims (SQLite has one writer at a time).
        def claimIfDue(due: bool) -> Any:
            if not due:
                return []
            return self._run(True, self._queries.claim_txn, owner, nowMs, leaseMs, limit, sorted(exclude))

        return self._run(False, self._queries.anyDue_txn, nowMs).addCallback(claimIfDue)

    def delivered(self, owner: str, events: Sequence[WebhookEvent]) -> Deferred[None]:
        return self._run(True, self._queries.remove_txn, owner, [e.seq for e in events])

    def reschedule(
        self, owner: str, events: Sequence[WebhookEvent], dueMs: int, error: str
    ) -> Deferred[None]:
        return self._run(True, self._queries.reschedule_txn, owner, [e.seq for e in events], dueMs, error)

    def discard(self, owner: str, events: Sequence[WebhookEvent]) -> Deferred[None]:
        return self.delivered(owner, events)

    def waiting(self) -> Deferred[int]:
        return self._run(False, self._queries.waiting_txn)

    def recordDelivery(self, record: DeliveryRecord, keep: int) -> Deferred[None]:
        return self._run(True, self._queries.recordDelivery_txn, record, keep)

    def deliveries(self, endpointId: str) -> Deferred[list[DeliveryRecord]]:
        return self._run(False, self._queries.deliveries_txn, endpointId)

    def forgetEndpoint(self, endpointId: str) -> Deferred[None]:
        return self._run(True, self._queries.forgetEndpoint_txn, endpointId)


class SQLWebhooks:
    """The :class:`~pandapush.storage.webhooks.IWebhookStorage` half of ``SQLStorage``."""

    _run: _Run
    webhookQueries: WebhookQueries

    def createWebhook(
        self,
        applicationId: str,
        url: str,
        events: Sequence[str],
        keyId: str,
        createdBy: str,
        allowPrivate: bool = False,
    ) -> Deferred[Webhook]:
        try:
            wanted = checkEvents(list(events))
        except ValueError:
            return defer.fail()
        return self._run(
            True,
            self.webhookQueries.createWebhook_txn,
            applicationId,
            url,
            wanted,
            keyId,
            createdBy or "",
            bool(allowPrivate),
        )

    def listWebhooks(self, applicationId: str) -> Deferred[list[Webhook]]:
        return self._run(False, self.webhookQueries.listWebhooks_txn, applicationId)

    def getWebhook(self, webhookId: str) -> Deferred[Webhook | None]:
        return self._run(False, self.webhookQueries.getWebhook_txn, webhookId)

    def deleteWebhook(self, webhookId: str) -> Deferred[None]:
        return self._run(True, self.webhookQueries.deleteWebhook_txn, webhookId)

    def webhookOutbox(self) -> IWebhookOutbox:
        return SQLOutbox(self._run, self.webhookQueries)
