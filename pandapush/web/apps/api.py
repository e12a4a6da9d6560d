"""The server API's plumbing: routes, one request's credentials and input, and its answer.

A route is a method, a path template (``/apps/{appId}/events``) and an ``async`` handler
taking an :class:`APICall`. Handlers read what they need through the call (``login``,
``channel``, ``body``, ``query``) and return the JSON answer; anything wrong is an
:class:`APIError` carrying its status, which the resource turns into the error shape
every pandapush HTTP API answers with (``{"code", "params", "message"}``).

:class:`ServerAPI` is a plain leaf resource mounted at ``/apps`` (as ``/channel`` is,
without Klein's routing cost): it matches the request against its routes by segments,
answers 404, 405 (with ``Allow``) or 413 itself, and runs the handler. More routes are
added by giving more of them to its constructor (see :mod:`pandapush.web.apps`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from pandapush.auth.checkers import AuthRefused, ChannelAccess, ChannelAuthority, Principal
from pandapush.auth.rules import Refusal, TenantChannel, parseChannel
from pandapush.bayeux import json
from pandapush.bayeux.errors import BayeuxError
from pandapush.interfaces import EngineUnavailableError, IEngine, IRouter
from pandapush.storage.errors import StorageUnavailableError
from pandapush.storage.interfaces import IStorage
from pandapush.web.http import channelCredentials, errorBody, jsonResponse

__all__ = ["APICall", "APIError", "APIServices", "Route", "ServerAPI"]

T = TypeVar("T")
_log = Logger()

CHALLENGE = b'Basic realm="pandapush", Bearer realm="pandapush"'
#: Seconds a count or member query may take before the answer is 503 (Redis slow or gone).
DEFAULT_QUERY_TIMEOUT = 2.0
#: Seconds a client is told to wait (``Retry-After``) after a 503.
RETRY_AFTER = 1
_MAX_QUERY_FIELDS = 20


class APIError(Exception):
    """An answer other than success: its status, the message a client reads, and headers."""

    def __init__(
        self, status: int, message: str, params: Sequence[Any] = (), headers: dict[bytes, bytes] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.params = list(params)
        self.headers = headers or {}


def unavailable(message: str) -> APIError:
    """A 503 telling the client when to try again."""
    return APIError(503, message, headers={b"Retry-After": b"%d" % RETRY_AFTER})


@dataclass
class APIServices:
    """What the handlers work with, given once by ``makeService``."""

    authority: ChannelAuthority
    router: IRouter
    engine: IEngine
    storage: IStorage
    clock: IReactorTime
    #: Per-key publishes per second (``PublishRate``), shared with every publish path.
    rateLimiter: Any = None
    queryTimeout: float = DEFAULT_QUERY_TIMEOUT
    publishTimeout: float = 10.0
    #: Extra services later routes need (``name -> object``), so adding a route needs no change here.
    extra: dict[str, Any] = field(default_factory=dict)


class APICall:
    """One request to a route: its application, path parameters, and what it carries."""

    def __init__(self, request: IRequest, services: APIServices, params: dict[str, str]) -> None:
        self.request = request
        self.services = services
        self.params = params
        self.appId = params["appId"]
        self._query: dict[str, list[str]] | None = None

    # who is asking

    async def login(self) -> Principal:
        """
        The key (or token) the request carries, for this application: 401 without
        credentials, 404 for an application that does not exist, 403 when refused.
        """
        credentials = channelCredentials(self.request, self.appId)
        if credentials is None:
            raise APIError(401, Refusal.NO_AUTH.text, headers={b"WWW-Authenticate": CHALLENGE})
        try:
            principal = self.services.authority.principal(credentials)
            if isinstance(principal, Deferred):
                principal = await principal
        except AuthRefused as refused:
            if refused.refusal is Refusal.KEY_NOT_FOUND and not await self.appExists():
                raise APIError(404, f"Unknown application {self.appId}") from None
            raise APIError(403, refused.refusal.text) from None
        except StorageUnavailableError:
            raise unavailable("Storage unavailable: could not look up the key; try again") from None
        return principal

    async def keyLogin(self, what: str) -> Principal:
        """:meth:`login`, refusing tokens: ``what`` (e.g. "Listing channels") needs the key and secret."""
        principal = await self.login()
        if principal.claims is not None:
            raise APIError(403, f"{what} needs the application's key and secret, not a token")
        return principal

    async def appExists(self) -> bool:
        try:
            return await self.services.storage.getApplication(self.appId) is not None
        except StorageUnavailableError:
            raise unavailable("Storage unavailable: could not look up the application; try again") from None

    def channel(self, principal: Principal, name: Any, operation: str) -> TenantChannel:
        """
        ``name`` as a channel of this application that ``principal`` may use for
        ``operation``: 400 if it is not a channel name, 403 if it is another
        application's or the credentials do not grant it.
        """
        if not isinstance(name, str) or not name:
            raise APIError(400, "A channel name is a non-empty string", [name])
        channel = parseChannel(name, operation)
        if channel is None:
            raise APIError(400, f"Invalid channel name: {name}", [name])
        if channel.appId != self.appId:
            raise APIError(403, f"{name} is not a channel of application {self.appId}", [name])
        decision = ChannelAccess(principal).check(operation, channel)
        if isinstance(decision, Refusal):
            raise APIError(403, decision.text, [name])
        return channel

    async def throttle(self, principal: Principal, count: int) -> None:
        """Take ``count`` publishes from the key's rate: 429 with ``Retry-After`` beyond it."""
        limiter = self.services.rateLimiter
        if limiter is None:
            return
        wait = limiter.acquire(principal.keyId, count)
        if isinstance(wait, Deferred):  # cluster-wide limits asking Redis for more
            wait = await wait
        if wait:
            retry = b"%d" % max(1, int(wait + 0.999))
            raise APIError(429, limiter.refusal(principal.keyId), headers={b"Retry-After": retry})

    # what it carries

    def body(self) -> dict[str, Any]:
        """The request's JSON object: 400 saying why when it is not one."""
        content = self.request.content.read() if self.request.content is not None else b""
        if not content.strip():
            raise APIError(400, "Body is empty; send a JSON object")
        try:
            body = json.loads(content)
        except json.JSONDecodeError as error:
            raise APIError(400, f"Body is not valid JSON ({error})") from None
        if not isinstance(body, dict):
            raise APIError(400, "Body must be a JSON object")
        return body

    def query(self, name: str) -> str | None:
        """The query parameter ``name`` (its first value), or None."""
        if self._query is None:
            try:
                fields = parse_qs(urlsplit(self.request.uri).query, max_num_fields=_MAX_QUERY_FIELDS)
                self._query = {
                    key.decode("utf-8"): [v.decode("utf-8") for v in values] for key, values in fields.items()
                }
            except (ValueError, UnicodeDecodeError) as error:
                raise APIError(400, f"The query string cannot be read: {error}") from None
        values = self._query.get(name)
        return values[0] if values else None

    # waiting

    async def within(self, d: Deferred[T], seconds: float, what: str) -> T:
        """``d``'s result, or 503 if it takes longer than ``seconds`` or the engine is unreachable."""
        d.addTimeout(seconds, self.services.clock)
        try:
            return await d
        except (APIError, BayeuxError):
            raise
        except TimeoutError:
            raise unavailable(f"{what} timed out; try again") from None
        except EngineUnavailableError as error:
            # Redis down: the engine has logged the outage, once.
            raise APIError(
                503,
                f"{what} failed: {error.what} unavailable; try again later",
                headers={b"Retry-After": b"%d" % max(1, math.ceil(error.retryAfter))},
            ) from None
        except Exception as error:
            # The engine's shared state unreachable (Redis down): the engine logs its
            # outage; one line here, no traceback per request.
            _log.warn("{what} failed: {error!r}", what=what, error=error)
            raise unavailable(f"{what} failed: the engine is unavailable; try again") from None


Handler = Callable[[APICall], Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    """``method path``, e.g. ``Route("POST", "/apps/{appId}/events", events)``."""

    method: str
    path: str
    handler: Handler

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.strip("/").split("/"))

    def match(self, segments: Sequence[str]) -> dict[str, str] | None:
        """The path parameters if ``segments`` fit this route's path, else None."""
        mine = self.segments
        if len(mine) != len(segments):
            return None
        params: dict[str, str] = {}
        for template, segment in zip(mine, segments, strict=True):
            if template.startswith("{"):
                if not segment:
                    return None
                params[template[1:-1]] = segment
            elif template != segment:
                return None
        return params


class ServerAPI(Resource):
    """The ``/apps`` resource: every route of the server API, matched by segments."""

    isLeaf = True
    _log = Logger()

    def __init__(self, services: APIServices, routes: Iterable[Route]) -> None:
        super().__init__()
        self.services = services
        self.routes: list[Route] = list(routes)

    def render(self, request: Any) -> bytes | int:
        try:
            segments = [s.decode("utf-8") for s in request.postpath]
        except UnicodeDecodeError:
            return jsonResponse(request, 400, errorBody(400, "Non-UTF-8 encoding in URL"))
        if segments and segments[-1] == "":
            segments.pop()
        method = request.method.decode("latin-1")
        allowed: list[str] = []
        for route in self.routes:
            params = route.match(segments)
            if params is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return self._run(route, request, params)
            allowed.append(route.method)
        if allowed:
            request.setHeader(b"Allow", ", ".join(sorted(set(allowed))).encode())
            return jsonResponse(request, 405, errorBody(405, f"Use {' or '.join(sorted(set(allowed)))}"))
        return jsonResponse(request, 404, errorBody(404, "Not found: see /openapi.json for the server API"))

    def _run(self, route: Route, request: Any, params: dict[str, str]) -> bytes | int:
        if getattr(request, "tooLarge", False):
            return jsonResponse(request, 413, errorBody(413, "Body too large"))
        if not _APP_ID(params.get("appId", "")):
            return jsonResponse(request, 404, errorBody(404, "Not a valid application id"))
        call = APICall(request, self.services, params)
        d = Deferred.fromCoroutine(self._answer(route, call))
        d.addCallback(self._respond, request)
        return NOT_DONE_YET

    async def _answer(self, route: Route, call: APICall) -> bytes:
        request = call.request
        try:
            answer = await route.handler(call)
        except APIError as error:
            for name, value in error.headers.items():
                request.setHeader(name, value)
            return jsonResponse(request, error.status, errorBody(error.status, error.message, error.params))
        except Exception:
            self._log.failure(
                "server API {method} {path} failed", Failure(), method=route.method, path=route.path
            )
            return jsonResponse(request, 500, errorBody(500, "Internal server error"))
        return jsonResponse(request, 200, answer)

    def _respond(self, body: bytes, request: Any) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        request.setHeader(b"Content-Length", b"%d" % len(body))
        if request.method != b"HEAD":
            request.write(body)
        request.finish()


#: What an application id may be: a channel segment (auth.rules').
_APP_ID = re.compile(r"[A-Za-z0-9_~-]{1,200}").fullmatch
