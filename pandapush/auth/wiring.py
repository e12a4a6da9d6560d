"""One call that builds the whole tenancy layer for ``pandapush.tap``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from pandapush.auth.checkers import ChannelAuthority
from pandapush.auth.config import TenancyConfig
from pandapush.auth.keycache import KeyCache, KeyUsageFlusher
from pandapush.auth.origins import AppOrigins, OriginExtension
from pandapush.auth.tenancy import TenancyExtension

__all__ = ["Tenancy", "makeTenancy"]


@dataclass
class Tenancy:
    """
    The tenancy layer's pieces, built to be mounted:

    - ``extension``: ``router.addExtension(tenancy.extension)`` (before presence, which
      reads what it leaves in ``context.attributes["presence"]``);
    - ``publishApp.resource()``: mount at ``/channel``; ``adminApp.resource()`` at ``/admin``;
    - ``service``: a ``MultiService`` child that flushes key usage (and once more on stop);
    - ``keys``: the key cache, whose ``addInvalidationListener`` / ``invalidate(...,
      propagate=False)`` a many-node engine uses to share invalidations;
    - ``originExtension``: ``router.addExtension(...)`` right after ``extension`` (and
      before presence): each application's own allowed origins; ``origins`` its cache.
    """

    config: TenancyConfig
    keys: KeyCache
    authority: ChannelAuthority
    extension: TenancyExtension
    adminAuthority: Any  # pandapush.web.adminauth.AdminAuthority
    publishApp: Any  # pandapush.web.publish.PublishApp
    adminApp: Any  # pandapush.web.admin.AdminApp
    service: MultiService
    origins: AppOrigins
    originExtension: OriginExtension

    def loginBanner(self, baseURL: str) -> str | None:
        """The line to log at start so a newcomer can log in to ``/admin`` (None if nothing to say)."""
        from pandapush.web.adminauth import adminLoginBanner

        return adminLoginBanner(self.adminAuthority, baseURL)

    def loginInfo(self, baseURL: str) -> dict[str, Any] | None:
        from pandapush.web.adminauth import adminLoginInfo

        return adminLoginInfo(self.adminAuthority, baseURL)


def makeTenancy(
    storage: Any,
    config: TenancyConfig,
    publish: Callable[[str, Any], Deferred[int]],
    clock: IReactorTime | None = None,
    pluginPackage: Any = None,
    statistics: Callable[[str], dict[str, Any]] | None = None,
) -> Tenancy:
    """
    Build the tenancy layer over ``storage`` (an ``IStorage``). ``publish`` is the
    router's trusted server-side publish (``router.publish``), used by the REST
    endpoint after it checked the credentials itself. Raises
    :class:`~pandapush.auth.admin.AdminAuthError` for an unusable ``AUTH_METHOD``.
    ``statistics`` (``Statistics.snapshot``) serves ``/admin/api/application/<id>/stats``.
    """
    from pandapush.web.admin import AdminApp
    from pandapush.web.adminauth import makeAdminAuthority
    from pandapush.web.publish import PublishApp

    if clock is None:
        from twisted.internet import reactor

        clock = reactor  # type: ignore[assignment]
    assert clock is not None
    keys = KeyCache(storage, clock, ttl=config.keyCacheTTL, negativeTTL=config.negativeKeyCacheTTL)
    authority = ChannelAuthority(keys, clock, leeway=config.tokenLeeway)
    adminAuthority = makeAdminAuthority(config, pluginPackage, clock)
    service = MultiService()
    service.setName("tenancy")
    KeyUsageFlusher(keys, config.usageFlushInterval).setServiceParent(service)
    origins = AppOrigins(storage, clock, keys, ttl=config.keyCacheTTL)
    return Tenancy(
        config=config,
        keys=keys,
        authority=authority,
        extension=TenancyExtension(authority),
        adminAuthority=adminAuthority,
        publishApp=PublishApp(
            authority, publish, clock, maxBodySize=config.maxBodySize, publishTimeout=config.publishTimeout
        ),
        adminApp=AdminApp(storage, adminAuthority, keys, clock, config, statistics),
        service=service,
        origins=origins,
        originExtension=OriginExtension(origins),
    )
