"""One ``twisted.web`` Site for everything: ``/push`` and the Klein routes."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web import server as twistedserver
from twisted.web.error import UnsupportedMethod
from twisted.web.http import NO_BODY_CODES, datetimeToString
from twisted.web.resource import IResource, Resource, _IEncodingResource, getChildForRequest
from twisted.web.server import NOT_DONE_YET, Request, Site

from pandapush.transports.turnsends import sendAtTurnEnd
from pandapush.web.connections import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADERS_TIMEOUT,
    AddressLimit,
    PandapushChannel,
)
from pandapush.web.health import HealthApp

__all__ = ["HealthApp", "LimitedRequest", "PandapushRoot", "PandapushSite", "makeSite"]


class _HTTPDate:
    """
    The ``Date`` header's value, formatted once a second: Twisted formats it for every
    response (``datetimeToString``, 2.2 µs, as much as the tenancy check of a publish).
    """

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._value = datetimeToString(second)
            self._second = second
        return self._value


HTTP_DATE = _HTTPDate()
_NO_HEADERS: Mapping[bytes, bytes] = {}
#: What the one-piece answer is written for (an HTTP/2 stream writes its own frames).
_HTTP1 = frozenset({b"HTTP/1.1", b"HTTP/1.0"})


class LimitedRequest(Request):
    """
    A request that stops buffering its body past ``site.maxBodySize``, and answers
    with less of Twisted's per-request machinery.

    Twisted reads a whole body before rendering; without a cap a client could
    make us buffer gigabytes. Past the cap the body is dropped and
    ``tooLarge`` is set, so resources answer 413 instead of parsing anything;
    over a :class:`~pandapush.web.connections.PandapushChannel` the channel answers
    413 at once and closes (a body announced too large never gets this far).

    Every answer carries the site's ``headers`` (``X-Pandapush-Worker`` with
    ``--workers``), then Twisted's ``Server`` and ``Date``. A REST publish and each
    long-polling request are a request each, and Twisted's request handling around
    the resource cost as much as the publish itself, so: the ``Date`` is formatted
    once a second; an answer whose length is known (every resource here gives one)
    leaves as one piece, status line, headers and body, given to the kernel with the
    connection's other answers of the reactor turn when nothing is waiting in its
    buffer (:func:`~pandapush.transports.turnsends.sendAtTurnEnd`) instead of through
    Twisted's buffered write, which costs an ``epoll_ctl`` pair and another reactor
    turn per answer. Anything else (chunked answers, ``HEAD``,
    204/304, cookies, ``ETag``, ``Last-Modified``, encoders) is Twisted's own code.
    """

    tooLarge = False
    _received = 0
    #: ``time.monotonic()`` once its headers were in (0: never were); metrics time requests from it.
    started = 0.0
    _lost: Deferred[None] | None = None
    #: The headers as a MessageContext holds them, when they came with the request
    #: (pandapush.web.lean); else None, and contextFor makes them.
    contextHeaders: Mapping[str, str] | None = None

    def gotLength(self, length: int | None) -> None:
        self.started = time.monotonic()
        limit = self._limit()
        if length is not None and length > limit:
            self.tooLarge = True
        # Always in memory: bodies are capped, so no temporary files.
        self.content = io.BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        if self.tooLarge:
            return
        self._received += len(data)
        if self._received > self._limit():
            self.tooLarge = True
            self.content = io.BytesIO()
            # A chunked body past the limit: refused now, not read to its end.
            refuse = getattr(self.channel, "refuseTooLarge", None)
            if refuse is not None:
                refuse()
            return
        if self.content is not None:
            self.content.write(data)

    def _limit(self) -> int:
        site = getattr(self.channel, "site", None)
        return getattr(site, "maxBodySize", 1024 * 1024)

    def notifyLost(self) -> Deferred[None]:
        """A Deferred that fires if the connection is lost before the answer is finished."""
        lost = self._lost
        if lost is None:
            lost = self._lost = Deferred()
            if self._disconnected:
                lost.callback(None)
        return lost

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        lost = self._lost
        if lost is not None and not lost.called and not self.finished:
            lost.callback(None)

    def setPlainHeaders(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """
        ``setHeader(name, value)`` for each pair, whose name is canonical and whose value
        has no line break (the caller's word): stored as ``setRawHeaders`` stores them,
        without its name encoding and value checks, a call each. Long-polling sets three
        on every answer.
        """
        raw = self.responseHeaders._rawHeaders
        for name, value in headers:
            raw[name] = [value]

    def process(self) -> None:
        # twisted.web.server.Request.process, with the site's headers first and the Date
        # of this second.
        site = self.startAnswer()
        path = self.path
        self.prepath = []
        # unquote_to_bytes gives back a segment without "%" as it is.
        segments = path[1:].split(b"/")
        self.postpath = list(map(unquote_to_bytes, segments)) if b"%" in path else segments
        if path == b"*":
            self._handleStar()  # type: ignore[no-untyped-call]
            return
        try:
            resource = site.getResourceFor(self)
            if _IEncodingResource.providedBy(resource):
                encoder = resource.getEncoder(self)
                if encoder is not None:
                    self._encoder = encoder
            self.render(resource)
        except BaseException:
            self.processingFailed(Failure())

    def startAnswer(self) -> Any:
        """The headers every answer starts with (``process`` sets them first); returns the site."""
        site = self.channel.site  # type: ignore[attr-defined]
        self.site = site
        setHeader = self.setHeader
        for name, value in getattr(site, "headers", _NO_HEADERS).items():
            setHeader(name, value)
        # Names canonical and values without line breaks already: set without
        # setRawHeaders' checks (a fifth of this method).
        raw = self.responseHeaders._rawHeaders
        raw[b"Server"] = [twistedserver.version]
        raw[b"Date"] = [HTTP_DATE()]
        return site

    def render(self, resrc: Any) -> None:
        # twisted.web.server.Request.render. A body of bytes (not for HEAD) whose answer
        # leaves in one piece is given its length, written and finished here, without
        # write's and finish's checks of what is known here: every REST publish and
        # every long-polling request answered at once. Anything else (a refused method,
        # HEAD, NOT_DONE_YET, a body that is not bytes) is twisted.web's own code, given
        # what the resource already did.
        try:
            body = resrc.render(self)
        except UnsupportedMethod as error:
            Request.render(self, _Rendered(resrc, error=error))
            return
        if type(body) is not bytes or self.method == b"HEAD":
            if body is not NOT_DONE_YET:
                Request.render(self, _Rendered(resrc, body))
            return
        length = len(body)
        raw = self.responseHeaders._rawHeaders
        raw[b"Content-Length"] = [b"%d" % length]
        if not self._answersWhole():
            self.write(body)
            self.finish()
            return
        self._writeWhole(body, length != 0)
        # twisted.web's finish after its first write: nothing chunked, no encoder
        # (_answersWhole), the site's log, then the channel's bookkeeping.
        channel = self.channel
        factory = getattr(channel, "factory", None)
        if factory is not None:
            factory.log(self)
        self.finished = 1
        if not self.queued:
            self._cleanup()

    def write(self, data: bytes) -> None:
        if self.startedWriting or not self._answersWhole():
            super().write(data)
            return
        # The names in _rawHeaders are canonical (setRawHeaders makes them so).
        self._writeWhole(data, (self.responseHeaders._rawHeaders.get(b"Content-Length") or (b"",))[0] != b"0")

    def _writeWhole(self, data: bytes, typed: bool) -> None:
        """
        What twisted.web's Request.write does on a first write, for an answer of a known
        length: the default Content-Type (``typed``: unless the length is 0), then the
        status line, headers and ``data``, in one piece.
        """
        raw = self.responseHeaders._rawHeaders
        if typed and self.defaultContentType is not None and b"Content-Type" not in raw:
            raw[b"Content-Type"] = [self.defaultContentType]
        self.startedWriting = 1
        self.sentLength += len(data)
        answer = [self.clientproto, b" %d " % self.code, self.code_message, b"\r\n"]
        for name, values in raw.items():
            for value in values:
                answer += (name, b": ", value, b"\r\n")
        answer += (b"\r\n", data)
        sendAtTurnEnd(self.channel.transport, b"".join(answer))

    def _answersWhole(self) -> bool:
        """Whether the first write is the whole answer, headers and all, with nothing of Twisted's to add."""
        return (
            self.clientproto in _HTTP1
            and not self.finished
            and not self._disconnected
            and not self._inFakeHead
            and self._encoder is None
            and self.method != b"HEAD"
            and self.code not in NO_BODY_CODES
            and self.lastModified is None
            and self.etag is None
            and not self.cookies
            and b"Content-Length" in self.responseHeaders._rawHeaders
        )


_UNSET: Any = object()


class _Rendered:
    """
    A resource that answers as another already did, for twisted.web's
    ``Request.render`` to take it from there: the ``body`` it gave, or its ``error``
    (``UnsupportedMethod``: raised again once, then the resource renders itself, as
    twisted.web's HEAD-as-GET asks it to).
    """

    __slots__ = ("_body", "_error", "_resource")

    def __init__(self, resource: Any, body: Any = _UNSET, error: BaseException | None = None) -> None:
        self._resource = resource
        self._body = body
        self._error = error

    def render(self, request: Any) -> Any:
        error = self._error
        if error is not None:
            self._error = None
            raise error
        body = self._body
        if body is _UNSET:
            return self._resource.render(request)
        self._body = _UNSET
        return body

    def __repr__(self) -> str:
        # twisted.web names the resource in its log and its error page.
        return repr(self._resource)


def _isUTF8(segments: list[bytes]) -> bool:
    try:
        b"/".join(segments).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _BadRequest(Resource):
    """A request refused before any resource sees it: 400 with ``text``, without a word in the log."""

    isLeaf = True

    def __init__(self, text: bytes) -> None:
        super().__init__()
        self.text = text

    def render(self, request: Any) -> bytes:
        request.setResponseCode(400)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return self.text


#: A path that is not UTF-8.
_NOT_UTF8 = _BadRequest(b"Bad request: the path is not UTF-8")
#: A ``Host`` that is not a host name (RFC 9112, 3.2: a 400).
_BAD_HOST = _BadRequest(b"Bad request: the Host header is not a host name")


def _hostBindable(request: Any) -> bool:
    """
    Whether a Klein app can take the request's host name (``Host`` without its port, or
    the local address without one): Klein decodes it as UTF-8 (logging a traceback when
    it is not) and werkzeug encodes it as IDNA (a name with an empty label or one over 63
    characters raises ``BadHost`` through Klein: a 500 and a traceback). Either way one
    request's ``Host`` header wrote a traceback to the log.
    """
    try:
        request.getRequestHostname().decode("utf-8").lower().partition(":")[0].encode("idna")
    except UnicodeError:
        return False
    return True


def _checked(resource: IResource, request: Any) -> IResource:
    """
    ``resource``, or the 400 of a host name a Klein app could not take. Resources that
    never read the host say so with a true ``hostBlind`` (REST publishes: a hot path);
    the check is for every other one, Klein apps inside wrappers (``/admin``) included.
    """
    if getattr(resource, "hostBlind", False) or _hostBindable(request):
        return resource
    return _BAD_HOST


def _answers(resource: Any) -> bool:
    """Whether ``resource`` is a leaf answering with ``answer`` and ``respond`` (``PandapushRoot.lanes``)."""
    return (
        getattr(resource, "isLeaf", False)
        and callable(getattr(resource, "answer", None))
        and callable(getattr(resource, "respond", None))
    )


class PandapushRoot(Resource):
    """
    Dispatches on the first path segment: ``/push`` goes straight to the Bayeux
    resource (no routing cost on the hot path); other ``mounts`` (``channel``,
    ``admin``, ``metrics``...) and the ``default`` resource for everything else
    are leaf resources, usually Klein apps, that see the whole path.
    """

    def __init__(self, bayeux: IResource, default: IResource, mounts: dict[bytes, IResource] | None = None):
        super().__init__()
        self._bayeux = bayeux
        self._default = default
        self._mounts = dict(mounts or {})

    def mount(self, segment: bytes, resource: IResource) -> None:
        self._mounts[segment] = resource
        self._lanes = None

    #: What ``lanes`` found, until something else is mounted.
    _lanes: tuple[Any, Any] | None = None

    def getChildWithDefault(self, path: bytes, request: Any) -> IResource:
        if path == b"push":
            return self._bayeux
        # Give the segment back: the apps route on the whole path.
        request.postpath.insert(0, request.prepath.pop())
        if not _isUTF8(request.postpath):
            # Klein answers such a path 400 too, but logs a traceback first: one per
            # request, so anyone could fill the log.
            return _NOT_UTF8
        return _checked(self._mounts.get(path, self._default), request)

    def render(self, request: Any) -> Any:
        return _checked(self._default, request).render(request)

    def lanes(self) -> tuple[Any, Any]:
        """
        The resources of ``/push`` and of ``/channel`` that the lean path may answer
        without a twisted.web request (see ``PandapushSite.lanes``), None for either that
        may not: a leaf that answers with ``answer`` and ``respond``
        (:class:`~pandapush.transports.resource.BayeuxResource`,
        :class:`~pandapush.web.publish.PublishResource`), and for ``/channel`` one that
        never reads the host (the site checks the host of the other mounts).
        """
        lanes = self._lanes
        if lanes is None:
            channel = self._mounts.get(b"channel")
            lanes = self._lanes = (
                self._bayeux if _answers(self._bayeux) else None,
                channel if _answers(channel) and getattr(channel, "hostBlind", False) else None,
            )
        return lanes

    def resourceFor(self, request: Any) -> IResource:
        """
        What ``getChildForRequest`` finds for ``request`` from here: ``/push``, and a
        mounted leaf (``/channel``: every REST publish), without the walk.
        """
        postpath = request.postpath
        if postpath:
            first = postpath[0]
            if first == b"push" and self._bayeux.isLeaf:
                request.prepath.append(postpath.pop(0))
                return self._bayeux
            mounted = self._mounts.get(first)
            if mounted is not None and getattr(mounted, "isLeaf", False):
                # getChildWithDefault's answer, the segment not taken off the path.
                return _checked(mounted, request) if _isUTF8(postpath) else _NOT_UTF8
        return getChildForRequest(self, request)  # type: ignore[no-any-return]


class PandapushSite(Site):
    """
    The one ``Site``: connections per client address capped (``addressLimit``),
    deadlines for receiving each request and bodies refused from their announced size
    (:class:`~pandapush.web.connections.PandapushChannel`), bodies capped at
    ``maxBodySize`` (:class:`LimitedRequest`),
    ``headers`` added to every answer (``X-Pandapush-Worker`` with ``--workers``),
    ``requestDone`` told of every finished request (metrics count them by status; it
    reads the request's ``code``, ``path`` and ``started`` alone: the lean path's REST
    publishes give it no more), and
    the access log written only if ``accessLog`` (long-polling makes many requests).
    """

    protocol = PandapushChannel  # type: ignore[assignment]
    #: Seconds a request has to send its headers, then its body (:class:`PandapushChannel`).
    headersTimeout = DEFAULT_HEADERS_TIMEOUT
    bodyTimeout = DEFAULT_BODY_TIMEOUT

    def __init__(
        self,
        root: IResource,
        maxBodySize: int,
        headers: Mapping[bytes, bytes] | None = None,
        accessLog: bool = True,
        requestDone: Callable[[http.Request], None] | None = None,
        addressLimit: AddressLimit | None = None,
        onRefused: Callable[[str], None] | None = None,
    ) -> None:
        # Nothing here reads request.args from a body (long-polling and REST publish parse
        # their own, lazily); Twisted's form parsing cost every POST an email-package
        # Content-Type parse, 14 % of a REST publish.
        super().__init__(root, parsePOSTFormSubmission=False)
        self.headers = headers or {}
        self.requestFactory = LimitedRequest
        self.maxBodySize = maxBodySize
        self.displayTracebacks = False
        self.accessLog = accessLog
        self.requestDone = requestDone
        #: Open connections per client address; None: not limited.
        self.addressLimit = addressLimit
        #: Told the name of each limit that refuses a connection or request (metrics).
        self.onRefused = onRefused
        # Imported here: lean's requests are this module's.
        from pandapush.web.lean import serve

        #: Serves the simple requests of a channel's read (REST publishes, long-polls)
        #: without twisted.web's parsing; None: twisted.web parses every request.
        self.serveSimple: Callable[[Any, bytes], bytes | None] | None = serve

    @property
    def headers(self) -> Mapping[bytes, bytes]:
        """Headers added to every answer, first. Read-only: set them anew to change them."""
        return self._headers

    @headers.setter
    def headers(self, headers: Mapping[bytes, bytes]) -> None:
        # A copy no one changes: the lean path keeps the lines it makes of them while
        # this object is the site's (pandapush.web.lean._start).
        self._headers = MappingProxyType(dict(headers))

    @property
    def lanes(self) -> tuple[Any, Any] | None:
        """
        The resources of ``/push`` and of ``/channel`` whose requests the lean path may
        answer without a twisted.web request (:func:`pandapush.web.lean.serve`), as
        ``PandapushRoot.lanes`` finds them; None on a site that keeps an access log
        (whose lines are twisted.web's request's to write) or has another root.
        """
        root = self.resource
        if self.accessLog or type(root) is not PandapushRoot:
            return None
        return root.lanes()

    @property
    def publishLane(self) -> Any:
        """The resource of ``/channel`` if the lean path answers its requests (see ``lanes``)."""
        lanes = self.lanes
        return None if lanes is None else lanes[1]

    @property
    def pushLane(self) -> Any:
        """The resource of ``/push`` if the lean path answers its requests (see ``lanes``)."""
        lanes = self.lanes
        return None if lanes is None else lanes[0]

    def buildProtocol(self, addr: Any) -> Any:
        limit = self.addressLimit
        if limit is None:
            return super().buildProtocol(addr)
        key = limit.admit(getattr(addr, "host", None))
        if key is False:
            return limit.refused()
        channel = super().buildProtocol(addr)
        if key is None or channel is None:
            return channel
        assert isinstance(key, str)
        return limit.wrap(key, channel)

    def getResourceFor(self, request: Any) -> IResource:
        # Site.getResourceFor without its copy of the (still empty) prepath, and /push
        # (a leaf) found without a walk.
        request.site = self
        request.sitepath = []
        root = self.resource
        if isinstance(root, PandapushRoot):
            return root.resourceFor(request)
        return getChildForRequest(root, request)  # type: ignore[no-any-return]

    def log(self, request: http.Request) -> None:
        if self.requestDone is not None:
            self.requestDone(request)
        if self.accessLog:
            super().log(request)


def makeSite(
    root: IResource,
    maxBodySize: int,
    headers: Mapping[bytes, bytes] | None = None,
    accessLog: bool = True,
    requestDone: Callable[[http.Request], None] | None = None,
    addressLimit: AddressLimit | None = None,
    onRefused: Callable[[str], None] | None = None,
) -> PandapushSite:
    return PandapushSite(root, maxBodySize, headers, accessLog, requestDone, addressLimit, onRefused)
