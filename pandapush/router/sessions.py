"""What the router keeps about the clients it serves on this node.

- held connects (:class:`HeldConnect`, kept by :class:`HeldConnects`): a ``/meta/connect``
  waiting for messages or its timeout;
- bound sockets: a websocket or event stream carrying one client's deliveries;
- notices: server-initiated messages (:meth:`Sessions.notify`) waiting for a long-poll
  client's next connect;
- fresh clients: handshaken here and not connected yet (their first connect is
  answered at once);
- the clients each socket created (the clients-per-connection limit);
- draining: answering everything at once when the node goes away.

A client an extension batches (:class:`~pandapush.interfaces.IConnectBatches`: CometD's
acknowledgements) gets its messages only with its connect replies, over a websocket too:
its held connect is its sink, as over long-polling, and its socket only carries the
replies. Its socket closing does not end it (it may come back over another one).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from pandapush._deferred import isDeferred
from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.delivery import Delivery
from pandapush.bayeux.message import Message, Reply
from pandapush.interfaces import IClientSocket, IDeliverySink, IEngine
from pandapush.listeners import EngineListener

__all__ = ["MAX_NOTICES", "TERMINATED_MEMORY", "HeldConnect", "HeldConnects", "ReplyHooks", "Sessions"]

#: Server-initiated messages kept per client until its next connect (see ``notify``).
MAX_NOTICES = 16

#: Seconds a terminated client's connects are refused with advice not to reconnect, and
#: how many such clients a node remembers at most.
TERMINATED_MEMORY = 60.0
MAX_TERMINATED = 100_000

# Seconds after its handshake a client's first connect still counts as its first (see
# Sessions.fresh): far longer than any client waits between the two.
_FRESH_WINDOW = 60.0


class ReplyHooks(Protocol):
    """What held connects need of the router's extensions (``pipeline.Extensions``)."""

    def outgoing(self, replies: list[Reply], context: MessageContext) -> list[Reply] | Deferred[list[Reply]]:
        """The outgoing hooks: replies in, replies out (now or later)."""

    def connecting(self, clientId: str, context: MessageContext) -> bool:
        """A successful connect is about to be held: True if the client's messages go with connects only."""

    def batch(
        self, clientId: str, reply: Message, context: MessageContext, deliveries: Sequence[Delivery]
    ) -> Sequence[Delivery]:
        """What a connect reply carries, once the batching extensions have seen it."""


@implementer(IDeliverySink)
class HeldConnect:
    """
    A ``/meta/connect`` waiting to be answered.

    Over long-polling it is itself the client's delivery sink (one-shot,
    ``attached``): the first messages queued for the client answer it. When the
    client has a socket bound on this node, deliveries go to the socket as they
    come and the connect is answered at its timeout: through ``socket`` if it
    came over that socket, else in its own HTTP response (``deferred``).

    ``connects`` is all it knows of the router: it sends the reply and its deliveries
    through its hooks and is released from it once answered or abandoned.
    """

    persistent = False

    # Every websocket client has one held for its life: slots, and a Deferred only for a
    # connect answered in its own HTTP response: 380 -> 187 bytes per idle websocket.
    __slots__ = (
        "attached",
        "clientId",
        "connects",
        "context",
        "deferred",
        "done",
        "reply",
        "socket",
        "timer",
    )

    #: Fires with the reply and its deliveries: a connect without a socket only.
    deferred: Deferred[list[Reply]]

    def __init__(
        self,
        connects: HeldConnects,
        clientId: str,
        reply: Message,
        context: MessageContext,
        socket: IClientSocket | None,
        attached: bool,
    ) -> None:
        self.connects = connects
        self.clientId = clientId
        self.reply = reply
        self.context = context
        self.socket = socket
        self.attached = attached
        if socket is None:
            self.deferred = Deferred()
        self.timer: IDelayedCall | None = None
        self.done = False

    def deliver(self, deliveries: Sequence[Delivery]) -> None:
        self.finish(deliveries)

    def finish(self, deliveries: Sequence[Delivery] = ()) -> None:
        """Answer now: the reply (through the outgoing hooks), then ``deliveries``."""
        if self.done:
            return
        self._end()
        hooks = self.connects.hooks
        deliveries = hooks.batch(self.clientId, self.reply, self.context, deliveries)
        replied = hooks.outgoing([self.reply], self.context)
        if isDeferred(replied):
            replied.addCallback(self._send, deliveries)
        else:
            self._send(replied, deliveries)

    def _send(self, replies: list[Reply], deliveries: Sequence[Delivery]) -> None:
        replies = [*replies, *deliveries]
        if self.socket is not None:
            self.socket.sendReplies(replies)
        else:
            self.deferred.callback(replies)

    def abandon(self) -> None:
        """Nobody is waiting for the answer any more; leave messages queued."""
        if self.done:
            return
        self._end()
        if self.socket is None:
            self.deferred.callback([])

    def _end(self) -> None:
        self.done = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.connects.release(self)


class HeldConnects:
    """
    The connects held on this node, at most one per client, and what a held connect
    needs of the router: the extensions' hooks for its reply and what it carries, and
    the engine to detach it from once it is answered.
    """

    def __init__(self, engine: IEngine, hooks: ReplyHooks) -> None:
        self.engine = engine
        self.hooks = hooks
        self._held: dict[str, HeldConnect] = {}

    def __len__(self) -> int:
        return len(self._held)

    def get(self, clientId: str) -> HeldConnect | None:
        return self._held.get(clientId)

    def all(self) -> list[HeldConnect]:
        return list(self._held.values())

    def hold(
        self,
        clientId: str,
        reply: Message,
        context: MessageContext,
        socket: IClientSocket | None,
        attached: bool,
    ) -> HeldConnect:
        """A new held connect for ``clientId``, replacing any before it (the caller answers that one)."""
        held = HeldConnect(self, clientId, reply, context, socket, attached)
        self._held[clientId] = held
        return held

    def release(self, held: HeldConnect) -> None:
        """``held`` is answered or abandoned: forget it, and stop delivering to it."""
        if self._held.get(held.clientId) is held:
            del self._held[held.clientId]
        if held.attached:
            self.engine.detach(held.clientId, held)


class Sessions(EngineListener):
    """The clients this node serves: held connects, bound sockets, notices, drain."""

    _log = Logger()

    def __init__(self, engine: IEngine, reactor: IReactorTime, hooks: ReplyHooks) -> None:
        self.engine = engine
        self.reactor = reactor
        self.hooks = hooks
        self.connects = HeldConnects(engine, hooks)
        self._sockets: dict[str, IClientSocket] = {}
        # Sockets of batched clients (IConnectBatches): they carry replies only, and
        # their closing does not end their client.
        self._batchedSockets: weakref.WeakSet[IClientSocket] = weakref.WeakSet()
        # Server-initiated messages (notify) for long-poll clients with no connect
        # held right now: they go out with the client's next connect.
        self._notices: dict[str, list[Message]] = {}
        # Clients that handshook here and have not connected yet, with the time they did:
        # their first connect is answered at once, whatever advice they sent. Entries are
        # also dropped after _FRESH_WINDOW, oldest first (insertion order is time order),
        # because a client that goes on through another node (Redis engine) may be
        # destroyed there, and this node never hears of it.
        self.fresh: dict[str, float] = {}
        #: While draining, the ``reconnect`` advice every connect gets at once; else None.
        self.reconnectAdvice: str | None = None
        # Live clients handshaken over each connection (clients per connection), both ways:
        # a websocket, or the key of a keep-alive HTTP connection.
        self._socketClients: dict[Hashable, set[str]] = {}
        self._clientSocket: dict[str, Hashable] = {}
        # Sockets that closed, for batches still being processed when they did.
        self._closedSockets: weakref.WeakSet[IClientSocket] = weakref.WeakSet()
        # Clients the server ended (terminate), with when: their connects are answered
        # with advice not to reconnect for TERMINATED_MEMORY seconds, oldest first out.
        self._terminated: OrderedDict[str, float] = OrderedDict()
        engine.addListener(self)

    # handshakes and connects

    def handshaken(self, clientId: str, connection: Hashable | None) -> None:
        """
        ``clientId`` was just created here: its first connect is answered at once.
        ``connection``, if given (a socket, or a :attr:`MessageContext.connection`),
        created it: counted towards its clients per connection while the client lives.
        """
        now = self.reactor.seconds()
        fresh = self.fresh
        while fresh:
            oldest = next(iter(fresh))
            if fresh[oldest] > now - _FRESH_WINDOW:
                break
            del fresh[oldest]
        fresh[clientId] = now
        if connection is not None:
            self._socketClients.setdefault(connection, set()).add(clientId)
            self._clientSocket[clientId] = connection

    def clientsCreatedOver(self, connection: Hashable) -> int:
        """The live clients handshaken over ``connection``."""
        return len(self._socketClients.get(connection, ()))

    def hold(
        self,
        clientId: str,
        reply: Message,
        context: MessageContext,
        socket: IClientSocket | None,
        wait: float,
    ) -> HeldConnect:
        """
        Hold a successful connect for up to ``wait`` seconds (not at all for a client's
        first): answered by the first messages for the client, a notice, the next
        connect, or its timeout. Over a socket, the socket is bound to the client. A
        batched client's connect is its sink whatever it came over.
        """
        batched = self.hooks.connecting(clientId, context)
        if socket is not None and socket.clientId != clientId:
            self._bind(clientId, socket, batched)
        elif batched and socket is not None:
            self._batchedSockets.add(socket)
        attach = batched or clientId not in self._sockets

        older = self.connects.get(clientId)
        if older is not None:
            older.finish()

        held = self.connects.hold(clientId, reply, context, socket, attach)
        if self.fresh.pop(clientId, None) is not None:
            wait = 0.0
        if attach:
            # May answer at once, synchronously, if messages are already queued.
            self.engine.attach(clientId, held)
        if not held.done and clientId in self._notices:
            held.finish([Delivery.fromMessage(n) for n in self._notices.pop(clientId)])
        if not held.done:
            if wait <= 0:
                held.finish()
            else:
                held.timer = self.reactor.callLater(wait, held.finish)
                # Held: let go if its connection goes first. Asked only now, as a
                # transport makes that Deferred when asked (a connect answered at once,
                # as every client's first is, needs none).
                lost = context.lost if attach else None
                if lost is not None:
                    lost.addCallback(lambda _: held.abandon())
        return held

    def heldConnects(self) -> int:
        return len(self.connects)

    # sockets

    def socketOf(self, clientId: str) -> IClientSocket | None:
        """The socket bound to ``clientId`` on this node, if any."""
        return self._sockets.get(clientId)

    def openSockets(self) -> int:
        return len(self._sockets)

    def _bind(self, clientId: str, socket: IClientSocket, batched: bool = False) -> None:
        if socket in self._closedSockets:
            # It closed while a batch of it still waited (on a key lookup, on the Redis
            # engine). Bound now, it would never be unbound: the client would stay
            # attached to a dead socket, its lease renewed for as long as this node
            # lives (found by bench/fuzz.py). Unbound, the client expires as usual.
            return
        previous = socket.clientId
        if previous is not None and self._sockets.get(previous) is socket:
            del self._sockets[previous]
            self.engine.detach(previous, socket)
        socket.clientId = clientId
        self._sockets[clientId] = socket
        if batched:
            # Its held connects are its sink: the socket carries their replies.
            self._batchedSockets.add(socket)
        else:
            self.engine.attach(clientId, socket)

    def bindSocket(self, clientId: str, socket: IClientSocket) -> Deferred[bool]:
        """
        Bind a socket opened for a known client (an event stream names its client
        in its URL). False if the client is unknown.
        """
        return self.engine.clientExists(clientId).addCallback(self._bindKnown, clientId, socket)

    def _bindKnown(self, known: bool, clientId: str, socket: IClientSocket) -> bool:
        if known:
            self._bind(clientId, socket)
        return known

    def socketClosed(self, socket: IClientSocket) -> None:
        """A transport's socket closed: unbind it, and end its client if it should."""
        self._closedSockets.add(socket)
        batched = socket in self._batchedSockets
        self._batchedSockets.discard(socket)
        for created in self._socketClients.pop(socket, ()):
            self._clientSocket.pop(created, None)
        clientId = socket.clientId
        if clientId is None or self._sockets.get(clientId) is not socket:
            return
        del self._sockets[clientId]
        held = self.connects.get(clientId)
        if held is not None and held.socket is socket:
            held.abandon()
        self.engine.detach(clientId, socket)
        # While draining, sockets close because this node is going away, not
        # because their clients left: a shared engine keeps them for another node.
        # A batched client may have missed its last batch with the socket: it
        # connects again over another, acknowledging what it has.
        if socket.endsClientOnClose and not batched and self.reconnectAdvice is None:
            self.engine.destroyClient(clientId, "socket closed")

    # notices

    def notify(self, clientId: str, message: Message) -> None:
        """
        Send ``message``, made by the server and not answering anything (a
        ``/meta/unsubscribe`` for a subscription whose token expired), to one client:
        through its socket on this node, else with its held connect, else with its next
        connect here (at most :data:`MAX_NOTICES` wait per client). A long-poll client
        that moves to another node before connecting again misses it.
        """
        socket = self._sockets.get(clientId)
        if socket is not None and socket not in self._batchedSockets:
            # As a delivery: an event stream carries no replies, and a websocket keeps
            # it in order with the deliveries waiting in its backlog.
            socket.deliver([Delivery.fromMessage(message)])
            return
        held = self.connects.get(clientId)
        if held is not None and held.attached:
            held.finish([Delivery.fromMessage(message)])
            return
        waiting = self._notices.setdefault(clientId, [])
        if len(waiting) < MAX_NOTICES:
            waiting.append(message)

    # terminated clients

    def terminate(self, clientId: str) -> None:
        """
        End the client's connection here telling it not to reconnect: its held connect
        (long-poll, or over its websocket) is answered with ``advice.reconnect: none``,
        and any connect of its for :data:`TERMINATED_MEMORY` seconds gets the same answer.
        The caller destroys the client in the engine.
        """
        now = self.reactor.seconds()
        terminated = self._terminated
        terminated[clientId] = now
        terminated.move_to_end(clientId)
        while terminated and (
            len(terminated) > MAX_TERMINATED or next(iter(terminated.values())) < now - TERMINATED_MEMORY
        ):
            terminated.popitem(last=False)
        held = self.connects.get(clientId)
        if held is not None:
            held.reply["advice"] = {"reconnect": "none"}
            held.finish()

    def wasTerminated(self, clientId: str) -> bool:
        when = self._terminated.get(clientId)
        return when is not None and when >= self.reactor.seconds() - TERMINATED_MEMORY

    # going away

    def drain(self, reconnect: str) -> None:
        """
        Answer every held connect at once with advice to ``reconnect``, and close every
        socket; connects arriving from now on get the same answer at once.
        """
        self.reconnectAdvice = reconnect
        for held in self.connects.all():
            held.reply["advice"] = {"reconnect": reconnect, "interval": 0}
            held.finish()
        for clientId, socket in list(self._sockets.items()):
            try:
                socket.close(afterReplies=False)
            except Exception:
                self._log.failure("closing a socket while draining failed")
            # Detached now, not when the close handshake ends: a closing socket drops
            # what it is handed, while a detached client's messages stay queued in the
            # engine for the node it reconnects to (a shared engine hands them over).
            self.engine.detach(clientId, socket)

    # IEngineListener

    def clientDestroyed(self, clientId: str, reason: str) -> None:
        self.fresh.pop(clientId, None)
        self._notices.pop(clientId, None)
        creator = self._clientSocket.pop(clientId, None)
        if creator is not None:
            created = self._socketClients.get(creator)
            if created is not None:
                created.discard(clientId)
                if not created:
                    del self._socketClients[creator]
        held = self.connects.get(clientId)
        if held is not None:
            held.finish()
        socket = self._sockets.pop(clientId, None)
        if socket is not None and reason != "socket closed":
            socket.close(afterReplies=reason == "disconnect")
