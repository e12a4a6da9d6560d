"""The admin API's webhooks: ``/admin/api/application/<id>/webhooks``, under admin auth.

- ``GET .../webhooks``: the application's endpoints;
- ``POST .../webhooks`` ``{"url", "events": [...], "keyId"}``: a new endpoint (201);
- ``DELETE .../webhooks/<webhookId>``: delete it (its waiting events go too);
- ``GET .../webhooks/<webhookId>/deliveries``: its recent deliveries, newest first;
- ``POST .../webhooks/<webhookId>/deliveries/<deliveryId>/resend``: send that delivery's
  events again (same event ids: a receiver that has them drops the repeat).

A URL is http or https (400 otherwise). An admin who is not root may only aim at global
addresses: the host is resolved now and a loopback, private, link-local or metadata
address is refused with 400 (the sender checks again at every connection, see
:mod:`pandapush.webhooks.addresses`); a root admin's endpoints may reach anything. The
signing key must be one of the application's keys, not revoked. Every change reaches
every node's endpoint cache at once (``KeyCache.invalidateApp``, shared by key sync).

A separate Klein app from :class:`~pandapush.web.admin.AdminApp` (which stays one
screenful), using its auth guard and application visibility: the admin resource hands it
the requests whose path names an application's webhooks.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.internet.defer import TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from pandapush.auth.admin import AdminUser
from pandapush.auth.keycache import KeyCache
from pandapush.storage.webhooks import IWebhookOutbox, IWebhookStorage, Webhook, WebhookEvent, checkEvents
from pandapush.web.admin import AdminApp, _BadRequestError, _guarded, _jsonBody, _notFound
from pandapush.web.http import errorBody, jsonResponse
from pandapush.webhooks.addresses import AddressPolicy, Resolver, checkURL

__all__ = ["MAX_WEBHOOKS", "WebhookAdmin", "isWebhookPath"]

#: Endpoints one application may have.
MAX_WEBHOOKS = 20
#: Seconds creating an endpoint waits for its host to resolve.
RESOLVE_TIMEOUT = 5.0


def isWebhookPath(path: bytes) -> bool:
    """``/admin/api/application/<id>/webhooks[/...]``."""
    parts = path.split(b"/")
    return len(parts) >= 6 and parts[1:4] == [b"admin", b"api", b"application"] and parts[5] == b"webhooks"


class WebhookAdmin:
    """The webhook routes; ``resource()`` is what the admin resource hands webhook paths to."""

    app = Klein()
    _log = Logger()

    def __init__(
        self,
        admin: AdminApp,
        storage: Any,
        outbox: IWebhookOutbox | None,
        keys: KeyCache,
        policy: AddressPolicy,
        resolve: Resolver,
        clock: IReactorTime,
    ) -> None:
        self.admin = admin
        self.storage: IWebhookStorage | None = storage if IWebhookStorage.providedBy(storage) else None
        self.outbox = outbox
        self.keys = keys
        self.policy = policy
        self.resolve = resolve
        self.clock = clock

    def resource(self) -> Any:
        return self.app.resource()

    async def _guard(self, request: IRequest, handler: Any, **params: Any) -> bytes:
        if self.storage is None:
            return jsonResponse(request, 501, errorBody(501, "Webhooks need a storage that keeps them"))
        return await self.admin._guard(request, handler, **params)

    async def _webhook(self, user: AdminUser, appId: str, webhookId: str) -> Webhook | None:
        assert self.storage is not None
        if await self.admin._visibleApplication(user, appId) is None:
            return None
        webhook = await self.storage.getWebhook(webhookId)
        return webhook if webhook is not None and webhook.application_id == appId else None

    # routes

    @app.route("/admin/api/application/<appId>/webhooks", methods=["GET"])
    @_guarded
    async def list(self, request: IRequest, user: AdminUser, appId: str) -> bytes:
        assert self.storage is not None
        if await self.admin._visibleApplication(user, appId) is None:
            return _notFound(request)
        found = await self.storage.listWebhooks(appId)
        return jsonResponse(request, 200, [w.publicDict() for w in found])

    @app.route("/admin/api/application/<appId>/webhooks", methods=["POST"])
    @_guarded
    async def create(self, request: IRequest, user: AdminUser, appId: str) -> bytes:
        assert self.storage is not None
        body = _jsonBody(request)
        if await self.admin._visibleApplication(user, appId) is None:
            return _notFound(request)
        try:
            target = checkURL(body.get("url"))
            events = checkEvents(body.get("events"))
        except ValueError as error:
            raise _BadRequestError(str(error)) from None
        keyId = body.get("keyId")
        key = await self.admin.storage.getKey(keyId) if isinstance(keyId, str) and keyId else None
        if key is None or key.application_id != appId or key.revoked:
            raise _BadRequestError("keyId must be a key of this application, not revoked: its secret signs")
        if len(await self.storage.listWebhooks(appId)) >= MAX_WEBHOOKS:
            raise _BadRequestError(f"An application has at most {MAX_WEBHOOKS} webhooks")
        if not user.root:
            await self._checkReachable(target.host, target.port)
        webhook = await self.storage.createWebhook(
            appId, target.url, events, key.id, user.username, user.root
        )
        self.keys.invalidateApp(appId)
        self._log.info(
            "admin {user} created webhook {webhookId} of {appId} to {url}",
            user=user.username,
            webhookId=webhook.id,
            appId=appId,
            url=webhook.url,
        )
        return jsonResponse(request, 201, webhook.publicDict())

    async def _checkReachable(self, host: str, port: int) -> None:
        literal = self.policy.literal(host)
        if literal is not None:
            addresses = [literal]
        else:
            resolving = self.resolve(host, port)
            resolving.addTimeout(RESOLVE_TIMEOUT, self.clock)
            try:
                addresses = await resolving
            except TimeoutError:
                raise _BadRequestError(f"{host} did not resolve within {RESOLVE_TIMEOUT:g} s") from None
            except Exception as error:
                raise _BadRequestError(f"{host} cannot be resolved: {error}") from None
            if not addresses:
                raise _BadRequestError(f"{host} cannot be resolved")
        for address in addresses:
            refusal = self.policy.refusal(address, allowPrivate=False)
            if refusal is not None:
                raise _BadRequestError(f"{host} resolves to {refusal}")

    @app.route("/admin/api/application/<appId>/webhooks/<webhookId>", methods=["DELETE"])
    @_guarded
    async def delete(self, request: IRequest, user: AdminUser, appId: str, webhookId: str) -> bytes:
        assert self.storage is not None
        if await self._webhook(user, appId, webhookId) is None:
            return _notFound(request, "could not find webhook")
        await self.storage.deleteWebhook(webhookId)
        if self.outbox is not None:
            await self.outbox.forgetEndpoint(webhookId)
        self.keys.invalidateApp(appId)
        self._log.info("admin {user} deleted webhook {webhookId}", user=user.username, webhookId=webhookId)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"OK"

    @app.route("/admin/api/application/<appId>/webhooks/<webhookId>/deliveries", methods=["GET"])
    @_guarded
    async def deliveries(self, request: IRequest, user: AdminUser, appId: str, webhookId: str) -> bytes:
        if await self._webhook(user, appId, webhookId) is None:
            return _notFound(request, "could not find webhook")
        found = [] if self.outbox is None else await self.outbox.deliveries(webhookId)
        return jsonResponse(request, 200, [d.publicDict() for d in found])

    @app.route(
        "/admin/api/application/<appId>/webhooks/<webhookId>/deliveries/<deliveryId>/resend", methods=["POST"]
    )
    @_guarded
    async def resend(
        self, request: IRequest, user: AdminUser, appId: str, webhookId: str, deliveryId: str
    ) -> bytes:
        _jsonBody(request)  # the content type check: no cross-site form posts
        if await self._webhook(user, appId, webhookId) is None or self.outbox is None:
            return _notFound(request, "could not find webhook")
        record = next((d for d in await self.outbox.deliveries(webhookId) if d.id == deliveryId), None)
        if record is None:
            return _notFound(request, "could not find delivery")
        now = int(self.clock.seconds() * 1000)
        events = [
            WebhookEvent(
                id=str(e["id"]),
                endpointId=webhookId,
                appId=appId,
                channel=str(e["channel"]),
                name=str(e["name"]),
                createdMs=now,
                dueMs=now,
                userId=e.get("user_id"),
                data=e.get("data"),
            )
            for e in record.events
        ]
        added = await self.outbox.add(events, now)
        self._log.info("admin {user} resent delivery {deliveryId}", user=user.username, deliveryId=deliveryId)
        return jsonResponse(request, 200, {"resent": added})

    @app.handle_errors(NotFound)
    def notFound(self, request: IRequest, failure: Any) -> bytes:
        return _notFound(request)

    @app.handle_errors(MethodNotAllowed)
    def notAllowed(self, request: IRequest, failure: Any) -> bytes:
        return jsonResponse(request, 405, errorBody(405, "Method not allowed"))
