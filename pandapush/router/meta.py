"""Answering messages once the incoming hooks let them through: the meta channels and publishes.

:class:`MessageHandlers` answers ``/meta/handshake``, ``/meta/connect``, ``/meta/subscribe``,
``/meta/unsubscribe`` and ``/meta/disconnect`` (the session side of a connect, holding it,
is :mod:`pandapush.router.sessions`', subscribing :mod:`pandapush.router.subscribing`'), and
hands every other message to the :class:`~pandapush.router.publishing.Publisher`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from twisted.logger import Logger

from pandapush._deferred import isDeferred, settled
from pandapush.bayeux import channel as channels
from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.errors import BayeuxError
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
from pandapush.interfaces import IClientSocket, IEngine
from pandapush.router.limits import Limits, Refusals
from pandapush.router.pipeline import Answer, Handled, Held
from pandapush.router.publishing import Publisher
from pandapush.router.sessions import Sessions
from pandapush.router.subscribing import SubscriptionHandler, clientError, succeeding

__all__ = [
    "BAYEUX_VERSION",
    "CONNECTION_TYPES",
    "MessageHandlers",
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
        self.refusals = refusals
        self.timeout = timeout
        self.interval = interval
        # Answers /meta/subscribe and /meta/unsubscribe; holds the limits for both (below).
        self.subscriptions = SubscriptionHandler(engine, limits, refusals)
        self._handlers: dict[str, _Handler] = {
            HANDSHAKE: self._handshake,
            CONNECT: self._connect,
            SUBSCRIBE: self._subscribe,
            UNSUBSCRIBE: self._unsubscribe,
            DISCONNECT: self._disconnect,
        }

    @property
    def limits(self) -> Limits:
        return self.subscriptions.limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self.subscriptions.limits = limits

    def dispatch(self, message: Message, context: MessageContext, socket: IClientSocket | None) -> Answer:
        channel = message.get("channel")
        if channel is None:
            return [fail(makeReply(message), BayeuxError.parameterMissing("channel"))]
        if not isinstance(channel, str):
            return [fail(makeReply(message), BayeuxError.badRequest("channel"))]
        # Every handled channel is a meta channel: looked up first, as nearly every
        # message of a long-polling client is one of them.
        handler = self._handlers.get(channel)
        if handler is not None:
            return handler(message, context, socket)
        if channels.isMeta(channel):
            return [fail(makeReply(message), BayeuxError.channelForbidden(channel))]
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
        error = clientError(self.engine, clientId)
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
        # A tuple, not ``int | float``: that union is made anew on every call.
        if isinstance(requested, (int, float)) and not isinstance(requested, bool) and requested >= 0:
            return min(requested / 1000.0, self.timeout)
        return self.timeout

    def _subscribe(self, message: Message, context: MessageContext, socket: IClientSocket | None) -> Answer:
        return self.subscriptions.handle(message, subscribing=True)

    def _unsubscribe(self, message: Message, context: MessageContext, socket: IClientSocket | None) -> Answer:
        return self.subscriptions.handle(message, subscribing=False)

    def _disconnect(self, message: Message, context: MessageContext, socket: IClientSocket | None) -> Answer:
        reply = makeReply(message)
        clientId = message.get("clientId")
        error = clientError(self.engine, clientId)
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
        return succeeding(destroyed if isDeferred(destroyed) else None, reply)
