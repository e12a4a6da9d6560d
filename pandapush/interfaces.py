"""What is swappable in pandapush's Bayeux core.

The router (``pandapush.router``) knows only these interfaces:

- an **engine** (:class:`IEngine`) holds clients, subscriptions and per-client queues
  and fans messages out. The in-memory engine serves one process; the Redis engine
  serves many nodes, so every engine call may answer asynchronously. Engines are
  chosen by name through their :class:`IEngineFactory` (``pandapush.engines``).
- **delivery sinks** (:class:`IDeliverySink`) are where an engine hands a client's
  queued messages: a held long-poll ``/meta/connect``, a websocket, an event stream.
- **extensions** (:class:`IExtension`) see every incoming message and every outgoing
  reply, like Faye's ``addExtension``. Tenancy/auth and presence are extensions. One
  that also provides :class:`IConnectBatches` sees what each ``/meta/connect`` reply
  carries (CometD's acknowledgement extension).
- **engine listeners** (:class:`IEngineListener`) hear about clients and
  subscriptions coming and going, whatever the reason (presence, meta events, stats).

And the router itself (:class:`IRouter`) is what transports, extensions, statistics
and metrics hold: they depend on this interface, never on the router's package.

Storage and auth interfaces live in ``pandapush.storage`` and ``pandapush.auth``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from zope.interface import Attribute, Interface

from pandapush.bayeux.message import Message

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from pandapush.bayeux.context import MessageContext
    from pandapush.bayeux.delivery import Delivery

__all__ = [
    "MAX_EPOCH_LENGTH",
    "PUBLISHES",
    "EngineUnavailableError",
    "HistoryPage",
    "IClientSocket",
    "IConnectBatches",
    "IDeliverySink",
    "IEngine",
    "IEngineFactory",
    "IEngineListener",
    "IExtension",
    "IRouter",
    "IScopedExtension",
    "Message",
    "Occupancy",
    "Position",
    "Recovery",
]


class EngineUnavailableError(Exception):
    """
    The engine's shared state cannot be reached right now (Redis down, or not answering
    within its command timeout): nothing is wrong with the request, and the same request
    may work in a moment. Callers answer it as such (Bayeux ``503`` with ``retry`` advice,
    HTTP ``503`` with ``Retry-After``) without a traceback: the engine logs its outage
    itself, once. ``what`` names what is down ("Redis"); ``retryAfter`` is the seconds a
    client should wait before trying again.
    """

    def __init__(self, what: str, detail: str = "", retryAfter: float = 1.0) -> None:
        super().__init__(f"{what} unavailable" + (f": {detail}" if detail else ""))
        self.what = what
        self.detail = detail
        self.retryAfter = retryAfter


class Occupancy(NamedTuple):
    """
    How busy one channel is, cluster-wide: ``subscriptions`` are the clients subscribed to
    exactly that channel (not through a pattern), ``users`` the presence members on it.
    """

    subscriptions: int
    users: int


#: The longest epoch a client may send back: longer than any epoch an engine makes (8
#: characters), short enough to refuse junk early.
MAX_EPOCH_LENGTH = 64


class Position(NamedTuple):
    """
    Where a message stands in its channel's history: ``offset`` counts the channel's
    publishes from 1; ``epoch`` names the history it counts in, and changes whenever
    that history was lost (Redis came back empty, the application's history was reset).
    """

    offset: int
    epoch: str


class HistoryPage(NamedTuple):
    """
    A channel's history as an engine read it: its current position (``epoch`` is ""
    when the channel keeps no history) and the messages kept after the offset asked
    for, oldest first, as ``(offset, payload)`` (the payload as it was delivered).
    """

    epoch: str
    offset: int
    messages: list[tuple[int, bytes]]


class Recovery(NamedTuple):
    """
    What a resuming subscription got on one channel: the channel's current ``position``
    (None without history) and ``missed``: None if every message after the position
    asked for was sent, else why not (``"epoch changed"``, ``"position too old"``,
    ``"no history"``, ``"future"`` for an offset the channel has not reached, ``"too many
    missed"`` (more than a subscribe recovers: the oldest were sent),
    ``"unavailable"`` when the client's queue is on another node).
    """

    position: Position | None
    missed: str | None


class IDeliverySink(Interface):
    """Something that can carry messages to one client right now."""

    persistent = Attribute(
        "True for a socket that stays bound to its client (websocket, event stream);"
        " False for a one-shot held long-poll connect, which the engine detaches"
        " after one delivery."
    )

    def deliver(deliveries: Sequence[Delivery]) -> None:
        """
        Take these messages, in order. Called at most once per reactor turn per
        client, with everything queued for the client since the last call. Once
        called, the messages are out of the engine's queue.
        """


class IClientSocket(IDeliverySink):
    """
    A connection that stays open and carries replies as well as deliveries
    (a websocket; an event stream carries deliveries only). The router binds it
    to a client at the client's first ``/meta/connect`` over it.
    """

    clientId = Attribute("The client this socket is bound to, or None.")
    endsClientOnClose = Attribute(
        "True if the client is gone once this socket closes (a websocket);"
        " False if the client may carry on over other requests (an event stream)."
    )

    def sendReplies(replies: Sequence[Any]) -> None:
        """Send replies (dicts) and deliveries later than the batch they answer."""

    def close(afterReplies: bool) -> None:
        """
        Close the socket because its client is gone; with ``afterReplies``, once
        the replies to the batch being processed have been sent.
        """


class IEngineListener(Interface):
    """Hears about changes to clients and subscriptions on an engine."""

    def clientCreated(clientId: str) -> None:
        """A client completed a handshake."""

    def clientDestroyed(clientId: str, reason: str) -> None:
        """
        A client is gone: it disconnected, its websocket closed, or it expired.
        Its subscriptions were removed first, each reported to ``unsubscribed``.
        """

    def subscribed(clientId: str, channel: str) -> None:
        """A client gained a subscription (not reported again if it already had it)."""

    def unsubscribed(clientId: str, channel: str) -> None:
        """A client lost a subscription it had."""

    def channelOccupied(channel: str) -> None:
        """A subscription key (channel or pattern) gained its first subscriber."""

    def channelVacated(channel: str) -> None:
        """A subscription key lost its last subscriber."""

    def memberJoined(channel: str, memberId: str, data: Any, clientId: str) -> None:
        """
        A presence member appeared on ``channel``: ``clientId``, its first
        connection, joined (it learns the member list from its own reply, so
        announcements leave it out).
        """

    def memberLeft(channel: str, memberId: str) -> None:
        """A presence member's last connection left ``channel``."""


class IEngine(Interface):
    """
    Clients, subscriptions, per-client message queues and fan-out.

    Methods that may need a round trip to shared state return Deferreds; the
    in-memory engine answers them synchronously with already-fired Deferreds.
    Delivery never involves a Deferred per recipient: an engine appends the
    message's :class:`~pandapush.bayeux.delivery.Delivery` to each recipient's
    queue and, once per reactor turn, hands each queue to the client's attached
    :class:`IDeliverySink`.

    Message history (so a reconnecting client can recover what it missed) is the
    engine's concern too: a delivery with a ``head`` (see
    :class:`~pandapush.bayeux.delivery.Delivery`) is appended to its channel's
    history by ``publish``, which gives it its :class:`Position` before any recipient
    sees it; :meth:`history` reads it and :meth:`recover` resumes a subscription.
    """

    timeout = Attribute("Seconds a long-poll connect is held (the advice timeout).")

    def addListener(listener: IEngineListener) -> None:
        """Report client and subscription changes to ``listener``."""

    def removeListener(listener: IEngineListener) -> None:
        """Stop reporting to ``listener``."""

    def createClient() -> Deferred[str]:
        """Register a new client and return its unguessable id."""

    def clientExists(clientId: str) -> Deferred[bool]:
        """Whether the client is known and not expired."""

    def destroyClient(clientId: str, reason: str) -> Deferred[None]:
        """Forget the client, its subscriptions and its queue (no error if unknown)."""

    def ping(clientId: str) -> None:
        """The client is alive (it sent a connect): push back its expiry."""

    def subscribe(clientId: str, channel: str) -> Deferred[bool]:
        """Subscribe; True if the subscription is new."""

    def unsubscribe(clientId: str, channel: str) -> Deferred[bool]:
        """Unsubscribe; True if the client had the subscription."""

    def subscriptions(clientId: str) -> Deferred[set[str]]:
        """The client's current subscriptions."""

    def publish(delivery: Delivery) -> Deferred[int]:
        """
        Queue ``delivery`` for every client with a subscription matching its
        channel, once per client however many of its subscriptions match,
        except ``delivery.exclude`` when it names a client.
        Fires with the number of recipients once the message is safely queued.
        A delivery whose ``idempotencyKey`` was published within five minutes is not
        published again: the engine sets ``duplicate`` and the first one's position,
        and fires with 0. The check and the publish are one atomic step.
        """

    def publishBatch(deliveries: Sequence[Delivery]) -> Deferred[list[int]]:
        """
        ``publish`` for several messages, in order (each recipient gets them in this order),
        firing with each one's recipients: a server's batch, which an engine may do in one
        round trip rather than one per message.
        """

    def history(channel: str, since: int | None, limit: int) -> Deferred[HistoryPage]:
        """
        The channel's current position and at most ``limit`` of the messages it keeps
        with an offset above ``since`` (the latest ``limit`` when ``since`` is None),
        oldest first.
        """

    def recover(
        clientId: str,
        subscribe: Callable[[], Deferred[Any]],
        wanted: Mapping[str, Position | None],
        latest: Collection[str],
    ) -> Deferred[dict[str, Recovery]]:
        """
        Run ``subscribe()`` (the client's subscriptions), then queue for the client, in
        order, every message kept after each position in ``wanted`` (concrete channel
        -> the last position the client saw, or None for none) and the latest message of
        each channel in ``latest``; live messages of those channels reaching the client
        meanwhile are held back and those the history part already holds are dropped:
        no gap, no duplicate at the seam. Fires with a :class:`Recovery` for every
        channel of ``wanted`` and ``latest``. If ``subscribe()`` fails, so does this,
        queueing nothing.
        """

    def setHistoryLimits(appId: str, size: int | None, ttl: float | None) -> None:
        """
        The application's own history limits from now on: messages each of its channels
        keeps and for how many seconds (None: the server's default; size 0: no history).
        """

    def forgetHistory(appId: str) -> Deferred[None]:
        """
        Drop the history of every channel of the application at once (it was deleted,
        or its history reset): its channels start again at a new epoch.
        """

    def attach(clientId: str, sink: IDeliverySink) -> None:
        """
        Route the client's messages to ``sink`` from now on, replacing any sink
        attached before. Messages already queued are handed over at once (a
        one-shot sink may so be answered, and detached, before ``attach`` returns).
        While a sink is attached the client does not expire.
        """

    def detach(clientId: str, sink: IDeliverySink) -> None:
        """
        Stop routing to ``sink`` (nothing happens if another sink has replaced it).
        Messages queue again, and the client's expiry clock starts.
        """

    def presenceJoin(clientId: str, channel: str, memberId: str, data: Any) -> Deferred[dict[str, Any]]:
        """
        Record that ``clientId`` is present on ``channel`` as ``memberId`` with
        ``data``, and fire with every current member (``{memberId: data}``,
        this one included). Several clients may share a member id (tabs of one
        user): listeners hear ``memberJoined`` only for the first. The engine
        ends the presence itself when the client unsubscribes from ``channel``
        or is destroyed, and reports ``memberLeft`` when the last client of a
        member goes.
        """

    def presenceMembers(channel: str) -> Deferred[dict[str, Any]]:
        """The members present on ``channel``: ``{memberId: data}``."""

    def channelOccupancy(channel: str) -> Deferred[Occupancy]:
        """
        The clients subscribed to exactly ``channel`` and its presence members, counted
        over every node sharing the engine (the server API's ``GET /apps/<id>/channel``).
        """

    def occupiedChannels(appId: str, prefix: str) -> Deferred[dict[str, Occupancy]]:
        """
        The application's occupied channels whose names start with ``prefix`` (a full
        channel prefix, ``/<appId>/presence/``), each with its :class:`Occupancy`, over
        every node. Only channels one can publish to are listed: ``/<appId>/<public|private|
        presence>/...``, never a pattern (``/*``, ``/**``) nor a meta channel.
        """

    def broadcast(topic: str, data: Any) -> Deferred[None]:
        """
        Hand ``data`` (JSON-able) to the handlers of ``topic`` on every node sharing the
        engine, this one included (the memory engine calls them at once). At most once:
        a node that is down or not listening misses it. Fires once it is sent.
        """

    def onBroadcast(topic: str, handler: Callable[[Any], None]) -> None:
        """Call ``handler(data)`` for every :meth:`broadcast` of ``topic``, from any node."""

    def statistics() -> dict[str, int]:
        """
        This node's figures, read at scrape time (it may walk every client): ``clients``
        (the clients this node holds), ``subscriptions``, ``channels`` (subscription keys
        with a subscriber here) and ``queued_messages``.
        """

    def health() -> dict[str, Any]:
        """
        What the engine knows right now of the services it depends on, for health checks
        (``/health_check.json``, ``/ready``): no I/O, cheap enough to call per request.
        Always ``{"status": "ok" | "unavailable", ...}``; ``"unavailable"`` means calls are
        failing with :class:`EngineUnavailableError` (or would, for want of a connection).
        The other keys are the engine's own, JSON-able: the Redis engine adds
        ``"redis": "ok" | "unavailable"``, ``"error"`` (the cause of the outage, e.g.
        connection refused) and ``"shards"`` (each shard's status by name). The memory
        engine depends on nothing: ``{"status": "ok"}``.
        """

    def close() -> Deferred[None]:
        """Release connections and timers."""


class IEngineFactory(Interface):
    """
    Makes an engine chosen by name (``--engine``/``ENGINE``), as ``IStorageFactory``
    makes a storage: the built-in ``memory`` and ``redis``, or a third party's named
    in the ``pandapush.engines`` entry-point group. See :mod:`pandapush.engines`.
    """

    name = Attribute("The name ``--engine`` selects this engine by, e.g. 'redis'.")
    description = Attribute("One line for humans (``--help``, error messages).")
    shared = Attribute(
        "True if several processes using the engine serve as one (``--workers`` needs it; a "
        "draining node waits for other nodes to take its clients over)."
    )

    def makeEngine(reactor: Any, config: Any) -> IEngine:
        """
        A new engine for ``config`` (a ``pandapush.engines.EngineConfig``), its
        connections started; ``close()`` on it releases them.
        """


class IExtension(Interface):
    """
    A hook on the Bayeux router, as Faye's ``addExtension``.

    Extensions see each message once, never once per recipient: delivered copies of
    a published message are built from the incoming message after ``incoming`` ran,
    serialized once, and shared by all recipients.
    """

    def incoming(message: Message, context: MessageContext) -> Message | Deferred[Any] | None:
        """
        Inspect or change a message from a client before the router handles it.
        Set ``message["error"]`` to refuse it (the reply carries the error);
        return None to drop it without a reply. May answer with a Deferred.
        Values an extension needs to keep between ``incoming`` and ``outgoing``
        go in ``context.attributes``, never into the message, so they can never
        leak into a delivery.
        """

    def outgoing(reply: Message, context: MessageContext) -> Message | Deferred[Any] | None:
        """
        Inspect or change a reply to the client that sent ``context``'s message
        (never a delivery). Return None to drop it; may answer with a Deferred.
        """


#: In :class:`IScopedExtension`'s sets: the messages on every channel outside ``/meta`` (publishes).
PUBLISHES = "publish"


class IScopedExtension(IExtension):
    """
    An extension that names the messages its hooks act on: the router calls ``incoming``
    only for messages on the channels in ``incomingOn``, ``outgoing`` only for replies on
    those in ``outgoingOn`` (the five meta channels, :data:`PUBLISHES`). A message on any
    other channel (``/meta/x``, not a string) goes to both hooks, and so does every
    message while one of the router's extensions is not scoped (it may change channels).
    The hooks must leave every other message as it is, and not change a channel.

    Optionally (not an attribute of this interface, so not required), ``outgoingErrorsOn``:
    the channels whose replies ``outgoing`` acts on only when they carry an ``error``. For
    :data:`PUBLISHES` in it, and the extension among the last of the router's publishing
    hooks, a successful publish's acknowledgement skips it (the error counter's).
    """

    incomingOn = Attribute("frozenset: the channels whose messages ``incoming`` acts on.")
    outgoingOn = Attribute("frozenset: the channels whose replies ``outgoing`` acts on.")


class IConnectBatches(Interface):
    """
    An extension that also sees the messages each successful ``/meta/connect`` reply
    carries to its client, as one batch (CometD's acknowledgement extension numbers the
    batches and sends again those the client has not acknowledged). Called once per
    connect, never per message or per recipient.
    """

    def connecting(clientId: str, context: MessageContext) -> bool:
        """
        A successful ``/meta/connect`` of ``clientId`` (a known client; ``context`` is its
        connect's, after every ``incoming`` hook) is about to be held. True makes the
        client's messages go out only with its connect replies, over a websocket too
        (never straight to its socket, never between two connects), and keeps the client
        when its socket closes: it may connect again over another one until it expires.
        """

    def batch(
        clientId: str, reply: Message, context: MessageContext, deliveries: Sequence[Delivery]
    ) -> Sequence[Delivery]:
        """
        ``reply``, a successful connect reply to ``clientId``, is about to go out with
        ``deliveries`` (before the ``outgoing`` hooks run on it): the deliveries to send
        with it instead, in order. ``reply`` may be changed (its ``ext``).
        """


class IRouter(Interface):
    """
    The Bayeux router of one node, as the parts around it use it: transports hand it
    decoded batches and their sockets; extensions, statistics and metrics hook into it
    and publish through it; the service drains it when the node goes away.
    """

    engine = Attribute("The :class:`IEngine` the router serves its clients with.")
    limits = Attribute(
        "What one client may ask (``pandapush.router.Limits``: message size, channel length,"
        " subscriptions, clients per connection); read for every message, so changes apply at once."
    )
    draining = Attribute("True once :meth:`drain` was called: this node is going away.")

    def process(
        messages: Message | list[Any], context: MessageContext, socket: IClientSocket | None = None
    ) -> Deferred[list[Any]]:
        """
        Handle a batch of messages (or one). Fires with the replies, in the order of the
        messages, and for a long-poll ``/meta/connect`` the deliveries after its reply.
        Over ``socket``, a held connect's reply is sent through the socket later instead.
        A message in the batch is not handled before the one before it has been.
        """

    def processNow(
        messages: Message | list[Any], context: MessageContext, socket: IClientSocket | None = None
    ) -> list[Any] | Deferred[list[Any]]:
        """
        :meth:`process`, with the replies as a list when every message was answered at
        once (else a Deferred, as :meth:`process`); may raise where :meth:`process` fails.
        """

    def socketClosed(socket: IClientSocket) -> None:
        """``socket`` closed: unbind it, and end its client if the socket ``endsClientOnClose``."""

    def bindSocket(clientId: str, socket: IClientSocket) -> Deferred[bool]:
        """
        Bind ``socket`` to a known client (an event stream names its client in its URL):
        the client's deliveries go to it from now on. Fires with False if the client is
        unknown.
        """

    def publish(
        channel: str,
        data: Any,
        exclude: str | None = None,
        history: bool = True,
        idempotencyKey: str | None = None,
    ) -> Deferred[int]:
        """
        Publish from the server itself (REST API, presence, meta events): no extension
        runs. Fires with the number of recipients, or fails with a ``BayeuxError`` (an
        invalid channel, a message over the size limit). ``exclude`` names a client that
        should not receive it. Without ``history`` (presence notices) the message is not
        kept in its channel's history and carries no position. A second publish with the
        same ``idempotencyKey`` in the same application within five minutes is
        acknowledged (0 recipients) and not delivered again.
        """

    def publishBatch(
        messages: Sequence[tuple[str, Any]], idempotencyKeys: Sequence[str] | None = None
    ) -> Deferred[list[int]]:
        """
        Publish ``(channel, data)`` messages from the server (the server API's
        ``batch_events``), in the order given; fires with each one's recipients. Every
        message is checked (channel name, size) before any is published, so one refused
        (a ``BayeuxError`` naming its channel) refuses them all. With ``idempotencyKeys``
        (one per message), a message whose key was published within five minutes in its
        application is not published again (0 recipients).
        """

    def notify(clientId: str, message: Message) -> None:
        """
        Send ``message``, made by the server and answering nothing (a ``/meta/unsubscribe``
        for a subscription whose token expired), to one client: through its socket, with
        its held connect, or with its next connect on this node.
        """

    def terminate(clientId: str) -> None:
        """
        The server ends the client (``terminate_connections``): answer its held connect on
        this node with ``advice.reconnect: none``, and every connect of it here for a
        minute the same way, so that its library stops rather than handshakes again.
        Destroying the client in the engine is the caller's part.
        """

    def addExtension(extension: IExtension) -> None:
        """Run ``extension``'s hooks on every message and reply, after those added before it."""

    def addPublishObserver(observer: Callable[[str, int], None]) -> None:
        """Call ``observer(channel, recipients)`` once per message published (statistics, metrics)."""

    def addLimitObserver(observer: Callable[[str], None]) -> None:
        """Call ``observer(limitName)`` each time a limit refuses something (metrics)."""

    def limitRefused(limit: str) -> None:
        """Report a refusal by a limit kept outside the router (per key, per application)."""

    def heldConnects() -> int:
        """How many ``/meta/connect`` requests are being held on this node."""

    def openSockets() -> int:
        """How many sockets are bound to clients on this node."""

    def drain(reconnect: str = "handshake") -> None:
        """
        Stop serving this node's clients: answer every held connect at once with advice to
        ``reconnect`` (``retry`` when the engine is shared, so the client carries on through
        another node; ``handshake`` when its state dies with this process) and close every
        socket (going away). Handshakes and connects arriving from now on are answered at
        once with the same advice.
        """
