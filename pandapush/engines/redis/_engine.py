"""The Redis engine: many pandapush nodes sharing clients, subscriptions and presence.

Design (correctness first, then cost)
-------------------------------------
*Shared state* lives in Redis, sharded by a consistent-hash ring: a client's
registry entry, subscriptions and presence on the shard of its clientId; a
subscription key's subscriber set and a channel's presence members on the shard
of the key. Every change is one Lua script per shard, so exactly one node sees
each transition (first subscriber, last client of a member, removal from the
registry) and reports it to its listeners: events fire once, cluster-wide, on
the node where the change happened.

*Fan-out*: each client is **owned** by one node at a time (the node where it was
created or last attached a sink). The owner keeps the client's subscriptions in
a local index and its queue in memory, and SUBSCRIBEs (on the pub/sub shard,
the first of ``REDIS_HOSTS``) to ``<ns>:ch:<key>`` for the keys its clients use.
``publish`` runs one script that PUBLISHes the payload once per expanded key
(at most five for ``/a/b/c``); Redis sends it once to each node subscribed to
that key, and the node fans out to its local clients from its index, sharing one
``Delivery`` per node (the payload bytes travel as published, never re-encoded).
A client matched by several keys is served only by the copy of its first
matching key (copies carry their key's index), so it gets the message once.

*Moving clients*: a long-poll client whose next connect lands on another node
is claimed by that node (atomically in Redis), which subscribes the client's
keys first and then asks the previous owner to hand over: the old owner drops
the client and answers with its queued messages; the new owner puts them in
front of what it buffered meanwhile, removing duplicates by message id, so
nothing is lost or repeated and order is kept. Every change of owner bumps the
client's *epoch* in Redis: a node that attaches a connection to a client it still
holds first checks (in the script that renews the lease) that its copy is the
current one, and takes the client back like any other if it is not, since
another node may have claimed it while its hand-over request is still on its way;
a hand-over request carries the claimer's epoch, so a node whose copy is newer
keeps it (see ``_serveHandover``). A subscribe/unsubscribe handled
by a node that does not own the client is forwarded to the owner, and answered
once the owner's index (and its SUBSCRIBE) is in place. Node-to-node calls go
over ``<ns>:node:<nodeId>``; PUBLISH reporting no receiver means the node is gone.

*Expiry*: the registry is a sorted set of deadlines per shard. A detached client
gets ``now + expiry``; an attached one a lease of ``2 * expiry`` that its owner
renews every ``expiry / 2``, so clients of a crashed node expire (and their
presence members leave) within about ``2 * expiry``. A garbage collector runs
on whichever node holds ``<ns>:gc`` (SET NX PX) and destroys expired clients
with a script that re-checks the deadline, so a destruction happens once.

*Redis coming back empty*: the owners are the source of truth. Each shard holds a
generation token (set when absent); a node that finds another token than the one it
remembers knows the shard lost its data (restart without persistence), and writes back
its clients of that shard (registry entry, owner, epoch, subscriptions) and the
subscriber sets of the keys on it, in batched scripts that never overwrite a client
registered meanwhile (see ``_restoreShard``). It looks when its pub/sub connection
reconnects, at every lease renewal, and before telling that a client it owns is
unknown. Presence is not restored (its data lives only in Redis).

Trade-offs: pub/sub is at-most-once. A node whose SUBSCRIBE connection is down,
or that crashes, loses what was queued in its memory for its clients (the
clients carry on with their session on another node); a node that closes parks
its clients' queues in Redis for the node they reconnect to. Until a client
whose owner is gone has been claimed by a new node, nobody listens for it. The hand-over costs a
round trip to the previous owner whenever a long-poll client changes node
(sticky load balancing avoids it). All pub/sub goes through one shard.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from pandapush.bayeux import json
from pandapush.bayeux.channel import expand
from pandapush.bayeux.delivery import Delivery
from pandapush.engines.ids import newClientId
from pandapush.engines.local import DEFAULT_MAX_QUEUE, LocalClient, LocalClients
from pandapush.engines.redis import _scripts as scripts
from pandapush.interfaces import IClientSocket, IDeliverySink, IEngine, IEngineListener
from pandapush.listeners import ListenerRegistry
from pandapush.redis import (
    HashRing,
    RedisAddress,
    RedisShard,
    RedisSubscriber,
    RedisUnavailable,
    parseRedisHosts,
)

__all__ = ["RedisEngine"]

DEFAULT_NAMESPACE = "pandapush"

#: Clients re-registered per script when a shard comes back empty: one round trip per
#: batch, and no script long enough to hold Redis up for other nodes.
RESTORE_BATCH = 500
#: Subscriber-set entries put back per script.
RESTORE_MEMBERS = 5000


class RelayedDelivery(Delivery):
    """A message that came through Redis, with the id its publishing node gave it."""

    __slots__ = ("messageId",)

    def __init__(self, channel: str, payload: bytes, exclude: str | None, messageId: str) -> None:
        super().__init__(channel, payload, exclude)
        # A hand-over removes duplicates with it.
        self.messageId = messageId


class _LocalClient(LocalClient):
    """
    A client owned by this node: the local part (subscriptions mirrored from Redis,
    its queue, its sink), and the state of a claim.

    ``held`` (see LocalClient) is set while the client is taken over from another
    node: queue, but deliver nothing until the previous owner's queue has arrived (it
    holds older messages); and while an attach checks that this copy is still the
    current one (see ``epoch``).
    """

    __slots__ = ("checkWaiters", "checking", "claimWaiters", "epoch", "sent")

    queue: list[RelayedDelivery]  # type: ignore[assignment]

    def __init__(self, clientId: str) -> None:
        super().__init__(clientId)
        # The ownership epoch (Redis bumps it on every change of owner) this copy was
        # made current at; 0 until the claim script has answered.
        self.epoch = 0
        # The claim script is in flight: ``epoch`` may be about to change.
        self.checking = False
        # Hand-over requests waiting for the claim script, or for the whole claim, to end
        # (see ``_serveHandover``).
        self.checkWaiters: list[defer.Deferred[None]] = []
        # Ids of messages handed out while the claim script checked this copy: should the
        # copy turn out stale, the previous owner's queue may hold them too.
        self.sent: set[str] | None = None
        self.claimWaiters: list[defer.Deferred[None]] = []


@implementer(IEngine)
class RedisEngine(ListenerRegistry):
    """
    An IEngine whose state is shared by every node using the same Redis
    shards and ``namespace``.

    Connections start at construction (they are lazy and reconnect forever);
    ``ready()`` fires once this node can receive messages, ``close()`` releases
    everything. ``expiry``/``sweepInterval`` as in the memory engine;
    ``commandTimeout`` bounds every Redis call (callers get an error, never a
    hang, while Redis is down); ``handoverTimeout`` bounds a call to another
    node (one that does not answer is taken as dead).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        hosts: str | Sequence[RedisAddress] = "127.0.0.1:6379",
        namespace: str = DEFAULT_NAMESPACE,
        timeout: float = 30.0,
        expiry: float = 10.0,
        sweepInterval: float = 1.0,
        commandTimeout: float = 2.0,
        handoverTimeout: float = 1.0,
        pingInterval: float = 5.0,
        reconnectMaxDelay: float = 5.0,
        replicas: int = 160,
        batchWindow: float = 0.002,
        maxQueue: int = DEFAULT_MAX_QUEUE,
    ) -> None:
        self._reactor: IReactorTime = reactor
        self.timeout = timeout
        self.expiry = expiry
        self.namespace = namespace
        self.nodeId = secrets.token_hex(8)
        self._sweepInterval = sweepInterval
        self._handoverTimeout = handoverTimeout
        self.addresses = parseRedisHosts(hosts) if isinstance(hosts, str) else list(hosts)
        self._shards = [RedisShard(reactor, a, commandTimeout, reconnectMaxDelay) for a in self.addresses]
        self._ring = HashRing([a.name for a in self.addresses], replicas)
        ns = namespace
        self._clientsKey = f"{ns}:clients"
        self._channelPrefix = f"{ns}:ch:"
        self._nodePrefix = f"{ns}:node:"
        self._nodeChannel = self._nodePrefix + self.nodeId
        self._generationKey = f"{ns}:gen"
        # shard index -> the generation (see ``_checkGeneration``) this node last knew it at
        self._generations: dict[int, str] = {}
        # shard index -> waiters for the generation check under way on it
        self._generationChecks: dict[int, list[defer.Deferred[bool]]] = {}
        # shard index -> when a call to it last failed (the GC holds back after an outage)
        self._troubleAt: dict[int, float] = {}
        # shards this node is restoring its clients on
        self._restoring: set[int] = set()
        self._closed = False
        # The clients this node owns. Queues are handed out after a short window rather
        # than one reactor turn: messages of one burst reach the node in several reads,
        # and a long-poll answered with the first of them would cost the client a
        # request per message.
        self._local: LocalClients[_LocalClient] = LocalClients(
            reactor, detached=self._detached, slow=self._slow, maxQueue=maxQueue, flushDelay=batchWindow
        )
        self._pubsub = self._shards[0]
        self._subscriber = RedisSubscriber(
            reactor,
            self.addresses[0],
            self._onMessage,
            commandTimeout,
            reconnectMaxDelay,
            onConnected=self._subscriberConnected,
        )
        self._ready = self._subscriber.subscribe(self._nodeChannel)
        self._ready.addErrback(lambda f: self._log.warn("not subscribed yet: {f}", f=f.getErrorMessage()))

        self._listeners: list[IEngineListener] = []
        self._messageIds = itertools.count()
        self._calls: dict[int, defer.Deferred[Any]] = {}
        self._callIds = itertools.count()
        # Work started by fire-and-forget methods (attach, detach, GC): ``settle`` waits for it.
        self._pending: set[defer.Deferred[Any]] = set()
        self._collecting: defer.Deferred[None] | None = None
        self._sweeper = task.LoopingCall(self._sweep)
        self._sweeper.clock = reactor
        self._sweeper.start(sweepInterval, now=False).addErrback(self._loopFailed, "sweep")
        self._renewer = task.LoopingCall(self._renewLeases)
        self._renewer.clock = reactor
        self._renewer.start(max(expiry / 2, 0.05), now=False).addErrback(self._loopFailed, "lease renewal")
        self._pinger = task.LoopingCall(self._ping)
        self._pinger.clock = reactor
        self._pinger.start(pingInterval, now=False).addErrback(self._loopFailed, "ping")

    @property
    def maxQueue(self) -> int:
        """Messages a client without a sink may have waiting before it is dropped."""
        return self._local.maxQueue

    @maxQueue.setter
    def maxQueue(self, value: int) -> None:
        self._local.maxQueue = value

    # keys and shards

    def _clientShard(self, clientId: str) -> RedisShard:
        return self._shards[self._ring.index(clientId)]

    def _channelShard(self, key: str) -> RedisShard:
        return self._shards[self._ring.index(key)]

    def _clientKeys(self, clientId: str) -> tuple[str, str, str, str]:
        base = f"{self.namespace}:c:{clientId}"
        return self._clientsKey, base, base + ":subs", base + ":pres"

    def _parkedKey(self, clientId: str) -> str:
        return f"{self.namespace}:c:{clientId}:parked"

    def _subscribersKey(self, key: str) -> str:
        return f"{self.namespace}:s:{key}"

    def _presenceKey(self, channel: str) -> str:
        return f"{self.namespace}:p:{channel}"

    def _memberKey(self, channel: str, memberId: str) -> str:
        return f"{self.namespace}:pm:{channel}:{memberId}"

    def shardFor(self, clientIdOrKey: str) -> RedisAddress:
        """The shard holding a client's state or a subscription key's subscribers."""
        return self.addresses[self._ring.index(clientIdOrKey)]

    # lifecycle

    def ready(self) -> defer.Deferred[None]:
        """Fires once this node receives pub/sub messages (its node channel is subscribed)."""
        return self._subscriber.subscribe(self._nodeChannel)

    def _loopFailed(self, failure: Any, what: str) -> None:
        self._log.failure("Redis engine {what} loop stopped", failure, what=what)

    def _track(self, d: defer.Deferred[Any], what: str) -> None:
        """Keep fire-and-forget work visible to ``settle`` and log its failures."""
        self._pending.add(d)

        def done(result: Any) -> None:
            self._pending.discard(d)
            if isinstance(result, defer.Failure):
                if result.check(RedisUnavailable):
                    self._log.warn("{what} failed: {error}", what=what, error=result.getErrorMessage())
                else:
                    self._log.failure("{what} failed", result, what=what)

        d.addBoth(done)

    async def _settle(self) -> None:
        while self._pending:
            await defer.DeferredList(list(self._pending), consumeErrors=True)
        # Everything PUBLISHed before this marker reaches our SUBSCRIBE connection before it.
        await self._call(self.nodeId, "marker")
        while self._pending or self._local.flushPending:
            while self._pending:
                await defer.DeferredList(list(self._pending), consumeErrors=True)
            await task.deferLater(self._reactor, 0.001, lambda: None)  # type: ignore[arg-type]

    def settle(self) -> defer.Deferred[None]:
        """
        Fires once messages published (by any node) before the call have reached
        this node's sinks, and this node's background work has finished: a test
        hook, and a way to wait for quiet before shutting down.
        """
        return defer.Deferred.fromCoroutine(self._settle())

    def close(self) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(self._close())

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for loop in (self._sweeper, self._renewer, self._pinger):
            if loop.running:
                loop.stop()
        self._local.close()
        if self._pending:
            await defer.DeferredList(list(self._pending), consumeErrors=True)
        await self._park()
        for d in list(self._calls.values()):
            if not d.called:
                d.callback(None)
        self._calls.clear()
        await self._subscriber.close()
        await defer.DeferredList([s.close() for s in self._shards], consumeErrors=True)

    async def _park(self) -> None:
        """
        Leave the queues of this node's clients in Redis for the nodes they will
        reconnect to (a drained node told them to): without this, what was queued
        here between two polls would die with the process. Until the subscriber
        closes, this node still answers hand-overs; a message in both places is
        taken once (the new owner removes duplicates by id).
        """
        ttl = int(2 * self.expiry) + 1
        parking = []
        for client in self._local.values():
            if not client.queue:
                continue
            entries = [f"{d.messageId}\n{d.channel}\n".encode() + d.payload for d in client.queue]
            parking.append(
                self._clientShard(client.id).eval(scripts.PARK, [self._parkedKey(client.id)], [ttl, *entries])
            )
        if parking:
            results = await defer.DeferredList(parking, consumeErrors=True)
            lost = sum(1 for ok, _ in results if not ok)
            self._log.info(
                "closing: parked the queues of {n} clients ({lost} failed)", n=len(parking), lost=lost
            )

    # clients

    def createClient(self) -> defer.Deferred[str]:
        return defer.Deferred.fromCoroutine(self._createClient())

    async def _createClient(self) -> str:
        clientId = newClientId()
        clients, base, _, _ = self._clientKeys(clientId)
        generation = await self._clientShard(clientId).eval(
            scripts.CREATE,
            [clients, base, self._generationKey],
            [clientId, self.nodeId, self.expiry, secrets.token_hex(8)],
        )
        # A node whose first check has not run yet must know which contents its clients
        # were written to, or it could not tell that Redis lost them.
        self._generations.setdefault(self._ring.index(clientId), generation)
        # The creating node owns it: the client's first requests usually come back here.
        client = self._local.add(_LocalClient(clientId))
        client.epoch = 1
        self._notify("clientCreated", clientId)
        return clientId

    def clientExists(self, clientId: str) -> defer.Deferred[bool]:
        d = self._clientShard(clientId).eval(scripts.EXISTS, [self._clientsKey], [clientId])

        def answer(result: Any) -> Any:
            if int(result) == 1:
                return True
            client = self._local.get(clientId)
            if client is None or not client.epoch:
                return False
            # Owned here yet unknown to Redis: the shard may have come back empty, with
            # this node's restore not run yet (or under way). Wait for it rather than
            # tell the client to handshake again.
            return defer.Deferred.fromCoroutine(self._existsAfterCheck(clientId))

        return d.addCallback(answer)

    async def _existsAfterCheck(self, clientId: str) -> bool:
        await self._checkGeneration(self._ring.index(clientId))
        # Asked again whatever the check found: a restore that ended between our first
        # question and the check has put the client back too.
        result = await self._clientShard(clientId).eval(scripts.EXISTS, [self._clientsKey], [clientId])
        return int(result) == 1

    def destroyClient(self, clientId: str, reason: str = "disconnect") -> defer.Deferred[None]:
        d = defer.Deferred.fromCoroutine(self._destroy(clientId, reason, False))
        return d.addCallback(lambda _: None)

    async def _destroy(self, clientId: str, reason: str, onlyIfExpired: bool) -> bool:
        keys = [*self._clientKeys(clientId), self._parkedKey(clientId)]
        result = await self._clientShard(clientId).eval(
            scripts.DESTROY_CLIENT, keys, [clientId, "1" if onlyIfExpired else "0"]
        )
        if result is None:
            return False
        owner, subs, flatPresence = result
        presence = dict(zip(flatPresence[::2], flatPresence[1::2], strict=True))
        if owner == self.nodeId:
            self._drop(clientId)
        elif owner:
            self._track(
                self._call(owner, "drop", c=clientId, reason=reason), "dropping a client on its owner"
            )
        channels = sorted(set(subs) | set(presence))
        outcomes = await defer.gatherResults(
            [self._leaveChannel(clientId, key, presence.get(key, "")) for key in channels], consumeErrors=True
        )
        subscribed = set(subs)
        for key, (_, vacated, left) in zip(channels, outcomes, strict=True):
            if key in subscribed:
                self._notify("unsubscribed", clientId, key)
            if left:
                self._notify("memberLeft", key, presence[key])
            if vacated:
                self._notify("channelVacated", key)
        self._notify("clientDestroyed", clientId, reason)
        return True

    def _leaveChannel(self, clientId: str, key: str, memberId: str) -> defer.Deferred[tuple[int, int, int]]:
        d = self._channelShard(key).eval(
            scripts.UNSUBSCRIBE_CHANNEL,
            [self._subscribersKey(key), self._presenceKey(key), self._memberKey(key, memberId)],
            [clientId, memberId],
        )
        return d.addCallback(lambda r: (int(r[0]), int(r[1]), int(r[2])))

    def ping(self, clientId: str) -> None:
        # As in the memory engine, liveness follows attach/detach (and lease renewal).
        pass

    # subscriptions

    def subscribe(self, clientId: str, channel: str) -> defer.Deferred[bool]:
        return defer.Deferred.fromCoroutine(self._subscribe(clientId, channel))

    async def _subscribe(self, clientId: str, key: str) -> bool:
        clients, base, subs, _ = self._clientKeys(clientId)
        added, owner = await self._clientShard(clientId).eval(
            scripts.SUBSCRIBE_CLIENT, [clients, base, subs], [clientId, key]
        )
        if int(added) != 1:
            return False
        _, cardinality = await self._channelShard(key).eval(
            scripts.SUBSCRIBE_CHANNEL, [self._subscribersKey(key)], [clientId]
        )
        # Before answering, the owner's index must hold the key, or a message
        # published right after the subscribe reply could miss the client.
        await self._tellOwner(owner, "sub", clientId, key)
        self._notify("subscribed", clientId, key)
        if int(cardinality) == 1:
            self._notify("channelOccupied", key)
        return True

    def unsubscribe(self, clientId: str, channel: str) -> defer.Deferred[bool]:
        return defer.Deferred.fromCoroutine(self._unsubscribe(clientId, channel))

    async def _unsubscribe(self, clientId: str, key: str) -> bool:
        _, base, subs, presence = self._clientKeys(clientId)
        removed, owner, memberId = await self._clientShard(clientId).eval(
            scripts.UNSUBSCRIBE_CLIENT, [base, subs, presence], [key]
        )
        if int(removed) != 1:
            return False
        await self._tellOwner(owner, "unsub", clientId, key)
        _, vacated, left = await self._leaveChannel(clientId, key, memberId)
        self._notify("unsubscribed", clientId, key)
        if left:
            self._notify("memberLeft", key, memberId)
        if vacated:
            self._notify("channelVacated", key)
        return True

    def subscriptions(self, clientId: str) -> defer.Deferred[set[str]]:
        d = self._clientShard(clientId).execute("SMEMBERS", self._clientKeys(clientId)[2])
        return d.addCallback(lambda members: set(members or ()))

    async def _tellOwner(self, owner: str, op: str, clientId: str, key: str) -> None:
        if owner == self.nodeId:
            await self._ownerUpdate(op, clientId, key)
        elif owner:
            await self._call(owner, op, c=clientId, k=key)

    async def _ownerUpdate(self, op: str, clientId: str, key: str) -> None:
        client = self._local.get(clientId)
        if client is None:
            return
        if op == "sub":
            await self._indexAdd(client, key)
        elif self._local.unsubscribe(client, key):
            self._subscriber.unsubscribe(self._channelPrefix + key)

    def _indexAdd(self, client: _LocalClient, key: str) -> defer.Deferred[None]:
        self._local.subscribe(client, key)
        # Asked every time: until Redis has confirmed the key's first SUBSCRIBE, the
        # next client's subscribe must wait for it too.
        return self._subscriber.subscribe(self._channelPrefix + key)

    def _endSink(self, clientId: str, sink: IDeliverySink, reason: str) -> None:
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

    def _drop(self, clientId: str) -> _LocalClient | None:
        """Forget a client locally (destroyed, or handed over to another node)."""
        client, vacated = self._local.forget(clientId)
        for key in vacated:
            self._subscriber.unsubscribe(self._channelPrefix + key)
        return client

    # presence

    def presenceJoin(
        self, clientId: str, channel: str, memberId: str, data: Any
    ) -> defer.Deferred[dict[str, Any]]:
        return defer.Deferred.fromCoroutine(self._presenceJoin(clientId, channel, memberId, data))

    async def _presenceJoin(self, clientId: str, channel: str, memberId: str, data: Any) -> dict[str, Any]:
        clients, _, _, presence = self._clientKeys(clientId)
        previous = await self._clientShard(clientId).eval(
            scripts.PRESENCE_CLIENT, [clients, presence], [clientId, channel, memberId]
        )
        if previous is None:
            return await self._members(channel)
        if previous and previous != memberId:
            shard = self._channelShard(channel)
            left = await shard.eval(
                scripts.UNSUBSCRIBE_CHANNEL,
                [f"{self.namespace}:none", self._presenceKey(channel), self._memberKey(channel, previous)],
                [clientId, previous],
            )
            if int(left[2]):
                self._notify("memberLeft", channel, previous)
        joined, flat = await self._channelShard(channel).eval(
            scripts.PRESENCE_JOIN,
            [self._presenceKey(channel), self._memberKey(channel, memberId)],
            [clientId, memberId, json.dumps(data)],
        )
        if int(joined):
            self._notify("memberJoined", channel, memberId, data, clientId)
        return self._decodeMembers(flat)

    def presenceMembers(self, channel: str) -> defer.Deferred[dict[str, Any]]:
        return defer.Deferred.fromCoroutine(self._members(channel))

    async def _members(self, channel: str) -> dict[str, Any]:
        flat = await self._channelShard(channel).execute("HGETALL", self._presenceKey(channel))
        return self._decodeMembers(flat)

    @staticmethod
    def _decodeMembers(flat: Any) -> dict[str, Any]:
        if isinstance(flat, dict):
            return {k: json.loads(v) for k, v in flat.items()}
        flat = list(flat or ())
        return {flat[i]: json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}

    # publishing

    def publish(self, delivery: Delivery) -> defer.Deferred[int]:
        keys = expand(delivery.channel)
        exclude = delivery.exclude or ""
        header = f"{self.nodeId}.{next(self._messageIds)}\n{exclude}\n{delivery.channel}\n"
        published = self._pubsub.eval(
            scripts.PUBLISH, [self._channelPrefix + k for k in keys], [header, delivery.payload]
        )
        counted = defer.Deferred.fromCoroutine(self._count(keys, exclude))
        d = defer.gatherResults([published, counted], consumeErrors=True)

        def unwrap(failure: Any) -> Any:
            return failure.value.subFailure if isinstance(failure.value, defer.FirstError) else failure

        return d.addCallbacks(lambda results: results[1], unwrap)

    async def _count(self, keys: Sequence[str], exclude: str) -> int:
        """How many distinct clients a publish reaches (for the reply and statistics)."""
        byShard: dict[int, list[str]] = {}
        for key in keys:
            byShard.setdefault(self._ring.index(key), []).append(self._subscribersKey(key))
        shards = list(byShard)
        results = await defer.gatherResults(
            [self._shards[i].eval(scripts.COUNT, byShard[i], [exclude, "0"]) for i in shards],
            consumeErrors=True,
        )
        busy = [i for i, r in zip(shards, results, strict=True) if int(r[0])]
        if len(busy) <= 1:
            return sum(int(r[1]) for r in results)
        # Sets on several shards may share clients: union them here (sharded deployments only).
        members = await defer.gatherResults(
            [self._shards[i].eval(scripts.COUNT, byShard[i], [exclude, "1"]) for i in busy],
            consumeErrors=True,
        )
        union: set[str] = set()
        for r in members:
            union.update(r[2])
        union.discard(exclude)
        return len(union)

    def _onMessage(self, channel: str, message: str) -> None:
        try:
            if channel.startswith(self._channelPrefix):
                self._received(message)
            elif channel == self._nodeChannel:
                self._control(message)
        except Exception:
            self._log.failure("bad pub/sub message on {channel}", channel=channel)

    def _received(self, envelope: str) -> None:
        messageId, exclude, channel, position, payload = envelope.split("\n", 4)
        keys = expand(channel)
        index = int(position)
        subscribers = self._local.index.subscribers(keys[index])
        if not subscribers:
            return
        earlier = keys[:index]
        recipients: Iterable[_LocalClient] = subscribers
        if exclude or earlier:
            # A client matched by an earlier key is served by that key's copy.
            recipients = [
                c
                for c in subscribers
                if c.id != exclude and (not earlier or c.subscriptions.isdisjoint(earlier))
            ]
            if not recipients:
                return
        self._local.enqueue(
            recipients, RelayedDelivery(channel, payload.encode(), exclude or None, messageId)
        )

    def _slow(self, client: _LocalClient) -> None:
        # Forgotten here at once, so that it stops queueing while Redis destroys it.
        self._drop(client.id)
        self._track(self.destroyClient(client.id, "slow consumer"), "dropping a slow client")

    def _handOut(self, client: _LocalClient, sink: IDeliverySink) -> None:
        self._local.handOut(client, sink)

    # sinks

    def attach(self, clientId: str, sink: IDeliverySink) -> None:
        client = self._local.get(clientId)
        if client is None:
            client = self._local.add(_LocalClient(clientId))
        client.sink = sink
        if client.held:
            # The claim under way renews the lease and hands out what is queued.
            return
        # Even a client this node has is checked (the claim script also renews its
        # lease): another node may have claimed it a moment ago, its request to hand
        # it over still on its way here. Attached to that stale copy, the connection
        # would be cut off by the hand-over (left unanswered, its lease not renewed:
        # the client expired while it waited). If the copy is stale, the client is
        # taken back like any other.
        client.held = True
        self._track(defer.Deferred.fromCoroutine(self._claim(client)), "taking over a client")
        if client.queue and client.held:
            # What is queued goes now, as before (a connect answered at once must not
            # wait for Redis, or it would never get anything); its ids are kept until
            # the check ends, so that a stale copy's messages are not given twice.
            client.sent = {d.messageId for d in client.queue}
            self._handOut(client, sink)

    def detach(self, clientId: str, sink: IDeliverySink) -> None:
        client = self._local.get(clientId)
        if client is not None and client.sink is sink:
            self._local.detach(client)

    def _detached(self, client: _LocalClient) -> None:
        self._setDeadline([client.id], self.expiry)

    def _setDeadline(self, clientIds: Sequence[str], seconds: float) -> None:
        byShard: dict[int, list[str]] = {}
        for clientId in clientIds:
            byShard.setdefault(self._ring.index(clientId), []).append(clientId)
        for i, ids in byShard.items():
            d = self._shards[i].eval(scripts.TOUCH, [self._clientsKey], [seconds, *ids])
            self._track(d.addErrback(self._failedOn, i), "moving a deadline")

    def _failedOn(self, failure: Any, index: int) -> Any:
        self._troubleAt[index] = self._reactor.seconds()
        return failure

    async def _claim(self, client: _LocalClient) -> None:
        try:
            await self._takeOver(client)
        finally:
            self._checked(client)
            client.sent = None
            waiters, client.claimWaiters = client.claimWaiters, []
            for waiter in waiters:
                waiter.callback(None)

    @staticmethod
    def _checked(client: _LocalClient) -> None:
        client.checking = False
        waiters, client.checkWaiters = client.checkWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    async def _takeOver(self, client: _LocalClient) -> None:
        clientId = client.id
        keys = self._clientKeys(clientId)
        client.checking = True
        try:
            await self._ready
            result = await self._clientShard(clientId).eval(
                scripts.CLAIM, keys[:3], [clientId, self.nodeId, 2 * self.expiry, client.epoch]
            )
            if result is None and client.epoch:
                # Unknown to Redis although this node owned it: the shard may have come
                # back empty. Once this node's clients are restored, ask again.
                await self._checkGeneration(self._ring.index(clientId))
                result = await self._clientShard(clientId).eval(
                    scripts.CLAIM, keys[:3], [clientId, self.nodeId, 2 * self.expiry, client.epoch]
                )
        except Exception:
            if self._local.get(clientId) is client:
                if client.epoch:
                    # Redis could not say: carry on with the copy we have, as before.
                    self._claimed(client)
                else:
                    self._drop(clientId)
            raise
        self._checked(client)
        if self._local.get(clientId) is not client:
            return
        if result is None:
            self._drop(clientId)
            return
        if not int(result[0]):
            self._claimed(client)
            return
        epoch, previous, subscriptions = int(result[1]), result[2], result[3:]
        client.epoch = epoch
        client.subscriptions.update(subscriptions)
        # Subscribe before asking for the old queue: from here on nothing can fall between the two.
        await defer.gatherResults(
            [self._indexAdd(client, key) for key in client.subscriptions], consumeErrors=True
        )
        handed: list[list[str]] = []
        if previous and previous != self.nodeId:
            reply = await self._call(previous, "handover", c=clientId, e=epoch)
            if reply is not None:
                handed = reply.get("queue", [])
            # What a closed previous owner left behind (older than anything handed now).
            parked = await self._clientShard(clientId).eval(scripts.UNPARK, [self._parkedKey(clientId)])
            handed = [entry.split("\n", 2) for entry in parked or ()] + handed
        if self._local.get(clientId) is not client:
            return
        if client.sent:
            handed = [entry for entry in handed if entry[0] not in client.sent]
        if handed:
            seen: set[str] = set()
            queue: list[RelayedDelivery] = []
            for messageId, channel, payload in handed:
                if messageId not in seen:
                    seen.add(messageId)
                    queue.append(RelayedDelivery(channel, payload.encode(), None, messageId))
            queue += [d for d in client.queue if d.messageId not in seen]
            client.queue = queue
        self._claimed(client)

    def _claimed(self, client: _LocalClient) -> None:
        """The client is this node's now: hand out what waited for the claim."""
        client.held = False
        if client.sink is not None and client.queue:
            self._handOut(client, client.sink)

    # node-to-node calls

    def _call(self, nodeId: str, op: str, **arguments: Any) -> defer.Deferred[dict[str, Any] | None]:
        """
        Ask another node (over its node channel) and fire with its answer, or with
        None if it is not subscribed (gone) or does not answer in time.
        """
        callId = next(self._callIds)
        answer: defer.Deferred[dict[str, Any] | None] = defer.Deferred()
        self._calls[callId] = answer
        message = json.dumps({"op": op, "id": callId, "from": self.nodeId, **arguments})

        def published(receivers: Any) -> None:
            if int(receivers) == 0 and self._calls.pop(callId, None) is not None:
                answer.callback(None)

        def failed(failure: Any) -> None:
            if self._calls.pop(callId, None) is not None:
                answer.errback(failure)

        def timedOut() -> None:
            if self._calls.pop(callId, None) is not None:
                self._log.warn("node {node} did not answer {op} in time", node=nodeId, op=op)
                answer.callback(None)

        self._pubsub.execute("PUBLISH", self._nodePrefix + nodeId, message).addCallbacks(published, failed)
        timer = self._reactor.callLater(self._handoverTimeout, timedOut)

        def stopTimer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        answer.addBoth(stopTimer)
        return answer

    def _control(self, text: str) -> None:
        message = json.loads(text)
        op = message["op"]
        if op == "reply":
            answer = self._calls.pop(message["id"], None)
            if answer is not None:
                answer.callback(message)
            return
        self._track(defer.Deferred.fromCoroutine(self._serve(op, message)), f"serving {op}")

    async def _serveHandover(self, clientId: str, epoch: int | None, reply: dict[str, Any]) -> None:
        """
        Another node claimed the client at ``epoch`` (None from a node that does not
        say) and asks for what this node queued for it.

        Our copy may be newer: the client came back here after that claim and this
        node took it back (at a higher epoch). Then it stays, and the asker gets a
        copy of its queue (older messages it must not miss; the duplicates are
        removed by id when this node takes its queue back in turn). An older copy is
        given up, once its own claim has ended: its claim's hand-over brings the
        messages before ours, and waiting cannot deadlock since a claim only ever
        waits for older ones. A connection still attached to it is answered now (the
        client has connected elsewhere since), so it neither hangs unanswered nor
        keeps a lease nobody renews.
        """
        while True:
            client = self._local.get(clientId)
            if client is None:
                return
            waiter: defer.Deferred[None] = defer.Deferred()
            if client.checking:
                # Only for the script: the rest of our claim may be waiting for the asker.
                client.checkWaiters.append(waiter)
            elif epoch is not None and client.epoch > epoch:
                reply["queue"] = self._encodeQueue(client)
                return
            elif client.held:
                client.claimWaiters.append(waiter)
            else:
                break
            # Then look again: the client may have been destroyed, or attached here again.
            await waiter
        sink = client.sink
        self._drop(clientId)
        reply["queue"] = self._encodeQueue(client)
        if sink is not None:
            self._endSink(clientId, sink, "moved")

    @staticmethod
    def _encodeQueue(client: _LocalClient) -> list[list[str]]:
        return [[d.messageId, d.channel, d.payload.decode()] for d in client.queue]

    async def _serve(self, op: str, message: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"op": "reply", "id": message["id"]}
        clientId = message.get("c", "")
        if op in ("sub", "unsub"):
            await self._ownerUpdate(op, clientId, message["k"])
        elif op == "handover":
            await self._serveHandover(clientId, message.get("e"), reply)
        elif op == "drop":
            client = self._local.get(clientId)
            sink = client.sink if client is not None else None
            self._drop(clientId)
            if sink is not None:
                self._endSink(clientId, sink, message.get("reason", ""))
        if message["from"] == self.nodeId:
            # A marker to ourselves: answer without a round trip.
            answer = self._calls.pop(message["id"], None)
            if answer is not None:
                answer.callback(reply)
            return
        await self._pubsub.execute("PUBLISH", self._nodePrefix + message["from"], json.dumps(reply))

    # expiry

    def _renewLeases(self) -> None:
        attached = [c.id for c in self._local.values() if c.sink is not None]
        for start in range(0, len(attached), 1000):
            self._setDeadline(attached[start : start + 1000], 2 * self.expiry)
        # As often as leases: a shard that came back empty is noticed (and this node's
        # clients restored) before their leases would have run out.
        self._checkGenerations()

    # Redis coming back empty

    def _subscriberConnected(self) -> None:
        # Redis may be back from a restart: look now rather than at the next renewal.
        self._checkGenerations()

    def _checkGenerations(self) -> None:
        if self._closed:
            return
        for index in range(len(self._shards)):
            if index not in self._generationChecks:
                self._track(self._checkGeneration(index), "checking Redis for lost data")

    def _checkGeneration(self, index: int) -> defer.Deferred[bool]:
        """
        Whether shard ``index`` lost what this node wrote to it (it restarted without
        persistence, or was flushed), in which case this node's clients are restored
        on it before this fires. One check at a time per shard; callers share it.

        Each shard holds a generation token, set when absent: a node that remembers
        another token than the one it finds knows the shard's contents are new.
        """
        waiters = self._generationChecks.get(index)
        if waiters is not None:
            waiter: defer.Deferred[bool] = defer.Deferred()
            waiters.append(waiter)
            return waiter
        self._generationChecks[index] = []
        d = defer.Deferred.fromCoroutine(self._checkOneGeneration(index))

        def done(result: Any) -> Any:
            for waiter in self._generationChecks.pop(index, []):
                if isinstance(result, defer.Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(result)
            return result

        return d.addBoth(done)

    async def _checkOneGeneration(self, index: int) -> bool:
        shard = self._shards[index]
        try:
            current = await shard.eval(scripts.GENERATION, [self._generationKey], [secrets.token_hex(8)])
        except Exception:
            self._troubleAt[index] = self._reactor.seconds()
            raise
        known = self._generations.get(index)
        if known is None or known == current:
            self._generations[index] = current
            return False
        # Remembered only once restored: a restore cut short is tried again at the next check.
        self._restoring.add(index)
        try:
            await self._restoreShard(index)
        finally:
            self._restoring.discard(index)
        self._generations[index] = current
        return True

    async def _restoreShard(self, index: int) -> None:
        """
        Write back to shard ``index`` what this node holds of its clients, after the
        shard lost it: their registry entries (owner, epoch, a lease), their
        subscriptions, and the subscriber sets of the keys on this shard. Clients keep
        their sessions; the SUBSCRIBEs come back with the subscriber connection.

        Idempotent and never overwriting: a client registered meanwhile (claimed by
        another node, or restored by its newer owner) is left alone and kept out of
        the subscriber sets written here. Presence is not restored: the members' data
        lives only in Redis (see REDIS-TODO). No listener events fire: from the
        cluster's point of view nothing ended and nothing began.
        """
        shard = self._shards[index]
        mine = [c for c in self._local.values() if c.epoch and self._ring.index(c.id) == index]
        elsewhere: set[str] = set()
        restored = 0
        for start in range(0, len(mine), RESTORE_BATCH):
            chunk = [c for c in mine[start : start + RESTORE_BATCH] if self._local.get(c.id) is c]
            if not chunk:
                continue
            keys = [self._clientsKey]
            args: list[Any] = [self.nodeId, 2 * self.expiry, self.expiry]
            for client in chunk:
                _, base, subs, _ = self._clientKeys(client.id)
                keys += [base, subs]
                args += [client.id, client.epoch, "1" if client.sink is not None else "0"]
                args += [len(client.subscriptions), *client.subscriptions]
            statuses = await shard.eval(scripts.RESTORE, keys, args)
            for client, status in zip(chunk, statuses, strict=True):
                if int(status) == 0:
                    elsewhere.add(client.id)
                elif int(status) == 2:
                    restored += 1
        sets: list[str] = []
        members: list[Any] = []
        for key in list(self._local.index.keys()):
            if self._ring.index(key) != index:
                continue
            ids = [
                c.id for c in self._local.index.subscribers(key) or () if c.epoch and c.id not in elsewhere
            ]
            if not ids:
                continue
            sets.append(self._subscribersKey(key))
            members += [len(ids), *ids]
            if len(members) >= RESTORE_MEMBERS:
                batch, sets, members = (sets, members), [], []
                await shard.eval(scripts.RESTORE_SUBSCRIBERS, *batch)
        if sets:
            await shard.eval(scripts.RESTORE_SUBSCRIBERS, sets, members)
        self._log.warn(
            "Redis {shard} lost its data (restarted without persistence?): restored {restored} of "
            "this node's clients on it ({moved} had moved)",
            shard=self.addresses[index].name,
            restored=restored,
            moved=len(elsewhere),
        )

    def _sweep(self) -> None:
        if self._collecting is None:
            self._collecting = defer.Deferred.fromCoroutine(self._collect())
            self._collecting.addBoth(self._collected)
            self._track(self._collecting, "garbage collection")

    def _collected(self, result: Any) -> Any:
        self._collecting = None
        return result

    async def _collect(self) -> None:
        # One node at a time: the lock expires by itself if its holder dies.
        lockMs = max(int(self._sweepInterval * 1000), 100)
        got = await self._pubsub.execute("SET", f"{self.namespace}:gc", self.nodeId, "NX", "PX", lockMs)
        if got is None:
            return
        now = self._reactor.seconds()
        for index, shard in enumerate(self._shards):
            if index in self._restoring or now - self._troubleAt.get(index, -1e9) < self.expiry:
                # Leases could not be renewed while the shard was unreachable, and this
                # node's clients may be being restored on it: let their owners catch up
                # before treating anyone as expired.
                continue
            expired = await shard.eval(scripts.EXPIRED, [self._clientsKey], [500])
            for clientId in expired or ():
                self._log.debug("client {clientId} expired", clientId=clientId)
                await self._destroy(clientId, "expired", True)

    def _ping(self) -> defer.Deferred[Any]:
        return defer.DeferredList(
            [s.ping() for s in self._shards] + [self._subscriber.ping()], consumeErrors=True
        )

    # statistics (this node's share)

    def statistics(self) -> dict[str, int]:
        """Figures for this node (clients it owns), for metrics at scrape time."""
        return self._local.statistics()

    def hasLocal(self, clientId: str) -> bool:
        """Whether this node owns the client right now (tests, diagnostics)."""
        return clientId in self._local

    def localClients(self) -> Iterable[str]:
        return self._local.ids()
