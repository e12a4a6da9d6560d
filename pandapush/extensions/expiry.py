"""Subscriptions end when the token that authorised them expires, and the client is told.

A token is checked when a client subscribes; without this module a subscription made
with a token valid for an hour would go on receiving for as long as the connection
lives. :class:`SubscriptionExpiry` remembers, for every private, presence or meta
subscription granted by a token with ``exp``, the moment it ends (``exp`` plus the token
leeway, the last moment the token itself would still be accepted), in **one** heap for
the whole node with **one** timer for the earliest deadline: nothing per message,
nothing per client but a dictionary entry. At the deadline the subscription is removed
(presence announces the member's departure as for any unsubscribe) and the client gets
an unsolicited reply::

    {"channel": "/meta/unsubscribe", "clientId": ..., "subscription": "/app/private/x",
     "successful": false, "error": "401:/app/private/x:Token expired"}

Why this shape: Bayeux has no server-initiated unsubscribe, but every client hands an
unexpected meta message to its extensions (Faye's ``incoming`` hooks; CometD's
``/meta/unsubscribe`` and ``/meta/unsuccessful`` listeners), so a page can see it without a
patched client, and nothing is delivered on the channel itself, where it would reach the
application's message callbacks as data. Faye keeps believing it is subscribed (it
resubscribes only after a re-handshake) but receives nothing more; ``/client.js``
resubscribes at once with a fresh token when it has a token function, as Centrifugo's
clients refresh a subscription token, and triggers ``subscription:expired`` either way.

A client that refreshes first keeps its subscription: subscribing again to the same
channel with a newer token moves the deadline; with a key+secret (or a token without
``exp``) removes it.
"""

from __future__ import annotations

import heapq
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from pandapush.auth.bearer import DEFAULT_LEEWAY
from pandapush.auth.rules import SUBSCRIBE, parseChannel
from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.errors import BayeuxError
from pandapush.bayeux.message import subscriptionChannels
from pandapush.interfaces import IExtension, IRouter
from pandapush.listeners import EngineListener

__all__ = ["TOKEN_EXPIRED", "SubscriptionExpiry", "expiryNotice"]

Message = dict[str, Any]

TOKEN_EXPIRED = "Token expired"
UNSUBSCRIBE = "/meta/unsubscribe"


def expiryNotice(clientId: str, channel: str) -> Message:
    """The message telling ``clientId`` its subscription to ``channel`` ended with its token."""
    return {
        "channel": UNSUBSCRIBE,
        "clientId": clientId,
        "subscription": channel,
        "successful": False,
        "error": str(BayeuxError(401, [channel], TOKEN_EXPIRED)),
    }


@implementer(IExtension)
class SubscriptionExpiry(EngineListener, Service):
    """
    Ends token-granted subscriptions at their token's expiry. An extension (it sees the
    successful subscribe replies, and the tenancy extension's ``tokenExpires``) and an
    engine listener (it forgets subscriptions that end otherwise). Add it to the router
    after the tenancy extension; ``router`` is the node's :class:`~pandapush.interfaces.IRouter`
    (its ``engine`` unsubscribes, its ``notify`` tells the client). As a service, stopping
    it cancels its timer (the server is going away: nothing more to end).
    """

    _log = Logger()

    def __init__(self, router: IRouter, clock: IReactorTime, leeway: float = DEFAULT_LEEWAY) -> None:
        self.router = router
        self.engine = router.engine
        self.clock = clock
        self.leeway = leeway
        # (clientId, channel) -> deadline; the heap may hold stale entries (a deadline moved
        # or dropped), recognised when popped because they no longer match this.
        self._deadlines: dict[tuple[str, str], float] = {}
        self._byClient: dict[str, set[str]] = {}
        self._heap: list[tuple[float, str, str]] = []
        self._timer: IDelayedCall | None = None
        self._timerAt: float | None = None
        #: Subscriptions ended so far (tests, logs).
        self.expired = 0
        self._stopped = False
        self.engine.addListener(self)

    def stopService(self) -> None:
        super().stopService()
        self._stopped = True
        self._cancel()

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._timerAt = None

    def __len__(self) -> int:
        return len(self._deadlines)

    # IExtension

    def incoming(self, message: Message, context: MessageContext) -> Message:
        return message

    def outgoing(self, reply: Message, context: MessageContext) -> Message:
        if reply.get("channel") != "/meta/subscribe" or reply.get("successful") is not True:
            return reply
        clientId = reply.get("clientId")
        if not isinstance(clientId, str):
            return reply
        expires = context.attributes.get("tokenExpires")
        for channel in subscriptionChannels(reply):
            parsed = parseChannel(channel, SUBSCRIBE)
            if parsed is None or parsed.type == "public":
                continue  # public subscriptions need no token, so none can expire
            if isinstance(expires, float):
                self._schedule(clientId, channel, expires + self.leeway)
            else:
                # Granted by a key+secret or a token without exp now: no deadline any more.
                self._forget(clientId, channel)
        return reply

    # the deadlines

    def _schedule(self, clientId: str, channel: str, deadline: float) -> None:
        key = (clientId, channel)
        if key not in self._deadlines:
            self._byClient.setdefault(clientId, set()).add(channel)
        self._deadlines[key] = deadline
        heapq.heappush(self._heap, (deadline, clientId, channel))
        self._compact()
        self._arm()

    def _forget(self, clientId: str, channel: str) -> None:
        if self._deadlines.pop((clientId, channel), None) is None:
            return
        channels = self._byClient.get(clientId)
        if channels is not None:
            channels.discard(channel)
            if not channels:
                del self._byClient[clientId]
        if not self._deadlines:
            # Nothing left to end: no timer waiting for nothing, and a fresh heap.
            self._cancel()
            self._heap.clear()

    def _compact(self) -> None:
        # Refreshing tokens leaves stale heap entries behind; rebuild when they dominate,
        # so the heap stays within twice the live subscriptions.
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._deadlines):
            self._heap = [(d, c, ch) for (c, ch), d in self._deadlines.items()]
            heapq.heapify(self._heap)

    def _arm(self) -> None:
        while self._heap and self._deadlines.get((self._heap[0][1], self._heap[0][2])) != self._heap[0][0]:
            heapq.heappop(self._heap)
        if not self._heap or self._stopped:
            self._cancel()
            return
        earliest = self._heap[0][0]
        if self._timer is not None and self._timer.active():
            if self._timerAt is not None and self._timerAt <= earliest:
                return
            self._timer.cancel()
        self._timerAt = earliest
        self._timer = self.clock.callLater(max(0.0, earliest - self.clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._timer = self._timerAt = None
        now = self.clock.seconds()
        due: list[tuple[str, str]] = []
        while self._heap and self._heap[0][0] <= now:
            deadline, clientId, channel = heapq.heappop(self._heap)
            if self._deadlines.get((clientId, channel)) == deadline:
                self._forget(clientId, channel)
                due.append((clientId, channel))
        for clientId, channel in due:
            self._end(clientId, channel)
        self._arm()

    def _end(self, clientId: str, channel: str) -> None:
        def unsubscribed(had: bool) -> None:
            if not had:
                return  # gone meanwhile (unsubscribed, disconnected): nothing to tell
            self.expired += 1
            self._log.info(
                "subscription of {clientId} to {channel} ended: token expired",
                clientId=clientId,
                channel=channel,
            )
            self.router.notify(clientId, expiryNotice(clientId, channel))

        def failed(failure: Any) -> None:
            self._log.failure("could not end the expired subscription to {channel}", failure, channel=channel)

        self.engine.unsubscribe(clientId, channel).addCallbacks(unsubscribed, failed)

    # IEngineListener: subscriptions that end by other means need no deadline

    def unsubscribed(self, clientId: str, channel: str) -> None:
        self._forget(clientId, channel)

    def clientDestroyed(self, clientId: str, reason: str) -> None:
        for channel in list(self._byClient.get(clientId, ())):
            self._forget(clientId, channel)
