"""``long-polling`` and ``cross-origin-long-polling``: one HTTP POST per batch.

The body is JSON (``application/json``) or a form whose ``message`` field holds
the JSON (Faye's CORS transport posts ``text/plain`` ``message=...``). A request from
an origin ``--allowed-origins`` does not allow is refused (403) before its body is
read: any page can post a form without a preflight (:meth:`OriginPolicy.admits`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from pandapush._deferred import firedWith, isDeferred
from pandapush.bayeux import json
from pandapush.interfaces import IRouter
from pandapush.transports.http import (
    OriginPolicy,
    contextFor,
    finishWith,
    header,
    rawHeader,
    requestLost,
    writeError,
)

__all__ = ["LongPollingTransport"]


#: The headers of every answer to a batch (canonical names, no line breaks).
_ANSWER_HEADERS = (
    (b"Content-Type", b"application/json; charset=utf-8"),
    (b"Cache-Control", b"no-cache, no-store"),
    (b"X-Content-Type-Options", b"nosniff"),
)


class LongPollingTransport:
    _log = Logger()

    def __init__(
        self, router: IRouter, origins: OriginPolicy, proxies: Callable[[str], bool] | None = None
    ) -> None:
        self.router = router
        self.origins = origins
        #: Whether an address is a proxy's (see ``contextFor``).
        self.proxies = proxies

    def render(self, request: Request) -> bytes | int:
        answer = self.answer(request)
        if type(answer) is bytes:
            return answer
        self.respond(answer, request)  # type: ignore[arg-type]
        return NOT_DONE_YET

    def answer(self, request: Any) -> bytes | Deferred[bytes]:
        """
        The body of the answer to ``request``, its status and headers set on it, or a
        Deferred of the body (a held connect, a step that waits on storage or Redis).
        ``render`` finishes the request with it; the lean path's lane
        (:mod:`pandapush.web.lean`) writes an answer given now itself and hands a
        Deferred to :meth:`respond`. What it reads of ``request``: ``requestHeaders``,
        ``content``, ``channel``, ``getClientAddress``, ``contextHeaders`` if it has
        them, and ``notifyLost`` (only for an answer that comes later); what it sets:
        the status and headers.
        """
        try:
            # What header() and rawHeader() read, without a call each: names canonical.
            headers = request.requestHeaders._rawHeaders
        except AttributeError:  # not twisted.web's Headers
            origin = header(request, b"origin")
            types = rawHeader(request, b"content-type")
        else:
            values = headers.get(b"Origin")
            origin = values[0].decode("latin-1") if values else None
            types = headers.get(b"Content-Type")
        if origin and not self.origins.admits(request, origin):
            return self.origins.refuse(request)
        body = request.content.read() if request.content is not None else b""
        contentType = _mediaType(types)
        raw: bytes | None
        if contentType == "application/json":
            raw = body
        else:
            fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
            raw = fields["message"][0].encode("utf-8") if fields.get("message") else None
        messages = json.decodeMessages(raw)
        if messages is None:
            return writeError(request, 400, "Bad request")

        setPlainHeaders = getattr(request, "setPlainHeaders", None)
        if setPlainHeaders is not None:
            setPlainHeaders(_ANSWER_HEADERS)
        else:
            for name, value in _ANSWER_HEADERS:
                request.setHeader(name, value)
        if origin:
            self.origins.apply(request, origin)

        transport = "cross-origin-long-polling" if origin else "long-polling"
        # The site's requests make the Deferred that says the client hung up only when
        # something asks for it (a held connect, an answer that waits): every other
        # request is answered before it could fire.
        notifyLost = getattr(request, "notifyLost", None)
        if notifyLost is not None:
            context = contextFor(request, transport, None, self.proxies, lostOf=notifyLost)
        else:
            context = contextFor(request, transport, requestLost(request), self.proxies)
        router = self.router
        try:
            replies = router.processNow(messages, context)
        except Exception:
            return self._failedNow(Failure(), request)
        if isDeferred(replies):
            now = firedWith(replies)
            if not now:
                # A held connect, or a step that had to wait (storage, Redis).
                return replies.addCallback(json.encodeReplies)
            if isinstance(now[0], Failure):
                return self._failedNow(now[0], request)
            replies = now[0]
        # Answered now (a handshake, a subscribe, an unheld connect): the body is the
        # answer, written whole with its length; no Deferred around it.
        if router.draining:
            request.setHeader(b"Connection", b"close")
        return json.encodeReplies(replies)

    def respond(self, answer: Deferred[bytes], request: Any) -> None:
        """Finish ``request`` with ``answer``'s body when it comes, as ``render`` does."""
        answer.addCallback(self._respond, request)
        answer.addErrback(self._failed, request)

    def _respond(self, body: bytes, request: Any) -> None:
        if self.router.draining:
            # The next request must open a new connection, to a node that is staying.
            request.setHeader(b"Connection", b"close")
        # Nothing if the client is gone (a held connect's messages went back to its queue).
        finishWith(request, body)

    def _failedNow(self, failure: Failure, request: Any) -> bytes:
        self._log.failure("long-polling request failed", failure)
        request.setResponseCode(500)
        return _FAILED

    def _failed(self, failure: Failure, request: Any) -> None:
        self._respond(self._failedNow(failure, request), request)


#: The body of a 500: a Bayeux reply a client reads as a failed request.
_FAILED = b'[{"successful":false,"error":"500::Internal server error"}]'


#: ``Content-Type`` values -> their media type, as :meth:`LongPollingTransport.render` reads
#: it: a client sends the same value with every request. Bounded: values are the client's.
_MEDIA_TYPES: dict[bytes, str] = {}
_MEDIA_TYPES_KEPT = 256
_MEDIA_TYPE_KEPT = 256


def _mediaType(values: list[bytes] | None) -> str:
    """The first ``Content-Type`` value's media type, lower case ("" without one)."""
    if not values:
        return ""
    value = values[0]
    media = _MEDIA_TYPES.get(value)
    if media is None:
        media = value.decode("latin-1").split(";")[0].strip().lower()
        if len(_MEDIA_TYPES) < _MEDIA_TYPES_KEPT and len(value) <= _MEDIA_TYPE_KEPT:
            _MEDIA_TYPES[value] = media
    return media
