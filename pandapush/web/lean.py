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
publish or a long-polling request answered at once goes further: no request at all
(:func:`_lane`, with :mod:`pandapush.web.lanes`).

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

from twisted.internet.defer import succeed
from twisted.logger import Logger
from twisted.web.http import NO_BODY_CODES, HTTPChannel, parse_qs
from twisted.web.http_headers import Headers, _nameEncoder

from pandapush.transports.turnsends import sendAtTurnEnd
from pandapush.web.http import errorBody, jsonResponse
from pandapush.web.lanes import HEADER_NAMES, HEADER_NAMES_KEPT, LaneRequest, answerBytes, handOver, peerOf
from pandapush.web.site import LimitedRequest

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
        canonical = HEADER_NAMES.get(name)  # type: ignore[arg-type]
        if canonical is not None and type(value) is bytes and b"\n" not in value and b"\r" not in value:
            self.responseHeaders._rawHeaders[canonical] = [value]
            return
        super().setHeader(name, value)
        if type(name) is bytes and len(HEADER_NAMES) < HEADER_NAMES_KEPT:
            HEADER_NAMES[name] = _nameEncoder.encode(name)

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
    lean = LeanRequest(channel, b"POST", uri, headers, body, peerOf(channel))
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
        handOver(request, *later)
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


#: Where the publish lane is mounted; ``/push``'s is the other.
_CHANNEL = b"/channel/"


def _lane(
    channel: Any, resource: Any, uri: bytes, headers: Headers, body: bytes, contextHeaders: Any
) -> None:
    """
    Serve ``uri`` by ``resource``'s ``answer`` through a lane (:mod:`pandapush.web.lanes`):
    ``_answer``'s work, with an answer given now written here.
    """
    path = uri.partition(b"?")[0]
    request = LaneRequest(channel, uri, path, headers, body, contextHeaders)
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
    sendAtTurnEnd(channel.transport, answerBytes(site, request.code, request.responseHeaders, answer, closes))
    done = site.requestDone
    if done is not None:
        done(request)
    if closes:
        channel.persistent = False
    _answered(channel)
