"""Subscriptions end when what authorised them ends, and the client is told.

Credentials are checked when a client subscribes; without this module a subscription
would go on receiving for as long as the connection lives, whatever became of them.
:class:`SubscriptionExpiry` remembers, for every private, presence or meta subscription,
the key that granted it (directly, or by signing the token) and when it ends:

- at the token's ``exp`` plus the token leeway (the last moment the token itself would
  still be accepted), or at the key's own expiry date, whichever comes first: kept in
  **one** heap for the whole node with **one** timer for the earliest deadline, nothing
  per message, nothing per client but a dictionary entry;
- when the key is revoked, deleted, or its expiry moved into the past: the key cache's
  invalidations (the admin API and the ``pandapush`` command make one on every change,
  and :mod:`pandapush.auth.keysync` carries them to every node at once) make this module
  read the key again, and end every subscription it granted on this node if the key no
  longer passes :func:`~pandapush.auth.rules.checkKey`. A change nobody announced is
  found as the key cache finds it: the keys are read again every cache TTL (so within two).

The subscription is removed (presence announces the member's departure as for any
unsubscribe) and the client gets an unsolicited reply::

    {"channel": "/meta/unsubscribe", "clientId": ..., "subscription": "/app/private/x",
     "successful": false, "error": "401:/app/private/x:Token expired"}

with the text of the contract's refusal for the same cause: ``Token expired`` (the token's
``exp``), ``Expired key``, ``Revoked key``, ``Could not find key`` (deleted), so that a
client reads the same reason its next subscribe would be refused with.

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
``exp``) removes it. A node knows the subscriptions it granted: with the Redis engine, one
granted by a node that has since gone is not ended (``HARDENING-TODO.md``).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from pandapush.auth.bearer import DEFAULT_LEEWAY
from pandapush.auth.keycache import KeyCache
from pandapush.auth.rules import SUBSCRIBE, KeyFacts, Refusal, checkKey, parseChannel
from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.errors import BayeuxError
from pandapush.bayeux.message import SUBSCRIBE as SUBSCRIBE_CHANNEL
from pandapush.bayeux.message import subscriptionChannels
from pandapush.interfaces import IRouter, IScopedExtension
from pandapush.listeners import EngineListener

__all__ = ["TOKEN_EXPIRED", "SubscriptionExpiry", "expiryNotice"]

Message = dict[str, Any]
Subscription = tuple[str, str]  # (clientId, channel)

TOKEN_EXPIRED = "Token expired"
UNSUBSCRIBE = "/meta/unsubscribe"


def expiryNotice(clientId: str, channel: str, reason: str = TOKEN_EXPIRED) -> Message:
    """The message telling ``clientId`` its subscription to ``channel`` ended, and why."""
    return {
        "channel": UNSUBSCRIBE,
        "clientId": clientId,
        "subscription": channel,
        "successful": False,
        "error": str(BayeuxError(401, [channel], reason)),
    }


@dataclass
class _Grant:
    """What authorised one subscription: the key, and when the token and the key end."""

    keyId: str
    appId: str
    tokenEnds: float | None
    keyEnds: float | None

    @property
    def deadline(self) -> float | None:
        ends = [t for t in (self.tokenEnds, self.keyEnds) if t is not None]
        return min(ends) if ends else None

    @property
    def reason(self) -> str:
        if self.keyEnds is not None and (self.tokenEnds is None or self.keyEnds < self.tokenEnds):
            return Refusal.EXPIRED_KEY.text
        return TOKEN_EXPIRED


class _Grants:
    """Every subscription this node granted with a key, by subscription, client and key."""

    def __init__(self) -> None:
        self.grants: dict[Subscription, _Grant] = {}
        self.byClient: dict[str, set[str]] = {}
        self.byKey: dict[str, set[Subscription]] = {}

    def __len__(self) -> int:
        return len(self.grants)

    def get(self, subscription: Subscription) -> _Grant | None:
        return self.grants.get(subscription)

    def add(self, subscription: Subscription, grant: _Grant) -> None:
        self.discard(subscription)
        self.grants[subscription] = grant
        self.byClient.setdefault(subscription[0], set()).add(subscription[1])
        self.byKey.setdefault(grant.keyId, set()).add(subscription)

    def discard(self, subscription: Subscription) -> _Grant | None:
        grant = self.grants.pop(subscription, None)
        if grant is None:
            return None
        clientId, channel = subscription
        channels = self.byClient.get(clientId)
        if channels is not None:
            channels.discard(channel)
            if not channels:
                del self.byClient[clientId]
        granted = self.byKey.get(grant.keyId)
        if granted is not None:
            granted.discard(subscription)
            if not granted:
                del self.byKey[grant.keyId]
        return grant

    def ofClient(self, clientId: str) -> list[Subscription]:
        return [(clientId, channel) for channel in self.byClient.get(clientId, ())]

    def ofKey(self, keyId: str) -> list[Subscription]:
        return list(self.byKey.get(keyId, ()))

    def keysOf(self, appId: str | None) -> list[str]:
        """The keys that granted subscriptions here: of ``appId``, or (None) all of them."""
        return [
            keyId
            for keyId, subscriptions in self.byKey.items()
            if appId is None or any(self.grants[s].appId == appId for s in subscriptions)
        ]


@implementer(IScopedExtension)
class SubscriptionExpiry(EngineListener, Service):
    """
    Ends subscriptions when their token or key ends. An extension (it sees the successful
    subscribe replies, and the tenancy extension's ``keyId``, ``tokenExpires`` and
    ``keyExpires``) and an engine listener (it forgets subscriptions that end otherwise).
    Add it to the router after the tenancy extension; ``router`` is the node's
    :class:`~pandapush.interfaces.IRouter` (its ``engine`` unsubscribes, its ``notify``
    tells the client); ``keys``, the node's key cache, tells of keys changed (None: only
    deadlines are kept). As a service, stopping it cancels its timer (the server is going
    away: nothing more to end).
    """

    # What the hooks act on (IScopedExtension): the router skips them for the rest.
    incomingOn: frozenset[str] = frozenset()
    outgoingOn: frozenset[str] = frozenset({SUBSCRIBE_CHANNEL})

    _log = Logger()

    def __init__(
        self,
        router: IRouter,
        clock: IReactorTime,
        leeway: float = DEFAULT_LEEWAY,
        keys: KeyCache | None = None,
    ) -> None:
        self.router = router
        self.engine = router.engine
        self.clock = clock
        self.leeway = leeway
        self.keys = keys
        self._grants = _Grants()
        # (deadline, clientId, channel); may hold stale entries (a deadline moved or
        # dropped), recognised when popped because they no longer match the grant's.
        self._heap: list[tuple[float, str, str]] = []
        self._deadlines = 0
        self._timer: IDelayedCall | None = None
        self._timerAt: float | None = None
        #: Subscriptions ended so far (tests, logs).
        self.expired = 0
        self._stopped = False
        self._rereading: LoopingCall | None = None
        self.engine.addListener(self)
        if keys is not None:
            keys.addKeyObserver(self._keyChanged)
            keys.addApplicationObserver(self._applicationChanged)

    def startService(self) -> None:
        super().startService()
        if self.keys is not None and self.keys.ttl > 0:
            # Changes nobody announced (made in the database directly, or by the command
            # without REDIS_HOSTS) are found as the key cache finds them: a read every TTL
            # sees what is at most a TTL old, so within two.
            self._rereading = LoopingCall(self._rereadAll)
            self._rereading.clock = self.clock
            self._rereading.start(self.keys.ttl, now=False)

    def stopService(self) -> None:
        super().stopService()
        self._stopped = True
        self._cancel()
        if self._rereading is not None and self._rereading.running:
            self._rereading.stop()

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._timerAt = None

    def __len__(self) -> int:
        """Subscriptions with a deadline."""
        return self._deadlines

    @property
    def granted(self) -> int:
        """Subscriptions this node granted with a key (they end if it is revoked)."""
        return len(self._grants)

    # IExtension

    def incoming(self, message: Message, context: MessageContext) -> Message:
        return message

    def outgoing(self, reply: Message, context: MessageContext) -> Message:
        if reply.get("channel") != "/meta/subscribe" or reply.get("successful") is not True:
            return reply
        clientId = reply.get("clientId")
        if not isinstance(clientId, str):
            return reply
        attributes = context.attributes
        keyId = attributes.get("keyId")
        tokenExpires = attributes.get("tokenExpires")
        keyExpires = attributes.get("keyExpires")
        for channel in subscriptionChannels(reply):
            parsed = parseChannel(channel, SUBSCRIBE)
            if parsed is None or parsed.type == "public":
                continue  # anyone may subscribe to public channels: nothing to take back
            if not isinstance(keyId, str):
                self._forget((clientId, channel))
                continue
            grant = _Grant(
                keyId,
                parsed.appId,
                tokenExpires + self.leeway if isinstance(tokenExpires, float) else None,
                keyExpires if isinstance(keyExpires, float) else None,
            )
            self._grant((clientId, channel), grant)
        return reply

    # the grants and their deadlines

    def _grant(self, subscription: Subscription, grant: _Grant) -> None:
        self._forget(subscription)
        self._grants.add(subscription, grant)
        deadline = grant.deadline
        if deadline is not None:
            self._deadlines += 1
            heapq.heappush(self._heap, (deadline, *subscription))
            self._compact()
            self._arm()

    def _forget(self, subscription: Subscription) -> _Grant | None:
        grant = self._grants.discard(subscription)
        if grant is not None and grant.deadline is not None:
            self._deadlines -= 1
            if not self._deadlines:
                # Nothing left to end: no timer waiting for nothing, and a fresh heap.
                self._cancel()
                self._heap.clear()
        return grant

    def _current(self, entry: tuple[float, str, str]) -> bool:
        grant = self._grants.get((entry[1], entry[2]))
        return grant is not None and grant.deadline == entry[0]

    def _compact(self) -> None:
        # Refreshing tokens leaves stale heap entries behind; rebuild when they dominate,
        # so the heap stays within twice the live deadlines.
        if len(self._heap) > 64 and len(self._heap) > 2 * self._deadlines:
            self._heap = [e for e in self._heap if self._current(e)]
            heapq.heapify(self._heap)

    def _arm(self) -> None:
        while self._heap and not self._current(self._heap[0]):
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
        due: list[tuple[Subscription, str]] = []
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            if self._current(entry):
                subscription = (entry[1], entry[2])
                grant = self._forget(subscription)
                assert grant is not None
                due.append((subscription, grant.reason))
        for subscription, reason in due:
            self._end(subscription, reason)
        self._arm()

    def _end(self, subscription: Subscription, reason: str) -> None:
        clientId, channel = subscription

        def unsubscribed(had: bool) -> None:
            if not had:
                return  # gone meanwhile (unsubscribed, disconnected): nothing to tell
            self.expired += 1
            self._log.info(
                "subscription of {clientId} to {channel} ended: {reason}",
                clientId=clientId,
                channel=channel,
                reason=reason,
            )
            self.router.notify(clientId, expiryNotice(clientId, channel, reason))

        def failed(failure: Any) -> None:
            self._log.failure("could not end the subscription to {channel}", failure, channel=channel)

        self.engine.unsubscribe(clientId, channel).addCallbacks(unsubscribed, failed)

    # keys changed (here, or on another node through key sync)

    def _keyChanged(self, keyId: str) -> None:
        if self._grants.ofKey(keyId):
            self._recheck(keyId)

    def _applicationChanged(self, appId: str | None) -> None:
        # An application changed or went (None: the whole key cache was cleared, after
        # key sync lost Redis and may have missed invalidations): read its keys again.
        for keyId in self._grants.keysOf(appId):
            self._recheck(keyId)

    def _rereadAll(self) -> None:
        for keyId in self._grants.keysOf(None):
            self._recheck(keyId, changed=False)

    def _recheck(self, keyId: str, changed: bool = True) -> None:
        assert self.keys is not None

        def failed(failure: Any) -> None:
            # Storage down: what became of the key cannot be told; its subscriptions stay.
            # (The key cache logs the outage once; a change announced meanwhile is worth a line.)
            if changed:
                self._log.warn(
                    "could not read key {keyId} again after a change: {why}",
                    keyId=keyId,
                    why=failure.getErrorMessage(),
                )

        self.keys.get(keyId).addCallbacks(self._checked, failed, callbackArgs=(keyId,))

    def _checked(self, facts: KeyFacts | None, keyId: str) -> None:
        now = self.clock.seconds()
        for subscription in self._grants.ofKey(keyId):
            grant = self._grants.get(subscription)
            assert grant is not None
            refusal = checkKey(facts, grant.appId, now, None)
            if refusal is not None:
                self._forget(subscription)
                self._end(subscription, refusal.text)
            elif facts is not None and facts.expires != grant.keyEnds:
                self._grant(subscription, _Grant(grant.keyId, grant.appId, grant.tokenEnds, facts.expires))

    # IEngineListener: subscriptions that end by other means need nothing more

    def unsubscribed(self, clientId: str, channel: str) -> None:
        self._forget((clientId, channel))

    def clientDestroyed(self, clientId: str, reason: str) -> None:
        for subscription in self._grants.ofClient(clientId):
            self._forget(subscription)
