"""The admin API (``/admin/api/...``) and the ``/admin`` page, all under admin auth.

Routes follow the contract (upstream's paths and shapes, snake_case fields as its
database columns), plus what upstream never had: listing an application's keys and
revoking one (``POST .../keys/<keyId>/revoke`` or ``DELETE .../keys/<keyId>``).
Every change to keys or applications is pushed into the key cache at once
(:meth:`~pandapush.auth.keycache.KeyCache.invalidate`), so a revoked key or a deleted
application stops working on the next message.

``POST /admin/api/application/<id>`` also takes ``allowed_origins`` (a list of
``scheme://host[:port]``; empty lifts the list): the application's own allowed
origins (:mod:`pandapush.auth.origins`); and ``history`` (``{"size": n, "ttl":
seconds}``, null for the server's default): its channels' history limits
(:mod:`pandapush.auth.apphistory`). A change invalidates the application in the key
cache, which every node's origin cache and history limits follow.

A root admin sees every application; any other admin sees only the ones they
administer, and the others answer ``404 Not found`` exactly like ones that do not
exist. Request bodies must be ``application/json``: with Basic auth a browser would
otherwise let any web page post a form here in the admin's name (CSRF), while a JSON
content type cannot be sent across origins without a CORS preflight we never grant.

Secrets are shown once, in the answer that creates a key, and never listed or logged.

While the database cannot be reached (or does not answer within the storage's
deadline), every route answers ``503`` with ``Retry-After`` and a JSON error saying
so, and works again once it is back: nothing here has to be restarted.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from klein import Klein
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import MethodNotAllowed, NotFound

import pandapush
from pandapush.auth.admin import AdminUser
from pandapush.auth.config import TenancyConfig
from pandapush.auth.keycache import KeyCache
from pandapush.auth.rules import SUBSCRIBE, parseChannel
from pandapush.auth.throttle import LoginThrottledError
from pandapush.bayeux import json
from pandapush.storage._common import normalOrigins
from pandapush.storage.errors import NotFoundError as NoSuchThing
from pandapush.storage.errors import StorageUnavailableError
from pandapush.storage.interfaces import IStorage
from pandapush.storage.models import Application, HistoryLimits, Key
from pandapush.tokens import mintToken
from pandapush.web.adminauth import AdminAuthority, throttledAnswer
from pandapush.web.http import errorBody, header, jsonResponse

__all__ = ["WEB_CONSOLE_PURPOSE", "AdminApp"]

WEB_CONSOLE_PURPOSE = "web console"
DEFAULT_TOKEN_LIFETIME = 3600.0
MAX_ADMIN_BODY = 64 * 1024
#: Seconds a client is told to wait (``Retry-After``) while the database is unreachable.
STORAGE_RETRY_AFTER = 5
STORAGE_UNAVAILABLE = "Storage unavailable: the database cannot be reached; try again later"

PLACEHOLDER_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>pandapush admin</title></head>
<body><h1>pandapush admin</h1>
<p>The admin UI is not here yet. The JSON API is at <code>/admin/api/</code>:
<a href="/admin/api/info">info</a>, <a href="/admin/api/applications">applications</a>.</p>
</body></html>
"""


class _BadRequestError(Exception):
    """The request body or a field in it is unusable; the message says which."""


def _parseTime(value: Any, field: str) -> datetime.datetime | None:
    """``null``/absent, epoch seconds, or an ISO 8601 date/time (``Z`` allowed)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _BadRequestError(f"{field} must be a date/time or null")
    if isinstance(value, int | float):
        return datetime.datetime.fromtimestamp(value, datetime.UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise _BadRequestError(f"{field} must be an ISO 8601 date/time, not {value!r}") from None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.UTC)
    raise _BadRequestError(f"{field} must be a date/time or null")


def _jsonBody(request: IRequest) -> dict[str, Any]:
    """The request's JSON object; anything else is refused (400), a form post above all."""
    contentType = (header(request, b"content-type") or "").split(";", 1)[0].strip().lower()
    content = request.content.read() if request.content is not None else b""
    if getattr(request, "tooLarge", False) or len(content) > MAX_ADMIN_BODY:
        raise _BadRequestError("Body too large")
    if contentType != "application/json":
        raise _BadRequestError("Send the request body as application/json")
    if not content.strip():
        return {}
    try:
        body = json.loads(content)
    except json.JSONDecodeError as error:
        raise _BadRequestError(f"Body is not valid JSON ({error})") from None
    if not isinstance(body, dict):
        raise _BadRequestError("Body must be a JSON object")
    return body


def _applicationChanges(
    body: dict[str, Any],
) -> tuple[str | None, list[str] | None, list[str] | None, HistoryLimits | None]:
    """``(name, admins, allowed origins, history limits)`` an update asks for, each None if not given."""
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise _BadRequestError("name must be a non-empty string")
    admins = body.get("admins")
    if admins is not None and (
        not isinstance(admins, list) or not all(isinstance(a, str) and a.strip() for a in admins)
    ):
        raise _BadRequestError("admins must be a list of user names")
    cleaned = sorted({a.strip() for a in admins}) if admins is not None else None
    origins = body.get("allowed_origins")
    if origins is not None:
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            raise _BadRequestError("allowed_origins must be a list of origins (scheme://host[:port])")
        try:
            origins = list(normalOrigins(origins))
        except ValueError as error:
            raise _BadRequestError(f"allowed_origins: {error}") from None
    history = body.get("history")
    limits = None
    if history is not None:
        if not isinstance(history, dict) or set(history) - {"size", "ttl"}:
            raise _BadRequestError('history must be an object {"size": n or null, "ttl": seconds or null}')
        try:
            limits = HistoryLimits(history.get("size"), history.get("ttl")).checked()
        except ValueError as error:
            raise _BadRequestError(str(error)) from None
    return (name.strip() if name else None), cleaned, origins, limits


def _environmentName(config: TenancyConfig, request: IRequest) -> str | None:
    """This deployment's name among ``ENVIRONMENTS``: ``ENVIRONMENT``, else the one at the request's host."""
    if config.environment:
        return config.environment
    host = (header(request, b"host") or "").lower()
    for environment in config.environments:
        if urlsplit(environment.url).netloc.lower() == host:
            return environment.name
    return None


def _grants(body: dict[str, Any]) -> tuple[bool | None, bool | None, dict[str, Any] | None]:
    """``(pub, sub, presence)`` a token request asks for; a flag not given stays out of the token."""
    pub, sub = ((body[flag] is True) if body.get(flag) is not None else None for flag in ("pub", "sub"))
    presence = body.get("presence")
    if presence is not None:
        presenceId = presence.get("id") if isinstance(presence, dict) else None
        if not isinstance(presenceId, str | int) or isinstance(presenceId, bool) or presenceId == "":
            raise _BadRequestError("presence must be an object with an id")
    return pub, sub, presence


def _notFound(request: IRequest, message: str = "Not found") -> bytes:
    return jsonResponse(request, 404, errorBody(404, message))


def _unavailable(request: IRequest) -> bytes:
    # The storage logged the outage (once); nothing about this request was wrong.
    request.setHeader(b"Retry-After", str(STORAGE_RETRY_AFTER).encode())
    return jsonResponse(request, 503, errorBody(503, STORAGE_UNAVAILABLE))


def _guarded(handler: Callable[..., Awaitable[bytes]]) -> Callable[..., Awaitable[bytes]]:
    """
    A route of :class:`AdminApp` whose ``handler(self, request, user, **params)`` runs
    under admin auth, given the admin (see :meth:`AdminApp._guard`).
    """

    @functools.wraps(handler)
    async def route(self: AdminApp, request: IRequest, **params: Any) -> bytes:
        return await self._guard(request, functools.partial(handler, self), **params)

    return route


class AdminApp:
    """The admin API; mount its ``resource()`` at ``/admin``."""

    app = Klein()
    _log = Logger()

    def __init__(
        self,
        storage: IStorage,
        authority: AdminAuthority,
        keys: KeyCache,
        clock: IReactorTime,
        config: TenancyConfig | None = None,
        statistics: Callable[[str], dict[str, Any] | Awaitable[dict[str, Any]]] | None = None,
        ui: IResource | None = None,
    ) -> None:
        self.storage = storage
        # The console (``pandapush.web.adminui``) answering /admin and everything under
        # it but the API; it applies the same admin auth itself. Without one, a
        # placeholder page (behind admin auth) says where the API is.
        self.ui = ui
        # An application's live figures (``Statistics.cluster``, pandapush.extensions: every node's).
        self.statistics = statistics
        self.authority = authority
        self.keys = keys
        self.clock = clock
        self.config = config or TenancyConfig()

    def resource(self) -> Any:
        return self.app.resource()

    # plumbing

    async def _visibleApplication(self, user: AdminUser, appId: str) -> Application | None:
        """The application if it exists and ``user`` administers it (or is root), else None."""
        application = await self.storage.getApplication(appId)
        if application is None:
            return None
        if user.root or user.username in application.admins:
            return application
        return None

    async def _guard(self, request: IRequest, handler: Any, **params: Any) -> bytes:
        """Admin auth, then the handler; bad input is a 400, anything unexpected a logged 500."""
        try:
            user = await self.authority.authenticate(request)
        except LoginThrottledError as throttled:
            return throttledAnswer(request, throttled)
        except StorageUnavailableError:
            return _unavailable(request)
        except Exception:
            self._log.failure("admin authentication failed")
            return jsonResponse(request, 500, errorBody(500, "Internal server error"))
        if user is None:
            return self.authority.challenge(request)
        try:
            result: bytes = await handler(request, user, **params)
            return result
        except _BadRequestError as error:
            return jsonResponse(request, 400, errorBody(400, str(error)))
        except NoSuchThing:
            # Deleted by someone else between our check and our change.
            return _notFound(request)
        except StorageUnavailableError:
            return _unavailable(request)
        except Exception:
            self._log.failure("admin request {method} {path} failed", method=request.method, path=request.uri)
            return jsonResponse(request, 500, errorBody(500, "Internal server error"))

    # the page

    @app.route("/admin", methods=["GET", "HEAD"])
    @app.route("/admin/", methods=["GET", "HEAD"], branch=True)
    async def page(self, request: IRequest) -> Any:
        if request.path.startswith(b"/admin/api"):
            return await self.apiNotFound(request)
        if self.ui is not None:
            return self.ui

        async def show(request: IRequest, user: AdminUser) -> bytes:
            request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
            request.setHeader(b"Cache-Control", b"no-store")
            return PLACEHOLDER_PAGE

        return await self._guard(request, show)

    # info

    @app.route("/admin/api/info", methods=["GET"])
    @_guarded
    async def info(self, request: IRequest, user: AdminUser) -> bytes:
        return jsonResponse(
            request,
            200,
            {
                "username": user.username,
                "root": user.root,
                "environments": [{"name": e.name, "url": e.url} for e in self.config.environments],
                "environment": _environmentName(self.config, request),
                "version": pandapush.__version__,
                # How the console signs in again and out (None: the browser's own login).
                "auth": self.authority.consoleAuth(),
            },
        )

    # applications

    @app.route("/admin/api/applications", methods=["GET"])
    @_guarded
    async def applications(self, request: IRequest, user: AdminUser) -> bytes:
        if user.root:
            found = await self.storage.listApplications()
        else:
            found = await self.storage.listApplicationsAdministeredBy(user.username)
        return jsonResponse(request, 200, [a.publicDict() for a in found])

    @app.route("/admin/api/applications", methods=["POST"])
    @_guarded
    async def createApplication(self, request: IRequest, user: AdminUser) -> bytes:
        body = _jsonBody(request)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _BadRequestError("name is required")
        # The creator administers what they create (as upstream), root or not.
        application = await self.storage.createApplication(
            name.strip(), user.username, admins=[user.username]
        )
        self._log.info("admin {user} created application {appId}", user=user.username, appId=application.id)
        record = application.publicDict()
        shown = {k: record.get(k) for k in ("id", "name", "created_by", "created_at")}
        return jsonResponse(request, 201, shown)

    @app.route("/admin/api/application/<appId>", methods=["GET"])
    @_guarded
    async def application(self, request: IRequest, user: AdminUser, appId: str) -> bytes:
        application = await self._visibleApplication(user, appId)
        if application is None:
            return _notFound(request)
        keys = await self.storage.listKeys(appId)
        response = application.publicDict()
        response["keys"] = [k.publicDict() for k in keys]
        return jsonResponse(request, 200, response)

    @app.route("/admin/api/application/<appId>", methods=["POST"])
    @_guarded
    async def updateApplication(self, request: IRequest, user: AdminUser, appId: str) -> bytes:
        body = _jsonBody(request)
        if await self._visibleApplication(user, appId) is None:
            return _notFound(request)
        name, admins, origins, history = _applicationChanges(body)
        await self.storage.updateApplication(appId, name, admins, origins, history)
        if origins is not None or history is not None:
            # Every node re-reads its origins and history limits (keysync carries it).
            self.keys.invalidateApp(appId)
        self._log.info("admin {user} updated application {appId}", user=user.username, appId=appId)
        return jsonResponse(request, 200, {"id": appId})

    @app.route("/admin/api/application/<appId>", methods=["DELETE"])
    @_guarded
    async def deleteApplication(self, request: IRequest, user: AdminUser, appId: str) -> bytes:
        if await self._visibleApplication(user, appId) is None:
            return _notFound(request)
        await self.storage.deleteApplication(appId)
        self.keys.invalidateApp(appId)
        self._log.info("admin {user} deleted application {appId}", user=user.username, appId=appId)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"OK"

    @app.route("/admin/api/application/<appId>/stats", methods=["GET"])
    @_guarded
    async def stats(self, request: IRequest, user: AdminUser, appId: str) -> bytes:
        if self.statistics is None or await self._visibleApplication(user, appId) is None:
            return _notFound(request)
        return jsonResponse(request, 200, await defer.maybeDeferred(self.statistics, appId))

    # keys

    @app.route("/admin/api/application/<appId>/keys", methods=["GET"])
    @_guarded
    async def listKeys(self, request: IRequest, user: AdminUser, appId: str) -> bytes:
        if await self._visibleApplication(user, appId) is None:
            return _notFound(request)
        keys = await self.storage.listKeys(appId)
        return jsonResponse(request, 200, [k.publicDict() for k in keys])

    @app.route("/admin/api/application/<appId>/keys", methods=["POST"])
    @_guarded
    async def createKey(self, request: IRequest, user: AdminUser, appId: str) -> bytes:
        body = _jsonBody(request)
        if await self._visibleApplication(user, appId) is None:
            return _notFound(request)
        expires = _parseTime(body.get("expires"), "expires")
        purpose = body.get("purpose") or ""
        if not isinstance(purpose, str):
            raise _BadRequestError("purpose must be a string")
        key = await self.storage.createKey(appId, user.username, purpose=purpose, expires=expires)
        self.keys.invalidate(key.id)  # a lookup may have cached "no such key" a moment ago
        self._log.info(
            "admin {user} created key {keyId} for {appId}", user=user.username, keyId=key.id, appId=appId
        )
        return jsonResponse(request, 200, key.secretDict())

    @app.route("/admin/api/application/<appId>/keys/<keyId>/revoke", methods=["POST"])
    @_guarded
    async def revokeKey(self, request: IRequest, user: AdminUser, appId: str, keyId: str) -> bytes:
        _jsonBody(request)  # the content type check: no cross-site form posts
        key = await self._visibleKey(user, appId, keyId)
        if key is None:
            return _notFound(request, "could not find key")
        revoked = await self.storage.revokeKey(keyId)
        self.keys.invalidate(keyId)
        self._log.info(
            "admin {user} revoked key {keyId} of {appId}", user=user.username, keyId=keyId, appId=appId
        )
        return jsonResponse(request, 200, revoked.publicDict())

    @app.route("/admin/api/application/<appId>/keys/<keyId>", methods=["DELETE"])
    @_guarded
    async def deleteKey(self, request: IRequest, user: AdminUser, appId: str, keyId: str) -> bytes:
        key = await self._visibleKey(user, appId, keyId)
        if key is None:
            return _notFound(request, "could not find key")
        await self.storage.deleteKey(keyId)
        self.keys.invalidate(keyId)
        self._log.info(
            "admin {user} deleted key {keyId} of {appId}", user=user.username, keyId=keyId, appId=appId
        )
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"OK"

    async def _visibleKey(self, user: AdminUser, appId: str, keyId: str) -> Key | None:
        if await self._visibleApplication(user, appId) is None:
            return None
        key = await self.storage.getKey(keyId)
        return key if key is not None and key.application_id == appId else None

    # tokens

    @app.route("/admin/api/application/<appId>/token", methods=["POST"])
    @_guarded
    async def consoleToken(self, request: IRequest, user: AdminUser, appId: str) -> bytes:
        """A token signed by the application's "web console" key (made the first time)."""
        return await self._token(request, user, appId, None)

    @app.route("/admin/api/application/<appId>/keys/<keyId>/token", methods=["POST"])
    @_guarded
    async def keyToken(self, request: IRequest, user: AdminUser, appId: str, keyId: str) -> bytes:
        return await self._token(request, user, appId, keyId)

    async def _token(self, request: IRequest, user: AdminUser, appId: str, keyId: str | None) -> bytes:
        body = _jsonBody(request)
        if await self._visibleApplication(user, appId) is None:
            return _notFound(request)
        channel = body.get("channel")
        parsed = parseChannel(channel, SUBSCRIBE)
        if parsed is None or parsed.appId != appId:
            raise _BadRequestError(f"channel must be a channel of this application: /{appId}/<type>/<path>")
        now = self.clock.seconds()
        expires = _parseTime(body.get("expires"), "expires")
        if keyId is not None:
            found = await self._visibleKey(user, appId, keyId)
            if found is None:
                return _notFound(request, "could not find key")
            key = found
        else:
            key = await self.storage.getOrCreateKey(appId, WEB_CONSOLE_PURPOSE, user.username)
            self.keys.invalidate(key.id)
        pub, sub, presence = _grants(body)
        try:
            token = mintToken(
                key.id,
                key.secret,
                str(channel),  # parseChannel took it: a string
                pub=pub,
                sub=sub,
                presence=presence,
                expiresAt=expires,
                expiresIn=None if expires is not None else DEFAULT_TOKEN_LIFETIME,
                now=now,
            )
        except ValueError as refused:
            raise _BadRequestError(str(refused)) from None
        return jsonResponse(request, 200, {"token": token})

    # everything else

    @app.route("/admin/api/", branch=True)
    async def apiNotFound(self, request: IRequest) -> bytes:
        async def missing(request: IRequest, user: AdminUser) -> bytes:
            return _notFound(request)

        return await self._guard(request, missing)

    @app.handle_errors(NotFound)
    def notFound(self, request: IRequest, failure: Any) -> bytes:
        return _notFound(request)

    @app.handle_errors(MethodNotAllowed)
    def notAllowed(self, request: IRequest, failure: Any) -> bytes:
        return jsonResponse(request, 405, errorBody(405, "Method not allowed"))
