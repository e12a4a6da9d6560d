"""The ``/push`` endpoint: one resource, every transport, every sub-path.

CometD posts to ``/push/handshake`` and ``/push/connect``; event streams open
``/push/<clientId>``; websockets upgrade anywhere under ``/push``: most without a
twisted.web request (the site's channel, :class:`~pandapush.web.connections.PandapushChannel`,
hands them to :meth:`BayeuxResource.upgradeProtocol`, the :class:`IWebSocketUpgrade` it
looks for, as raw bytes), the others through :meth:`BayeuxResource.render` as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IProtocol, IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import Interface, implementer

from pandapush.interfaces import IRouter
from pandapush.transports.callbackpolling import CallbackPollingTransport
from pandapush.transports.eventsource import EventSourceTransport
from pandapush.transports.http import OriginPolicy, header, rawHeader, writeError
from pandapush.transports.longpolling import LongPollingTransport
from pandapush.transports.websocket import BayeuxWebSocketFactory

__all__ = ["BayeuxResource", "IWebSocketUpgrade"]

_PREFLIGHT_HEADERS = {
    b"Access-Control-Allow-Credentials": b"true",
    b"Access-Control-Allow-Headers": b"Accept, Authorization, Content-Type, Pragma, X-Requested-With",
    b"Access-Control-Allow-Methods": b"POST, GET",
    b"Access-Control-Max-Age": b"86400",
}


class IWebSocketUpgrade(Interface):
    """
    A leaf resource (``/push``'s) whose websocket upgrades a :class:`PandapushChannel`
    hands over from the raw request, without a twisted.web ``Request``.
    """

    def upgradeProtocol(address: IAddress) -> IProtocol | None:
        """
        The protocol that is given the connection and the request's raw bytes: it
        parses and answers the opening handshake (or refuses it) itself. None: no
        protocol (twisted.web's path takes the request, and answers it as it does).
        """


@implementer(IWebSocketUpgrade)
class BayeuxResource(Resource):
    isLeaf = True

    def __init__(
        self,
        router: IRouter,
        reactor: IReactorTime,
        maxMessageSize: int = 1024 * 1024,
        origins: OriginPolicy | None = None,
        jsonp: bool = True,
        handshakeHeaders: Mapping[str, str] | None = None,
        proxies: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__()
        self.router = router
        self.origins = origins or OriginPolicy()
        self.maxMessageSize = maxMessageSize
        self.jsonpEnabled = jsonp
        # Requests from proxies are not counted together by connection (clients per
        # connection): a proxy's connections carry many clients.
        self.longPolling = LongPollingTransport(router, self.origins, proxies)
        self.callbackPolling = CallbackPollingTransport(router, self.origins, proxies)
        self.eventSource = EventSourceTransport(router, self.origins, reactor)
        # HTTP answers get the site's headers; a websocket handshake is autobahn's, so
        # those it should carry too (``X-Pandapush-Worker``) go to its factory.
        self.websocketFactory = BayeuxWebSocketFactory(
            router, self.origins, maxMessageSize, headers=handshakeHeaders, clock=reactor
        )
        self._websocket = WebSocketResource(self.websocketFactory)

    def upgradeProtocol(self, address: IAddress) -> IProtocol | None:
        """A websocket for a connection whose upgrade request its channel hands over as it came."""
        return self.websocketFactory.buildProtocol(address)  # type: ignore[no-any-return]

    def render(self, request: Request) -> bytes | int:
        if getattr(request, "tooLarge", False):
            return writeError(request, 413, f"Request body larger than {self.maxMessageSize} bytes")
        method = request.method
        if (header(request, b"upgrade") or "").lower() == "websocket":
            return self._websocket.render(request)  # type: ignore[no-any-return]
        if method == b"OPTIONS" or rawHeader(request, b"access-control-request-method") is not None:
            return self._preflight(request)
        if method == b"GET":
            if "text/event-stream" in (header(request, b"accept") or ""):
                return self.eventSource.render(request)
            if not self.jsonpEnabled:
                return writeError(request, 400, "Bad request: callback-polling is disabled")
            return self.callbackPolling.render(request)
        if method == b"POST":
            return self.longPolling.render(request)
        request.setHeader(b"Allow", b"GET, POST, OPTIONS")
        return writeError(request, 405, "Method not allowed")

    def answer(self, request: Any) -> bytes | Deferred[bytes]:
        """
        What ``render`` answers a POST without an upgrade (the only requests the lean
        path's lane gives it, :mod:`pandapush.web.lean`): the body, its status and headers
        set on ``request``, or a Deferred of the body for :meth:`respond`. A preflight's
        or a long-polling batch's, as ``render`` would.
        """
        if getattr(request, "tooLarge", False):
            return writeError(request, 413, f"Request body larger than {self.maxMessageSize} bytes")
        if rawHeader(request, b"access-control-request-method") is not None:
            return self._preflight(request)
        return self.longPolling.answer(request)

    def respond(self, answer: Deferred[bytes], request: Any) -> None:
        """Finish ``request`` with ``answer``'s body when it comes, as ``render`` does."""
        self.longPolling.respond(answer, request)

    def _preflight(self, request: Request) -> bytes:
        origin = header(request, b"origin") or header(request, b"referer")
        if origin is None or self.origins.allows(origin):
            for name, value in _PREFLIGHT_HEADERS.items():
                request.setHeader(name, value)
            request.setHeader(b"Access-Control-Allow-Origin", (origin or "*").encode("latin-1"))
        request.setHeader(b"Content-Length", b"0")
        return b""

    def stop(self) -> None:
        self.eventSource.stop()
        self.websocketFactory.stop()
