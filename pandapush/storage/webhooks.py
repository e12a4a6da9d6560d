"""Webhooks' storage: each application's endpoints, and the outbox of events waiting to be sent.

Two interfaces, provided by the built-in storages (a third-party storage need not: the
server then runs without webhooks unless the Redis engine carries the outbox):

- :class:`IWebhookStorage`: endpoints (URL, the events wanted, the key that signs), per
  application, deleted with it; and the storage's own :class:`IWebhookOutbox`.
- :class:`IWebhookOutbox`: the durable queue between an event and its delivery. An event is
  written here before it counts as sent; every node's sender claims due events with a
  lease (a node killed mid-send: the lease runs out, another node sends them), sends them,
  and removes or reschedules them. Events of one endpoint and channel go in the order they
  were written, one batch in flight at a time: a claim takes only the heads of channels,
  every earlier event of the channel with them. A ``channel_occupied`` or ``member_added``
  written while the matching ``channel_vacated`` or ``member_removed`` still waits for its
  debounce (due later, not in flight) cancels both. The outbox also keeps each endpoint's
  recent deliveries (what the console shows, and what it can send again).

The implementations (memory, SQL, Redis) pass one conformance suite
(``tests/outbox_suite.py``). Times are milliseconds since the epoch, from the caller.
"""

from __future__ import annotations

import datetime
import secrets
import string
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zope.interface import Interface

from pandapush.storage.models import isoformat

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

__all__ = [
    "CANCELLED_BY",
    "EVENT_NAMES",
    "DeliveryRecord",
    "IWebhookOutbox",
    "IWebhookStorage",
    "Webhook",
    "WebhookEvent",
    "newDeliveryId",
    "newEventId",
    "newWebhookId",
]

#: Every event an endpoint may ask for; ``client_event`` is opt-in (never by default).
EVENT_NAMES = ("channel_occupied", "channel_vacated", "member_added", "member_removed", "client_event")

#: An event that cancels a waiting one of the same endpoint and channel (and member).
CANCELLED_BY = {"channel_occupied": "channel_vacated", "member_added": "member_removed"}

_ALPHABET = string.ascii_letters + string.digits


def _random(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def newWebhookId() -> str:
    return _random("WH", 18)


def newEventId() -> str:
    """An event's id, unique for good: receivers drop a repeat by it."""
    return _random("ev_", 22)


def newDeliveryId() -> str:
    return _random("dl_", 16)


@dataclass(frozen=True)
class Webhook:
    """
    An endpoint of an application: ``url`` (http or https), the ``events`` it wants, and
    ``key_id``, the application's key whose secret signs each request. ``allow_private``:
    made by a root admin (or the command line), it may reach loopback, private and
    link-local addresses, which other admins' endpoints may not.
    """

    id: str
    application_id: str
    url: str
    events: tuple[str, ...]
    key_id: str
    created_by: str
    created_at: datetime.datetime
    allow_private: bool = False

    def publicDict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "application_id": self.application_id,
            "url": self.url,
            "events": list(self.events),
            "key_id": self.key_id,
            "created_by": self.created_by,
            "created_at": isoformat(self.created_at),
            "allow_private": self.allow_private,
        }


@dataclass(frozen=True)
class WebhookEvent:
    """
    One event for one endpoint, as the outbox keeps it. ``id`` is the event's id as the
    receiver sees it; ``seq`` is the outbox's own order (0 until written).
    """

    id: str
    endpointId: str
    appId: str
    channel: str
    name: str
    createdMs: int
    dueMs: int
    userId: str | None = None
    data: Any = None
    attempts: int = 0
    lastError: str = ""
    seq: int = 0

    def payload(self) -> dict[str, Any]:
        """The event as the request body carries it."""
        event: dict[str, Any] = {"id": self.id, "name": self.name, "channel": self.channel}
        if self.userId is not None:
            event["user_id"] = self.userId
        if self.name == "client_event":
            event["data"] = self.data
        return event


@dataclass(frozen=True)
class DeliveryRecord:
    """
    One request to an endpoint, for the console: when, its outcome (``delivered``,
    ``retrying``, ``failed``), the HTTP status if an answer came, the events' attempts and
    the error, and the events themselves (so the console can send them again).
    """

    id: str
    endpointId: str
    timeMs: int
    status: str
    attempts: int
    events: tuple[dict[str, Any], ...]
    httpStatus: int | None = None
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def publicDict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time_ms": self.timeMs,
            "status": self.status,
            "http_status": self.httpStatus,
            "attempts": self.attempts,
            "error": self.error,
            "events": [dict(e) for e in self.events],
        }


class IWebhookOutbox(Interface):
    """The durable queue of webhook events (see the module's docstring)."""

    def add(events: Sequence[WebhookEvent], nowMs: int) -> Deferred[int]:
        """
        Write ``events`` in their order. An event named in :data:`CANCELLED_BY` whose
        endpoint and channel (and member, ``userId``) have a waiting event of the name it
        cancels, due after ``nowMs`` and not in flight, removes that one and is not
        written. Fires with how many were written.
        """

    def claim(
        owner: str, nowMs: int, leaseMs: int, limit: int, exclude: Collection[str]
    ) -> Deferred[list[WebhookEvent]]:
        """
        Lease to ``owner`` until ``nowMs + leaseMs`` at most ``limit`` due events of
        endpoints not in ``exclude``, each with every earlier event of its endpoint and
        channel (a channel whose head is not due, or in flight, gives nothing). In
        ``seq`` order. Events whose lease ran out are claimable again.
        """

    def delivered(owner: str, events: Sequence[WebhookEvent]) -> Deferred[None]:
        """Remove events ``owner`` has sent (those it no longer holds the lease of are left)."""

    def reschedule(owner: str, events: Sequence[WebhookEvent], dueMs: int, error: str) -> Deferred[None]:
        """Try the events again at ``dueMs``: one more attempt counted, ``error`` kept, lease released."""

    def discard(owner: str, events: Sequence[WebhookEvent]) -> Deferred[None]:
        """Give events up (retried for too long): removed as :meth:`delivered`."""

    def waiting() -> Deferred[int]:
        """How many events wait (due or not, in flight or not)."""

    def recordDelivery(record: DeliveryRecord, keep: int) -> Deferred[None]:
        """Remember a delivery, keeping the endpoint's ``keep`` most recent."""

    def deliveries(endpointId: str) -> Deferred[list[DeliveryRecord]]:
        """The endpoint's recent deliveries, newest first."""

    def forgetEndpoint(endpointId: str) -> Deferred[None]:
        """The endpoint was deleted: drop its waiting events and its deliveries."""


class IWebhookStorage(Interface):
    """Each application's webhook endpoints, and the storage's outbox."""

    def createWebhook(
        applicationId: str,
        url: str,
        events: Sequence[str],
        keyId: str,
        createdBy: str,
        allowPrivate: bool = False,
    ) -> Deferred[Webhook]:
        """A new endpoint. Fails with ``NoSuchApplicationError``; ``ValueError`` for an unknown event."""

    def listWebhooks(applicationId: str) -> Deferred[list[Webhook]]:
        """The application's endpoints, oldest first."""

    def getWebhook(webhookId: str) -> Deferred[Webhook | None]:
        """The endpoint, or None."""

    def deleteWebhook(webhookId: str) -> Deferred[None]:
        """Delete the endpoint. Fails with ``NoSuchWebhookError``."""

    def webhookOutbox() -> IWebhookOutbox:
        """The outbox kept in this storage (used unless the Redis engine keeps one)."""


def checkEvents(events: Any) -> tuple[str, ...]:
    """The events asked for, in :data:`EVENT_NAMES` order; ``ValueError`` names an unknown one."""
    if not isinstance(events, list | tuple) or not events or not all(isinstance(e, str) for e in events):
        raise ValueError(f"events must be a non-empty list of: {', '.join(EVENT_NAMES)}")
    unknown = sorted(set(events) - set(EVENT_NAMES))
    if unknown:
        raise ValueError(f"unknown events {', '.join(unknown)}: use {', '.join(EVENT_NAMES)}")
    return tuple(name for name in EVENT_NAMES if name in events)
