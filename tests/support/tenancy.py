"""The tenancy pieces wired as ``pandapush.tap.makeService`` wires them, for tests that
use them without a whole server: on a given storage, router publish and clock."""

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
from pandapush.web.admin import AdminApp
from pandapush.web.adminauth import AdminAuthority, adminLoginBanner, makeAdminAuthority
from pandapush.web.publish import PublishApp

__all__ = ["Tenancy", "makeTenancy"]


@dataclass
class Tenancy:
    config: TenancyConfig
    keys: KeyCache
    authority: ChannelAuthority
    extension: TenancyExtension
    originExtension: OriginExtension
    adminAuthority: AdminAuthority
    publishApp: PublishApp
    adminApp: AdminApp
    #: The key usage flusher, as a service to start and stop.
    service: MultiService

    def loginBanner(self, baseURL: str) -> str | None:
        return adminLoginBanner(self.adminAuthority, baseURL)


def makeTenancy(
    storage: Any,
    config: TenancyConfig,
    publish: Callable[[str, Any], Deferred[int]],
    clock: IReactorTime,
) -> Tenancy:
    """Tenancy over ``storage``; add ``.extension`` (and ``.originExtension``) to a router yourself."""
    keys = KeyCache(storage, clock, ttl=config.keyCacheTTL, negativeTTL=config.negativeKeyCacheTTL)
    authority = ChannelAuthority(keys, clock, leeway=config.tokenLeeway)
    adminAuthority = makeAdminAuthority(config, clock=clock)
    service = MultiService()
    KeyUsageFlusher(keys, config.usageFlushInterval).setServiceParent(service)
    return Tenancy(
        config=config,
        keys=keys,
        authority=authority,
        extension=TenancyExtension(authority),
        originExtension=OriginExtension(AppOrigins(storage, clock, keys, ttl=config.keyCacheTTL)),
        adminAuthority=adminAuthority,
        publishApp=PublishApp(
            authority, publish, clock, maxBodySize=config.maxBodySize, publishTimeout=config.publishTimeout
        ),
        adminApp=AdminApp(storage, adminAuthority, keys, clock, config),
        service=service,
    )
