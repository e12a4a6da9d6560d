"""
Keys and tokens for the unit tests of auth, tenancy, REST publishing and storage faults.

``FakeKeyStore`` is the part of the storage the key cache reads (counting lookups, able to
hold or fail them); ``token`` signs a JWT for ``KEY`` at the fixed time ``NOW``.
"""

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
