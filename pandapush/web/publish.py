"""``POST /channel/<app>/<public|private|presence>/<path>``: publishing over plain HTTP.

For servers that would rather not speak Bayeux. Auth is ``Authorization: Basic
<keyId:secret>``, ``Authorization: Token <jwt>`` (or ``Bearer``), or ``?token=<jwt>``,
checked by the same :class:`~pandapush.auth.checkers.ChannelAuthority` as Bayeux
publishes, so the contract's texts and order are the same. The body is JSON, upstream's
``{text:"hello"}``, or a urlencoded form (``foo=bar`` arrives as ``{"foo": "bar"}``;
upstream delivered ``{}``), read by :mod:`pandapush.web.body`; anything else is a 400
that says why.

Answers: 200 ``OK``; 400 bad body; 401 (with ``WWW-Authenticate``) no credentials;
403 refused, with ``{"code", "params", "message"}``; 404 unknown channel type or
invalid channel name; 413 body too large; 429 (with ``Retry-After``) past the key's
publishes per second; 503 if the publish itself failed or timed
out. Nothing here can leave a request hanging: the publish has a deadline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from pandapush._deferred import firedWith
from pandapush.auth.checkers import AuthRefused, ChannelAuthority
from pandapush.auth.rules import PUBLISH, Allowed, Refusal, TenantChannel, parseChannel
from pandapush.bayeux.errors import BayeuxError
from pandapush.bayeux.idempotency import idempotencyKeyError
from pandapush.interfaces import EngineUnavailableError
from pandapush.storage.errors import StorageUnavailableError
from pandapush.transports.http import finishWith
from pandapush.web.body import BodyError, parseBody
from pandapush.web.http import channelCredentials, errorBody, header, jsonResponse

if TYPE_CHECKING:
    from pandapush.extensions.limits import PublishRate

__all__ = ["BodyError", "PublishApp", "PublishResource", "parseBody"]

PUBLISHABLE_TYPES = frozenset({"public", "private", "presence"})
DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_PUBLISH_TIMEOUT = 10.0
CHALLENGE = b'Basic realm="pandapush", Bearer realm="pandapush"'


class PublishApp:
    """
    The REST publish endpoint; ``publish`` is the router's trusted server-side publish
    (``publishNow``: the number of recipients, or a Deferred of it).

    Each step answers with the response body at once when it need not wait (key in
    the cache, in-process engine) and with a Deferred of it only when it must: the
    hot path runs without a coroutine or a Deferred per request.
    """

    _log = Logger()

    def __init__(
        self,
        authority: ChannelAuthority,
        publish: Callable[..., int | Deferred[int]],
        clock: IReactorTime,
        maxBodySize: int = DEFAULT_MAX_BODY,
        publishTimeout: float = DEFAULT_PUBLISH_TIMEOUT,
        rateLimiter: PublishRate | None = None,
    ) -> None:
        self.authority = authority
        #: Per-key publishes per second, the same buckets as Bayeux publishes': 429 beyond.
        self.rateLimiter = rateLimiter
        self.publish = publish
        self.clock = clock
        self.maxBodySize = maxBodySize
        self.publishTimeout = publishTimeout

    def resource(self) -> PublishResource:
        """The resource to mount at ``/channel`` (it sees the whole path, ``channel`` included)."""
        return PublishResource(self)

    def post(self, request: IRequest, appId: str, channelType: str, path: str) -> bytes | Deferred[bytes]:
        """Answer ``POST /channel/<appId>/<channelType>/<path>``."""
        if getattr(request, "tooLarge", False):
            return self._tooLarge(request)
        if channelType not in PUBLISHABLE_TYPES:
            return jsonResponse(
                request, 404, errorBody(404, "Unknown channel type: use public, private or presence")
            )
        channel = parseChannel(f"/{appId}/{channelType}/{path}", PUBLISH)
        if channel is None:
            return jsonResponse(request, 404, errorBody(404, Refusal.INVALID_CHANNEL.text))
        credentials = channelCredentials(request, channel.appId)
        if credentials is None:
            request.setHeader(b"WWW-Authenticate", CHALLENGE)
            return jsonResponse(request, 401, errorBody(401, Refusal.NO_AUTH.text))
        try:
            decision = self.authority.decideCredentials(PUBLISH, channel, credentials)
        except Exception:
            return self._authFailed(Failure(), request, channel)
        if isinstance(decision, Deferred):
            return decision.addCallbacks(
                self._authorized,
                self._authFailed,
                callbackArgs=(request, channel),
                errbackArgs=(request, channel),
            )
        return self._authorized(decision, request, channel)

    def _authFailed(self, failure: Failure, request: IRequest, channel: TenantChannel) -> bytes:
        if isinstance(failure.value, AuthRefused):
            refusal = failure.value.refusal
            self._log.info(
                "refused REST publish to {channel}: {reason}", channel=channel.name, reason=refusal.text
            )
            return jsonResponse(request, 403, errorBody(403, refusal.text))
        if isinstance(failure.value, StorageUnavailableError):
            # A key not in the cache while the database is down (the key cache logged
            # it once): neither "Could not find key" nor a bug of ours.
            request.setHeader(b"Retry-After", b"5")
            unavailable = "Storage unavailable: could not look up the key; try again"
            return jsonResponse(request, 503, errorBody(503, unavailable))
        self._log.failure("could not check REST publish auth for {channel}", failure, channel=channel.name)
        return jsonResponse(request, 503, errorBody(503, "Could not check credentials; try again"))

    def _authorized(
        self, allowed: Allowed, request: IRequest, channel: TenantChannel
    ) -> bytes | Deferred[bytes]:
        # Authorized (allowed.keyId is the key), nothing read or published yet: the
        # one place for per-key publish limits.
        if self.rateLimiter is not None and allowed.keyId is not None:
            wait = self.rateLimiter.acquire(allowed.keyId)
            if isinstance(wait, Deferred):
                # Cluster-wide limits asking Redis for more of the key's rate (now and then).
                keyId = allowed.keyId
                return wait.addCallback(
                    lambda later: (
                        self._tooMany(request, keyId, later) if later else self._read(request, channel)
                    )
                )
            if wait:
                return self._tooMany(request, allowed.keyId, wait)
        return self._read(request, channel)

    def _read(self, request: IRequest, channel: TenantChannel) -> bytes | Deferred[bytes]:
        content = request.content.read() if request.content is not None else b""
        if len(content) > self.maxBodySize:
            return self._tooLarge(request)
        try:
            data = parseBody(content, header(request, b"content-type"))
        except BodyError as error:
            return jsonResponse(request, 400, errorBody(400, str(error)))
        if isinstance(data, dict):
            data.pop("__auth", None)  # never delivered, whoever put it there
        key = header(request, b"idempotency-key")
        if key is not None:
            keyError = idempotencyKeyError(key)
            if keyError is not None:
                return jsonResponse(request, 400, errorBody(400, keyError))
        try:
            published = (
                self.publish(channel.name, data, idempotencyKey=key)
                if key
                else self.publish(channel.name, data)
            )
        except Exception:
            published = defer.fail()
        if isinstance(published, int):
            return self._published(published, request, channel)
        now = firedWith(published)
        if now:
            return self._published(now[0], request, channel)
        # Nothing can leave a request hanging: the publish has a deadline.
        published.addTimeout(self.publishTimeout, self.clock)
        return published.addBoth(self._published, request, channel)

    def _published(self, result: int | Failure, request: IRequest, channel: TenantChannel) -> bytes:
        if not isinstance(result, Failure):
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"OK"
        refused = result.value
        if isinstance(refused, BayeuxError):
            # The router's own limits (message size): the client's fault, not ours.
            code = 413 if refused.code == 413 else 400
            return jsonResponse(request, code, errorBody(code, refused.message))
        if isinstance(refused, EngineUnavailableError):
            # Redis down: logged once by the engine, not once per request; try again.
            request.setHeader(b"Retry-After", b"%d" % max(1, math.ceil(refused.retryAfter)))
            return jsonResponse(request, 503, errorBody(503, f"{refused.what} unavailable; try again later"))
        if result.check(TimeoutError):
            self._log.warn("REST publish to {channel} timed out", channel=channel.name)
            return jsonResponse(request, 503, errorBody(503, "Publishing timed out; try again"))
        self._log.failure("REST publish to {channel} failed", result, channel=channel.name)
        return jsonResponse(request, 503, errorBody(503, "Failed to publish"))

    def _tooLarge(self, request: IRequest) -> bytes:
        return jsonResponse(request, 413, errorBody(413, f"Body larger than {self.maxBodySize} bytes"))

    def _tooMany(self, request: IRequest, keyId: str, wait: float) -> bytes:
        assert self.rateLimiter is not None
        request.setHeader(b"Retry-After", b"%d" % max(1, math.ceil(wait)))
        return jsonResponse(request, 429, errorBody(429, self.rateLimiter.refusal(keyId)))


class PublishResource(Resource):
    """
    ``/channel/...``: a plain leaf resource, not a Klein app. For one route Klein cost
    a quarter of every REST publish (Werkzeug routing, ``maybeDeferred``, a coroutine);
    the path is split here the way the Werkzeug rule
    ``/channel/<appId>/<channelType>/<path:path>`` did, and Klein's answers are kept:
    400 for a path that is not UTF-8, 404 for one that does not match, 405 with
    ``Allow: POST`` for another method.
    """

    isLeaf = True
    #: Nothing here reads the request's host: the site does not check it (see
    #: ``pandapush.web.site._checked``).
    hostBlind = True
    _log = Logger()

    def __init__(self, app: PublishApp) -> None:
        super().__init__()
        self.app = app

    def render(self, request: Any) -> bytes | int:
        answer = self.answer(request)
        if isinstance(answer, bytes):
            return answer
        self.respond(answer, request)
        return NOT_DONE_YET

    def answer(self, request: Any) -> bytes | Deferred[bytes]:
        """
        The body of the answer to ``request``, its status and headers set on it, or a
        Deferred of the body. ``render`` finishes the request with it; the lean path
        (:mod:`pandapush.web.lean`) writes an answer given now itself and hands a
        Deferred to :meth:`respond`. What it reads and sets of ``request``:
        ``postpath``, ``method``, ``uri``, ``requestHeaders``, ``content``, ``tooLarge``,
        ``setResponseCode`` and ``setHeader``.
        """
        try:
            path = b"/".join(request.postpath).decode("utf-8")
        except UnicodeDecodeError:
            return jsonResponse(request, 400, errorBody(400, "Non-UTF-8 encoding in URL"))
        parts = path.split("/", 3)
        if len(parts) < 4 or parts[0] != "channel" or not all(parts[1:]) or parts[3].startswith("/"):
            return jsonResponse(request, 404, errorBody(404, "Not found: POST /channel/<app>/<type>/<path>"))
        if request.method != b"POST":
            request.setHeader(b"Allow", b"POST")
            return jsonResponse(request, 405, errorBody(405, "Use POST to publish"))
        return self.app.post(request, parts[1], parts[2], parts[3])

    def respond(self, answer: Deferred[bytes], request: Any) -> None:
        """Finish ``request`` with ``answer``'s body when it comes, as ``render`` does."""
        answer.addCallback(self._respond, request)
        answer.addErrback(self._failed, request)

    def _respond(self, body: bytes, request: Any) -> None:
        # Nothing if the client is gone: the publish (if any) went ahead.
        finishWith(request, body)

    def _failed(self, failure: Failure, request: Any) -> None:
        self._log.failure("REST publish request failed", failure)
        self._respond(jsonResponse(request, 500, errorBody(500, "Internal server error")), request)
