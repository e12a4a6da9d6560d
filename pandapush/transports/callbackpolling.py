"""``callback-polling``: JSONP, ``GET ?message=<json>&jsonp=<name>``."""

from __future__ import annotations

import re
from collections.abc import Callable

from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET, Request

from pandapush.bayeux import json
from pandapush.interfaces import IRouter
from pandapush.transports.http import OriginPolicy, contextFor, header, requestLost, writeError

__all__ = ["CallbackPollingTransport"]

DEFAULT_CALLBACK = b"jsonpcallback"
_VALID_CALLBACK = re.compile(rb"^[a-z_$][a-z0-9_$]*(\.[a-z_$][a-z0-9_$]*)*$", re.IGNORECASE)


class CallbackPollingTransport:
    _log = Logger()

    def __init__(
        self, router: IRouter, origins: OriginPolicy, proxies: Callable[[str], bool] | None = None
    ) -> None:
        self.router = router
        self.origins = origins
        #: Whether an address is a proxy's (see ``contextFor``).
        self.proxies = proxies

    def render(self, request: Request) -> bytes | int:
        # A script tag sends no Origin; a page that fetches the URL does, and is refused
        # as it would be posting (OriginPolicy.admits).
        origin = header(request, b"origin")
        if origin and not self.origins.admits(request, origin):
            return self.origins.refuse(request)
        args = request.args or {}
        messages = json.decodeMessages(args[b"message"][0] if args.get(b"message") else None)
        if messages is None:
            return writeError(request, 400, "Bad request")
        callback = args[b"jsonp"][0] if args.get(b"jsonp") else DEFAULT_CALLBACK
        if len(callback) > 256 or not _VALID_CALLBACK.fullmatch(callback):
            return writeError(request, 400, "Bad request: invalid JSONP callback name")

        request.setHeader(b"Content-Type", b"text/javascript; charset=utf-8")
        request.setHeader(b"Content-Disposition", b"attachment; filename=f.txt")
        request.setHeader(b"Cache-Control", b"no-cache, no-store")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        self.origins.apply(request, origin)

        lost = requestLost(request)
        d = self.router.process(messages, contextFor(request, "callback-polling", lost, self.proxies))

        def respond(replies: list) -> None:
            if lost.called or request.finished:
                return
            # U+2028/U+2029 are legal in JSON but end a JavaScript string literal.
            body = (
                json.encodeReplies(replies)
                .replace(b"\xe2\x80\xa8", b"\\u2028")
                .replace(b"\xe2\x80\xa9", b"\\u2029")
            )
            body = b"/**/" + callback + b"(" + body + b");"
            request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
            request.write(body)
            request.finish()

        d.addCallback(respond)
        d.addErrback(lambda f: self._log.failure("callback-polling request failed", f))
        return NOT_DONE_YET
