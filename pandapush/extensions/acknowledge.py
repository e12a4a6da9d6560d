"""CometD's acknowledgement extension: at-least-once delivery for the clients that ask for it.

The protocol (CometD's ``AckExtension`` is the client half, in its JavaScript and Java
libraries):

- the handshake carries ``ext: {ack: true}``; the reply says ``ext: {ack: true}`` back;
- every successful ``/meta/connect`` reply carries ``ext.ack``, the number of the batch
  of messages that travel with it (a batch may be empty);
- every ``/meta/connect`` carries in ``ext.ack`` the number of the last batch the client
  received: those up to it are acknowledged;
- a batch that is not acknowledged is sent again, before newer messages, with the next
  reply; a connect that leaves one unacknowledged is answered at once (its
  ``advice.timeout`` made 0, as CometD's server does), so a lost reply costs one round
  trip, not a long poll.

So that a batch is exactly what one reply carried, the router gives an acknowledging
client its messages only with its connect replies, over a websocket too, and keeps the
client when its socket closes (it connects again over a new socket and acknowledges
what it has): :class:`~pandapush.interfaces.IConnectBatches`, which this extension
provides. Resent messages are the same shared deliveries (no copy, nothing per
recipient); a client sees a message twice only when a reply it did read is not
acknowledged (its next connect was lost instead).

What is kept, per acknowledging client on this node (:class:`Batches`): the batches
sent and not acknowledged, and the last batch number. A client with more than
``maxUnacknowledged`` messages unacknowledged is ended, as the engine ends a slow
consumer; a client's batches are forgotten when it is destroyed here, or when it has
not connected here for ``idle`` seconds (it moved to another node, or another node
destroyed it).

Across nodes (Redis engine) the batches are this node's memory. A client whose connect
lands on another node is adopted there from the batch number it acknowledges, and what
was queued for it and not yet sent is handed over by the engine as usual; but a batch
this node sent and the client had not acknowledged when it moved is not sent again
(lost only if that reply was lost too), nor is anything of a node that dies: resuming
from channel history covers those.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.delivery import Delivery
from pandapush.bayeux.errors import BayeuxError
from pandapush.bayeux.message import CONNECT, HANDSHAKE
from pandapush.interfaces import IConnectBatches, IRouter, IScopedExtension
from pandapush.listeners import EngineListener

__all__ = ["MAX_BATCH", "MAX_UNACKNOWLEDGED", "Acknowledgements", "Batches"]

Message = dict[str, Any]

#: Messages a client may leave unacknowledged before it is ended (the engine's queue cap).
MAX_UNACKNOWLEDGED = 10_000
#: The largest batch number a client may acknowledge: the largest integer a JavaScript
#: number holds exactly (CometD's client keeps it in one).
MAX_BATCH = 2**53 - 1

# context.attributes: the handshake asked for acknowledgements; the number a connect acknowledged.
_ASKED = "ack.asked"
_ACKNOWLEDGED = "ack.batch"

_BAD_ACK = str(BayeuxError(400, [], "ext.ack must be the number of a batch received"))


class Batches:
    """One client's batches: those sent and not acknowledged yet, and the last number given."""

    __slots__ = ("last", "pending", "seen", "unacknowledged")

    def __init__(self, last: int, seen: float) -> None:
        #: The number of the last batch sent (0: none yet).
        self.last = last
        #: (number, messages) of each batch sent and not acknowledged, oldest first.
        self.pending: deque[tuple[int, Sequence[Delivery]]] = deque()
        #: How many messages those hold.
        self.unacknowledged = 0
        #: When the client last connected here.
        self.seen = seen

    def acknowledge(self, batch: int) -> None:
        """The client has every batch up to ``batch``."""
        pending = self.pending
        while pending and pending[0][0] <= batch:
            self.unacknowledged -= len(pending.popleft()[1])
        if batch > self.last:
            # Numbered by another node (the client moved, and came back): go on from there.
            self.last = batch

    def send(self, deliveries: Sequence[Delivery]) -> Sequence[Delivery]:
        """
        A new batch of ``deliveries`` (numbered :attr:`last`): what goes out with its reply,
        the unacknowledged batches first, each keeping its number.
        """
        self.last += 1
        if not self.pending:
            if deliveries:
                self.pending.append((self.last, deliveries))
                self.unacknowledged = len(deliveries)
            return deliveries
        if deliveries:
            self.pending.append((self.last, deliveries))
            self.unacknowledged += len(deliveries)
        return [delivery for _, batch in self.pending for delivery in batch]


def _batchNumber(value: Any) -> int | None:
    """``value`` as a batch number a client may acknowledge, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_BATCH:
        return value
    return None


@implementer(IScopedExtension, IConnectBatches)
class Acknowledgements(EngineListener):
    """
    The server half of CometD's acknowledgement extension (the module docstring has the
    protocol). ``idle``: seconds after a client's last connect here that its batches are
    forgotten (longer than a connect is held plus a client's expiry); ``service`` (started
    with the server) forgets them.
    """

    # What the hooks act on (IScopedExtension): the router skips them for the rest.
    incomingOn: frozenset[str] = frozenset({HANDSHAKE, CONNECT})
    outgoingOn: frozenset[str] = frozenset({HANDSHAKE})

    _log = Logger()

    def __init__(
        self,
        router: IRouter,
        clock: IReactorTime,
        idle: float = 120.0,
        maxUnacknowledged: int = MAX_UNACKNOWLEDGED,
    ) -> None:
        self.engine = router.engine
        self.clock = clock
        self.idle = idle
        self.maxUnacknowledged = maxUnacknowledged
        # By last connect here, oldest first (see forgetIdle).
        self._clients: OrderedDict[str, Batches] = OrderedDict()
        self.engine.addListener(self)
        self.service = TimerService(min(idle, 60.0), self.forgetIdle)
        self.service.clock = clock

    def batchesOf(self, clientId: str) -> Batches | None:
        """The client's batches on this node, if it acknowledges (tests, diagnostics)."""
        return self._clients.get(clientId)

    def __len__(self) -> int:
        return len(self._clients)

    # IExtension

    def incoming(self, message: Message, context: MessageContext) -> Message:
        channel = message.get("channel")
        if channel == CONNECT:
            ext = message.get("ext")
            if isinstance(ext, dict) and "ack" in ext and "error" not in message:
                self._connecting(message, context, ext["ack"])
        elif channel == HANDSHAKE:
            ext = message.get("ext")
            if isinstance(ext, dict) and ext.get("ack") is True:
                context.attributes[_ASKED] = True
        return message

    def _connecting(self, message: Message, context: MessageContext, ack: Any) -> None:
        batch = _batchNumber(ack)
        if batch is None:
            message["error"] = _BAD_ACK
            return
        context.attributes[_ACKNOWLEDGED] = batch
        clientId = message.get("clientId")
        batches = self._clients.get(clientId) if isinstance(clientId, str) else None
        if batches is None:
            return  # adopted once the router knows the client (connecting)
        batches.acknowledge(batch)
        if batches.pending:
            # A reply was lost: answer this connect at once, with what it missed.
            advice = message.get("advice")
            advice = dict(advice) if isinstance(advice, dict) else {}
            advice["timeout"] = 0
            message["advice"] = advice

    def outgoing(self, reply: Message, context: MessageContext) -> Message:
        if reply.get("channel") == HANDSHAKE and context.attributes.get(_ASKED) and reply.get("successful"):
            clientId = reply.get("clientId")
            if isinstance(clientId, str):
                self._remember(clientId, Batches(0, self.clock.seconds()))
                ext = reply.get("ext")
                reply["ext"] = {**ext, "ack": True} if isinstance(ext, dict) else {"ack": True}
        return reply

    # IConnectBatches

    def connecting(self, clientId: str, context: MessageContext) -> bool:
        batches = self._clients.get(clientId)
        now = self.clock.seconds()
        if batches is None:
            acknowledged = context.attributes.get(_ACKNOWLEDGED)
            if acknowledged is None:
                return False
            # It acknowledges, and this node has not seen it yet: it handshook or last
            # connected elsewhere (Redis engine). Adopted from the number it has.
            batches = Batches(acknowledged, now)
        else:
            batches.seen = now
        self._remember(clientId, batches)
        return True

    def batch(
        self, clientId: str, reply: Message, context: MessageContext, deliveries: Sequence[Delivery]
    ) -> Sequence[Delivery]:
        batches = self._clients.get(clientId)
        if batches is None:
            return deliveries
        carried = batches.send(deliveries)
        ext = reply.get("ext")
        reply["ext"] = {**ext, "ack": batches.last} if isinstance(ext, dict) else {"ack": batches.last}
        if batches.unacknowledged > self.maxUnacknowledged:
            self._log.info(
                "ending {clientId}: {n} messages not acknowledged",
                clientId=clientId,
                n=batches.unacknowledged,
            )
            self._forget(clientId)
            ended = self.engine.destroyClient(clientId, "slow consumer")
            ended.addErrback(
                lambda f: self._log.warn("could not end {c}: {e}", c=clientId, e=f.getErrorMessage())
            )
            return deliveries
        return carried

    # what is kept

    def _remember(self, clientId: str, batches: Batches) -> None:
        self._clients[clientId] = batches
        self._clients.move_to_end(clientId)

    def _forget(self, clientId: str) -> None:
        self._clients.pop(clientId, None)

    def forgetIdle(self) -> None:
        """Forget the clients that have not connected here for ``idle`` seconds."""
        clients = self._clients
        oldest = self.clock.seconds() - self.idle
        while clients:
            clientId, batches = next(iter(clients.items()))
            if batches.seen > oldest:
                break
            del clients[clientId]

    # IEngineListener

    def clientDestroyed(self, clientId: str, reason: str) -> None:
        self._forget(clientId)
