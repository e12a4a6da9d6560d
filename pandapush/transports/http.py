"""HTTP helpers of the transports, and the one :func:`header` of the whole server.

:func:`header` is here, not in :mod:`pandapush.web`, because the transports sit below
web in the layering (web mounts them; they never import web), and both read request
headers: one helper, so that one request reads the same over Bayeux and over the
REST and admin APIs.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.http_headers import _nameEncoder
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from pandapush.bayeux.context import MessageContext

__all__ = [
    "ORIGIN",
    "HTTPConnection",
    "OriginPolicy",
    "connectionOf",
    "contextFor",
    "finishWith",
    "header",
    "rawHeader",
    "requestLost",
    "writeError",
]


def header(request: IRequest, name: bytes) -> str | None:
    """
    The first value of the request header ``name`` as text (latin-1, as HTTP/1.1
    defines header bytes), or None. The first, as :func:`contextFor` gives Bayeux
    extensions (``MessageContext.headers``), so a header sent twice means the same
    thing to an extension and to the REST and admin APIs.
    """
    value = rawHeader(request, name)
    if not value:
        return None
    return value[0].decode("latin-1")


#: Header names as the server asks for them -> canonical (what twisted.web's
#: ``getRawHeaders`` finds them by): a few names, each asked for on every request.
_CANONICAL: dict[bytes, bytes] = {}
_CANONICAL_KEPT = 256


def rawHeader(request: IRequest, name: bytes) -> list[bytes] | None:
    """``request.requestHeaders.getRawHeaders(name)`` without its two calls, for a name asked before."""
    canonical = _CANONICAL.get(name)
    if canonical is None:
        canonical = _nameEncoder.encode(name)
        if len(_CANONICAL) < _CANONICAL_KEPT:
            _CANONICAL[name] = canonical
    headers = request.requestHeaders
    try:
        return headers._rawHeaders.get(canonical)  # type: ignore[attr-defined, no-any-return]
    except AttributeError:  # not twisted.web's Headers
        return headers.getRawHeaders(name)


#: The ``limit`` label of an origin's refusal (``pandapush_limit_refusals_total``).
ORIGIN = "origin"


class OriginPolicy:
    """
    Which browser origins may talk to the Bayeux endpoint across origins.

    ``None`` allows every origin (Faye's behaviour: the Origin is echoed back);
    otherwise only the listed origins (scheme://host[:port]) are echoed, and the
    Bayeux requests of others are refused with 403 (:meth:`admits`).

    ``Origin: null`` (sandboxed iframes, file:// pages, some redirects and privacy
    modes) is an origin like the others: allowed with no list, as Faye and CometD
    allow it, and with a list only if it names ``null``. Listed, it lets in every
    document with an opaque origin, whatever site frames it: an operator chooses that.
    """

    def __init__(
        self, allowed: Iterable[str] | None = None, onRefused: Callable[[str], None] | None = None
    ) -> None:
        # Origins compare without regard to case (a scheme and a host are case-blind):
        # the list in lower case, and an Origin not found as sent is looked up lowered.
        self.allowed = None if allowed is None else frozenset(o.strip().rstrip("/").lower() for o in allowed)
        #: Told ``"origin"`` of every refusal (``pandapush_limit_refusals_total``).
        self.onRefused = onRefused

    def refused(self) -> None:
        """Count a websocket opening or an HTTP request refused for its origin."""
        if self.onRefused is not None:
            self.onRefused(ORIGIN)

    def allows(self, origin: str) -> bool:
        allowed = self.allowed
        return allowed is None or origin in allowed or origin.strip().rstrip("/").lower() in allowed

    def admits(self, request: IRequest, origin: str) -> bool:
        """
        Whether a Bayeux HTTP request carrying ``Origin: origin`` is served at all.

        A page of any site can make its visitors' browsers send a form-encoded POST or
        a GET without a preflight: withholding the CORS headers only keeps it from
        reading the answer, after the messages were processed (a publish made, a
        subscription taken, an event stream bound in its client's place). So an origin
        the list does not allow is refused before anything is read, except the
        server's own (the request's ``Host``): a page it serves (the console) sends its
        own origin, which the list need not name, and reads its answers without CORS.
        """
        if self.allows(origin):
            return True
        host = header(request, b"host")
        return host is not None and origin.partition("://")[2] == host.lower()

    def refuse(self, request: Request) -> bytes:
        """The answer to a request :meth:`admits` refuses: 403, as a websocket opening's; counted."""
        self.refused()
        return writeError(request, 403, "Origin not allowed")

    def apply(self, request: IRequest, origin: str | None = None) -> None:
        """The CORS headers for the request's ``Origin`` (``origin``, if the caller read it already)."""
        if origin is None:
            origin = header(request, b"origin")
        if origin and self.allows(origin):
            request.setHeader(b"Access-Control-Allow-Origin", origin.encode("latin-1"))
            request.setHeader(b"Access-Control-Allow-Credentials", b"true")


def requestLost(request: Request) -> Deferred[None]:
    """Fires if the client goes away before the response is finished."""
    notifyLost = getattr(request, "notifyLost", None)
    if notifyLost is not None:
        # The site's own requests (pandapush.web.site.LimitedRequest) fire one Deferred
        # from connectionLost: no notifyFinish Deferred and callback per request.
        return notifyLost()  # type: ignore[no-any-return]
    lost: Deferred[None] = Deferred()

    def onFinish(result: Any) -> None:
        # A normal finish needs no notice; only an error (lost connection) does.
        if result is not None and not lost.called:
            lost.callback(None)

    request.notifyFinish().addBoth(onFinish)
    return lost


class HTTPConnection:
    """Stands for one TCP connection in :attr:`MessageContext.connection`, every request of it alike."""

    __slots__ = ("__weakref__",)


# Not the HTTP channel itself: what counts clients by connection may keep its key as long
# as those clients live, and a closed channel should not stay in memory that long.
_connections: weakref.WeakKeyDictionary[Any, HTTPConnection] = weakref.WeakKeyDictionary()


def connectionOf(request: Request, proxies: Callable[[str], bool] | None = None) -> HTTPConnection | None:
    """
    The same :class:`HTTPConnection` for every request of one TCP connection; None for
    a connection from a proxy (``proxies(peer address)`` true): a proxy keeps its
    connections to us open for the requests of many clients (nginx's upstream
    ``keepalive``), so what is counted by connection must not count those together.
    """
    channel = getattr(request, "channel", None)
    if channel is None:
        return None
    if proxies is not None:
        peer = getattr(request.getClientAddress(), "host", None)
        if peer is not None and proxies(peer):
            return None
    try:
        connection = _connections.get(channel)
        if connection is None:
            connection = _connections[channel] = HTTPConnection()
    except TypeError:  # a test's stand-in channel that cannot be weakly referenced
        return None
    return connection


# Header names as extensions see them (MessageContext.headers), made once per name: a
# request brings the same half-dozen names, and decoding and lower-casing each took a
# fifth of contextFor. Bounded: names are the client's to choose.
_LOWER_NAMES: dict[bytes, str] = {}
_LOWER_NAMES_KEPT = 1000


def contextFor(
    request: Request,
    transport: str,
    lost: Deferred[None] | None = None,
    proxies: Callable[[str], bool] | None = None,
    lostOf: Callable[[], Deferred[None]] | None = None,
) -> MessageContext:
    # Made with the request's head when it was parsed from a head seen before (a lean
    # request: pandapush.web.lean), shared by the requests with that head.
    headers: Mapping[str, str] | None = getattr(request, "contextHeaders", None)
    if headers is None:
        names = _LOWER_NAMES
        headers = made = {}
        for name, values in request.requestHeaders.getAllRawHeaders():
            if values:
                lower = names.get(name)
                if lower is None:
                    lower = name.decode("latin-1").lower()
                    if len(names) < _LOWER_NAMES_KEPT:
                        names[name] = lower
                made[lower] = values[0].decode("latin-1")
    peer = request.getClientAddress()
    return MessageContext(
        transport,
        headers,
        getattr(peer, "host", None),
        lost=lost,
        connection=connectionOf(request, proxies),
        lostOf=lostOf,
    )


def writeError(request: Request, code: int, message: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-cache, no-store")
    return message.encode("utf-8")


def finishWith(request: Any, body: bytes) -> None:
    """
    Finish ``request`` with ``body``, its length set: how a resource's answer that came
    later (its ``respond``) ends the request a render would have ended. Nothing if the
    client is gone or the request was finished meanwhile.
    """
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.setHeader(b"Content-Length", b"%d" % len(body))
    request.write(body)
    request.finish()
