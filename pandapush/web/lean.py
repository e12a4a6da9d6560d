"""Simple requests of the hot paths, parsed from the bytes of one read and served at once.

A REST publish (``POST /channel/...``) and each long-polling request (``POST /push``)
are one small request whose head and body arrive in one read. twisted.web reads such a
request a line at a time (``LineReceiver``, ``headerReceived``, a name canonicalised per
header), then ``allHeadersReceived`` (cookies, persistence, ``Expect``), an identity
transfer decoder for the body, ``allContentReceived`` and ``requestDone`` (the idle
timer cancelled and made again, reading resumed, line mode set back): with building the
``Request`` and finishing it, ~45 % of a REST request in py-spy (bench/README.md,
PERF-TODO 2). Here a regular expression takes the request line, the header lines are
read once per distinct block of them (a client sends the same again and again), the
body is sliced from the same bytes, and a :class:`LeanRequest` is handed to the site's
resources as twisted.web would hand its own: same routing, same resources, same
answers, same logging, only less of the channel's bookkeeping around them. A REST
publish or a long-polling request answered at once goes further: no request at all (the
lanes, below).

The same way :mod:`pandapush.transports.fastframes` reads websocket frames: this path
takes only what it can take whole and as twisted.web would take it. A request that is
not ``POST`` of ``/push`` or ``/channel/`` over HTTP/1.1, whose head or body is not
all in the read, whose head is over the channel's size or header-count limits or is not
plain (obsolete line folding, a header name that is not a token, a value with NUL),
that has ``Transfer-Encoding``, ``Expect``, ``Upgrade`` or more than one
``Content-Length``, or a body over ``--max-body-size``, and everything after it in the
read, goes to twisted.web as it came, in order: its 400s, 413s, 100-continues and
deadlines are its own. Requests pipelined behind a simple one are served in turn; behind
one answered later (a held ``/meta/connect``) they wait in the channel's buffer, where
twisted.web keeps them, and its ``requestDone`` plays them back.
"""

from __future__ import annotations

import io
import re
import time
from types import MappingProxyType
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web import server as twistedserver
from twisted.web.http import NO_BODY_CODES, RESPONSES, HTTPChannel, parse_qs
from twisted.web.http_headers import Headers, _nameEncoder

from pandapush.transports.http import sendNow
from pandapush.web.http import errorBody, jsonResponse
from pandapush.web.site import HTTP_DATE, LimitedRequest

__all__ = ["LeanRequest", "serve"]

#: A request line this path takes, at a request's start, ...
_REQUEST = re.compile(rb"POST (/push(?:[/?][\x21-\xb0]*)?|/channel/[\x21-\xb0]*) HTTP/1\.1\r\n")
#: ... and the header lines it takes after it (then the empty line).
_LINES_OF_HEAD = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00\r\n]*\r\n)*")
#: Headers (canonical names) that make twisted.web do more than route the request.
_REFUSED = frozenset({b"Transfer-Encoding", b"Expect", b"Upgrade"})
#: A request begins so, or this path does not look further.
START = b"POST /"


_log = Logger()

#: Answer header names as resources set them (bytes) -> canonical: the few names of
#: the server's own answers. Bounded all the same.
_NAMES: dict[bytes, bytes] = {}
_NAMES_KEPT = 256


class LeanRequest(LimitedRequest):
    """
    A :class:`~pandapush.web.site.LimitedRequest` made from a head and a body already
    parsed: ``Request.__init__``, ``gotLength`` and ``requestReceived`` in one, without
    what they redo for every request of a connection (the peer's address object, a body
    buffer written piece by piece). Everything else is the site's request as it is:
    ``process``, the one-piece answer, ``finish``, ``processingFailed``, chunked
    answers. Only its ``_cleanup`` differs: while :func:`serve` is still serving it, the
    channel's ``requestDone`` (timers, reading, line mode) is :func:`serve`'s to do.
    """

    #: Whether :func:`serve` is still in the call that serves it.
    _serving = True

    def __init__(
        self, channel: Any, method: bytes, uri: bytes, headers: Headers, body: bytes, peer: Any
    ) -> None:
        # What twisted.web's Request.__init__, server.Request.__init__ (Componentized),
        # gotLength and requestReceived leave on a request.
        self.notifications = []
        self.channel = channel
        self.client = peer
        self.requestHeaders = headers
        self.received_cookies = {}
        # Headers() without its __init__ call, which only makes the dict set here.
        responseHeaders = self.responseHeaders = object.__new__(Headers)
        responseHeaders._rawHeaders = {}
        self.cookies = []
        self.transport = channel.transport
        self.queued = False
        self._parsePOSTFormSubmission = False
        self._adapterCache = {}
        self.started = time.monotonic()
        self.content = io.BytesIO(body)
        self.method = method
        self.uri = uri
        self.clientproto = b"HTTP/1.1"
        path, query, argstring = uri.partition(b"?")
        self.path = path
        self.args = parse_qs(argstring, 1) if query else {}

    #: The connection's local address, once something asked (see ``host``).
    _host: Any = None

    @property  # type: ignore[override]
    def host(self) -> Any:
        # Request.__init__ asks the transport for it on every request (a getsockname per
        # connection, an address object): nothing on the lean path's requests reads it,
        # so it is looked up when something does (getHost, a URL built from the request).
        host = self._host
        if host is None:
            channel = getattr(self, "channel", None)
            if channel is not None:
                host = self._host = channel.getHost()
        return host

    @host.setter
    def host(self, value: Any) -> None:
        self._host = value

    def setHeader(self, name: bytes | str, value: bytes | str) -> None:
        # Headers.setRawHeaders without its name encoder's call, splitlines and join for
        # a name set before and a value with no line break to replace: four headers or
        # more on every answer.
        canonical = _NAMES.get(name)  # type: ignore[arg-type]
        if canonical is not None and type(value) is bytes and b"\n" not in value and b"\r" not in value:
            self.responseHeaders._rawHeaders[canonical] = [value]
            return
        super().setHeader(name, value)
        if type(name) is bytes and len(_NAMES) < _NAMES_KEPT:
            _NAMES[name] = _nameEncoder.encode(name)

    def _cleanup(self) -> None:
        # twisted.web's Request._cleanup, but the channel's requestDone only for an
        # answer that came after serve() returned.
        if self.producer:
            self.unregisterProducer()
        channel = self.channel
        if self._serving:
            channel.requests.remove(self)
        else:
            channel.requestDone(self)
        del self.channel
        if self.content is not None:
            self.content.close()
            del self.content
        notifications, self.notifications = self.notifications, []
        for d in notifications:
            d.callback(None)


def _idle(channel: Any) -> bool:
    """Whether ``channel`` waits for the first byte of a request, nothing of one buffered or under way."""
    return (
        not channel._handlingRequest
        and not channel.requests
        and channel.persistent
        and channel.line_mode
        and not channel._busyReceiving
        and not channel._buffer
        and not channel._dataBuffer
        and not channel._receivedHeaderSize
        and channel._HTTPChannel__first_line == 1
        and channel.transport is not None
    )


def _peer(channel: Any) -> Any:
    # Twisted asks the transport for every request, a new address object each time.
    peer = channel.__dict__.get("_leanPeer")
    if peer is None:
        peer = channel._leanPeer = channel.getPeer()
    return peer


#: A header line's canonical name, value and kind: ``_REFUSE`` for what twisted.web must
#: take, the length for a valid ``Content-Length``, None for the rest. Kept per line: a
#: client sends the same lines again and again, and splitting, canonicalising and
#: stripping each was most of the parsing. Bounded: lines are the client's to choose.
_LINES: dict[bytes, tuple[bytes, bytes, object]] = {}
_LINES_KEPT = 2000
#: Longer lines are not kept (a token is a few hundred bytes): at most ~2 MB in all.
_LINE_KEPT = 1024
_REFUSE = object()


def _line(line: bytes) -> tuple[bytes, bytes, object]:
    """What ``_LINES`` keeps for a line ``_LINES_OF_HEAD`` checked, split as twisted.web splits it."""
    name, _, value = line.partition(b":")
    name = _nameEncoder.encode(name)
    value = value.strip(b" \t")
    if name in _REFUSED:
        return name, value, _REFUSE
    if name == b"Content-Length":
        return name, value, int(value) if value.isdigit() else _REFUSE
    return name, value, None


#: The header lines of a head (each with its CRLF) -> their names, and values, in order,
#: the body's length and the number of lines; ``_REFUSE``: twisted.web takes such a
#: request. A client sends the same head again and again (a REST publisher, a
#: long-polling client's connects): checking and splitting its lines, line by line,
#: was a fifth of this path. Bounded as ``_LINES`` is: at most ~2 MB.
_BLOCKS: dict[bytes, Any] = {}
_BLOCKS_KEPT = 1000
_BLOCK_KEPT = 2048


def _block(lines: bytes) -> Any:
    """What ``_BLOCKS`` keeps for ``lines``."""
    if _LINES_OF_HEAD.fullmatch(lines) is None:
        return _REFUSE
    order: dict[bytes, list[bytes]] = {}
    length = 0
    cache = _LINES
    for line in lines[:-2].split(b"\r\n") if lines else ():
        known = cache.get(line)
        if known is None:
            known = _line(line)
            if len(cache) < _LINES_KEPT and len(line) <= _LINE_KEPT:
                cache[line] = known
        name, value, kind = known
        if kind is not None:
            if kind is _REFUSE or b"Content-Length" in order:
                return _REFUSE
            length = kind  # type: ignore[assignment]
        values = order.get(name)
        if values is None:
            order[name] = [value]
        else:
            values.append(value)
    # Names and values apart: a request's dict is made of them by zip, in C. And the
    # headers as a MessageContext holds them (lower-cased names, each first value), made
    # here once for every request with this head rather than by contextFor for each: a
    # Mapping no one writes to (extensions read it), so the requests share it.
    contextHeaders = MappingProxyType(
        {name.decode("latin-1").lower(): values[0].decode("latin-1") for name, values in order.items()}
    )
    return (
        tuple(order),
        tuple(tuple(values) for values in order.values()),
        length,
        lines.count(b"\n"),
        contextHeaders,
    )


def _parse(channel: Any, data: bytes, start: int) -> tuple[bytes, Headers, bytes, Any, int] | None:
    """
    The request at ``start`` of ``data`` (its target, headers, body and headers as a
    context holds them) and where it ends, or None if twisted.web must take it.
    """
    end = data.find(b"\r\n\r\n", start)
    if end < 0 or end + 4 - start > channel.totalHeadersSize:
        return None
    # The request line ends at the first CRLF (its target has none), at ``end`` if no
    # header line follows it.
    lineEnd = data.find(b"\r\n", start)
    request = _REQUEST.fullmatch(data, start, lineEnd + 2)
    if request is None:
        return None
    lines = data[lineEnd + 2 : end + 2]
    known = _BLOCKS.get(lines)
    if known is None:
        known = _block(lines)
        if len(_BLOCKS) < _BLOCKS_KEPT and len(lines) <= _BLOCK_KEPT:
            _BLOCKS[lines] = known
    if known is _REFUSE:
        return None
    names, values, length, count, contextHeaders = known
    if count > channel.maxHeaders:
        return None
    site = getattr(channel, "site", None)
    limit = getattr(site, "maxBodySize", None)
    if limit is not None and length > limit:
        return None
    bodyEnd = end + 4 + length
    if bodyEnd > len(data):
        return None
    headers = object.__new__(Headers)
    # Lists of their own: a request's headers are its own to change.
    headers._rawHeaders = dict(zip(names, map(list, values), strict=True))
    return request.group(1), headers, data[end + 4 : bodyEnd], contextHeaders, bodyEnd


def _request(channel: Any, uri: bytes, headers: Headers, body: bytes, contextHeaders: Any) -> LeanRequest:
    lean = LeanRequest(channel, b"POST", uri, headers, body, _peer(channel))
    lean.contextHeaders = contextHeaders
    return lean


def serve(channel: HTTPChannel, data: bytes) -> bytes | None:
    """
    Serve the simple requests at the start of ``data``, a read of idle ``channel``.
    What is left for twisted.web (``data`` itself if nothing was served), or None if
    nothing is: all served, the rest kept for after an answer that comes later, or the
    connection closing.
    """
    ch: Any = channel
    start = 0
    while data.startswith(START, start) and _idle(ch):
        parsed = _parse(ch, data, start)
        if parsed is None:
            break
        uri, headers, body, contextHeaders, start = parsed
        lane = None
        if uri.isascii() and b"%" not in uri:
            lanes = getattr(getattr(ch, "site", None), "lanes", None)
            if lanes is not None:
                lane = lanes[1] if uri.startswith(_CHANNEL) else lanes[0]
        if lane is not None:
            _lane(ch, lane, uri, headers, body, contextHeaders)
        else:
            _answer(ch, _request(ch, uri, headers, body, contextHeaders))
        if ch._handlingRequest:
            # Answered later: what follows waits where twisted.web keeps the bytes that
            # arrive meanwhile (requestDone plays them back), reading paused past as much.
            rest = data[start:]
            if rest:
                ch._dataBuffer.append(rest)
                if len(rest) > ch._optimisticEagerReadSize and not ch._waitingForTransport:
                    ch._networkProducer.pauseProducing()
            return None
        if not ch.persistent:
            return None
    if start == 0:
        return data
    return data[start:] or None


#: ``Connection`` header values -> whether they ask to close (HTTPChannel.checkPersistence's
#: test): a client sends the same one (``keep-alive``) with every request. Bounded: values
#: are the client's to choose.
_CLOSES: dict[bytes, bool] = {}
_CLOSES_KEPT = 256
_CLOSE_KEPT = 256


def _closes(value: bytes) -> bool:
    """Whether a ``Connection`` header's first value asks to close, as twisted.web reads it."""
    closes = _CLOSES.get(value)
    if closes is None:
        closes = b"close" in [t.lower() for t in value.split(b" ")]
        if len(_CLOSES) < _CLOSES_KEPT and len(value) <= _CLOSE_KEPT:
            _CLOSES[value] = closes
    return closes


def _answer(channel: Any, request: LeanRequest, later: Any = None) -> None:
    """
    Serve ``request`` as twisted.web's allHeadersReceived, allContentReceived and
    requestDone do; or, with ``later`` (the resource, its Deferred answer and the lane's
    stand-in: what a lane could not answer now), wait for the Deferred's body
    as the resource's ``render`` would.
    """
    headers = request.requestHeaders._rawHeaders
    closes = _received(channel, headers)
    if b"Cookie" in headers:
        request.parseCookies()
    if closes:
        # HTTPChannel.checkPersistence's test, and its header (before the site's).
        request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
        channel.persistent = False
    channel.requests.append(request)
    channel._handlingRequest = True
    if later is None:
        request.process()
    else:
        _later(request, *later)
    if request.finished:
        _answered(channel)
        return
    # Answered later (a held connect, a step that waits on storage or Redis): the
    # channel as twisted.web's allContentReceived leaves it, for its requestDone.
    request._serving = False
    if channel.timeOut:
        channel._savedTimeOut = channel.setTimeout(None)
    channel.setRawMode()


def _received(channel: Any, headers: dict[bytes, list[bytes]]) -> bool:
    """
    A request's head and body are in: its head's deadline (PandapushChannel's, if one
    runs) is over. Whether its ``Connection`` header asks to close, as twisted.web reads it.
    """
    cancelDeadline = getattr(channel, "_cancelDeadline", None)
    if cancelDeadline is not None:
        cancelDeadline()
    connection = headers.get(b"Connection")
    return bool(connection) and _closes(connection[0])  # type: ignore[index]


def _answered(channel: Any) -> None:
    """
    After an answer given now: the channel as twisted.web's requestDone leaves it,
    without its work for a request that waited (reading was not paused for this one),
    and the idle timer running from now, as it would be made again.
    """
    channel._handlingRequest = False
    if not channel.persistent:
        channel.loseConnection()
    elif channel.timeOut:
        if getattr(channel, "_TimeoutMixin__timeoutCall", None) is not None:
            channel.resetTimeout()
        else:
            channel.setTimeout(channel.timeOut)


# --- The lanes ----------------------------------------------------------------------
#
# A REST publish (``POST /channel/...``) or a long-polling request (``POST /push``)
# answered without a twisted.web request: the resource mounted there (PublishResource,
# BayeuxResource) answers a small stand-in that holds what it reads and sets, and the
# answer is written here, status line, the headers in twisted.web's order and the body,
# in one piece. The LeanRequest, the site's process, resource lookup and render, the
# request's write, finish and cleanup were about half of a REST publish. Only an answer
# given now takes the lane to its end: for one given later (a held connect, a key looked
# up in storage, a publish through Redis) a LeanRequest is made then, given the status
# and headers set so far, and finished by the resource as a render would be. Not taken:
# paths with "%" or not ASCII (the site unquotes and checks them), and a site with an
# access log (its lines are twisted.web's request's to write).

_CHANNEL = b"/channel/"
#: twisted.web's type for a body a resource gave none.
_DEFAULT_TYPE = b"Content-Type: %s\r\n" % LimitedRequest.defaultContentType


class _LaneRequest:
    """
    What a lane's resource (``answer``) reads and sets of a request, and the metrics
    hook reads: the ``/channel`` resource's ``postpath``, ``method``, ``uri``,
    ``requestHeaders``, ``content``, ``tooLarge``; long-polling's ``channel``,
    ``contextHeaders``, ``getClientAddress``, ``notifyLost``, ``setPlainHeaders``.
    """

    __slots__ = (
        "_lost",
        "channel",
        "code",
        "content",
        "contextHeaders",
        "path",
        "postpath",
        "requestHeaders",
        "responseHeaders",
        "started",
        "target",
        "uri",
    )

    method = b"POST"
    tooLarge = False
    finished = False

    def __init__(
        self, channel: Any, uri: bytes, path: bytes, headers: Headers, body: bytes, contextHeaders: Any
    ) -> None:
        self.channel = channel
        self.uri = uri
        self.path = path
        self.postpath = path[1:].split(b"/")
        self.requestHeaders = headers
        self.contextHeaders = contextHeaders
        self.content = io.BytesIO(body)
        self.code = 200
        # Canonical name -> value, in the order set (what twisted.web's dict keeps).
        self.responseHeaders: dict[bytes, bytes] = {}
        self.started = time.monotonic()
        #: The request that answers in its place, once the answer is to come later: what
        #: the resource sets from then on (its callbacks hold this one) is set on it.
        self.target: LeanRequest | None = None
        self._lost: Deferred[None] | None = None

    def setResponseCode(self, code: int) -> None:
        if self.target is not None:
            self.target.setResponseCode(code)
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        if self.target is not None:
            self.target.setHeader(name, value)
            return
        canonical = _NAMES.get(name)
        if canonical is None or type(value) is not bytes or b"\n" in value or b"\r" in value:
            # As twisted.web's Headers takes it (text encoded, line breaks made spaces).
            headers = Headers()
            headers.setRawHeaders(name, [value])
            ((canonical, (value,)),) = headers.getAllRawHeaders()
            if type(name) is bytes and len(_NAMES) < _NAMES_KEPT:
                _NAMES[name] = canonical
        self.responseHeaders[canonical] = value

    def setPlainHeaders(self, headers: Any) -> None:
        """``LimitedRequest.setPlainHeaders``: canonical names, values without line breaks."""
        if self.target is not None:
            self.target.setPlainHeaders(headers)
            return
        self.responseHeaders.update(headers)

    def getClientAddress(self) -> Any:
        return _peer(self.channel)

    def notifyLost(self) -> Deferred[None]:
        """
        ``LimitedRequest.notifyLost``: asked for by a held connect, before its answer is
        known to come later; the request made for it then fires this one.
        """
        if self.target is not None:
            return self.target.notifyLost()
        lost = self._lost
        if lost is None:
            lost = self._lost = Deferred()
        return lost


def _start(site: Any) -> tuple[bytes, dict[bytes, bytes]]:
    """
    The lines every answer of a lane starts with, as ``LimitedRequest.startAnswer``
    sets them (the site's headers, ``Server``, ``Date``), and the same as a dict: made
    once a second, kept on the site for as long as its headers are the same object
    (``PandapushSite.headers``: read-only, set anew to change).
    """
    date = HTTP_DATE()
    headers = site.headers
    kept = site.__dict__.get("_leanStart")
    if kept is not None and kept[0] is date and kept[1] is headers:
        return kept[2]  # type: ignore[no-any-return]
    lines = {_nameEncoder.encode(name): value for name, value in headers.items()}
    lines[b"Server"] = twistedserver.version
    lines[b"Date"] = date
    start = (b"".join(b"%s: %s\r\n" % line for line in lines.items()), lines)
    site._leanStart = (date, headers, start)
    return start


_CLOSE = {b"Connection": b"close"}


def _lane(
    channel: Any, resource: Any, uri: bytes, headers: Headers, body: bytes, contextHeaders: Any
) -> None:
    """Serve ``uri`` by ``resource``'s ``answer``: ``_answer``'s work, with the answer written here."""
    path = uri.partition(b"?")[0]
    request = _LaneRequest(channel, uri, path, headers, body, contextHeaders)
    try:
        answer = resource.answer(request)
    except Exception:
        # As the resources' own errbacks answer a failure that comes later.
        _log.failure("Request failed: POST {path}", path=path.decode("ascii"))
        request.responseHeaders.clear()
        answer = jsonResponse(request, 500, errorBody(500, "Internal server error"))  # type: ignore[arg-type]
    if type(answer) is not bytes or request.code in NO_BODY_CODES:
        # NO_BODY_CODES: answers twisted.web writes without a body or its type.
        if type(answer) is bytes:
            answer = succeed(answer)
        lean = _request(channel, uri, headers, body, contextHeaders)
        _answer(channel, lean, (resource, answer, request))
        return
    closes = _received(channel, headers._rawHeaders)  # type: ignore[attr-defined]
    site = channel.site
    code = request.code
    lines = request.responseHeaders
    start, first = _start(site)
    if closes or not first.keys().isdisjoint(lines):
        # twisted.web's order: the Connection it sets first (checkPersistence), the
        # site's lines, then the resource's; a name set again keeps its first place.
        start, lines = b"", {**(_CLOSE if closes else {}), **first, **lines}
    length = len(answer)
    # The length render sets: in the place of one the resource set (a preflight's), or
    # last; then twisted.web's default type.
    if b"Content-Length" in lines:
        lines[b"Content-Length"] = b"%d" % length
        tail = b""
    else:
        tail = b"Content-Length: %d\r\n" % length
    if length and b"Content-Type" not in lines and b"Content-Type" not in first:
        tail += _DEFAULT_TYPE
    sendNow(
        channel.transport,
        b"HTTP/1.1 %d %s\r\n%s%s%s\r\n%s"
        % (
            code,
            RESPONSES.get(code, b"Unknown Status"),
            start,
            b"".join(b"%s: %s\r\n" % line for line in lines.items()),
            tail,
            answer,
        ),
    )
    done = site.requestDone
    if done is not None:
        done(request)
    if closes:
        channel.persistent = False
    _answered(channel)


def _later(lean: LeanRequest, resource: Any, answer: Any, given: _LaneRequest) -> None:
    """``lean`` waits for ``answer``, with what the resource set on the lane's stand-in."""
    lean.startAnswer()
    lean.setResponseCode(given.code)
    for name, value in given.responseHeaders.items():
        lean.setHeader(name, value)
    lean.started = given.started
    given.target = lean
    lost = given._lost
    if lost is not None:
        # A held connect watches the stand-in's: the request's fires it.
        lean.notifyLost().chainDeferred(lost)
    resource.respond(answer, lean)
