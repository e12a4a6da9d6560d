"""The in-memory engine: one process, no shared state, as fast as Python allows.

Hot path for a publish to ``/a/b/c``: one dictionary lookup when no wildcard key may
match it, else five (``expand``) and a union of the matching client sets, and for
each recipient one list append; the batch for each client is handed to its sink once
per reactor turn by a single ``callLater(0)`` shared by all clients. That local part (index, queues and their
cap, the flush, statistics) is :mod:`pandapush.engines.local`, shared with the
Redis engine; what is this engine's own is presence and expiry.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from pandapush.bayeux import json
from pandapush.bayeux.channel import listedApp
from pandapush.bayeux.delivery import Delivery
from pandapush.engines.history import HistorySettings, MemoryEngineHistory, MemoryHistory
from pandapush.engines.ids import newClientId
from pandapush.engines.local import DEFAULT_MAX_QUEUE, LocalClient, LocalClients, ObservedFlushes
from pandapush.interfaces import IDeliverySink, IEngine, IEngineListener, Occupancy
from pandapush.listeners import ListenerRegistry

__all__ = ["MemoryEngine"]


class _Member:
    """A presence member on one channel, and the clients it is present through."""

    __slots__ = ("clients", "data")

    def __init__(self, data: Any) -> None:
        self.data = data
        self.clients: set[str] = set()


class _Client(LocalClient):
    """Everything the engine knows about one client: the local part, and its presence."""

    __slots__ = ("presence",)

    def __init__(self, clientId: str) -> None:
        super().__init__(clientId)
        # channel -> the member id this client is present as there
        self.presence: dict[str, str] = {}


@implementer(IEngine)
class MemoryEngine(ListenerRegistry, MemoryEngineHistory, ObservedFlushes):
    """
    Clients, subscriptions and queues in this process's memory.

    ``expiry`` is how long a client with no attached sink (between two long-poll
    connects, or after its event stream closed) survives before it is destroyed.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        timeout: float = 30.0,
        expiry: float = 10.0,
        sweepInterval: float = 1.0,
        maxQueue: int = DEFAULT_MAX_QUEUE,
        history: HistorySettings | None = None,
    ) -> None:
        self._reactor = reactor
        self._history = MemoryHistory(reactor, history or HistorySettings())
        self.timeout = timeout
        self.expiry = expiry
        self._sweepInterval = sweepInterval
        self._local: LocalClients[_Client] = LocalClients(
            reactor, detached=self._detached, slow=self._slow, maxQueue=maxQueue
        )
        self._listeners: list[IEngineListener] = []
        self._presence: dict[str, dict[str, _Member]] = {}
        # appId -> its occupied channels (listedApp's): the server API lists them
        # without walking every subscription key of every application.
        self._appChannels: dict[str, set[str]] = {}
        self._broadcastHandlers: dict[str, list[Callable[[Any], None]]] = {}
        # Detached clients in the order their deadlines fall (every client gets the
        # same expiry), so the sweep pops expired ones off the front and never
        # looks at the living.
        self._deadlines: OrderedDict[str, float] = OrderedDict()
        self._sweepCall: IDelayedCall | None = None
        self._closed = False

    @property
    def maxQueue(self) -> int:
        """Messages a client without a sink may have waiting before it is dropped."""
        return self._local.maxQueue

    @maxQueue.setter
    def maxQueue(self, value: int) -> None:
        self._local.maxQueue = value

    # clients

    def createClient(self) -> defer.Deferred[str]:
        clientId = newClientId()
        self._local.add(_Client(clientId))
        self._startExpiry(clientId)
        self._notify("clientCreated", clientId)
        return defer.succeed(clientId)

    def clientExists(self, clientId: str) -> defer.Deferred[bool]:
        return defer.succeed(clientId in self._local.clients)

    def hasClient(self, clientId: str) -> bool:
        """Synchronous ``clientExists``: tests, statistics, the router (docs/extending.md)."""
        return clientId in self._local.clients

    clientExistsNow = hasClient

    def destroyClient(self, clientId: str, reason: str = "disconnect") -> defer.Deferred[None]:
        client = self._local.clients.pop(clientId, None)
        if client is None:
            return defer.succeed(None)
        self._deadlines.pop(clientId, None)
        for channel in sorted(client.subscriptions):
            self._unsubscribed(client, channel)
        client.queue.clear()
        client.sink = None
        self._notify("clientDestroyed", clientId, reason)
        return defer.succeed(None)

    def ping(self, clientId: str) -> None:
        # Liveness is tracked through attach/detach: a client with a sink never
        # expires, and a detached one's clock starts at detach. A connect always
        # attaches, so there is nothing more to do here.
        pass

    def clientCount(self) -> int:
        return len(self._local)

    # subscriptions

    def subscribe(self, clientId: str, channel: str) -> defer.Deferred[bool]:
        client = self._local.clients.get(clientId)
        if client is None or channel in client.subscriptions:
            return defer.succeed(False)
        client.subscriptions.add(channel)  # LocalClients.subscribe, without its call
        occupied = self._local.index.add(client, channel)
        self._notify("subscribed", clientId, channel)
        if occupied:
            app = listedApp(channel)
            if app is not None:
                self._appChannels.setdefault(app, set()).add(channel)
            self._notify("channelOccupied", channel)
        return defer.succeed(True)

    def unsubscribe(self, clientId: str, channel: str) -> defer.Deferred[bool]:
        client = self._local.get(clientId)
        if client is None or channel not in client.subscriptions:
            return defer.succeed(False)
        self._unsubscribed(client, channel)
        return defer.succeed(True)

    def subscriptions(self, clientId: str) -> defer.Deferred[set[str]]:
        client = self._local.get(clientId)
        return defer.succeed(set(client.subscriptions) if client else set())

    def subscriberCount(self, channel: str) -> int:
        return self._local.index.count(channel)

    def channels(self) -> Iterable[str]:
        """Subscription keys (channels and patterns) with at least one subscriber."""
        return self._local.index.keys()

    def _unsubscribed(self, client: _Client, channel: str) -> None:
        vacated = self._local.unsubscribe(client, channel)
        self._notify("unsubscribed", client.id, channel)
        if client.presence:
            self._leave(client, channel)
        if vacated:
            app = listedApp(channel)
            occupied = self._appChannels.get(app) if app is not None else None
            if occupied is not None:
                occupied.discard(channel)
                if not occupied:
                    del self._appChannels[app]  # type: ignore[arg-type]
            self._notify("channelVacated", channel)

    # presence

    def presenceJoin(
        self, clientId: str, channel: str, memberId: str, data: Any
    ) -> defer.Deferred[dict[str, Any]]:
        client = self._local.get(clientId)
        if client is None:
            return defer.succeed(self._members(channel))
        if client.presence.get(channel, memberId) != memberId:
            self._leave(client, channel)
        members = self._presence.setdefault(channel, {})
        member = members.get(memberId)
        if member is None:
            member = members[memberId] = _Member(data)
            member.clients.add(clientId)
            client.presence[channel] = memberId
            self._notify("memberJoined", channel, memberId, data, clientId)
        else:
            # Another tab of a present member: not announced again, latest data kept.
            member.data = data
            member.clients.add(clientId)
            client.presence[channel] = memberId
        return defer.succeed(self._members(channel))

    def presenceMembers(self, channel: str) -> defer.Deferred[dict[str, Any]]:
        return defer.succeed(self._members(channel))

    def _members(self, channel: str) -> dict[str, Any]:
        return {memberId: member.data for memberId, member in self._presence.get(channel, {}).items()}

    def _leave(self, client: _Client, channel: str) -> None:
        memberId = client.presence.pop(channel, None)
        if memberId is None:
            return
        members = self._presence.get(channel)
        if members is None or memberId not in members:
            return
        member = members[memberId]
        member.clients.discard(client.id)
        if member.clients:
            return
        del members[memberId]
        if not members:
            del self._presence[channel]
        self._notify("memberLeft", channel, memberId)

    # occupancy

    def _occupancy(self, channel: str) -> Occupancy:
        return Occupancy(self._local.index.count(channel), len(self._presence.get(channel, ())))

    def channelOccupancy(self, channel: str) -> defer.Deferred[Occupancy]:
        return defer.succeed(self._occupancy(channel))

    def occupiedChannels(self, appId: str, prefix: str) -> defer.Deferred[dict[str, Occupancy]]:
        channels = self._appChannels.get(appId, ())
        return defer.succeed({c: self._occupancy(c) for c in channels if c.startswith(prefix)})

    # broadcasts (one process: every handler is this node's)

    def broadcast(self, topic: str, data: Any) -> defer.Deferred[None]:
        # As JSON, as another node would receive it: handlers see the same on both engines.
        data = json.loads(json.dumps(data))
        for handler in list(self._broadcastHandlers.get(topic, ())):
            try:
                handler(data)
            except Exception:
                self._log.failure("broadcast handler for {topic} failed", topic=topic)
        return defer.succeed(None)

    def onBroadcast(self, topic: str, handler: Callable[[Any], None]) -> None:
        self._broadcastHandlers.setdefault(topic, []).append(handler)

    # fan-out

    def publish(self, delivery: Delivery) -> defer.Deferred[int]:
        return defer.succeed(self._publishNow(delivery))

    def publishBatch(self, deliveries: Sequence[Delivery]) -> defer.Deferred[list[int]]:
        return defer.succeed([self._publishNow(d) for d in deliveries])

    def _publishNow(self, delivery: Delivery) -> int:
        history = self._history
        # admit's own first step, without the call: nearly every publish has no key.
        if delivery.idempotencyKey is None:
            history.append(delivery)
        elif not history.admit(delivery):
            return 0
        local = self._local
        excluded = local.get(delivery.exclude) if delivery.exclude is not None else None
        recipients = local.index.matching(delivery.channel, excluded)
        if recipients:
            local.enqueue(recipients, delivery)
        return len(recipients)

    #: :meth:`publish`, answering the number of recipients itself: the router takes it so
    #: for a client's publish (a fired Deferred and looking into it cost ~2 µs each).
    publishNow = _publishNow

    def _slow(self, client: _Client) -> None:
        self.destroyClient(client.id, "slow consumer")

    def statistics(self) -> dict[str, int]:
        """Current totals for metrics (walks the clients: call at scrape time, not per message)."""
        return self._local.statistics()

    def health(self) -> dict[str, Any]:
        """Nothing outside this process to lose: always ok."""
        return {"status": "ok"}

    def queued(self, clientId: str) -> int:
        return self._local.queued(clientId)

    # sinks

    def attach(self, clientId: str, sink: IDeliverySink) -> None:
        client = self._local.get(clientId)
        if client is None:
            return
        client.sink = sink
        self._deadlines.pop(clientId, None)
        if client.queue and not client.recovering:
            # Waiting messages go at once: a long-poll connect arriving to a full
            # queue is answered without holding it for a turn.
            sink.deliver(self._local.take(client, sink))

    def detach(self, clientId: str, sink: IDeliverySink) -> None:
        client = self._local.get(clientId)
        if client is not None and client.sink is sink:
            self._local.detach(client)

    def _detached(self, client: _Client) -> None:
        self._startExpiry(client.id)

    # expiry

    def _startExpiry(self, clientId: str) -> None:
        self._deadlines[clientId] = self._reactor.seconds() + self.expiry
        self._deadlines.move_to_end(clientId)
        if self._sweepCall is None and not self._closed:
            self._sweepCall = self._reactor.callLater(self._sweepInterval, self._sweep)

    def _sweep(self) -> None:
        self._sweepCall = None
        now = self._reactor.seconds()
        deadlines = self._deadlines
        while deadlines:
            clientId, deadline = next(iter(deadlines.items()))
            if deadline > now:
                break
            del deadlines[clientId]
            self._log.debug("client {clientId} expired", clientId=clientId)
            self.destroyClient(clientId, "expired")
        if deadlines:
            self._sweepCall = self._reactor.callLater(self._sweepInterval, self._sweep)

    def close(self) -> defer.Deferred[None]:
        self._closed = True
        self._local.close()
        self._history.close()
        if self._sweepCall is not None and self._sweepCall.active():
            self._sweepCall.cancel()
        self._sweepCall = None
        return defer.succeed(None)
