"""``websocket``: Autobahn on the same port and path as the HTTP transports.

A frame holds one JSON object or an array; replies go back as arrays. The socket
binds to a client at that client's first ``/meta/connect`` over it, after which
deliveries are pushed at once, batched per reactor turn by the engine. A
message going to many sockets in the same turn is framed once: its prepared
frame is cached on the :class:`~pandapush.bayeux.delivery.Delivery`.
"""

from __future__ import annotations

import pprint
from collections.abc import Callable, Mapping, Sequence
from types import FunctionType
from typing import Any

import autobahn.websocket.protocol
from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pandapush._deferred import isDeferred
from pandapush.bayeux import json
from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.delivery import Delivery
from pandapush.interfaces import IClientSocket, IRouter
from pandapush.transports.failurelog import FailureLog
from pandapush.transports.fastframes import arrayFrame
from pandapush.transports.handshake import TRAFFIC, DirectOpeningProtocol, SendQueue
from pandapush.transports.http import OriginPolicy
from pandapush.transports.turnsends import sendAtTurnEnd
from pandapush.transports.xormask import createMasker

__all__ = ["BayeuxWebSocketFactory", "BayeuxWebSocketProtocol"]

_FRAME = "websocket"
# The same frame as bytes, for sockets that frame text themselves (FastFramesProtocol).
_RAW_FRAME = "websocket-bytes"
_BAD_REQUEST = b'[{"successful":false,"error":"400::Bad request"}]'


class _Pformat:
    """``pprint.pformat(value)``, made only if a log observer formats it."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __str__(self) -> str:
        return pprint.pformat(self.value)

    __repr__ = __str__


# Autobahn logs its ~30 options at debug level for every new connection, formatting them
# with pformat before the level is looked at: 12 % of the server's CPU in a reconnect
# storm (bench/README.md). Only that log call uses the name in this module; made lazy,
# debug logging still shows the same text.
autobahn.websocket.protocol.pformat = _Pformat  # type: ignore[assignment]
# Small frames (nearly all a client sends) are unmasked without a cffi object each: see
# pandapush.transports.xormask. Autobahn looks the name up in this module for every frame.
autobahn.websocket.protocol.create_xor_masker = createMasker  # type: ignore[assignment]

# Every socket's traffic counts (see pandapush.transports.handshake).
_TRAFFIC = TRAFFIC
_OPEN = DirectOpeningProtocol.STATE_OPEN

# The handshake's leftovers autobahn keeps for the connection's life (its request and
# response texts, parsed headers, offered protocols): ~1.4 KB per idle socket.
_HANDSHAKE_LEFTOVERS = (
    "http_request_data",
    "http_response_data",
    "http_status_line",
    "http_headers",
    "http_request_params",
    "http_request_uri",
    "_wskey",
    "websocket_protocols",
    "websocket_extensions",
)


@implementer(IClientSocket)
class BayeuxWebSocketProtocol(DirectOpeningProtocol):
    factory: BayeuxWebSocketFactory
    _log = Logger()

    persistent = True
    endsClientOnClose = True

    def __init__(self) -> None:
        super().__init__()
        self.clientId: str | None = None
        self._context: MessageContext | None = None
        self._processing = 0
        self._closeWhenIdle = False
        self._open = False
        # Deliveries waiting while the peer is not reading; None when it is.
        self._backlog: list[Delivery] | None = None
        self._backlogBytes = 0

    # Autobahn callbacks

    def onConnect(self, request: ConnectionRequest) -> None:
        if not self.admitOpening(request.headers):
            # Counted here, where it is answered: the direct opening's refusal
            # (pandapush.transports.handshake) comes here through autobahn's path.
            self.factory.origins.refused()
            raise ConnectionDeny(403, "Origin not allowed")
        # No subprotocol: Bayeux over websocket never negotiated one.
        return None

    def admitOpening(self, headers: dict[str, str]) -> bool:
        """Whether the origin may open a socket; if so, the context of its messages."""
        origin = headers.get("origin")
        if origin and not self.factory.origins.allows(origin):
            return False
        peer = self.transport.getPeer() if self.transport is not None else None
        # The opening's parse of the headers (a dict of lower-cased names) is read-only
        # from here on: shared rather than copied for the connection's life.
        self._context = MessageContext("websocket", headers, getattr(peer, "host", None))
        return True

    def _connectionMade(self) -> None:
        super()._connectionMade()  # type: ignore[misc]
        self.trafficStats = _TRAFFIC
        self.send_queue = SendQueue()  # type: ignore[assignment]

    def onOpen(self) -> None:
        if "http_request_data" in self.__dict__:
            # Opened by autobahn's handshake (not pandapush.transports.handshake's).
            for name in _HANDSHAKE_LEFTOVERS:
                self.__dict__.pop(name, None)
        self._open = True
        self.factory.openSockets += 1
        # Hear when the kernel stops taking our writes (a client that does not
        # read), so its deliveries wait in a bounded backlog instead of an
        # unbounded transport buffer. twisted.web's channel registered itself
        # before Autobahn took the connection over: replace it.
        transport: Any = self.transport
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        transport.registerProducer(_Congestion(self), True)

    def onMessageEnd(self) -> None:
        # Autobahn's also fires a "message" event for listeners added with .on(), of
        # which there are none here: a Deferred and a callback per message for nothing.
        if not self.failedByMe:
            self.onMessage(b"".join(self.message_data), self.message_is_binary)
        self.message_data = None  # type: ignore[assignment]

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        messages = json.decodeMessages(payload)
        if messages is None:
            # Autobahn still hands us frames that were read behind one that made it
            # close (too big, not UTF-8); a closing socket takes no more messages.
            if self._sendable():
                self.sendMessage(_BAD_REQUEST)
            return
        assert self._context is not None
        self._processing += 1
        try:
            replies = self.factory.router.processNow(messages, self._context.forMessage(), self)
        except Exception:
            self._failed(Failure())
            return
        # isDeferred: Deferred's ABCMeta isinstance of the list a publish is answered with
        # at once cost more than the rest of this method's own work; and that list, told
        # by its type, needs no call at all.
        if type(replies) is not list and isDeferred(replies):
            replies.addCallback(self._replied)
            replies.addErrback(self._failed)
        else:
            # Answered at once (a publish whose key is cached): no Deferred per frame.
            try:
                self._replied(replies)
            except Exception:
                self._failed(Failure())

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self._open:
            self.factory.openSockets -= 1
        self._open = False
        self.factory.router.socketClosed(self)

    # replies

    def _beforeReplies(self) -> None:
        # The deliveries a read's publishes made go before the read's acknowledgements
        # (an engine that queues them for the turn's flush hands them out now): the
        # subscribers get theirs a read sooner, and a publisher pacing itself by its
        # acknowledgements no longer has messages in flight it thinks delivered.
        flush = self.factory.flushDeliveries
        if flush is not None:
            flush()

    def _replied(self, replies: list[Any]) -> None:
        self._processing -= 1
        # sendReplies, inlined (once per frame read).
        if replies and self._open and self.state == _OPEN:
            self.sendText(json.encodeReplies(replies if type(replies) is list else list(replies)))
        if self._closeWhenIdle and self._processing == 0:
            self._close()

    def _failed(self, failure: Failure) -> None:
        self._processing -= 1
        self._log.failure("websocket batch failed", failure)

    # IClientSocket

    def _sendable(self) -> bool:
        # After a close frame went out (slow consumer, disconnect) nothing more may be sent.
        return self._open and self.state == self.STATE_OPEN

    def sendReplies(self, replies: Sequence[Any]) -> None:
        if self._open and self.state == _OPEN:
            self.sendText(json.encodeReplies(replies if type(replies) is list else list(replies)))

    def deliver(self, deliveries: Sequence[Delivery]) -> None:
        # _sendable, inlined: this runs once per recipient of every message.
        if not self._open or self.state != _OPEN:
            return
        if self._backlog is not None:
            self._backlog.extend(deliveries)
            self._backlogBytes += sum(len(d.payload) for d in deliveries)
            if self._backlogBytes > self.factory.maxBacklog:
                self._log.info("closing slow consumer {clientId}", clientId=self.clientId)
                self._backlog = None
                self.factory.slowConsumers += 1
                # An application close code: the client reconnects (and handshakes
                # again), and nothing more piles up here meanwhile.
                self.sendClose(4008, "slow consumer: messages not read in time")
            return
        if len(deliveries) == 1:
            delivery = deliveries[0]
            if self.plainFrames():
                # One frame's bytes for every plain socket it goes to.
                raw = delivery.frames.get(_RAW_FRAME)
                if raw is None:
                    raw = delivery.frames[_RAW_FRAME] = arrayFrame(delivery.payload)
                if self._outgoing is None and not self.send_queue and not self.logOctets:
                    # What sendData does with a delivery outside a read, without its checks.
                    sendAtTurnEnd(self.transport, raw)
                else:
                    self.sendData(raw)
                return
            frame = delivery.frames.get(_FRAME)
            if frame is None:
                frame = delivery.frames[_FRAME] = self.factory.prepareMessage(b"[" + delivery.payload + b"]")
            self.sendPreparedMessage(frame)
        else:
            self.sendText(b"[" + b",".join(d.payload for d in deliveries) + b"]")

    def congested(self) -> None:
        if self._backlog is None:
            self._backlog = []
            self._backlogBytes = 0

    def drained(self) -> None:
        backlog, self._backlog = self._backlog, None
        if backlog:
            self.deliver(backlog)

    def close(self, afterReplies: bool) -> None:
        if afterReplies and self._processing:
            self._closeWhenIdle = True
        else:
            self._close()

    def _close(self) -> None:
        if not self._sendable():
            return
        if self.factory.router.draining:
            # sendClose only takes application codes; 1001 (going away) is the
            # protocol's own, and tells clients to reconnect elsewhere.
            self.sendCloseFrame(code=self.CLOSE_STATUS_CODE_GOING_AWAY, reasonUtf8=b"server going away")
        else:
            self.sendClose(1000)


@implementer(IPushProducer)
class _Congestion:
    """Tells a socket when its transport's write buffer fills up and drains."""

    def __init__(self, socket: BayeuxWebSocketProtocol) -> None:
        self.socket = socket

    def pauseProducing(self) -> None:
        self.socket.congested()

    def resumeProducing(self) -> None:
        self.socket.drained()

    def stopProducing(self) -> None:
        pass


class BayeuxWebSocketFactory(WebSocketServerFactory):
    protocol = BayeuxWebSocketProtocol  # type: ignore[assignment]

    def setProtocolOptions(self, **options: Any) -> None:  # type: ignore[override]
        """
        As autobahn's, and the options become class attributes of a protocol class of
        this factory's own: autobahn copies every option (~30) from the factory into
        each connection's ``__dict__`` unless the protocol already has it, which grew
        an idle socket's instance dictionary past its next size (3.3 KB).
        """
        # Autobahn turns ``allowNullOrigin`` off on every call that leaves it out, and then
        # answers ``Origin: null`` (a sandboxed iframe, a file:// page) with a 400 of its
        # own. Whether null may open is the OriginPolicy's to say (admitOpening), as for
        # any origin: every origin without --allowed-origins, else only if listed.
        options.setdefault("allowNullOrigin", True)
        super().setProtocolOptions(**options)
        base = type(self).protocol
        # A function (perMessageCompressionAccept) must stay a plain attribute, not a method.
        options = {
            name: staticmethod(value) if isinstance(value, FunctionType) else value
            for name in base.CONFIG_ATTRS
            for value in (getattr(self, name),)
        }
        # Autobahn's per-connection failure warnings, gathered (failurelog; made in
        # __init__ before the first call here).
        options["log"] = self.failureLog
        self.protocol = type(base.__name__, (base,), {"__module__": base.__module__, **options})  # type: ignore[assignment]

    def __init__(
        self,
        router: IRouter,
        origins: OriginPolicy,
        maxMessageSize: int,
        pingInterval: float = 25.0,
        pingTimeout: float = 10.0,
        maxBacklog: int = 4 * 1024 * 1024,
        headers: Mapping[str, str] | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        # ``headers``: added to every opening handshake's answer.
        super().__init__(headers=dict(headers) if headers else None)
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        #: What autobahn logs for this factory's connections (its failure warnings gathered).
        self.failureLog = FailureLog(type(self).protocol.log, clock)  # type: ignore[arg-type]
        self.router = router
        # An engine that hands queues out in a flush of its own per reactor turn (the
        # memory engine) may offer to run it at once: see _beforeReplies.
        self.flushDeliveries: Callable[[], None] | None = getattr(
            getattr(router, "engine", None), "flushNow", None
        )
        self.origins = origins
        self.openSockets = 0
        self.slowConsumers = 0
        self.maxBacklog = maxBacklog
        self.setProtocolOptions(
            maxFramePayloadSize=maxMessageSize,
            maxMessagePayloadSize=maxMessageSize,
            # Pings find sockets whose peer vanished without a FIN (a laptop
            # closed, a NAT entry dropped), so their clients end too.
            autoPingInterval=pingInterval,
            autoPingTimeout=pingTimeout,
            openHandshakeTimeout=10,
            # Send a close frame (1009 for a message too big) instead of dropping the
            # TCP connection, so clients learn why and do not resend the same message.
            failByDrop=False,
            closeHandshakeTimeout=2,
        )

    def stop(self) -> None:
        """The server stops: what the failure log has counted is written, and it schedules nothing more."""
        self.failureLog.stop()
