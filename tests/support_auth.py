"""Shared helpers for the auth, tenancy, REST and admin tests."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

import jwt
from twisted.internet import defer
from twisted.internet.defer import Deferred

APP = "fRP0y2aVpYCKiW6PIFOK"
OTHER_APP = "otherAppxxxxxxxxxxxx"
KEY = "PSIDv4ADyV6V9fQ2BgJZ"
SECRET = "aWvMCPXnV599u6hJ71YJqAKSz0t0Lihs09DM92xS"
NOW = 1_800_000_000.0


@dataclass
class FakeKey:
    """Shaped like ``pandapush.storage.models.Key`` as far as the auth code reads it."""

    id: str
    application_id: str
    secret: str
    expires: datetime.datetime | None = None
    revoked_at: datetime.datetime | None = None
    purpose: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class FakeKeyStore:
    """The two storage methods the key cache uses, counting calls."""

    def __init__(self) -> None:
        self.keys: dict[str, FakeKey] = {}
        self.lookups: list[str] = []
        self.usage: list[dict[str, tuple[int, datetime.datetime]]] = []
        self.failUsage = False
        self.hold: Deferred[None] | None = None

    def add(self, key: FakeKey) -> FakeKey:
        self.keys[key.id] = key
        return key

    def getKey(self, keyId: str) -> Deferred[FakeKey | None]:
        self.lookups.append(keyId)
        if self.hold is not None:
            return self.hold.addCallback(lambda _: self.keys.get(keyId))
        return defer.succeed(self.keys.get(keyId))

    def recordKeyUsage(self, usage: dict[str, tuple[int, datetime.datetime]]) -> Deferred[None]:
        if self.failUsage:
            return defer.fail(RuntimeError("database down"))
        self.usage.append(usage)
        return defer.succeed(None)


def at(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


def token(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256", **headers: Any) -> str:
    payload = {"keyId": KEY, **claims}
    return jwt.encode(payload, secret, algorithm=algorithm, headers=headers or None)


# An example third-party admin auth plugin, as the README shows it: admins are named
# by a trusted reverse proxy (an SSO gateway) in a request header. A real plugin ships
# the two classes in its own package and a one-line drop-in in ``twisted/plugins/``
# (``from mypackage.pandapush_auth import headerAdminAuth``), or names the plugin object
# in a ``pandapush.admin_auth`` entry point.

from twisted.plugin import IPlugin  # noqa: E402
from zope.interface import implementer  # noqa: E402

from pandapush.web.adminauth import IAdminAuth, IAdminAuthPlugin  # noqa: E402
from pandapush.web.http import errorBody, jsonResponse  # noqa: E402


@implementer(IAdminAuth)
class HeaderAdminAuth:
    """Trusts ``X-Remote-User`` as set by an authenticating proxy in front of pandapush."""

    name = "header"

    def __init__(self, headerName: bytes = b"x-remote-user") -> None:
        self.headerName = headerName

    def authenticate(self, request: Any) -> Deferred[str | None]:
        value = request.getHeader(self.headerName)
        return defer.succeed(value.decode("utf-8") if value else None)

    def challenge(self, request: Any) -> bytes:
        return jsonResponse(request, 403, errorBody(403, "Log in through the SSO gateway"))


@implementer(IPlugin, IAdminAuthPlugin)
class HeaderAdminAuthPlugin:
    name = "header"
    description = "Admins named by a trusted proxy's X-Remote-User header"

    def makeAdminAuth(self, config: Any) -> IAdminAuth:
        return HeaderAdminAuth()


headerAdminAuth = HeaderAdminAuthPlugin()  # noqa: N816 (as a drop-in names it)


@implementer(IPlugin, IAdminAuthPlugin)
class BrokenAdminAuthPlugin:
    """Declares the interface but lacks ``makeAdminAuth``: refused by verifyObject."""

    name = "broken"
    description = "missing its factory"


brokenAdminAuth = BrokenAdminAuthPlugin()  # noqa: N816
