"""This node's part of the Redis engine: the clients it owns, and the work it has under way.

The local part of an owned client (its subscriptions mirrored from Redis, its queue,
its sink, the flush) is :mod:`pandapush.engines.local`'s, as in the memory engine.
What the Redis engine adds is here: the Redis SUBSCRIBE that follows the local
subscription index, the ids messages carry between nodes, the state of a claim,
and the fire-and-forget work ``RedisEngine.settle`` waits for.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pandapush.bayeux.delivery import Delivery
from pandapush.engines.local import LocalClient, LocalClients
from pandapush.engines.redis.keys import RedisKeys, Shards
from pandapush.interfaces import EngineUnavailableError, IClientSocket, IDeliverySink
from pandapush.redis import RedisSubscriber, RedisUnavailable

__all__ = ["RETRY_AFTER", "Node", "OwnedClient", "RelayedDelivery", "unavailableAsEngine"]

T = TypeVar("T")

#: Seconds clients are told to wait before trying again while Redis is unavailable.
RETRY_AFTER = 1.0


def unavailableAsEngine(d: defer.Deferred[T]) -> defer.Deferred[T]:
    """
    ``d``, a call on the engine's interface, with Redis unreachable told as IEngine says:
    :class:`EngineUnavailableError`, which the router and the web answer with a 503 and
    retry advice and no traceback (the outage is logged once, by the connections).
    """

    def translate(failure: Any) -> Any:
        inner = failure
        while isinstance(inner.value, defer.FirstError):  # from a gatherResults
            inner = inner.value.subFailure
        if inner.check(RedisUnavailable):
            raise EngineUnavailableError("Redis", inner.getErrorMessage(), RETRY_AFTER) from inner.value
        return failure

    return d.addErrback(translate)


class RelayedDelivery(Delivery):
    """A message that came through Redis, with the id its publishing node gave it."""

    __slots__ = ("messageId",)

    def __init__(self, channel: str, payload: bytes, exclude: str | None, messageId: str) -> None:
        # When the publishing node accepted it (see fanout.py); an older node's id has none,
        # and one made for a message recovered from history names its channel instead.
        _, stamped, accepted = messageId.rpartition("@")
        try:
            when = float(accepted) if stamped and "/" not in messageId else None
        except ValueError:
            when = None
        super().__init__(channel, payload, exclude, accepted=when)
        # A hand-over removes duplicates with it.
        self.messageId = messageId


class OwnedClient(LocalClient):
    """
    A client owned by this node: the local part, and the state of a claim.

    ``held`` (see LocalClient) is set while the client is taken over from another
    node: queue, but deliver nothing until the previous owner's queue has arrived (it
    holds older messages); and while an attach checks that this copy is still the
    current one (see ``epoch``).
    """

    __slots__ = ("checkWaiters", "checking", "claimWaiters", "confirmed", "epoch", "presence", "sent")

    queue: list[RelayedDelivery]  # type: ignore[assignment]

    def __init__(self, clientId: str) -> None:
        super().__init__(clientId)
        # The ownership epoch (Redis bumps it on every change of owner) this copy was
        # made current at; 0 until the claim script has answered.
        self.epoch = 0
        # The claim script is in flight: ``epoch`` may be about to change.
        self.checking = False
        # Hand-over requests waiting for the claim script, or for the whole claim, to end
        # (see ``Claims.handOver``).
        self.checkWaiters: list[defer.Deferred[None]] = []
        # Ids of messages handed out while the claim script checked this copy: should the
        # copy turn out stale, the previous owner's queue may hold them too.
        self.sent: set[str] | None = None
        self.claimWaiters: list[defer.Deferred[None]] = []
        # channel -> (member id, data as JSON): its presence memberships, held here so
        # that a Redis that comes back empty gets them back (see ``restore``).
        self.presence: dict[str, tuple[str, str]] = {}
        # When the last call that found it registered, and gave it a deadline at least
        # ``expiry`` away, was sent (reactor time; see ``Node.knownRegistered``).
        self.confirmed = float("-inf")


class Node:
    """
    This node: its id, the shards, its SUBSCRIBE connection, the clients it owns
    (``local``), and the fire-and-forget work under way (``pending``). Every part of
    the engine works through one Node.

    ``detached`` and ``slow`` are the engine's answers to a client left without a
    sink and to one whose queue grew past ``maxQueue`` (see LocalClients).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        keys: RedisKeys,
        shards: Shards,
        subscriber: RedisSubscriber,
        expiry: float,
        detached: Callable[[OwnedClient], object],
        slow: Callable[[OwnedClient], object],
        maxQueue: int,
        flushDelay: float,
    ) -> None:
        self.reactor = reactor
        self.keys = keys
        self.shards = shards
        self.subscriber = subscriber
        self.expiry = expiry
        self.id = secrets.token_hex(8)
        self.channel = keys.node(self.id)
        # Queues are handed out after a short window rather than one reactor turn:
        # messages of one burst reach the node in several reads, and a long-poll
        # answered with the first of them would cost the client a request per message.
        self.local: LocalClients[OwnedClient] = LocalClients(
            reactor, detached=detached, slow=slow, maxQueue=maxQueue, flushDelay=flushDelay
        )
        # Work started by fire-and-forget methods (attach, detach, GC): ``settle`` waits for it.
        self.pending: set[defer.Deferred[Any]] = set()
        self.closed = False
        self.ready = subscriber.subscribe(self.channel)
        self.ready.addErrback(lambda f: self._log.warn("not subscribed yet: {f}", f=f.getErrorMessage()))

    def caughtUp(self) -> defer.Deferred[None]:
        """
        Fires once every message published before now (as the command connections see
        Redis: after a reply read there) has arrived on the SUBSCRIBE connection and been
        queued: a PING there is answered after them. A recovery waits for it before it puts
        history in front of a queue, so that the live copies of what it read are in the
        queue to be dropped, not on their way (they were delivered twice). Never fails:
        without a connection, or if the PING goes unanswered (the connection is then
        dropped), nothing more is coming from before.
        """
        return self.subscriber.ping()

    def track(self, d: defer.Deferred[Any], what: str) -> None:
        """Keep fire-and-forget work visible to ``settle`` and log its failures."""
        self.pending.add(d)

        def done(result: Any) -> None:
            self.pending.discard(d)
            if isinstance(result, defer.Failure):
                if result.check(RedisUnavailable, EngineUnavailableError):
                    # The outage is logged once, by the connections' health: one line per
                    # failed call here was 167,000 lines in a mass disconnect.
                    self._log.debug("{what} failed: {error}", what=what, error=result.getErrorMessage())
                else:
                    self._log.failure("{what} failed", result, what=what)

        d.addBoth(done)

    async def quiet(self) -> None:
        """Fires once no tracked work is under way (work may start more work)."""
        while self.pending:
            await defer.DeferredList(list(self.pending), consumeErrors=True)

    def health(self) -> dict[str, Any]:
        """
        Whether this node reaches every shard and its pub/sub server, from what its
        connections last saw (no I/O): ``{"status", "redis": "ok" | "unavailable",
        "shards": {name: {"status", "error", "seconds"}}, "error"}`` (see IEngine).
        """
        servers = {self.subscriber.health.name: self.subscriber.health}
        for shard in self.shards:
            servers.setdefault(shard.health.name, shard.health)
        shards = {name: health.status() for name, health in servers.items()}
        down = [s for s in shards.values() if s["status"] != "ok"]
        answer: dict[str, Any] = {"status": "unavailable" if down else "ok", "shards": shards}
        answer["redis"] = answer["status"]
        if down:
            answer["error"] = down[0]["error"]
        return answer

    def loopFailed(self, failure: Any, what: str) -> None:
        self._log.failure("Redis engine {what} loop stopped", failure, what=what)

    # the clients this node owns

    def knownRegistered(self, clientId: str) -> bool:
        """
        Whether this node knows, without asking Redis, that the client is registered:
        it owns it, and a call sent less than ``expiry / 2`` ago found it registered
        and moved its deadline at least ``expiry`` past the call (create, claim,
        detach, lease renewal). Redis cannot have expired it since; a destroy through
        this node forgets it here first, and one through another node is answered once
        this node has forgotten it (``drop``, see ``destroy``).
        A node that missed the ``drop`` (its pub/sub connection down) answers so for
        ``expiry / 2`` at most: its next lease renewal finds the client gone and
        confirms it no more.

        Asked for every message of a client (the router's ``clientExists``): in a
        reconnect storm of websocket clients this spared two of a client set-up's
        seven round trips to Redis.
        """
        client = self.local.get(clientId)
        return (
            client is not None
            and client.epoch != 0
            and client.confirmed > self.reactor.seconds() - self.expiry / 2
            # While its shard is known to be down, the client is told so (a 503 and retry
            # advice) as before, not served on this node's word alone.
            and self.shards.of(clientId).health.ok
        )

    def confirm(self, clientIds: Iterable[str], sent: float) -> None:
        """A call sent at ``sent`` found these clients registered (see ``knownRegistered``)."""
        local = self.local
        for clientId in clientIds:
            client = local.get(clientId)
            if client is not None and client.confirmed < sent:
                client.confirmed = sent

    def subscribe(self, client: OwnedClient, key: str) -> defer.Deferred[None]:
        """Index ``key`` for the client here; fires once Redis sends this node the key's messages."""
        self.local.subscribe(client, key)
        # Asked every time: until Redis has confirmed the key's first SUBSCRIBE, the
        # next client's subscribe must wait for it too.
        return self.subscriber.subscribe(self.keys.pubsub(key))

    def unsubscribe(self, client: OwnedClient, key: str) -> None:
        if self.local.unsubscribe(client, key):
            self.subscriber.unsubscribe(self.keys.pubsub(key))

    def drop(self, clientId: str) -> OwnedClient | None:
        """Forget a client locally (destroyed, or handed over to another node)."""
        client, vacated = self.local.forget(clientId)
        for key in vacated:
            self.subscriber.unsubscribe(self.keys.pubsub(key))
        return client

    def endSink(self, clientId: str, sink: IDeliverySink, reason: str) -> None:
        """
        The client was destroyed through another node, whose listeners heard of it:
        do here what this node's router would have done on ``clientDestroyed``
        (close the socket, answer the held connect), so the connection does not
        linger until it next talks. Its next request finds the client unknown.
        Also for a client that has ``"moved"`` to a newer connection on another
        node: its next request finds it there.
        """
        try:
            if IClientSocket.providedBy(sink):
                sink.close(afterReplies=reason == "disconnect")
            elif not sink.persistent:
                sink.deliver([])
        except Exception:
            self._log.failure("ending the connection of {clientId} failed", clientId=clientId)
