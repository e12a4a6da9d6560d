"""Answering messages once the incoming hooks let them through: the meta channels and publishes.

:class:`MessageHandlers` answers ``/meta/handshake``, ``/meta/connect``, ``/meta/subscribe``,
``/meta/unsubscribe`` and ``/meta/disconnect`` (the session side of a connect, holding it,
is :mod:`pandapush.router.sessions`'); :class:`Publisher` publishes a client's message, or
the server's own, through the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from pandapush._deferred import firedWith, isDeferred, settled
from pandapush.bayeux import channel as channels
from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.delivery import Delivery
from pandapush.bayeux.errors import BayeuxError
from pandapush.bayeux.idempotency import idempotencyKeyError, scopedKey
from pandapush.bayeux.message import (
    CONNECT,
    DISCONNECT,
    HANDSHAKE,
    SUBSCRIBE,
    UNSUBSCRIBE,
    Message,
    Reply,
    extensionError,
    fail,
    makeReply,
)
from pandapush.interfaces import EngineUnavailableError, IClientSocket, IEngine, Recovery
from pandapush.router.limits import Limits, Refusals, channelRefusal
from pandapush.router.pipeline import Answer, Handled, Held
from pandapush.router.resume import ResumeRequest, answer, resumeRequest
from pandapush.router.sessions import Sessions

__all__ = [
    "BAYEUX_VERSION",
    "CONNECTION_TYPES",
    "MessageHandlers",
    "Publisher",
]

BAYEUX_VERSION = "1.0"
CONNECTION_TYPES = [
    "long-polling",
    "cross-origin-long-polling",
    "callback-polling",
    "websocket",
    "eventsource",
]
_SUPPORTED = frozenset(CONNECTION_TYPES)

_Handler = Callable[[Message, MessageContext, "IClientSocket | None"], Answer]


class Publisher:
    """
    Publishes through the engine: a client's message (its incoming hooks have run) and
    the server's own (REST API, presence, meta events). Each is serialized once, as
    the :class:`~pandapush.bayeux.delivery.Delivery` every recipient shares.
    """

    _log = Logger()

    def __init__(self, engine: IEngine, limits: Limits, refusals: Refusals) -> None:
        self.engine = engine
        self.limits = limits
        self.refusals = refusals
        self._observers: list[Callable[[str, int], None]] = []

    def addObserver(self, observer: Callable[[str, int], None]) -> None:
        """Call ``observer(channel, recipients)`` once per message published (statistics)."""
        self._observers.append(observer)

    def publish(
        self,
        channel: str,
        data: Any,
        exclude: str | None = None,
        history: bool = True,
        idempotencyKey: str | None = None,
    ) -> Deferred[int]:
        """
        Publish from the server itself: no extensions run. Fires with the number of
        recipients. ``exclude`` names a client that should not receive it; without
        ``history`` (presence notices) the message is neither kept nor positioned. A
        second publish with the same ``idempotencyKey`` (checked by the caller:
        :func:`idempotencyKeyError`) in the same application within five minutes is
        acknowledged (0 recipients) and not delivered again.
        """
        refused = channelRefusal(channel, self.limits)
        if refused is not None:
            self.refusals.report(refused[0])
            return defer.fail(refused[1])
        if not channels.isValidName(channel) or channels.isMeta(channel):
            return defer.fail(BayeuxError.channelInvalid(channel))
        delivery = Delivery.fromMessage(
            {"channel": channel, "data": data}, exclude, history and not channels.isService(channel)
        )
        maxSize = self.limits.maxMessageSize
        if len(delivery.payload) > maxSize:
            self.refusals.report("message_size")
            return defer.fail(BayeuxError(413, [channel], f"Message larger than {maxSize} bytes"))
        if idempotencyKey is not None:
            delivery.idempotencyKey = scopedKey(channel, idempotencyKey)
        d = self.engine.publish(delivery)
        if self._observers:
            d.addCallback(self._published, channel)
        return d

    def publishBatch(
        self, messages: Sequence[tuple[str, Any]], idempotencyKeys: Sequence[str] | None = None
    ) -> Deferred[list[int]]:
        """
        Publish several messages from the server, in the order given. Every one is checked
        (channel name, size) before any is published: one refused refuses them all. With
        ``idempotencyKeys`` (one per message), each is published once in five minutes.
        """
        deliveries: list[Delivery] = []
        maxSize = self.limits.maxMessageSize
        for channel, data in messages:
            if not channels.isValidName(channel) or channels.isMeta(channel):
                return defer.fail(BayeuxError.channelInvalid(channel))
            delivery = Delivery.fromMessage(
                {"channel": channel, "data": data}, history=not channels.isService(channel)
            )
            if len(delivery.payload) > maxSize:
                self.refusals.report("message_size")
                return defer.fail(BayeuxError(413, [channel], f"Message larger than {maxSize} bytes"))
            deliveries.append(delivery)
        if idempotencyKeys is not None:
            for delivery, key in zip(deliveries, idempotencyKeys, strict=True):
                delivery.idempotencyKey = scopedKey(delivery.channel, key)
        try:
            published = self.engine.publishBatch(deliveries)
        except Exception:
            return defer.fail()
        now = firedWith(published)
        if now:
            # Published at once (the in-process engine): no Deferred per message.
            if isinstance(now[0], Failure):
                return defer.fail(now[0])
            self._publishedBatch(now[0], deliveries)
            return defer.succeed(now[0])

        def done(counts: list[int]) -> list[int]:
            self._publishedBatch(counts, deliveries)
            return counts

        return published.addCallback(done)

    def _publishedBatch(self, counts: list[int], deliveries: list[Delivery]) -> None:
        if self._observers:
            for recipients, delivery in zip(counts, deliveries, strict=True):
                self._published(recipients, delivery.channel)

    def _published(self, recipients: int, channel: str) -> int:
        for observer in self._observers:
            observer(channel, recipients)
        return recipients

    def handle(self, message: Message, channel: str) -> list[Reply] | Deferred[list[Reply]]:
        """The reply to a client's publish: now when the engine published at once, else a Deferred."""
        reply = makeReply(message)
        limits = self.limits
        error: str | BayeuxError | None = None
        refused = channelRefusal(channel, limits)
        if refused is not None:
            return self.refusals.refuse(reply, *refused)
        if not channels.isValidName(channel):
            error = BayeuxError.channelInvalid(channel)
        elif "data" not in message:
            error = BayeuxError.parameterMissing("data")
        error = error or extensionError(message)
        if error is not None:
            return [fail(reply, error)]
        delivered: Message = {"channel": channel, "data": message["data"]}
        if "id" in message:
            delivered["id"] = message["id"]
        ext = message.get("ext")
        key: Any = None
        if isinstance(ext, dict) and "idempotencyKey" in ext:
            # The publisher's, not the subscribers': not delivered.
            ext = dict(ext)
            key = ext.pop("idempotencyKey")
            keyError = idempotencyKeyError(key)
            if keyError is not None:
                return [fail(reply, BayeuxError(400, [channel], keyError))]
        if ext is not None:
            delivered["ext"] = ext
        delivery = Delivery.fromMessage(delivered, history=not channels.isService(channel))
        if key is not None:
            delivery.idempotencyKey = scopedKey(channel, key)
        if len(delivery.payload) > limits.maxMessageSize:
            return self.refusals.refuse(
                reply,
                "message_size",
                BayeuxError(413, [channel], f"Message larger than {limits.maxMessageSize} bytes"),
            )
        try:
            published = self.engine.publish(delivery)
        except Exception:
            published = defer.fail()
        now = firedWith(published)
        if now:
            return self._answer(now[0], reply, channel)
        return published.addBoth(self._answer, reply, channel)

    def _answer(self, recipients: int | Failure, reply: Message, channel: str) -> list[Reply]:
        try:
            if isinstance(recipients, Failure):
                recipients.raiseException()
            if self._observers:
                self._published(recipients, channel)
        except EngineUnavailableError as error:
            # Redis down: the engine logged the outage once; the publisher may try again.
            return [fail(reply, BayeuxError(503, [channel], f"{error.what} unavailable; try again later"))]
        except Exception:
            self._log.failure("engine failed to publish to {channel}", channel=channel)
            return [fail(reply, BayeuxError.publishFailed(channel))]
        reply["successful"] = True
        return [reply]


class MessageHandlers:
    """
    Answers each message the incoming hooks let through (a
    :class:`~pandapush.router.pipeline.MessageHandler`): the meta channels here,
    publishes through the :class:`Publisher`.

    ``timeout`` is how long a ``/meta/connect`` is held (seconds; the ``advice.timeout``
    sent to clients); ``interval`` is the advised pause between connects.
    """

    _log = Logger()

    def __init__(
        self,
        engine: IEngine,
        sessions: Sessions,
        publisher: Publisher,
        limits: Limits,
        refusals: Refusals,
        timeout: float,
        interval: float,
    ) -> None:
        self.engine = engine
        self.sessions = sessions
        self.publisher = publisher
        self.limits = limits
        self.refusals = refusals
        self.timeout = timeout
        self.interval = interval
        self._handlers: dict[str, _Handler] = {
            HANDSHAKE: self._handshake,
            CONNECT: self._connect,
            SUBSCRIBE: self._subscribe,
            UNSUBSCRIBE: self._unsubscribe,
            DISCONNECT: self._disconnect,
        }

    def dispatch(self, message: Message, context: MessageContext, socket: IClientSocket | None) -> Answer:
        channel = message.get("channel")
        if channel is None:
            return [fail(makeReply(message), BayeuxError.parameterMissing("channel"))]
        if not isinstance(channel, str):
            return [fail(makeReply(message), BayeuxError.badRequest("channel"))]
        if channels.isMeta(channel):
            handler = self._handlers.get(channel)
            if handler is None:
                return [fail(makeReply(message), BayeuxError.channelForbidden(channel))]
            return handler(message, context, socket)
        return self.publisher.handle(message, channel)

    def refuseHandshake(self, message: Message, handshakes: int) -> list[Reply] | None:
        maxClients = self.limits.maxClientsPerConnection
        if maxClients and handshakes > maxClients:
            return self._tooManyClients(message)
        return None

    def _tooManyClients(self, message: Message) -> list[Reply]:
        reply = makeReply(message)
        limit = self.limits.maxClientsPerConnection
        replies = self.refusals.refuse(
            reply,
            "clients_per_connection",
            BayeuxError(403, [], f"Too many clients (limit {limit} per connection)"),
        )
        # Handshake again later, not at once: by then the connection's old clients
        # have expired (a loop of instant retries is Faye's reconnect storm).
        reply["advice"] = {"reconnect": "handshake", "interval": 10_000}
        return replies

    def _advise(self, reply: Message, connectionType: Any = None) -> Message:
        if "error" in reply:
            reply["advice"] = {"reconnect": "handshake"}
        elif connectionType == "eventsource":
            reply["advice"] = {"reconnect": "retry", "interval": int(self.timeout * 1000), "timeout": 0}
        else:
            reply["advice"] = {
                "reconnect": "retry",
                "interval": int(self.interval * 1000),
                "timeout": int(self.timeout * 1000),
            }
        return reply

    # Each handler answers at once while the engine does (the in-memory engine, always),
    # else a Deferred: a step whose engine call has not fired goes on in a callback on it,
    # with what it had so far passed along, and nothing runs twice. The same functions
    # serve both ways, so a Redis engine sees the same calls in the same order. As
    # coroutines (Deferred.fromCoroutine per message, and for each await a generator in
    # Deferred.__await__) the meta handlers were ~11 % of a reconnect storm's busy samples.

    def _clientError(self, clientId: Any) -> BayeuxError | Deferred[BayeuxError | None] | None:
        """The error for a message whose clientId is missing or unknown, else None (now or later)."""
        if clientId is None or clientId == "":
            return BayeuxError.parameterMissing("clientId")
        if not isinstance(clientId, str):
            return BayeuxError.clientUnknown(clientId)
        exists = settled(self.engine.clientExists(clientId))
        if isDeferred(exists):
            return exists.addCallback(_unknownUnless, clientId)
        return _unknownUnless(exists, clientId)

    def _handshake(self, message: Message, context: MessageContext, socket: IClientSocket | None) -> Answer:
        reply = makeReply(message)
        reply["version"] = BAYEUX_VERSION
        reply["supportedConnectionTypes"] = CONNECTION_TYPES
        error: str | BayeuxError | None = None
        if not message.get("version"):
            error = BayeuxError.parameterMissing("version")
        clientTypes = message.get("supportedConnectionTypes")
        if clientTypes is None:
            error = BayeuxError.parameterMissing("supportedConnectionTypes")
        elif not isinstance(clientTypes, list):
            error = BayeuxError.badRequest("supportedConnectionTypes")
        elif not any(isinstance(t, str) and t in _SUPPORTED for t in clientTypes):
            error = BayeuxError.conntypeMismatch(*[t for t in clientTypes if isinstance(t, str)])
        error = error or extensionError(message)
        if error is None and self.sessions.reconnectAdvice is not None:
            # A client handshaking with a node that is going away would get a
            # session that dies with it: send it elsewhere instead.
            reply = fail(reply, BayeuxError(BayeuxError.SERVER_ERROR, [], "Server shutting down"))
            reply["advice"] = {"reconnect": "handshake", "interval": 1000}
            return [reply]
        if error is not None:
            return [self._advise(fail(reply, error))]
        maxClients = self.limits.maxClientsPerConnection
        # Counted by TCP connection: a websocket, or every request of a keep-alive HTTP
        # connection together (counted by request, one connection made 1,000 clients in 0.1 s).
        connection = (socket if socket is not None else context.connection) if maxClients else None
        if connection is not None and self.sessions.clientsCreatedOver(connection) >= maxClients:
            return self._tooManyClients(message)
        clientId = settled(self.engine.createClient())
        if isDeferred(clientId):
            return clientId.addCallback(self._handshaken, reply, connection)
        return self._handshaken(clientId, reply, connection)

    def _handshaken(self, clientId: str, reply: Message, connection: Hashable | None) -> Handled:
        self.sessions.handshaken(clientId, connection)
        reply["clientId"] = clientId
        reply["successful"] = True
        return [self._advise(reply)]

    def _connect(self, message: Message, context: MessageContext, socket: IClientSocket | None) -> Answer:
        reply = makeReply(message)
        clientId = message.get("clientId")
        connectionType = message.get("connectionType")
        if isinstance(clientId, str) and self.sessions.wasTerminated(clientId):
            # Ended by the server (terminate_connections): go away, do not handshake again.
            reply = fail(reply, BayeuxError(401, [clientId], "Connection terminated by the server"))
            reply["advice"] = {"reconnect": "none"}
            return [reply]
        error = self._clientError(clientId)
        if isDeferred(error):
            return error.addCallback(
                self._connectChecked, message, context, socket, reply, clientId, connectionType
            )
        return self._connectChecked(error, message, context, socket, reply, clientId, connectionType)

    def _connectChecked(
        self,
        error: str | BayeuxError | None,
        message: Message,
        context: MessageContext,
        socket: IClientSocket | None,
        reply: Message,
        clientId: Any,
        connectionType: Any,
    ) -> Handled:
        if connectionType is None:
            error = BayeuxError.parameterMissing("connectionType")
        elif not isinstance(connectionType, str) or connectionType not in _SUPPORTED:
            error = BayeuxError.conntypeMismatch(connectionType)
        error = error or extensionError(message)
        if error is not None:
            reply.pop("clientId", None)
            return [self._advise(fail(reply, error), connectionType)]
        assert isinstance(clientId, str) and isinstance(connectionType, str)
        reply["successful"] = True
        self._advise(reply, connectionType)
        reconnect = self.sessions.reconnectAdvice
        if reconnect is not None:
            reply["advice"] = {"reconnect": reconnect, "interval": 0}
            return [reply]
        self.engine.ping(clientId)
        held = self.sessions.hold(clientId, reply, context, socket, self._holdFor(message, connectionType))
        if socket is not None:
            return []  # its reply goes through the socket
        return Held(held.deferred)

    def _holdFor(self, message: Message, connectionType: str) -> float:
        """How long the client asks its connect to be held, within the server's timeout."""
        if connectionType == "eventsource":
            return 0.0
        advice = message.get("advice")
        requested = advice.get("timeout") if isinstance(advice, dict) else None
        if isinstance(requested, int | float) and not isinstance(requested, bool) and requested >= 0:
            return min(requested / 1000.0, self.timeout)
        return self.timeout

    def _subscription(self, message: Message, subscribing: bool) -> Answer:
        reply = makeReply(message)
        clientId = message.get("clientId")
        subscription = message.get("subscription")
        error = self._clientError(clientId)
        if isDeferred(error):
            return error.addCallback(
                self._subscriptionChecked, message, reply, clientId, subscription, subscribing
            )
        return self._subscriptionChecked(error, message, reply, clientId, subscription, subscribing)

    def _subscriptionChecked(
        self,
        error: str | BayeuxError | None,
        message: Message,
        reply: Message,
        clientId: Any,
        subscription: Any,
        subscribing: bool,
    ) -> Answer:
        reply["subscription"] = subscription if subscription is not None else []
        if subscription is None or subscription == "" or subscription == []:
            error = BayeuxError.parameterMissing("subscription")
        elif not (
            isinstance(subscription, str)
            or (isinstance(subscription, list) and all(isinstance(c, str) for c in subscription))
        ):
            error = BayeuxError.badRequest("subscription")
        error = error or extensionError(message)
        if error is not None:
            return [fail(reply, error)]
        assert isinstance(clientId, str)
        # Each channel once, in order: a list naming one twice asks for it once.
        asked: list[str] = [subscription] if isinstance(subscription, str) else list(subscription or [])
        requested = list(dict.fromkeys(asked))
        limits = self.limits
        # All or nothing: every channel is checked before any is subscribed, so a refused
        # message leaves the client's subscriptions as they were (a subscribe to 10,000
        # channels used to leave the first 128 subscribed), and the error names the first
        # channel that could not be.
        for channel in requested:
            refused = channelRefusal(channel, limits)
            if refused is not None:
                return self.refusals.refuse(reply, *refused)
            if not channels.isValid(channel):
                return [fail(reply, BayeuxError.channelInvalid(channel))]
            if not channels.isSubscribable(channel):
                return [fail(reply, BayeuxError.channelForbidden(channel))]
        if not subscribing:
            return _succeeding(self._unsubscribeAll(clientId, requested), reply)
        request = resumeRequest(message, requested, limits.maxSubscriptions)
        if isinstance(request, BayeuxError):
            return [fail(reply, request)]
        current = settled(self.engine.subscriptions(clientId))
        if isDeferred(current):
            return current.addCallback(self._subscribeKnown, reply, clientId, requested, request, limits)
        return self._subscribeKnown(current, reply, clientId, requested, request, limits)

    def _subscribeKnown(
        self,
        current: set[str],
        reply: Message,
        clientId: str,
        requested: list[str],
        request: ResumeRequest,
        limits: Limits,
    ) -> Answer:
        """The subscribe, once the client's ``current`` subscriptions are known."""
        new = [channel for channel in requested if channel not in current]
        room = limits.maxSubscriptions - len(current)
        if len(new) > room:
            return self.refusals.refuse(
                reply,
                "subscriptions",
                BayeuxError(
                    403,
                    [new[max(room, 0)]],
                    f"Too many subscriptions (limit {limits.maxSubscriptions} per client)",
                ),
            )
        if not request.wanted and not request.latest:
            return _succeeding(self._subscribeAll(clientId, requested, current), reply)
        # Subscribed, then what was missed queued before anything live (see resume).
        outcomes = settled(
            self.engine.recover(
                clientId,
                lambda: self._subscribeAllDeferred(clientId, requested, current),
                request.wanted,
                request.latest,
            )
        )
        if isDeferred(outcomes):
            return outcomes.addCallback(self._recovered, reply, clientId, requested, request, current)
        return self._recovered(outcomes, reply, clientId, requested, request, current)

    def _recovered(
        self,
        outcomes: dict[str, Recovery],
        reply: Message,
        clientId: str,
        requested: list[str],
        request: ResumeRequest,
        current: set[str],
    ) -> Answer:
        future = answer(reply, request, outcomes)
        if future is None:
            return _succeeded(None, reply)
        undone = self._undo(clientId, [c for c in requested if c not in current])
        if isDeferred(undone):
            return undone.addCallback(lambda _: [fail(reply, future)])
        return [fail(reply, future)]

    def _subscribeAll(
        self,
        clientId: str,
        requested: list[str],
        current: set[str],
        start: int = 0,
        added: list[str] | None = None,
    ) -> Deferred[None] | None:
        """
        Subscribe to each of ``requested`` from ``start`` on (``added``: the new ones so far):
        None once done at once, else a Deferred; if the engine fails, undo the new ones and fail.
        """
        if added is None:
            added = []
        try:
            for index in range(start, len(requested)):
                channel = requested[index]
                subscribed = settled(self.engine.subscribe(clientId, channel))
                if isDeferred(subscribed):
                    return subscribed.addCallbacks(
                        self._subscribedOne,
                        self._subscribeFailed,
                        callbackArgs=(clientId, requested, current, index, added),
                        errbackArgs=(clientId, added),
                    )
                if channel not in current:
                    added.append(channel)
        except Exception:
            failure = Failure()
            undone = self._undo(clientId, added)
            if isDeferred(undone):
                return undone.addCallback(lambda _: failure)
            raise
        return None

    def _subscribedOne(
        self, _: object, clientId: str, requested: list[str], current: set[str], index: int, added: list[str]
    ) -> Deferred[None] | None:
        if requested[index] not in current:
            added.append(requested[index])
        return self._subscribeAll(clientId, requested, current, index + 1, added)

    def _subscribeFailed(self, failure: Failure, clientId: str, added: list[str]) -> Failure | Deferred[Any]:
        undone = self._undo(clientId, added)
        if isDeferred(undone):
            return undone.addCallback(lambda _: failure)
        return failure

    def _subscribeAllDeferred(self, clientId: str, requested: list[str], current: set[str]) -> Deferred[None]:
        """:meth:`_subscribeAll` as ``IEngine.recover``'s ``subscribe`` wants it: a Deferred."""
        try:
            subscribed = self._subscribeAll(clientId, requested, current)
        except Exception:
            return defer.fail()
        return subscribed if subscribed is not None else defer.succeed(None)

    def _undo(self, clientId: str, added: list[str], start: int = 0) -> Deferred[None] | None:
        """Unsubscribe from each of ``added`` from ``start`` on, logging (not raising) what fails."""
        for index in range(start, len(added)):
            channel = added[index]
            try:
                undone = settled(self.engine.unsubscribe(clientId, channel))
            except Exception:
                self._log.failure("could not undo the subscription to {channel}", channel=channel)
                continue
            if isDeferred(undone):
                return undone.addCallbacks(
                    self._undoNext,
                    self._undoFailed,
                    callbackArgs=(clientId, added, index),
                    errbackArgs=(clientId, added, index),
                )
        return None

    def _undoNext(self, _: object, clientId: str, added: list[str], index: int) -> Deferred[None] | None:
        return self._undo(clientId, added, index + 1)

    def _undoFailed(
        self, failure: Failure, clientId: str, added: list[str], index: int
    ) -> Deferred[None] | None:
        self._log.failure("could not undo the subscription to {channel}", failure, channel=added[index])
        return self._undo(clientId, added, index + 1)

    def _unsubscribeAll(self, clientId: str, requested: list[str], start: int = 0) -> Deferred[None] | None:
        """Unsubscribe from each of ``requested`` from ``start`` on, in order: None if done at once."""
        for index in range(start, len(requested)):
            unsubscribed = settled(self.engine.unsubscribe(clientId, requested[index]))
            if isDeferred(unsubscribed):
                return unsubscribed.addCallback(self._unsubscribeNext, clientId, requested, index)
        return None

    def _unsubscribeNext(
        self, _: object, clientId: str, requested: list[str], index: int
    ) -> Deferred[None] | None:
        return self._unsubscribeAll(clientId, requested, index + 1)

    def _subscribe(self, message: Message, context: MessageContext, socket: IClientSocket | None) -> Answer:
        return self._subscription(message, subscribing=True)

    def _unsubscribe(self, message: Message, context: MessageContext, socket: IClientSocket | None) -> Answer:
        return self._subscription(message, subscribing=False)

    def _disconnect(self, message: Message, context: MessageContext, socket: IClientSocket | None) -> Answer:
        reply = makeReply(message)
        clientId = message.get("clientId")
        error = self._clientError(clientId)
        if isDeferred(error):
            return error.addCallback(self._disconnectChecked, message, socket, reply, clientId)
        return self._disconnectChecked(error, message, socket, reply, clientId)

    def _disconnectChecked(
        self,
        error: str | BayeuxError | None,
        message: Message,
        socket: IClientSocket | None,
        reply: Message,
        clientId: Any,
    ) -> Answer:
        error = error or extensionError(message)
        if error is not None:
            reply.pop("clientId", None)
            return [fail(reply, error)]
        assert isinstance(clientId, str)
        if socket is not None and self.sessions.socketOf(clientId) is not socket:
            # Disconnecting over a socket that was never bound: close it anyway.
            socket.close(afterReplies=True)
        destroyed = settled(self.engine.destroyClient(clientId, "disconnect"))
        return _succeeding(destroyed if isDeferred(destroyed) else None, reply)


def _unknownUnless(exists: bool, clientId: str) -> BayeuxError | None:
    return None if exists else BayeuxError.clientUnknown(clientId)


def _succeeded(_: object, reply: Message) -> Handled:
    reply["successful"] = True
    return [reply]


def _succeeding(done: Deferred[Any] | None, reply: Message) -> Answer:
    """``reply``, successful, once ``done`` (None: done already) has fired."""
    if done is None:
        return _succeeded(None, reply)
    return done.addCallback(_succeeded, reply)
