"""Per-tenant limits: publishes per second per key, and connections per application.

The router's own :class:`~pandapush.router.Limits` are about one message or one
client (sizes, subscriptions, clients per connection). These two need to know whose
key or application a message is for, which only tenancy knows, so they sit beside it:

- :class:`PublishRateLimiter`: a token bucket per key id (``rate`` per second, up to
  ``burst`` at once). Every publish authenticated with a key, or with a token that key
  signed, takes one token, whether it came over Bayeux or ``POST /channel/...``.
  A key is usually a backend's credential *and* the signer of every browser token of
  that backend, so the bucket is generous by default (1000/s, burst 2000): it is there
  to stop a leaked key or a runaway loop, not to meter normal traffic.
- :class:`AppConnectionLimiter`: how many Bayeux clients may use one application's
  channels at once. A handshake names no application (Bayeux has no place for one and
  tenancy checks only subscribes and publishes), so a client counts towards an
  application from its first subscribe or publish on that application's channels, and
  that message is the one refused. It stops counting when the engine destroys the
  client. Refusing a subscribe, not the handshake, is deliberate: Faye and our
  ``client.js`` report a failed subscribe and do not retry it, so a full application
  causes no reconnect storm. Clients that came with the application's own credentials
  and anonymous ones (public subscribes without any) have separate budgets, so that
  strangers cannot lock an application's own subscribers and publishers out.

Both are per node: with N nodes behind a load balancer the effective limits are N
times the configured ones, unless ``--cluster-limits`` counts them across nodes through
Redis (:mod:`pandapush.extensions.clusterlimits`, subclasses of these two). Both cost
O(1) per message: one dict lookup and a little arithmetic; nothing is done per recipient.

:mod:`pandapush.extensions.limitconfig` reads their settings and makes them.
:class:`LimitsExtension` applies both to Bayeux messages; the REST endpoint calls
:meth:`PublishRateLimiter.acquire` itself (HTTP 429 with ``Retry-After``), on the same
limiter (``pandapush.tap`` gives it to both), so a key has one bucket whichever way it
publishes. Refusals go to the router's ``limitRefused`` (``onRefused``), which reports
them to metrics (``pandapush_limit_refusals_total``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from pandapush._deferred import isDeferred, settled
from pandapush.auth.rules import PUBLISH, SUBSCRIBE, parseChannel
from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.errors import BayeuxError
from pandapush.bayeux.message import SUBSCRIBE as SUBSCRIBE_CHANNEL
from pandapush.interfaces import PUBLISHES, IEngine, IScopedExtension
from pandapush.listeners import EngineListener

__all__ = [
    "DEFAULT_MAX_CLIENTS_PER_CONNECTION",
    "DEFAULT_MAX_CONNECTIONS_PER_ADDRESS",
    "DEFAULT_MAX_CONNECTIONS_PER_APP",
    "DEFAULT_MAX_PUBLISH_RATE",
    "AppConnectionLimiter",
    "LimitsExtension",
    "PublishRate",
    "PublishRateLimiter",
]

DEFAULT_MAX_PUBLISH_RATE = 1000.0
DEFAULT_MAX_CONNECTIONS_PER_APP = 10_000
DEFAULT_MAX_CLIENTS_PER_CONNECTION = 4
#: Open connections per client address (``--max-connections-per-address``, applied by
#: ``pandapush.web.connections``). One browser needs a few: a websocket or two long-poll
#: connections per page, six HTTP/1.1 connections per host at most, and Chrome caps a
#: whole profile at 255 websockets; the rest is room for people sharing an address (an
#: office, a carrier's NAT). At a limit of 1,024 file descriptors it takes four
#: addresses instead of one to use them up, and the soft limit is raised to the hard
#: one at start (``pandapush.services``), usually far more.
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 256

#: Metric labels (``pandapush_limit_refusals_total{limit}``).
PUBLISH_RATE = "publish_rate"
CONNECTIONS_PER_APP = "connections_per_app"
ANONYMOUS_CONNECTIONS_PER_APP = "anonymous_connections_per_app"

Message = dict[str, Any]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class PublishRate(Protocol):
    """What publish paths ask of a per-key rate: this module's, or the cluster-wide one."""

    @property
    def enabled(self) -> bool: ...

    def acquire(self, keyId: str, count: int = 1) -> float | Deferred[float]:
        """0.0 if ``count`` publishes may go ahead, else the seconds to wait (now or later)."""
        ...

    def refusal(self, keyId: str) -> str: ...


class PublishRateLimiter:
    """
    Token buckets per key id. ``rate`` 0 means unlimited (nothing is kept).

    A bucket left alone for ``burst / rate`` seconds is full again, exactly like a
    bucket that does not exist, so it is dropped: the buckets are kept in order of
    last use and every call drops the stale ones at the old end. Memory is therefore
    bounded by the keys that published in the last couple of seconds, and each call
    costs O(1) amortized.
    """

    def __init__(
        self,
        clock: IReactorTime,
        rate: float = DEFAULT_MAX_PUBLISH_RATE,
        burst: float | None = None,
        onRefused: Callable[[str], None] | None = None,
    ) -> None:
        self.clock = clock
        self.rate = float(rate)
        self.burst = max(1.0, float(burst) if burst else 2.0 * self.rate)
        self.onRefused = onRefused
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._fullAfter = self.burst / self.rate if self.rate > 0 else 0.0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, keyId: str, count: int = 1) -> float:
        """
        Take ``count`` tokens for ``keyId`` (a batch of messages counts each one): 0.0 if
        the publishes may go ahead, else the seconds until enough will be available (they
        are refused, and counted once). A batch larger than the burst needs a full bucket.
        """
        if self.rate <= 0:
            return 0.0
        now = self.clock.seconds()
        buckets = self._buckets
        bucket = buckets.get(keyId)
        if bucket is None:
            bucket = buckets[keyId] = _Bucket(self.burst, now)
        else:
            elapsed = now - bucket.stamp
            if elapsed > 0:
                bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
                bucket.stamp = now
            buckets.move_to_end(keyId)
        self._evict(now)
        needed = min(float(count), self.burst)
        if bucket.tokens >= needed:
            bucket.tokens = max(0.0, bucket.tokens - count)
            return 0.0
        if self.onRefused is not None:
            self.onRefused(PUBLISH_RATE)
        return (needed - bucket.tokens) / self.rate

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        fullAfter = self._fullAfter
        while buckets:
            keyId, oldest = next(iter(buckets.items()))
            if now - oldest.stamp < fullAfter:
                return
            del buckets[keyId]

    def refusal(self, keyId: str) -> str:
        """The text of a refusal: it names the limit and its value."""
        return f"Too many publishes for key {keyId} (limit {_number(self.rate)}/s)"


#: The applications of a client not counted anywhere (read-only).
_NONE: dict[str, bool] = {}


class AppConnectionLimiter(EngineListener):
    """
    Which clients use each application's channels, in two budgets per application:
    at most ``maxPerApp`` clients that came with the application's own credentials (a
    key, or a token one of its keys signed) and at most ``maxAnonymousPerApp`` that
    came with none (public subscribes; None: the same as ``maxPerApp``). Strangers can
    fill the anonymous budget, never the other: an application's authenticated
    subscribers and publishers cannot be locked out by anonymous ones. A client counted
    anonymous moves to the authenticated budget with its first authenticated message.
    0 is unlimited; with both unlimited nothing is tracked.

    Decrements come from the engine's ``clientDestroyed``. With the Redis engine that
    event is reported by the node that destroyed the client, which may not be the
    node that counted it; so when a budget is full, its application's clients are checked
    against the engine (at most once per ``sweepInterval`` seconds) and the ones gone
    are forgotten.
    """

    _log = Logger()

    def __init__(
        self,
        engine: IEngine,
        clock: IReactorTime,
        maxPerApp: int = DEFAULT_MAX_CONNECTIONS_PER_APP,
        onRefused: Callable[[str], None] | None = None,
        sweepInterval: float = 30.0,
        maxAnonymousPerApp: int | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.maxPerApp = maxPerApp
        self.maxAnonymousPerApp = maxPerApp if maxAnonymousPerApp is None else maxAnonymousPerApp
        self.onRefused = onRefused
        self.sweepInterval = sweepInterval
        # appId -> clients, one dict per budget (authenticated: True, anonymous: False).
        self._budgets: dict[bool, dict[str, set[str]]] = {True: {}, False: {}}
        # clientId -> {appId: whether it is counted as authenticated}
        self._clients: dict[str, dict[str, bool]] = {}
        self._swept: dict[str, float] = {}
        if self.enabled:
            engine.addListener(self)

    @property
    def enabled(self) -> bool:
        return self.maxPerApp > 0 or self.maxAnonymousPerApp > 0

    def admitted(self, clientId: str, appId: str, authenticated: bool = True) -> bool:
        """Whether ``clientId`` already has a place that serves: an authenticated one serves both."""
        counted = self._clients.get(clientId, _NONE).get(appId)
        return counted is not None and (counted or not authenticated)

    def admit(self, clientId: str, appId: str, authenticated: bool = True) -> bool:
        """
        Count ``clientId`` (which the caller knows exists) towards ``appId``, in the
        budget its credentials put it in. False, counted as a refusal, if that is full.
        """
        if not self.enabled or self.admitted(clientId, appId, authenticated):
            return True
        limit = self.limit(authenticated)
        clients = self._budgets[authenticated].get(appId)
        if limit > 0 and clients is not None and len(clients) >= limit:
            self.refused(appId, authenticated)
            return False
        self._count(clientId, appId, authenticated)
        return True

    def reserve(self, clientId: str, appId: str, authenticated: bool = True) -> bool | Deferred[bool]:
        """What :class:`LimitsExtension` asks: :meth:`admit` here, a Redis check cluster-wide."""
        return self.admit(clientId, appId, authenticated)

    def limit(self, authenticated: bool) -> int:
        return self.maxPerApp if authenticated else self.maxAnonymousPerApp

    def refused(self, appId: str, authenticated: bool) -> None:
        """Counts a refusal, and looks for clients gone without a word (see the class)."""
        if self.onRefused is not None:
            self.onRefused(CONNECTIONS_PER_APP if authenticated else ANONYMOUS_CONNECTIONS_PER_APP)
        self._maybeSweep(appId)

    def _count(self, clientId: str, appId: str, authenticated: bool) -> None:
        self._uncount(clientId, appId)  # an anonymous place, left for an authenticated one
        self._budgets[authenticated].setdefault(appId, set()).add(clientId)
        self._clients.setdefault(clientId, {})[appId] = authenticated

    def connections(self, appId: str, authenticated: bool | None = None) -> int:
        """Clients counted towards ``appId``: in one budget, or (None) in both."""
        if authenticated is not None:
            return len(self._budgets[authenticated].get(appId, ()))
        return sum(len(budget.get(appId, ())) for budget in self._budgets.values())

    def refusal(self, authenticated: bool = True) -> str:
        if authenticated:
            return f"Too many connections (limit {self.maxPerApp} per application)"
        return f"Too many anonymous connections (limit {self.maxAnonymousPerApp} per application)"

    def forget(self, clientId: str) -> None:
        for appId in self._clients.pop(clientId, {}):
            self._uncount(clientId, appId)

    def _uncount(self, clientId: str, appId: str) -> None:
        for budget in self._budgets.values():
            clients = budget.get(appId)
            if clients is not None:
                clients.discard(clientId)
                if not clients:
                    del budget[appId]
        if not self.connections(appId):
            self._swept.pop(appId, None)

    # IEngineListener

    def clientDestroyed(self, clientId: str, reason: str) -> None:
        self.forget(clientId)

    # stale counts

    def _maybeSweep(self, appId: str) -> bool:
        now = self.clock.seconds()
        last = self._swept.get(appId)
        if last is not None and now - last < self.sweepInterval:
            return False
        self._swept[appId] = now
        d = Deferred.fromCoroutine(self._sweep(appId))
        d.addErrback(lambda f: self._log.failure("checking {appId}'s clients failed", f, appId=appId))
        return True

    async def _sweep(self, appId: str) -> None:
        clients = set().union(*(budget.get(appId, ()) for budget in self._budgets.values()))
        for clientId in clients:
            if not await self.engine.clientExists(clientId):
                self.forget(clientId)

    # metrics (a prometheus collector: register it on the metrics registry)

    def collect(self) -> Iterator[Metric]:
        # Not one series per application: label cardinality would grow with tenants.
        apps = set().union(*self._budgets.values())
        yield GaugeMetricFamily(
            "pandapush_app_connections_max",
            "Clients on the busiest application of this node (the connections_per_app limits apply to it).",
            value=max((self.connections(appId) for appId in apps), default=0),
        )
        yield GaugeMetricFamily(
            "pandapush_connected_apps",
            "Applications with at least one client on this node.",
            value=len(apps),
        )


@implementer(IScopedExtension)
class LimitsExtension:
    """
    Applies :class:`AppConnectionLimiter` and :class:`PublishRateLimiter` to Bayeux
    subscribes and publishes. Added after tenancy (which has checked the credentials
    and left the key id in ``context.attributes["keyId"]``) and before presence (so a
    refused subscribe joins nobody). Messages already refused are left alone.
    """

    # What the hooks act on (IScopedExtension): the router skips them for the rest.
    incomingOn: frozenset[str] = frozenset({SUBSCRIBE_CHANNEL, PUBLISHES})
    outgoingOn: frozenset[str] = frozenset()

    def __init__(self, engine: IEngine, connections: AppConnectionLimiter, publishes: PublishRate) -> None:
        self.engine = engine
        self.connections = connections
        self.publishes = publishes

    def incoming(self, message: Message, context: MessageContext) -> Message | Deferred[Message]:
        if context.trusted or "error" in message:
            return message
        channel = message.get("channel")
        if not isinstance(channel, str):
            return message
        if channel == "/meta/subscribe":
            subscription = message.get("subscription")
            names = [subscription] if isinstance(subscription, str) else subscription
            if not isinstance(names, list):
                return message
            return self._admit(message, [(name, parseChannel(name, SUBSCRIBE)) for name in names], context)
        if channel.startswith("/meta/"):
            return message
        # A publish: _admit for its one channel, without the lists, and without parsing
        # the channel when no application's clients are counted.
        limiter = self.connections
        if limiter.enabled:
            clientId = message.get("clientId")
            tenant = parseChannel(channel, PUBLISH) if isinstance(clientId, str) else None
            if tenant is not None and isinstance(clientId, str):
                appId = tenant.appId
                authenticated = appId in context.attributes.get("authenticated", ())
                if not limiter.admitted(clientId, appId, authenticated):
                    # Not counted yet (a client that publishes before it subscribes).
                    waiting = [(channel, appId, authenticated)]
                    return self._admitNew(message, clientId, waiting, context, channel)
        return self._rate(message, context, channel)

    def outgoing(self, reply: Message, context: MessageContext) -> Message:
        return reply

    def _admit(
        self,
        message: Message,
        channels: list[tuple[Any, Any]],
        context: MessageContext,
        publish: str | None = None,
    ) -> Message | Deferred[Message]:
        clientId = message.get("clientId")
        limiter = self.connections
        # Set by tenancy: the applications whose own credentials came with the message.
        authenticated = context.attributes.get("authenticated", ())
        waiting = [
            (name, tenant.appId, tenant.appId in authenticated)
            for name, tenant in channels
            if tenant is not None
            and limiter.enabled
            and isinstance(clientId, str)
            and not limiter.admitted(clientId, tenant.appId, tenant.appId in authenticated)
        ]
        if not waiting:
            # The hot path: a client already counted, publishing.
            return self._rate(message, context, publish)
        assert isinstance(clientId, str)
        return self._admitNew(message, clientId, waiting, context, publish)

    def _admitNew(
        self,
        message: Message,
        clientId: str,
        waiting: list[tuple[str, str, bool]],
        context: MessageContext,
        publish: str | None,
    ) -> Message | Deferred[Message]:
        """
        Count the client in each application of ``waiting``: at once while the engine and
        the limiter answer at once (every client's first subscribe in a reconnect storm
        comes here), else once they have.
        """
        # Only clients that exist are counted: a made-up clientId must not fill an
        # application (the router answers it with 401 Unknown client).
        exists = settled(self.engine.clientExists(clientId))
        if isDeferred(exists):
            return exists.addCallback(self._reserve, message, clientId, waiting, context, publish, 0)
        return self._reserve(exists, message, clientId, waiting, context, publish, 0)

    def _reserve(
        self,
        exists: bool,
        message: Message,
        clientId: str,
        waiting: list[tuple[str, str, bool]],
        context: MessageContext,
        publish: str | None,
        start: int,
    ) -> Message | Deferred[Message]:
        """Reserve the client's place in each application of ``waiting`` from ``start`` on, in order."""
        if not exists:
            return message
        for index in range(start, len(waiting)):
            admitted = self.connections.reserve(clientId, waiting[index][1], waiting[index][2])
            if isDeferred(admitted):
                admitted = settled(admitted)
                if isDeferred(admitted):
                    return admitted.addCallback(
                        self._reserved, message, clientId, waiting, context, publish, index
                    )
            if not admitted:
                return self._refused(message, waiting[index])
        return self._rate(message, context, publish)

    def _reserved(
        self,
        admitted: bool,
        message: Message,
        clientId: str,
        waiting: list[tuple[str, str, bool]],
        context: MessageContext,
        publish: str | None,
        index: int,
    ) -> Message | Deferred[Message]:
        if not admitted:
            return self._refused(message, waiting[index])
        return self._reserve(True, message, clientId, waiting, context, publish, index + 1)

    def _refused(self, message: Message, waiting: tuple[str, str, bool]) -> Message:
        name, _, authenticated = waiting
        message["error"] = str(BayeuxError(403, [name], self.connections.refusal(authenticated)))
        return message

    def _rate(
        self, message: Message, context: MessageContext, publish: str | None
    ) -> Message | Deferred[Message]:
        keyId = context.attributes.get("keyId")
        if publish is None or not isinstance(keyId, str) or not self.publishes.enabled:
            return message
        wait = self.publishes.acquire(keyId)
        if isinstance(wait, Deferred):
            # Cluster-wide: this node's share of the key's rate ran out, and Redis is asked
            # for more (once per slice of publishes, not per publish).
            return wait.addCallback(self._refuseIf, message, keyId, publish)
        return self._refuseIf(wait, message, keyId, publish)

    def _refuseIf(self, wait: float, message: Message, keyId: str, publish: str) -> Message:
        if wait:
            message["error"] = str(BayeuxError(429, [publish], self.publishes.refusal(keyId)))
        return message
