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
keeps it (see ``claims.Claims.handOver``). A subscribe/unsubscribe handled
by a node that does not own the client is forwarded to the owner, and answered
once the owner's index (and its SUBSCRIBE) is in place. Node-to-node calls go
over ``<ns>:node:<nodeId>``; PUBLISH reporting no receiver means the node is gone.

*Expiry*: the registry is a sorted set of deadlines per shard. A detached client
gets ``now + expiry``; an attached one a lease of ``2 * expiry`` that its owner
renews every ``expiry / 2``, so clients of a crashed node expire (and their
presence members leave) within about ``2 * expiry``. A garbage collector runs
on whichever node holds ``<ns>:gc`` (SET NX PX) and destroys expired clients
with a script that re-checks the deadline, so a destruction happens once.

*Destroying* survives Redis answering late or not at all: the node forgets the
client at once, moves it from the registry to ``<ns>:dying`` (keeping its keys until
every subscriber set has been left), tries again while Redis does not answer, and
the collector finishes what a node did not (see ``destroy``).

*Redis coming back empty*: the owners are the source of truth. Each shard holds a
generation token (set when absent); a node that finds another token than the one it
remembers knows the shard lost its data (restart without persistence), and writes back
its clients of that shard (registry entry, owner, epoch, subscriptions, presence
memberships) and the subscriber sets and presence members of the keys on it, in
batched scripts that never overwrite a client registered meanwhile (see
``restore``). It looks when its pub/sub connection reconnects, at every lease
renewal, and before telling that a client it owns is unknown. For that the owner
holds its clients' memberships (channel, member id, data) as well as Redis does
(see ``presence``).

Trade-offs: pub/sub is at-most-once. A node whose SUBSCRIBE connection is down,
or that crashes, loses what was queued in its memory for its clients (the
clients carry on with their session on another node); a node that closes parks
its clients' queues in Redis for the node they reconnect to. Until a client
whose owner is gone has been claimed by a new node, nobody listens for it. The hand-over costs a
round trip to the previous owner whenever a long-poll client changes node
(sticky load balancing avoids it). All pub/sub goes through one shard.

Where each part lives
---------------------
``engine`` (here): :class:`RedisEngine`, the IEngine facade: clients and
lifecycle. ``node``: this node, the clients it owns (their local part is
:mod:`pandapush.engines.local`'s, as in the memory engine) and the work it has
under way. ``keys``: key names and the shard of each. ``fanout``: publishing and
receiving. ``history``: channel history in Redis Streams (appended by the publish
script) and the history methods. ``recovery``: resuming a client another node owns.
``subscriptions``. ``presence``. ``claims``: claims, hand-over, parking.
``rpc``: node-to-node calls. ``destroy``: destroying clients. ``occupancy``:
channel counts and the index of occupied channels. ``broadcast``: messages to every
node. ``restore``: Redis coming back empty. ``stale``: copies whose hand-over request
never arrived. ``gc``: deadlines, leases, the collector.
``scripts``: the Lua scripts.
:mod:`pandapush.redis` holds the connections.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from pandapush.bayeux.delivery import Delivery
from pandapush.engines.history import HistorySettings
from pandapush.engines.ids import newClientId
from pandapush.engines.local import DEFAULT_MAX_QUEUE, ObservedFlushes
from pandapush.engines.redis import scripts
from pandapush.engines.redis.claims import Claims
from pandapush.engines.redis.destroy import Destroyer
from pandapush.engines.redis.fanout import Fanout
from pandapush.engines.redis.gc import Expiry
from pandapush.engines.redis.history import RedisEngineHistory, RedisHistory
from pandapush.engines.redis.keys import RedisKeys, Shards
from pandapush.engines.redis.node import Node, OwnedClient, unavailableAsEngine
from pandapush.engines.redis.nodes import FailoverGate, NodeRegistry
from pandapush.engines.redis.occupancy import ClusterQueries
from pandapush.engines.redis.presence import Presence
from pandapush.engines.redis.recovery import RemoteRecovery
from pandapush.engines.redis.restore import Restorer
from pandapush.engines.redis.rpc import NodeRPC
from pandapush.engines.redis.stale import StaleCopies
from pandapush.engines.redis.subscriptions import Subscriptions
from pandapush.interfaces import IDeliverySink, IEngine, IEngineListener
from pandapush.listeners import ListenerRegistry
from pandapush.redis import RedisAddress, RedisSubscriber, parseRedisHosts

__all__ = ["DEFAULT_NAMESPACE", "RedisEngine"]

DEFAULT_NAMESPACE = "pandapush"


@implementer(IEngine)
class RedisEngine(ListenerRegistry, ClusterQueries, RedisEngineHistory, ObservedFlushes):
    """
    An IEngine whose state is shared by every node using the same Redis
    shards and ``namespace``.

    Connections start at construction (they are lazy and reconnect forever);
    ``ready()`` fires once this node can receive messages, ``close()`` releases
    everything. ``expiry``/``sweepInterval``/``maxQueue`` as in the memory engine;
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
        history: HistorySettings | None = None,
    ) -> None:
        self._reactor: IReactorTime = reactor
        self.timeout = timeout
        self.expiry = expiry
        self.namespace = namespace
        self.addresses = parseRedisHosts(hosts) if isinstance(hosts, str) else list(hosts)
        self._listeners: list[IEngineListener] = []
        keys = self._keys = RedisKeys(namespace)
        shards = self._shards = Shards(reactor, self.addresses, commandTimeout, reconnectMaxDelay, replicas)
        self._subscriber = RedisSubscriber(
            reactor,
            self.addresses[0],
            self._onMessage,
            commandTimeout,
            reconnectMaxDelay,
            onConnected=self._subscriberConnected,
        )
        node = self._node = Node(
            reactor,
            keys,
            shards,
            self._subscriber,
            expiry,
            detached=self._detached,
            slow=self._slow,
            maxQueue=maxQueue,
            flushDelay=batchWindow,
        )
        self.nodeId = node.id
        self._local = node.local
        self._rpc = NodeRPC(node, handoverTimeout)
        self._restorer = Restorer(node)
        self._presence = Presence(node, self._rpc, self._restorer, self._notify)
        self._claims = Claims(node, self._rpc, self._restorer, self._presence)
        self._fanout = Fanout(node, RedisHistory(node, history or HistorySettings()))
        self._recovery = RemoteRecovery(node, self._rpc, self._fanout.history, self._recoveredDelivery)
        self._subscriptions = Subscriptions(
            node, self._rpc, self._presence, self._restorer, self._fanout.history, self._notify
        )
        self._destroyer = Destroyer(node, self._rpc, self._presence, self._notify)
        self._expiry = Expiry(node, self._restorer, self._destroyer, sweepInterval)
        # Copies whose hand-over request never arrived; at least twice the time a new
        # owner waits for that request's answer (see ``stale``).
        self._stale = StaleCopies(node, self._restorer, max(expiry, 2 * handoverTimeout))
        # Here too: tests stop them to play a node that was killed.
        self._sweeper, self._renewer = self._expiry.sweeper, self._expiry.renewer
        self._pinger = task.LoopingCall(self._ping)
        self._pinger.clock = reactor
        self._pinger.start(pingInterval, now=False).addErrback(node.loopFailed, "ping")
        self._rpc.handle("drop", self._serveDrop)
        self._startCluster(node, self._restorer)
        # After an outage, publishes wait until every live node listens again (nodes.py).
        self._subscriber.setMarker(keys.up(node.id))
        self._nodes = NodeRegistry(node, max(expiry / 2, 0.05))
        shards.pubsub.gateReconnections(FailoverGate(node, self._nodes))

    @property
    def maxQueue(self) -> int:
        """Messages a client without a sink may have waiting before it is dropped."""
        return self._local.maxQueue

    @maxQueue.setter
    def maxQueue(self, value: int) -> None:
        self._local.maxQueue = value

    def shardFor(self, clientIdOrKey: str) -> RedisAddress:
        """The shard holding a client's state or a subscription key's subscribers."""
        return self._shards.address(clientIdOrKey)

    # lifecycle

    def ready(self) -> defer.Deferred[None]:
        """Fires once this node receives pub/sub messages (its node channel and broadcasts)."""
        ready = [self._subscriber.subscribe(self._node.channel), self._broadcasts.ready()]
        return defer.gatherResults(ready).addCallback(lambda _: None)

    async def _settle(self) -> None:
        await self._node.quiet()
        # Everything PUBLISHed before this marker reaches our SUBSCRIBE connection before it.
        await self._rpc.call(self.nodeId, "marker")
        while self._node.pending or self._local.flushPending:
            await self._node.quiet()
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
        node = self._node
        if node.closed:
            return
        node.closed = True
        self._expiry.stop()
        self._stale.stop()
        if self._pinger.running:
            self._pinger.stop()
        self._local.close()
        self._nodes.close()
        if node.pending:
            await defer.DeferredList(list(node.pending), consumeErrors=True)
        await self._destroyer.close()
        await self._claims.park()
        self._rpc.close()
        await self._subscriber.close()
        await self._shards.close()

    def _ping(self) -> defer.Deferred[Any]:
        return defer.DeferredList([*self._shards.ping(), self._subscriber.ping()], consumeErrors=True)

    def _onMessage(self, channel: str, message: str) -> None:
        try:
            if channel.startswith(self._keys.channelPrefix):
                self._fanout.received(message)
            elif channel == self._node.channel:
                self._control(message)
            elif channel == self._keys.broadcast:
                self._broadcasts.received(message)
        except Exception:
            self._log.failure("bad pub/sub message on {channel}", channel=channel)

    def _control(self, text: str) -> None:
        self._rpc.received(text)

    def _subscriberConnected(self) -> None:
        # Redis may be back from a restart: look now rather than at the next renewal.
        self._restorer.checkAll()

    # clients

    def createClient(self) -> defer.Deferred[str]:
        return unavailableAsEngine(defer.Deferred.fromCoroutine(self._createClient()))

    async def _createClient(self) -> str:
        clientId = newClientId()
        clients, base, _, _ = self._keys.client(clientId)
        sent = self._reactor.seconds()
        generation = await self._shards.of(clientId).eval(
            scripts.CREATE,
            [clients, base, self._keys.generation],
            [clientId, self.nodeId, self.expiry, self._restorer.newToken()],
        )
        self._restorer.remember(self._shards.index(clientId), generation)
        # The creating node owns it: the client's first requests usually come back here.
        client = self._local.add(OwnedClient(clientId))
        client.epoch = 1
        client.confirmed = sent
        self._notify("clientCreated", clientId)
        return clientId

    def clientExists(self, clientId: str) -> defer.Deferred[bool]:
        if self._node.knownRegistered(clientId):
            # Asked for every message of a client: answered here while Redis's last
            # answer about it still holds (see Node.knownRegistered).
            return defer.succeed(True)
        d = self._shards.of(clientId).eval(scripts.EXISTS, [self._keys.clients], [clientId])

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

        return unavailableAsEngine(d.addCallback(answer))

    async def _existsAfterCheck(self, clientId: str) -> bool:
        await self._restorer.check(self._shards.index(clientId))
        # Asked again whatever the check found: a restore that ended between our first
        # question and the check has put the client back too.
        result = await self._shards.of(clientId).eval(scripts.EXISTS, [self._keys.clients], [clientId])
        return int(result) == 1

    def destroyClient(self, clientId: str, reason: str = "disconnect") -> defer.Deferred[None]:
        # Does not fail for Redis being unavailable: the client is forgotten here at once
        # and its destroy finished once Redis answers (see ``destroy``).
        d = defer.Deferred.fromCoroutine(self._destroyer.destroy(clientId, reason))
        return unavailableAsEngine(d.addCallback(lambda _: None))

    def dying(self) -> int:
        """Destroys this node began and Redis has not confirmed yet (tests, diagnostics)."""
        return len(self._destroyer.dying)

    def _slow(self, client: OwnedClient) -> None:
        # Forgotten here at once, so that it stops queueing while Redis destroys it.
        self._node.drop(client.id)
        self._node.track(self.destroyClient(client.id, "slow consumer"), "dropping a slow client")

    async def _serveDrop(self, message: dict[str, Any], reply: dict[str, Any]) -> None:
        """The client was destroyed through another node: forget it, end its connection here."""
        clientId = message.get("c", "")
        client = self._local.get(clientId)
        sink = client.sink if client is not None else None
        self._node.drop(clientId)
        if sink is not None:
            self._node.endSink(clientId, sink, message.get("reason", ""))

    def ping(self, clientId: str) -> None:
        """As in the memory engine, liveness follows attach/detach (and lease renewal)."""

    # subscriptions

    def subscribe(self, clientId: str, channel: str) -> defer.Deferred[bool]:
        return unavailableAsEngine(self._subscriptions.subscribe(clientId, channel))

    def unsubscribe(self, clientId: str, channel: str) -> defer.Deferred[bool]:
        return unavailableAsEngine(self._subscriptions.unsubscribe(clientId, channel))

    def subscriptions(self, clientId: str) -> defer.Deferred[set[str]]:
        return unavailableAsEngine(self._subscriptions.of(clientId))

    # presence and publishing

    def presenceJoin(
        self, clientId: str, channel: str, memberId: str, data: Any
    ) -> defer.Deferred[dict[str, Any]]:
        return unavailableAsEngine(self._presence.join(clientId, channel, memberId, data))

    def presenceMembers(self, channel: str) -> defer.Deferred[dict[str, Any]]:
        return unavailableAsEngine(self._presence.members(channel))

    def publish(self, delivery: Delivery) -> defer.Deferred[int]:
        return unavailableAsEngine(self._fanout.publish(delivery))

    def publishBatch(self, deliveries: Sequence[Delivery]) -> defer.Deferred[list[int]]:
        return unavailableAsEngine(self._fanout.publishBatch(deliveries))

    # sinks

    def attach(self, clientId: str, sink: IDeliverySink) -> None:
        self._claims.attach(clientId, sink)

    def detach(self, clientId: str, sink: IDeliverySink) -> None:
        client = self._local.get(clientId)
        if client is not None and client.sink is sink:
            self._local.detach(client)

    def _detached(self, client: OwnedClient) -> None:
        self._expiry.setDeadline([client.id], self.expiry)

    # statistics (this node's share)

    def statistics(self) -> dict[str, int]:
        """Figures for this node (clients it owns), for metrics at scrape time."""
        return self._local.statistics()

    def health(self) -> dict[str, Any]:
        return self._node.health()

    def hasLocal(self, clientId: str) -> bool:
        """Whether this node owns the client right now (tests, diagnostics)."""
        return clientId in self._local

    def localClients(self) -> Iterable[str]:
        return self._local.ids()
