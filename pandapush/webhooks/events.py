"""Turning what happens into webhook events, written to the outbox in the order it happened.

:class:`WebhookEvents` is an engine listener (occupancy and presence transitions, heard on
the one node where each happened, see ``IEngineListener``) and an extension (messages
browsers publish with a token: ``client_event``). For each, it queues one entry per
application event; one writer turns queued entries into events for every endpoint that
wants them and writes them to the outbox in one call, then the next batch: events reach
the outbox in the order they happened here, and a burst costs one write. ``vacated`` and
``member_removed`` are written due :attr:`WebhookConfig.debounce` seconds later, so that
the outbox can cancel them when the channel or member comes back (see
:class:`~pandapush.storage.webhooks.IWebhookOutbox`).

Nothing here runs per recipient or per message but a client event: channel transitions
and presence changes are rare next to messages. An event counts as sent only once it is
in the outbox; while the outbox cannot be written to, entries wait here (and are retried
every second), which is the one moment a node's death loses them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from pandapush.bayeux.channel import listedApp
from pandapush.bayeux.context import MessageContext
from pandapush.interfaces import PUBLISHES, IScopedExtension
from pandapush.listeners import EngineListener
from pandapush.storage.webhooks import IWebhookOutbox, Webhook, WebhookEvent, newEventId
from pandapush.webhooks.config import WebhookConfig
from pandapush.webhooks.endpoints import WebhookEndpoints

__all__ = ["WebhookEvents"]

Message = dict[str, Any]
#: (application, event name, channel, user id, data, when it happened in ms)
_Entry = tuple[str, str, str, str | None, Any, int]

DEBOUNCED = frozenset({"channel_vacated", "member_removed"})
CLIENT_EVENT = "client_event"
#: Seconds before writing again after the outbox failed.
RETRY_WRITE = 1.0
#: Entries kept while the outbox cannot be written to; past it the oldest are dropped (and logged).
MAX_QUEUE = 100_000


@implementer(IScopedExtension)
class WebhookEvents(EngineListener):
    """Hears events, writes them for the endpoints wanting them; ``written`` is told after each write."""

    # What the hooks act on (IScopedExtension): the router skips them for the rest.
    incomingOn: frozenset[str] = frozenset({PUBLISHES})
    outgoingOn: frozenset[str] = frozenset({PUBLISHES})

    _log = Logger()

    def __init__(
        self,
        outbox: IWebhookOutbox,
        endpoints: WebhookEndpoints,
        clock: IReactorTime,
        config: WebhookConfig,
        written: Callable[[], None] = lambda: None,
    ) -> None:
        self.outbox = outbox
        self.endpoints = endpoints
        self.clock = clock
        self.config = config
        self.written = written
        self._queue: list[_Entry] = []
        self._writing = False

    def _now(self) -> int:
        return int(self.clock.seconds() * 1000)

    # engine events

    def channelOccupied(self, channel: str) -> None:
        self._heard("channel_occupied", channel)

    def channelVacated(self, channel: str) -> None:
        self._heard("channel_vacated", channel)

    def memberJoined(self, channel: str, memberId: str, data: Any, clientId: str) -> None:
        self._heard("member_added", channel, memberId)

    def memberLeft(self, channel: str, memberId: str) -> None:
        self._heard("member_removed", channel, memberId)

    def _heard(self, name: str, channel: str, userId: str | None = None, data: Any = None) -> None:
        app = listedApp(channel)
        if app is None:
            return
        known, endpoints = self.endpoints.peek(app)
        if known and not any(name in e.events for e in endpoints or ()):
            return  # nobody wants it (the common case: an application without webhooks)
        self._queue.append((app, name, channel, userId, data, self._now()))
        if len(self._queue) > MAX_QUEUE:
            dropped = len(self._queue) - MAX_QUEUE
            del self._queue[:dropped]
            self._log.warn("the webhook outbox is unavailable: dropped {n} events", n=dropped)
        self._write()

    # client events (a browser's publish with a token)

    def incoming(self, message: Message, context: MessageContext) -> Message:
        if "error" not in message and context.attributes.get("byToken"):
            channel = message.get("channel")
            if isinstance(channel, str) and listedApp(channel) is not None:
                context.attributes["clientEvent"] = (channel, message.get("data"))
        return message

    def outgoing(self, reply: Message, context: MessageContext) -> Message:
        event = context.attributes.get("clientEvent")
        if event is not None and reply.get("successful") and reply.get("channel") == event[0]:
            user = context.attributes.get("user")
            self._heard(CLIENT_EVENT, event[0], user if isinstance(user, str) else None, event[1])
        return reply

    # writing

    def _write(self) -> None:
        if self._writing or not self._queue:
            return
        self._writing = True
        batch, self._queue = self._queue, []
        d = defer.Deferred.fromCoroutine(self._writeBatch(batch))

        def done(result: Any) -> None:
            self._writing = False
            if isinstance(result, defer.Failure):
                self._log.warn(
                    "could not write webhook events: {e}; trying again", e=result.getErrorMessage()
                )
                self._queue[:0] = batch  # back in front: order kept
                self.clock.callLater(RETRY_WRITE, self._write)
                return
            self.written()
            self._write()

        d.addBoth(done)

    async def _writeBatch(self, batch: list[_Entry]) -> None:
        wanted: dict[str, tuple[Webhook, ...]] = {}
        for app in dict.fromkeys(entry[0] for entry in batch):
            wanted[app] = await self.endpoints.get(app)
        debounce = int(self.config.debounce * 1000)
        events: list[WebhookEvent] = []
        for app, name, channel, userId, data, when in batch:
            for endpoint in wanted[app]:
                if name not in endpoint.events:
                    continue
                events.append(
                    WebhookEvent(
                        id=newEventId(),
                        endpointId=endpoint.id,
                        appId=app,
                        channel=channel,
                        name=name,
                        createdMs=when,
                        dueMs=when + (debounce if name in DEBOUNCED else 0),
                        userId=userId,
                        data=data,
                    )
                )
        if events:
            await self.outbox.add(events, self._now())

    def pending(self) -> int:
        """Entries heard but not written yet (tests, diagnostics)."""
        return len(self._queue) + (1 if self._writing else 0)
