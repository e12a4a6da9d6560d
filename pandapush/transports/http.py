"""HTTP helpers of the transports, and the one :func:`header` of the whole server.

:func:`header` is here, not in :mod:`pandapush.web`, because the transports sit below
web in the layering (web mounts them; they never import web), and both read request
headers: one helper, so that one request reads the same over Bayeux and over the
REST and admin APIs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from pandapush.bayeux.context import MessageContext

__all__ = ["OriginPolicy", "contextFor", "header", "requestLost", "writeError"]


def header(request: IRequest, name: bytes) -> str | None:
    """
    The first value of the request header ``name`` as text (latin-1, as HTTP/1.1
    defines header bytes), or None. The first, as :func:`contextFor` gives Bayeux
    extensions (``MessageContext.headers``), so a header sent twice means the same
    thing to an extension and to the REST and admin APIs.
    """
    value = request.requestHeaders.getRawHeaders(name)
    if not value:
        return None
    return value[0].decode("latin-1")


class OriginPolicy:
    """
    Which browser origins may talk to the Bayeux endpoint across origins.

    ``None`` allows every origin (Faye's behaviour: the Origin is echoed back);
    otherwise only the listed origins (scheme://host[:port]) are echoed, and
    requests from others get no CORS headers, so browsers refuse their answers.
    """

    def __init__(self, allowed: Iterable[str] | None = None) -> None:
        self.allowed = None if allowed is None else frozenset(o.rstrip("/") for o in allowed)

    def allows(self, origin: str) -> bool:
        return self.allowed is None or origin in self.allowed

    def apply(self, request: IRequest) -> None:
        origin = header(request, b"origin")
        if origin and self.allows(origin):
            request.setHeader(b"Access-Control-Allow-Origin", origin.encode("latin-1"))
            request.setHeader(b"Access-Control-Allow-Credentials", b"true")


def requestLost(request: Request) -> Deferred[None]:
    """Fires if the client goes away before the response is finished."""
    lost: Deferred[None] = Deferred()

    def onFinish(result: Any) -> None:
        # A normal finish needs no notice; only an error (lost connection) does.
        if result is not None and not lost.called:
            lost.callback(None)

    request.notifyFinish().addBoth(onFinish)
    return lost


def contextFor(request: Request, transport: str, lost: Deferred[None] | None = None) -> MessageContext:
    headers = {
        name.decode("latin-1").lower(): values[0].decode("latin-1")
        for name, values in request.requestHeaders.getAllRawHeaders()
        if values
    }
    peer = request.getClientAddress()
    return MessageContext(transport, headers, getattr(peer, "host", None), lost=lost)


def writeError(request: Request, code: int, message: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-cache, no-store")
    return message.encode("utf-8")
