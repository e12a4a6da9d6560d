"""The Bayeux router: messages in, replies and deliveries out.

It knows the protocol (meta channels, errors, advice, held connects) and the
interfaces around it (engine, extensions, sockets), never HTTP, websockets,
storage or tenancy. Transports call :meth:`BayeuxRouter.process` with decoded
messages and write back what it answers.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pandapush._deferred import firedWith
from pandapush.bayeux import channel as channels
from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.delivery import Delivery
from pandapush.bayeux.errors import BayeuxError
from pandapush.interfaces import IClientSocket, IDeliverySink, IEngine, IExtension
from pandapush.listeners import EngineListener

__all__ = ["BAYEUX_VERSION", "CONNECTION_TYPES", "BayeuxRouter", "Limits"]

BAYEUX_VERSION = "1.0"
CONNECTION_TYPES = [
    "long-polling",
    "cross-origin-long-polling",
    "callback-polling",
    "websocket",
    "eventsource",
]
_SUPPORTED = frozenset(CONNECTION_TYPES)

HANDSHAKE = "/meta/handshake"
CONNECT = "/meta/connect"
SUBSCRIBE = "/meta/subscribe"
UNSUBSCRIBE = "/meta/unsubscribe"
DISCONNECT = "/meta/disconnect"

Message = dict[str, Any]
Reply = Message | Delivery

#: Server-initiated messages kept per client until its next connect (see ``notify``).
MAX_NOTICES = 16


def _makeReply(message: Message) -> Message:
    """A reply echoing the request's ``id`` (verbatim, whatever it is), clientId, channel."""
    reply: Message = {}
    if "id" in message:
        reply["id"] = message["id"]
    clientId = message.get("clientId")
    if clientId is not None:
        reply["clientId"] = clientId
    channel = message.get("channel")
    if channel is not None:
        reply["channel"] = channel
    return reply


def _extensionError(message: Message) -> str | None:
    error = message.get("error")
    if error is None:
        return None
    return error if isinstance(error, str) else str(BayeuxError.badRequest())


def _tooLong(channel: str, limit: int) -> BayeuxError:
    return BayeuxError(405, [channel[:limit] + "..."], f"Channel name longer than {limit} characters")


# Seconds after its handshake a client's first connect still counts as its first (see
# BayeuxRouter._fresh): far longer than any client waits between the two.
_FRESH_WINDOW = 60.0


def _isPublish(message: Any) -> bool:
    channel = message.get("channel") if isinstance(message, dict) else None
    return isinstance(channel, str) and not channels.isMeta(channel)


def _fail(reply: Message, error: str | BayeuxError) -> Message:
    reply["error"] = str(error)
    reply["successful"] = False
    return reply


class Limits:
    """
    What one client may ask of the router. Defaults are in the range Pusher and
    Centrifugo users know: 64 KiB messages, 200-character channel names, 128
    subscriptions per client.

    ``maxClientsPerConnection`` bounds the clients one connection may create: live
    clients handshaken over one websocket, and handshakes in one HTTP batch (0:
    unlimited). A Faye or CometD client needs one; a few more cover a client that
    handshakes again while its old session has not expired yet.
    """

    def __init__(
        self,
        maxMessageSize: int = 64 * 1024,
        maxChannelLength: int = 200,
        maxSubscriptions: int = 128,
        maxClientsPerConnection: int = 4,
    ):
        self.maxMessageSize = maxMessageSize
        self.maxChannelLength = maxChannelLength
        self.maxSubscriptions = maxSubscriptions
        self.maxClientsPerConnection = maxClientsPerConnection


@implementer(IDeliverySink)
class _HeldConnect:
    """
    A ``/meta/connect`` waiting to be answered.

    Over long-polling it is itself the client's delivery sink (one-shot,
    ``attached``): the first messages queued for the client answer it. When the
    client has a socket bound on this node, deliveries go to the socket as they
    come and the connect is answered at its timeout: through ``socket`` if it
    came over that socket, else in its own HTTP response.
    """

    persistent = False

    def __init__(
        self,
        router: BayeuxRouter,
        clientId: str,
        reply: Message,
        context: MessageContext,
        socket: IClientSocket | None,
        attached: bool,
    ) -> None:
        self.router = router
        self.clientId = clientId
        self.reply = reply
        self.context = context
        self.socket = socket
        self.attached = attached
        self.deferred: Deferred[list[Reply]] = Deferred()
        self.timer: IDelayedCall | None = None
        self.done = False

    def deliver(self, deliveries: Sequence[Delivery]) -> None:
        self.finish(deliveries)

    def finish(self, deliveries: Sequence[Delivery] = ()) -> None:
        if self.done:
            return
        self._end()
        replied = self.router._outgoing([self.reply], self.context)
        if isinstance(replied, Deferred):
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
        router = self.router
        if router._held.get(self.clientId) is self:
            del router._held[self.clientId]
        if self.attached:
            router.engine.detach(self.clientId, self)


class BayeuxRouter(EngineListener):
    """
    Handles Bayeux messages for one node.

    ``timeout`` is how long a ``/meta/connect`` is held (seconds; the
    ``advice.timeout`` sent to clients); ``interval`` is the advised pause
    between connects.
    """

    _log = Logger()

    def __init__(
        self,
        engine: IEngine,
        reactor: IReactorTime,
        timeout: float = 30.0,
        interval: float = 0.0,
        limits: Limits | None = None,
    ) -> None:
        self.engine = engine
        self.reactor = reactor
        self.timeout = timeout
        self.interval = interval
        self.limits = limits or Limits()
        self._limitObservers: list[Callable[[str], None]] = []
        self._extensions: list[IExtension] = []
        self._publishObservers: list[Callable[[str, int], None]] = []
        self._held: dict[str, _HeldConnect] = {}
        self._sockets: dict[str, IClientSocket] = {}
        # Server-initiated messages (:meth:`notify`) for long-poll clients with no connect
        # held right now: they go out with the client's next connect.
        self._notices: dict[str, list[Message]] = {}
        # Clients that handshook here and have not connected yet, with the time they did:
        # their first connect is answered at once, whatever advice they sent. Entries are
        # also dropped after _FRESH_WINDOW, oldest first (insertion order is time order),
        # because a client that goes on through another node (Redis engine) may be
        # destroyed there, and this node never hears of it.
        self._fresh: dict[str, float] = {}
        self._draining: str | None = None
        # Live clients handshaken over each socket (clients per connection), both ways.
        self._socketClients: dict[IClientSocket, set[str]] = {}
        self._clientSocket: dict[str, IClientSocket] = {}
        # Sockets that closed, for batches still being processed when they did.
        self._closedSockets: weakref.WeakSet[IClientSocket] = weakref.WeakSet()
        engine.addListener(self)
        self._handlers: dict[str, Callable[..., Coroutine[Any, Any, list[Reply] | Deferred[list[Reply]]]]] = {
            HANDSHAKE: self._handshake,
            CONNECT: self._connect,
            SUBSCRIBE: self._subscribe,
            UNSUBSCRIBE: self._unsubscribe,
            DISCONNECT: self._disconnect,
        }

    # extensions

    def addExtension(self, extension: IExtension) -> None:
        self._extensions.append(extension)

    def removeExtension(self, extension: IExtension) -> None:
        self._extensions.remove(extension)

    # entry points

    def process(
        self, messages: Message | list[Any], context: MessageContext, socket: IClientSocket | None = None
    ) -> Deferred[list[Reply]]:
        """
        Handle a batch. Fires with the replies (and, for a long-poll connect, the
        deliveries after its reply) in the order of the messages. Over a socket, a
        held connect's reply is sent through the socket later instead.
        """
        if isinstance(messages, dict):
            messages = [messages]
        if not messages:
            return defer.succeed([])
        if all(_isPublish(message) for message in messages):
            return self._publishBatch(messages, context, socket)
        return Deferred.fromCoroutine(self._processBatch(messages, context, socket))

    def _publishBatch(
        self, messages: list[Any], context: MessageContext, socket: IClientSocket | None
    ) -> Deferred[list[Reply]]:
        # The hot path (publishers send one publish per frame): handled without a
        # coroutine while every step answers at once; from the first one that does
        # not, the rest of the batch waits for it, in order, as in _processBatch.
        replies: list[Reply] = []
        for index, message in enumerate(messages):
            result = self._publishNow(message, context if index == 0 else context.forMessage(), socket)
            if isinstance(result, Deferred):
                return Deferred.fromCoroutine(
                    self._publishRest(replies, result, messages, index + 1, context, socket)
                )
            replies.extend(result)
        return defer.succeed(replies)

    async def _publishRest(
        self,
        replies: list[Reply],
        waiting: Deferred[list[Reply]],
        messages: list[Any],
        start: int,
        context: MessageContext,
        socket: IClientSocket | None,
    ) -> list[Reply]:
        replies.extend(await waiting)
        for message in messages[start:]:
            result = self._publishNow(message, context.forMessage(), socket)
            replies.extend(await result if isinstance(result, Deferred) else result)
        return replies

    async def _processBatch(
        self, messages: list[Any], context: MessageContext, socket: IClientSocket | None
    ) -> list[Reply]:
        # One message after another, so a batch's publishes keep their order even
        # when an extension must look something up; a held connect does not
        # block the messages after it, its reply is collected at the end.
        results: list[list[Reply] | Deferred[list[Reply]]] = []
        handshakes = 0
        maxClients = self.limits.maxClientsPerConnection
        for index, message in enumerate(messages):
            messageContext = context if index == 0 else context.forMessage()
            if isinstance(message, dict) and message.get("channel") == HANDSHAKE:
                handshakes += 1
                if maxClients and handshakes > maxClients:
                    refused = self._outgoing(self._tooManyClients(message), messageContext)
                    results.append(await refused if isinstance(refused, Deferred) else refused)
                    continue
            results.append(await self._handle(message, messageContext, socket))
        replies: list[Reply] = []
        for result in results:
            replies.extend(await result if isinstance(result, Deferred) else result)
        return replies

    def addLimitObserver(self, observer: Callable[[str], None]) -> None:
        """Call ``observer(limitName)`` each time a limit refuses a message (metrics)."""
        self._limitObservers.append(observer)

    def limitRefused(self, limit: str) -> None:
        """Report a refusal by a limit kept outside the router (per key, per application)."""
        for observer in self._limitObservers:
            observer(limit)

    def _refuse(self, reply: Message, limit: str, error: BayeuxError) -> list[Reply]:
        self.limitRefused(limit)
        return [_fail(reply, error)]

    def _tooManyClients(self, message: Message) -> list[Reply]:
        reply = _makeReply(message)
        limit = self.limits.maxClientsPerConnection
        replies = self._refuse(
            reply,
            "clients_per_connection",
            BayeuxError(403, [], f"Too many clients (limit {limit} per connection)"),
        )
        # Handshake again later, not at once: by then the connection's old clients
        # have expired (a loop of instant retries is Faye's reconnect storm).
        reply["advice"] = {"reconnect": "handshake", "interval": 10_000}
        return replies

    def addPublishObserver(self, observer: Callable[[str, int], None]) -> None:
        """Call ``observer(channel, recipients)`` once per message published (statistics)."""
        self._publishObservers.append(observer)

    def publish(self, channel: str, data: Any, exclude: str | None = None) -> Deferred[int]:
        """
        Publish from the server itself (REST API, presence, meta events): no
        extensions run. Fires with the number of recipients. ``exclude`` names
        a client that should not receive it.
        """
        if not channels.isValidName(channel) or channels.isMeta(channel):
            return defer.fail(BayeuxError.channelInvalid(channel))
        delivery = Delivery.fromMessage({"channel": channel, "data": data}, exclude)
        if len(delivery.payload) > self.limits.maxMessageSize:
            for observer in self._limitObservers:
                observer("message_size")
            return defer.fail(
                BayeuxError(413, [channel], f"Message larger than {self.limits.maxMessageSize} bytes")
            )
        d = self.engine.publish(delivery)
        if self._publishObservers:
            d.addCallback(self._published, channel)
        return d

    def _published(self, recipients: int, channel: str) -> int:
        for observer in self._publishObservers:
            observer(channel, recipients)
        return recipients

    def socketClosed(self, socket: IClientSocket) -> None:
        """A transport's socket closed: unbind it, and end its client if it should."""
        self._closedSockets.add(socket)
        for created in self._socketClients.pop(socket, ()):
            self._clientSocket.pop(created, None)
        clientId = socket.clientId
        if clientId is None or self._sockets.get(clientId) is not socket:
            return
        del self._sockets[clientId]
        held = self._held.get(clientId)
        if held is not None and held.socket is socket:
            held.abandon()
        self.engine.detach(clientId, socket)
        # While draining, sockets close because this node is going away, not
        # because their clients left: a shared engine keeps them for another node.
        if socket.endsClientOnClose and self._draining is None:
            self.engine.destroyClient(clientId, "socket closed")

    def heldConnects(self) -> int:
        """How many /meta/connect requests are being held on this node."""
        return len(self._held)

    def drain(self, reconnect: str = "handshake") -> None:
        """
        Stop serving this node's clients: answer every held connect at once with
        advice to ``reconnect`` (``retry`` when the engine is shared, so the client
        carries on through another node; ``handshake`` when its state dies with
        this process) and close every socket with 1001 (going away). Connects
        arriving from now on get the same answer at once.
        """
        self._draining = reconnect
        for held in list(self._held.values()):
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

    @property
    def draining(self) -> bool:
        return self._draining is not None

    def openSockets(self) -> int:
        return len(self._sockets)

    def close(self) -> None:
        """Answer every held connect now (server shutting down)."""
        self.drain()

    # IEngineListener

    def clientDestroyed(self, clientId: str, reason: str) -> None:
        self._fresh.pop(clientId, None)
        self._notices.pop(clientId, None)
        creator = self._clientSocket.pop(clientId, None)
        if creator is not None:
            created = self._socketClients.get(creator)
            if created is not None:
                created.discard(clientId)
                if not created:
                    del self._socketClients[creator]
        held = self._held.get(clientId)
        if held is not None:
            held.finish()
        socket = self._sockets.pop(clientId, None)
        if socket is not None and reason != "socket closed":
            socket.close(afterReplies=reason == "disconnect")

    # message handling

    async def _handle(
        self,
        message: Any,
        context: MessageContext,
        socket: IClientSocket | None,
        nextExtension: int = 0,
        waiting: Deferred[Any] | None = None,
    ) -> list[Reply] | Deferred[list[Reply]]:
        """
        One message through the incoming extensions, its handler and the outgoing
        extensions. ``waiting``: the message is the one :meth:`_publishNow` started,
        waiting for the answer of extension ``nextExtension - 1``.
        """
        if not isinstance(message, dict):
            return [_fail({}, BayeuxError.badRequest())]
        try:
            if waiting is not None:
                result = await waiting
                if result is None:
                    return []
                message = result
            for extension in self._extensions[nextExtension:] if nextExtension else self._extensions:
                result = extension.incoming(message, context)
                if isinstance(result, Deferred):
                    result = await result
                if result is None:
                    return []
                message = result
            replies = await self._dispatch(message, context, socket)
            if isinstance(replies, Deferred):
                # A held connect: its reply goes through outgoing hooks when answered.
                return replies
            out = self._outgoing(replies, context)
            return await out if isinstance(out, Deferred) else out
        except Exception:
            return self._serverError(message)

    def _serverError(self, message: Message, failure: Failure | None = None) -> list[Reply]:
        self._log.failure(
            "failed to handle a message on {channel!r}", failure, channel=message.get("channel")
        )
        return [_fail(_makeReply(message), BayeuxError.serverError())]

    def _publishNow(
        self, message: Message, context: MessageContext, socket: IClientSocket | None
    ) -> list[Reply] | Deferred[list[Reply]]:
        """
        :meth:`_handle` for a publish, without a coroutine or a Deferred while the
        extensions and the engine answer at once (a chat-shaped load spent ~5 % of
        its time in that machinery). At the first step that returns a Deferred, the
        rest goes on from that step (nothing runs twice).
        """
        try:
            for index, extension in enumerate(self._extensions):
                result = extension.incoming(message, context)
                if isinstance(result, Deferred):
                    return Deferred.fromCoroutine(
                        self._handleRest(message, context, socket, index + 1, result)
                    )
                if result is None:
                    return []
                message = result
            channel = message.get("channel")
            if not isinstance(channel, str) or channels.isMeta(channel):
                # An extension made it something else: the general path.
                after = len(self._extensions)
                return Deferred.fromCoroutine(
                    self._handleRest(message, context, socket, after, defer.succeed(message))
                )
            replies = self._publish(message, channel)
            if isinstance(replies, Deferred):
                return Deferred.fromCoroutine(self._publishedLater(replies, message, context))
            return self._outgoing(replies, context)
        except Exception:
            return self._serverError(message)

    async def _handleRest(
        self,
        message: Message,
        context: MessageContext,
        socket: IClientSocket | None,
        nextExtension: int,
        waiting: Deferred[Any],
    ) -> list[Reply]:
        result = await self._handle(message, context, socket, nextExtension, waiting)
        return await result if isinstance(result, Deferred) else result

    async def _publishedLater(
        self, replies: Deferred[list[Reply]], message: Message, context: MessageContext
    ) -> list[Reply]:
        try:
            out = self._outgoing(await replies, context)
            return await out if isinstance(out, Deferred) else out
        except Exception:
            return self._serverError(message)

    def _outgoing(self, replies: list[Reply], context: MessageContext) -> list[Reply] | Deferred[list[Reply]]:
        """The replies through the outgoing extensions: now, or a Deferred if one must wait."""
        if not self._extensions:
            return replies
        out: list[Reply] = []
        for position, reply in enumerate(replies):
            if not isinstance(reply, dict):
                out.append(reply)
                continue
            current: Message = reply
            for index, extension in enumerate(self._extensions):
                result = extension.outgoing(current, context)
                if isinstance(result, Deferred):
                    return Deferred.fromCoroutine(
                        self._outgoingLater(replies, context, out, position, index + 1, result)
                    )
                if result is None:
                    break
                current = result
            else:
                out.append(current)
        return out

    async def _outgoingLater(
        self,
        replies: list[Reply],
        context: MessageContext,
        out: list[Reply],
        position: int,
        nextExtension: int,
        waiting: Deferred[Any],
    ) -> list[Reply]:
        """
        :meth:`_outgoing` from reply ``position`` on, that reply waiting for the
        answer of extension ``nextExtension - 1``.
        """
        current = await self._outgoingOne(await waiting, context, nextExtension)
        if current is not None:
            out.append(current)
        for reply in replies[position + 1 :]:
            if not isinstance(reply, dict):
                out.append(reply)
                continue
            current = await self._outgoingOne(reply, context, 0)
            if current is not None:
                out.append(current)
        return out

    async def _outgoingOne(
        self, reply: Message | None, context: MessageContext, nextExtension: int
    ) -> Message | None:
        for extension in self._extensions[nextExtension:]:
            if reply is None:
                break
            result = extension.outgoing(reply, context)
            reply = await result if isinstance(result, Deferred) else result
        return reply

    async def _dispatch(
        self, message: Message, context: MessageContext, socket: IClientSocket | None
    ) -> list[Reply] | Deferred[list[Reply]]:
        channel = message.get("channel")
        if channel is None:
            return [_fail(_makeReply(message), BayeuxError.parameterMissing("channel"))]
        if not isinstance(channel, str):
            return [_fail(_makeReply(message), BayeuxError.badRequest("channel"))]
        if channels.isMeta(channel):
            handler = self._handlers.get(channel)
            if handler is None:
                return [_fail(_makeReply(message), BayeuxError.channelForbidden(channel))]
            return await handler(message, context, socket)
        published = self._publish(message, channel)
        return await published if isinstance(published, Deferred) else published

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

    async def _clientError(self, clientId: Any) -> BayeuxError | None:
        """The error for a message whose clientId is missing or unknown, else None."""
        if clientId is None or clientId == "":
            return BayeuxError.parameterMissing("clientId")
        if not isinstance(clientId, str) or not await self.engine.clientExists(clientId):
            return BayeuxError.clientUnknown(clientId)
        return None

    async def _handshake(
        self, message: Message, context: MessageContext, socket: IClientSocket | None
    ) -> list[Reply]:
        reply = _makeReply(message)
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
        error = error or _extensionError(message)
        if error is None and self._draining is not None:
            # A client handshaking with a node that is going away would get a
            # session that dies with it: send it elsewhere instead.
            reply = _fail(reply, BayeuxError(BayeuxError.SERVER_ERROR, [], "Server shutting down"))
            reply["advice"] = {"reconnect": "handshake", "interval": 1000}
            return [reply]
        if error is not None:
            return [self._advise(_fail(reply, error))]
        maxClients = self.limits.maxClientsPerConnection
        if socket is not None and maxClients and len(self._socketClients.get(socket, ())) >= maxClients:
            return self._tooManyClients(message)
        clientId = await self.engine.createClient()
        now = self.reactor.seconds()
        while self._fresh:
            oldest = next(iter(self._fresh))
            if self._fresh[oldest] > now - _FRESH_WINDOW:
                break
            del self._fresh[oldest]
        self._fresh[clientId] = now
        if socket is not None and maxClients:
            self._socketClients.setdefault(socket, set()).add(clientId)
            self._clientSocket[clientId] = socket
        reply["clientId"] = clientId
        reply["successful"] = True
        return [self._advise(reply)]

    async def _connect(
        self, message: Message, context: MessageContext, socket: IClientSocket | None
    ) -> list[Reply] | Deferred[list[Reply]]:
        reply = _makeReply(message)
        clientId = message.get("clientId")
        connectionType = message.get("connectionType")
        error: str | BayeuxError | None = await self._clientError(clientId)
        if connectionType is None:
            error = BayeuxError.parameterMissing("connectionType")
        elif not isinstance(connectionType, str) or connectionType not in _SUPPORTED:
            error = BayeuxError.conntypeMismatch(connectionType)
        error = error or _extensionError(message)
        if error is not None:
            reply.pop("clientId", None)
            return [self._advise(_fail(reply, error), connectionType)]
        assert isinstance(clientId, str) and isinstance(connectionType, str)
        reply["successful"] = True
        self._advise(reply, connectionType)
        if self._draining is not None:
            reply["advice"] = {"reconnect": self._draining, "interval": 0}
            return [reply]
        self.engine.ping(clientId)

        if socket is not None and socket.clientId != clientId:
            self._bind(clientId, socket)
        attach = clientId not in self._sockets

        older = self._held.get(clientId)
        if older is not None:
            older.finish()

        held = _HeldConnect(self, clientId, reply, context, socket, attach)
        self._held[clientId] = held
        wait = self._holdFor(clientId, message, connectionType)
        if attach:
            if context.lost is not None:
                context.lost.addCallback(lambda _: held.abandon())
            # May answer at once, synchronously, if messages are already queued.
            self.engine.attach(clientId, held)
        if not held.done and clientId in self._notices:
            held.finish([Delivery.fromMessage(n) for n in self._notices.pop(clientId)])
        if not held.done:
            if wait <= 0:
                held.finish()
            else:
                held.timer = self.reactor.callLater(wait, held.finish)
        if socket is not None:
            return []
        return held.deferred

    def _holdFor(self, clientId: str, message: Message, connectionType: str) -> float:
        if self._fresh.pop(clientId, None) is not None:
            return 0.0
        if connectionType == "eventsource":
            return 0.0
        advice = message.get("advice")
        requested = advice.get("timeout") if isinstance(advice, dict) else None
        if isinstance(requested, int | float) and not isinstance(requested, bool) and requested >= 0:
            return min(requested / 1000.0, self.timeout)
        return self.timeout

    def _bind(self, clientId: str, socket: IClientSocket) -> None:
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
        self.engine.attach(clientId, socket)

    async def bindSocket(self, clientId: str, socket: IClientSocket) -> bool:
        """
        Bind a socket opened for a known client (an event stream names its client
        in its URL). False if the client is unknown.
        """
        if not await self.engine.clientExists(clientId):
            return False
        self._bind(clientId, socket)
        return True

    def notify(self, clientId: str, message: Message) -> None:
        """
        Send ``message``, made by the server and not answering anything (a
        ``/meta/unsubscribe`` for a subscription whose token expired), to one client:
        through its socket on this node, else with its held connect, else with its next
        connect here (at most :data:`MAX_NOTICES` wait per client). A long-poll client
        that moves to another node before connecting again misses it.
        """
        socket = self._sockets.get(clientId)
        if socket is not None:
            # As a delivery: an event stream carries no replies, and a websocket keeps
            # it in order with the deliveries waiting in its backlog.
            socket.deliver([Delivery.fromMessage(message)])
            return
        held = self._held.get(clientId)
        if held is not None and held.socket is None:
            held.finish([Delivery.fromMessage(message)])
            return
        waiting = self._notices.setdefault(clientId, [])
        if len(waiting) < MAX_NOTICES:
            waiting.append(message)

    async def _subscription(
        self, message: Message, verb: Callable[[str, str], Deferred[bool]]
    ) -> list[Reply]:
        reply = _makeReply(message)
        clientId = message.get("clientId")
        subscription = message.get("subscription")
        error: str | BayeuxError | None = await self._clientError(clientId)
        reply["subscription"] = subscription if subscription is not None else []
        if subscription is None or subscription == "" or subscription == []:
            error = BayeuxError.parameterMissing("subscription")
        elif not (
            isinstance(subscription, str)
            or (isinstance(subscription, list) and all(isinstance(c, str) for c in subscription))
        ):
            error = BayeuxError.badRequest("subscription")
        error = error or _extensionError(message)
        if error is not None:
            return [_fail(reply, error)]
        assert isinstance(clientId, str)
        requested: list[str] = [subscription] if isinstance(subscription, str) else list(subscription or [])
        limits = self.limits
        subscribing = verb == self.engine.subscribe
        current = await self.engine.subscriptions(clientId) if subscribing else set()
        for channel in requested:
            if len(channel) > limits.maxChannelLength:
                return self._refuse(reply, "channel_length", _tooLong(channel, limits.maxChannelLength))
            if not channels.isValid(channel):
                return [_fail(reply, BayeuxError.channelInvalid(channel))]
            if not channels.isSubscribable(channel):
                return [_fail(reply, BayeuxError.channelForbidden(channel))]
            if subscribing and channel not in current and len(current) >= limits.maxSubscriptions:
                return self._refuse(
                    reply,
                    "subscriptions",
                    BayeuxError(
                        403, [channel], f"Too many subscriptions (limit {limits.maxSubscriptions} per client)"
                    ),
                )
            await verb(clientId, channel)
            if subscribing:
                current.add(channel)
        reply["successful"] = True
        return [reply]

    async def _subscribe(
        self, message: Message, context: MessageContext, socket: IClientSocket | None
    ) -> list[Reply]:
        return await self._subscription(message, self.engine.subscribe)

    async def _unsubscribe(
        self, message: Message, context: MessageContext, socket: IClientSocket | None
    ) -> list[Reply]:
        return await self._subscription(message, self.engine.unsubscribe)

    async def _disconnect(
        self, message: Message, context: MessageContext, socket: IClientSocket | None
    ) -> list[Reply]:
        reply = _makeReply(message)
        clientId = message.get("clientId")
        error = await self._clientError(clientId) or _extensionError(message)
        if error is not None:
            reply.pop("clientId", None)
            return [_fail(reply, error)]
        assert isinstance(clientId, str)
        if socket is not None and self._sockets.get(clientId) is not socket:
            # Disconnecting over a socket that was never bound: close it anyway.
            socket.close(afterReplies=True)
        await self.engine.destroyClient(clientId, "disconnect")
        reply["successful"] = True
        return [reply]

    def _publish(self, message: Message, channel: str) -> list[Reply] | Deferred[list[Reply]]:
        """The reply to a publish: now when the engine published at once, else a Deferred."""
        reply = _makeReply(message)
        error: str | BayeuxError | None = None
        if len(channel) > self.limits.maxChannelLength:
            return self._refuse(reply, "channel_length", _tooLong(channel, self.limits.maxChannelLength))
        if not channels.isValidName(channel):
            error = BayeuxError.channelInvalid(channel)
        elif "data" not in message:
            error = BayeuxError.parameterMissing("data")
        error = error or _extensionError(message)
        if error is not None:
            return [_fail(reply, error)]
        delivered: Message = {"channel": channel, "data": message["data"]}
        if "id" in message:
            delivered["id"] = message["id"]
        ext = message.get("ext")
        if ext is not None:
            delivered["ext"] = ext
        delivery = Delivery.fromMessage(delivered)
        if len(delivery.payload) > self.limits.maxMessageSize:
            return self._refuse(
                reply,
                "message_size",
                BayeuxError(413, [channel], f"Message larger than {self.limits.maxMessageSize} bytes"),
            )
        try:
            published = self.engine.publish(delivery)
        except Exception:
            published = defer.fail()
        now = firedWith(published)
        if now:
            return self._publishAnswer(now[0], reply, channel)
        return published.addBoth(self._publishAnswer, reply, channel)

    def _publishAnswer(self, recipients: int | Failure, reply: Message, channel: str) -> list[Reply]:
        try:
            if isinstance(recipients, Failure):
                recipients.raiseException()
            if self._publishObservers:
                self._published(recipients, channel)
        except Exception:
            self._log.failure("engine failed to publish to {channel}", channel=channel)
            return [_fail(reply, BayeuxError.publishFailed(channel))]
        reply["successful"] = True
        return [reply]
