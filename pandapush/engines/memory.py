"""The in-memory engine: one process, no shared state, as fast as Python allows.

Hot path for a publish to ``/a/b/c``: five dictionary lookups (``expand``), a union
of the matching client sets, and for each recipient one list append; the batch
for each client is handed to its sink once per reactor turn by a single
``callLater(0)`` shared by all clients.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from pandapush.bayeux.channel import expand
from pandapush.engines.ids import newClientId
from pandapush.interfaces import IDeliverySink, IEngine, IEngineListener
from pandapush.listeners import ListenerRegistry

if TYPE_CHECKING:
    from pandapush.bayeux.delivery import Delivery

__all__ = ["MemoryEngine"]


class _Member:
    """A presence member on one channel, and the clients it is present through."""

    __slots__ = ("clients", "data")

    def __init__(self, data: Any) -> None:
        self.data = data
        self.clients: set[str] = set()


class _Client:
    """Everything the engine knows about one client."""

    __slots__ = ("dirty", "id", "presence", "queue", "sink", "subscriptions")

    def __init__(self, clientId: str) -> None:
        self.id = clientId
        # channel -> the member id this client is present as there
        self.presence: dict[str, str] = {}
        self.subscriptions: set[str] = set()
        self.queue: list[Delivery] = []
        self.sink: IDeliverySink | None = None
        self.dirty = False


@implementer(IEngine)
class MemoryEngine(ListenerRegistry):
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
        maxQueue: int = 10000,
    ) -> None:
        self._reactor = reactor
        self.maxQueue = maxQueue
        self.timeout = timeout
        self.expiry = expiry
        self._sweepInterval = sweepInterval
        self._clients: dict[str, _Client] = {}
        # subscription key (a channel or a pattern) -> the clients subscribed to it
        self._index: dict[str, set[_Client]] = {}
        self._listeners: list[IEngineListener] = []
        self._presence: dict[str, dict[str, _Member]] = {}
        self._dirty: list[_Client] = []
        self._flushCall: IDelayedCall | None = None
        # Detached clients in the order their deadlines fall (every client gets the
        # same expiry), so the sweep pops expired ones off the front and never
        # looks at the living.
        self._deadlines: OrderedDict[str, float] = OrderedDict()
        self._sweepCall: IDelayedCall | None = None
        self._closed = False

    # clients

    def createClient(self) -> defer.Deferred[str]:
        clientId = newClientId()
        self._clients[clientId] = _Client(clientId)
        self._startExpiry(clientId)
        self._notify("clientCreated", clientId)
        return defer.succeed(clientId)

    def clientExists(self, clientId: str) -> defer.Deferred[bool]:
        return defer.succeed(clientId in self._clients)

    def hasClient(self, clientId: str) -> bool:
        """Synchronous ``clientExists``, for tests and statistics."""
        return clientId in self._clients

    def destroyClient(self, clientId: str, reason: str = "disconnect") -> defer.Deferred[None]:
        client = self._clients.pop(clientId, None)
        if client is None:
            return defer.succeed(None)
        self._deadlines.pop(clientId, None)
        for channel in sorted(client.subscriptions):
            self._unsubscribed(client, channel)
        client.subscriptions.clear()
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
        return len(self._clients)

    # subscriptions

    def subscribe(self, clientId: str, channel: str) -> defer.Deferred[bool]:
        client = self._clients.get(clientId)
        if client is None or channel in client.subscriptions:
            return defer.succeed(False)
        client.subscriptions.add(channel)
        subscribers = self._index.get(channel)
        occupied = subscribers is None
        if subscribers is None:
            subscribers = self._index[channel] = set()
        subscribers.add(client)
        self._notify("subscribed", clientId, channel)
        if occupied:
            self._notify("channelOccupied", channel)
        return defer.succeed(True)

    def unsubscribe(self, clientId: str, channel: str) -> defer.Deferred[bool]:
        client = self._clients.get(clientId)
        if client is None or channel not in client.subscriptions:
            return defer.succeed(False)
        client.subscriptions.discard(channel)
        self._unsubscribed(client, channel)
        return defer.succeed(True)

    def subscriptions(self, clientId: str) -> defer.Deferred[set[str]]:
        client = self._clients.get(clientId)
        return defer.succeed(set(client.subscriptions) if client else set())

    def subscriberCount(self, channel: str) -> int:
        return len(self._index.get(channel, ()))

    def channels(self) -> Iterable[str]:
        """Subscription keys (channels and patterns) with at least one subscriber."""
        return self._index.keys()

    def _unsubscribed(self, client: _Client, channel: str) -> None:
        subscribers = self._index.get(channel)
        vacated = False
        if subscribers is not None:
            subscribers.discard(client)
            if not subscribers:
                del self._index[channel]
                vacated = True
        self._notify("unsubscribed", client.id, channel)
        self._leave(client, channel)
        if vacated:
            self._notify("channelVacated", channel)

    # presence

    def presenceJoin(
        self, clientId: str, channel: str, memberId: str, data: Any
    ) -> defer.Deferred[dict[str, Any]]:
        client = self._clients.get(clientId)
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

    # fan-out

    def publish(self, delivery: Delivery) -> defer.Deferred[int]:
        index = self._index
        recipients: set[_Client] | None = None
        single: set[_Client] | None = None
        for key in expand(delivery.channel):
            subscribers = index.get(key)
            if not subscribers:
                continue
            if single is None:
                single = subscribers
            else:
                if recipients is None:
                    recipients = set(single)
                recipients |= subscribers
        if recipients is None:
            recipients = single
        if delivery.exclude is not None and recipients:
            excluded = self._clients.get(delivery.exclude)
            if excluded is not None and excluded in recipients:
                recipients = recipients - {excluded}
        if not recipients:
            return defer.succeed(0)
        dirty = self._dirty
        maxQueue = self.maxQueue
        overflowing = None
        for client in recipients:
            queue = client.queue
            queue.append(delivery)
            if not client.dirty and client.sink is not None:
                client.dirty = True
                dirty.append(client)
            elif len(queue) > maxQueue:
                overflowing = [*(overflowing or []), client.id]
        if overflowing:
            # A client that lets this much pile up is not coming back for it soon:
            # drop it (it will handshake again) rather than grow without bound.
            for clientId in overflowing:
                self._log.info("dropping slow client {clientId}", clientId=clientId)
                self.destroyClient(clientId, "slow consumer")
        if dirty and self._flushCall is None and not self._closed:
            self._flushCall = self._reactor.callLater(0, self._flush)
        return defer.succeed(len(recipients))

    def _flush(self) -> None:
        self._flushCall = None
        dirty, self._dirty = self._dirty, []
        for client in dirty:
            client.dirty = False
            sink = client.sink
            if sink is None or not client.queue:
                continue
            queue, client.queue = client.queue, []
            if not sink.persistent:
                self._detach(client)
            try:
                sink.deliver(queue)
            except Exception:
                self._log.failure("delivery to {clientId} failed", clientId=client.id)

    def statistics(self) -> dict[str, int]:
        """Current totals for metrics (walks the clients: call at scrape time, not per message)."""
        return {
            "clients": len(self._clients),
            "subscriptions": sum(len(s) for s in self._index.values()),
            "channels": len(self._index),
            "queued_messages": sum(len(c.queue) for c in self._clients.values()),
        }

    def queued(self, clientId: str) -> int:
        client = self._clients.get(clientId)
        return len(client.queue) if client else 0

    # sinks

    def attach(self, clientId: str, sink: IDeliverySink) -> None:
        client = self._clients.get(clientId)
        if client is None:
            return
        client.sink = sink
        self._deadlines.pop(clientId, None)
        if client.queue:
            # Waiting messages go at once: a long-poll connect arriving to a full
            # queue is answered without holding it for a turn.
            queue, client.queue = client.queue, []
            if not sink.persistent:
                self._detach(client)
            sink.deliver(queue)

    def detach(self, clientId: str, sink: IDeliverySink) -> None:
        client = self._clients.get(clientId)
        if client is not None and client.sink is sink:
            self._detach(client)

    def _detach(self, client: _Client) -> None:
        client.sink = None
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
        for call in (self._flushCall, self._sweepCall):
            if call is not None and call.active():
                call.cancel()
        self._flushCall = self._sweepCall = None
        return defer.succeed(None)
