"""The Bayeux router: messages in, replies and deliveries out.

It knows the protocol (meta channels, errors, advice, held connects) and the
interfaces around it (engine, extensions, sockets), never HTTP, websockets,
storage or tenancy. Transports call :meth:`BayeuxRouter.process` with decoded
messages and write back what it answers.

:class:`BayeuxRouter` only wires the pieces, each in its own module:

- :mod:`~pandapush.router.pipeline`: a batch through the extensions' hooks and the handlers,
  in order, at once while every step answers at once;
- :mod:`~pandapush.router.meta`: the meta channels and publishing;
- :mod:`~pandapush.router.sessions`: held connects, bound sockets, notices, drain;
- :mod:`~pandapush.router.limits`: what one client may ask, and refusal reports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from pandapush._deferred import isDeferred
from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.message import Message, Reply
from pandapush.interfaces import IClientSocket, IEngine, IExtension, IRouter
from pandapush.router.limits import Limits, Refusals
from pandapush.router.meta import MessageHandlers
from pandapush.router.pipeline import Extensions, Pipeline
from pandapush.router.publishing import Publisher
from pandapush.router.sessions import Sessions

__all__ = ["BayeuxRouter"]


@implementer(IRouter)
class BayeuxRouter:
    """
    Handles Bayeux messages for one node.

    ``timeout`` is how long a ``/meta/connect`` is held (seconds; the
    ``advice.timeout`` sent to clients); ``interval`` is the advised pause
    between connects.
    """

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
        limits = limits or Limits()
        self._refusals = Refusals()
        self._extensions = Extensions()
        self._sessions = Sessions(engine, reactor, self._extensions)
        self._publisher = Publisher(engine, limits, self._refusals)
        self._handlers = MessageHandlers(
            engine, self._sessions, self._publisher, limits, self._refusals, timeout, interval
        )
        self._pipeline = Pipeline(self._extensions, self._handlers)

    @property
    def timeout(self) -> float:
        return self._handlers.timeout

    @property
    def interval(self) -> float:
        return self._handlers.interval

    @property
    def limits(self) -> Limits:
        return self._handlers.limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self._handlers.limits = self._publisher.limits = limits

    @property
    def _fresh(self) -> Mapping[str, float]:
        # The clients remembered as handshaken and not connected yet (a test counts them).
        return self._sessions.fresh

    # messages

    def process(
        self, messages: Message | list[Any], context: MessageContext, socket: IClientSocket | None = None
    ) -> Deferred[list[Reply]]:
        """
        Handle a batch. Fires with the replies (and, for a long-poll connect, the
        deliveries after its reply) in the order of the messages. Over a socket, a
        held connect's reply is sent through the socket later instead.
        """
        try:
            replies = self.processNow(messages, context, socket)
        except Exception:
            return defer.fail()
        if isDeferred(replies):
            return replies
        return defer.succeed(replies)

    def processNow(
        self, messages: Message | list[Any], context: MessageContext, socket: IClientSocket | None = None
    ) -> list[Reply] | Deferred[list[Reply]]:
        """
        :meth:`process`, answering now (a list) when every step of the batch did: a
        websocket's publish is answered without a Deferred and two callbacks per frame.
        May raise where :meth:`process` would fail.
        """
        # A list, nearly always: told by its exact type first.
        if type(messages) is not list and isinstance(messages, dict):
            messages = [messages]
        if not messages:
            return []
        return self._pipeline.process(messages, context, socket)

    def addExtension(self, extension: IExtension) -> None:
        self._extensions.add(extension)

    def removeExtension(self, extension: IExtension) -> None:
        self._extensions.remove(extension)

    def publish(
        self,
        channel: str,
        data: Any,
        exclude: str | None = None,
        history: bool = True,
        idempotencyKey: str | None = None,
    ) -> Deferred[int]:
        """
        Publish from the server itself (REST API, presence, meta events): no
        extensions run. Fires with the number of recipients. ``exclude`` names
        a client that should not receive it.
        """
        return self._publisher.publish(channel, data, exclude, history, idempotencyKey)

    def publishNow(
        self,
        channel: str,
        data: Any,
        exclude: str | None = None,
        history: bool = True,
        idempotencyKey: str | None = None,
    ) -> int | Deferred[int]:
        """:meth:`publish`, with the number of recipients itself when the engine publishes at once."""
        return self._publisher.publishNow(channel, data, exclude, history, idempotencyKey)

    def publishBatch(
        self, messages: Sequence[tuple[str, Any]], idempotencyKeys: Sequence[str] | None = None
    ) -> Deferred[list[int]]:
        """Publish ``(channel, data)`` messages from the server, in order, all checked first."""
        return self._publisher.publishBatch(messages, idempotencyKeys)

    def notify(self, clientId: str, message: Message) -> None:
        """Send ``message``, made by the server, to one client (:meth:`Sessions.notify`)."""
        self._sessions.notify(clientId, message)

    def terminate(self, clientId: str) -> None:
        """End the client's connection here with advice not to reconnect (:meth:`Sessions.terminate`)."""
        self._sessions.terminate(clientId)

    # observers

    def addPublishObserver(self, observer: Callable[[str, int], None]) -> None:
        """Call ``observer(channel, recipients)`` once per message published (statistics)."""
        self._publisher.addObserver(observer)

    def addLimitObserver(self, observer: Callable[[str], None]) -> None:
        """Call ``observer(limitName)`` each time a limit refuses a message (metrics)."""
        self._refusals.addObserver(observer)

    def limitRefused(self, limit: str) -> None:
        """Report a refusal by a limit kept outside the router (per key, per application)."""
        self._refusals.report(limit)

    # sockets and held connects

    def bindSocket(self, clientId: str, socket: IClientSocket) -> Deferred[bool]:
        """
        Bind a socket opened for a known client (an event stream names its client
        in its URL). Fires with False if the client is unknown.
        """
        return self._sessions.bindSocket(clientId, socket)

    def socketClosed(self, socket: IClientSocket) -> None:
        """A transport's socket closed: unbind it, and end its client if it should."""
        self._sessions.socketClosed(socket)

    def heldConnects(self) -> int:
        """How many /meta/connect requests are being held on this node."""
        return self._sessions.heldConnects()

    def openSockets(self) -> int:
        return self._sessions.openSockets()

    # going away

    def drain(self, reconnect: str = "handshake") -> None:
        """
        Stop serving this node's clients: answer every held connect at once with
        advice to ``reconnect`` (``retry`` when the engine is shared, so the client
        carries on through another node; ``handshake`` when its state dies with
        this process) and close every socket with 1001 (going away). Connects
        arriving from now on get the same answer at once.
        """
        self._sessions.drain(reconnect)

    @property
    def draining(self) -> bool:
        return self._sessions.reconnectAdvice is not None

    def close(self) -> None:
        """Answer every held connect now (server shutting down)."""
        self.drain()
