"""
The lanes of the lean HTTP path (:mod:`pandapush.web.lean`): a simple request answered
now without a twisted.web request.

A REST publish (``POST /channel/...``) or a long-polling request (``POST /push``) is
answered by the resource mounted there (``PandapushRoot.lanes``: PublishResource,
BayeuxResource) through :class:`LaneRequest`, a small stand-in that holds what the
resource reads and sets, and the answer is written from it, status line, the headers in
twisted.web's order and the body, in one piece (:func:`answerBytes`). The LeanRequest,
the site's process, resource lookup and render, the request's write, finish and cleanup
were about half of a REST publish. Only an answer given now takes the lane to its end:
for one given later (a held connect, a key looked up in storage, a publish through
Redis) the lean path makes a LeanRequest then and :func:`handOver` gives it the status and
headers set so far, to be finished by the resource as a render would be. The lean path
does not take the lanes for paths with "%" or not ASCII (the site unquotes and checks
them), nor on a site with an access log (its lines are twisted.web's request's to
write).
"""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.web import server as twistedserver
from twisted.web.http import RESPONSES
from twisted.web.http_headers import Headers, _nameEncoder

from pandapush.web.site import HTTP_DATE, LimitedRequest

if TYPE_CHECKING:
    from pandapush.web.lean import LeanRequest

__all__ = ["HEADER_NAMES", "LaneRequest", "answerBytes", "handOver", "peerOf"]

#: Answer header names as resources set them (bytes) -> canonical: the few names of
#: the server's own answers (LeanRequest's ``setHeader`` keeps them too). Bounded all
#: the same.
HEADER_NAMES: dict[bytes, bytes] = {}
HEADER_NAMES_KEPT = 256


def peerOf(channel: Any) -> Any:
    """A connection's peer address, asked for once."""
    # Twisted asks the transport for every request, a new address object each time.
    peer = channel.__dict__.get("_leanPeer")
    if peer is None:
        peer = channel._leanPeer = channel.getPeer()
    return peer


#: twisted.web's type for a body a resource gave none.
_DEFAULT_TYPE = b"Content-Type: %s\r\n" % LimitedRequest.defaultContentType


class LaneRequest:
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
        canonical = HEADER_NAMES.get(name)
        if canonical is None or type(value) is not bytes or b"\n" in value or b"\r" in value:
            # As twisted.web's Headers takes it (text encoded, line breaks made spaces).
            headers = Headers()
            headers.setRawHeaders(name, [value])
            ((canonical, (value,)),) = headers.getAllRawHeaders()
            if type(name) is bytes and len(HEADER_NAMES) < HEADER_NAMES_KEPT:
                HEADER_NAMES[name] = canonical
        self.responseHeaders[canonical] = value

    def setPlainHeaders(self, headers: Any) -> None:
        """``LimitedRequest.setPlainHeaders``: canonical names, values without line breaks."""
        if self.target is not None:
            self.target.setPlainHeaders(headers)
            return
        self.responseHeaders.update(headers)

    def getClientAddress(self) -> Any:
        return peerOf(self.channel)

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


def firstLines(site: Any) -> tuple[bytes, dict[bytes, bytes]]:
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


def answerBytes(site: Any, code: int, lines: dict[bytes, bytes], answer: bytes, closes: bool) -> bytes:
    """
    The whole answer, as twisted.web's render and write would send it: status ``code``,
    the headers ``lines`` a resource set after the site's first lines, ``answer`` as the
    body; ``closes``: the request asked to close (``Connection: close`` first).
    """
    start, first = firstLines(site)
    if closes or not first.keys().isdisjoint(lines):
        # twisted.web's order: the Connection it sets first (checkPersistence), the
        # site's lines, then the resource's; a name set again keeps its first place.
        start, lines = b"", {**(_CLOSE if closes else {}), **first, **lines}
    length = len(answer)
    # The length render sets: in the place of one the resource set (a preflight's), or
    # last; then twisted.web's default type.
    if b"Content-Length" in lines:
        lines = {**lines, b"Content-Length": b"%d" % length}
        tail = b""
    else:
        tail = b"Content-Length: %d\r\n" % length
    if length and b"Content-Type" not in lines and b"Content-Type" not in first:
        tail += _DEFAULT_TYPE
    return b"HTTP/1.1 %d %s\r\n%s%s%s\r\n%s" % (
        code,
        RESPONSES.get(code, b"Unknown Status"),
        start,
        b"".join(b"%s: %s\r\n" % line for line in lines.items()),
        tail,
        answer,
    )


def handOver(lean: LeanRequest, resource: Any, answer: Any, given: LaneRequest) -> None:
    """``lean``, made for ``given``, waits for ``answer``, with what the resource set on ``given``."""
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
