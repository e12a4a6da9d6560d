"""``eventsource``: server-sent events at ``GET /push/<clientId>``.

The stream carries deliveries only; the client posts its own messages over
long-polling requests. One shared timer sends the keep-alive comment to every
open stream, instead of one timer per stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from pandapush.bayeux.delivery import Delivery
from pandapush.interfaces import IClientSocket, IRouter
from pandapush.transports.http import OriginPolicy, header, writeError

__all__ = ["EventSourceTransport", "EventStream"]


@implementer(IClientSocket)
class EventStream:
    persistent = True
    endsClientOnClose = False

    def __init__(self, transport: EventSourceTransport, request: Request) -> None:
        self.transport = transport
        self.request = request
        self.clientId: str | None = None
        self.open = True

    def write(self, data: bytes) -> None:
        if self.open:
            self.request.write(data)

    def deliver(self, deliveries: Sequence[Delivery]) -> None:
        self.write(b"data: [" + b",".join(d.payload for d in deliveries) + b"]\r\n\r\n")

    def sendReplies(self, replies: Sequence[Any]) -> None:
        # Replies travel in the HTTP responses of the client's own requests.
        pass

    def close(self, afterReplies: bool) -> None:
        if self.open:
            self.open = False
            self.transport.forget(self)
            self.request.finish()

    def lost(self) -> None:
        if self.open:
            self.open = False
            self.transport.forget(self)
            self.transport.router.socketClosed(self)


class EventSourceTransport:
    _log = Logger()

    def __init__(
        self, router: IRouter, origins: OriginPolicy, reactor: IReactorTime, pingInterval: float = 10.0
    ) -> None:
        self.router = router
        self.origins = origins
        self.pingInterval = pingInterval
        self._streams: set[EventStream] = set()
        self._pinger = LoopingCall(self._ping)
        self._pinger.clock = reactor

    def render(self, request: Request) -> bytes | int:
        # Refused before binding: a stream bound takes its client's deliveries.
        origin = header(request, b"origin")
        if origin and not self.origins.admits(request, origin):
            return self.origins.refuse(request)
        clientId = request.postpath[-1].decode("utf-8", "replace") if request.postpath else ""
        if not clientId:
            return writeError(request, 400, "Bad request: no client id in the event stream URL")
        stream = EventStream(self, request)
        request.notifyFinish().addBoth(lambda _: stream.lost())
        # Headers go first: binding may hand queued messages to the stream at once.
        request.setHeader(b"Content-Type", b"text/event-stream")
        request.setHeader(b"Cache-Control", b"no-cache, no-store")
        request.setHeader(b"X-Accel-Buffering", b"no")
        self.origins.apply(request, origin)

        def bound(known: bool) -> None:
            if not stream.open:
                return
            if not known:
                stream.open = False
                request.setResponseCode(400)
                request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
                request.write(b"Unknown client")
                request.finish()
                return
            self._streams.add(stream)
            if not self._pinger.running:
                self._pinger.start(self.pingInterval, now=False)
            stream.write(b"retry: 5000\r\n\r\n")

        d = self.router.bindSocket(clientId, stream)
        d.addCallback(bound)
        d.addErrback(lambda f: self._log.failure("event stream failed", f))
        return NOT_DONE_YET

    def openStreams(self) -> int:
        return len(self._streams)

    def forget(self, stream: EventStream) -> None:
        self._streams.discard(stream)
        if not self._streams and self._pinger.running:
            self._pinger.stop()

    def _ping(self) -> None:
        for stream in list(self._streams):
            stream.write(b":\r\n\r\n")

    def stop(self) -> None:
        if self._pinger.running:
            self._pinger.stop()
        for stream in list(self._streams):
            stream.close(afterReplies=False)
