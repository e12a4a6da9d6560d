"""In-process storage for tests and throwaway servers: nothing survives a restart."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from pandapush.storage import ids
from pandapush.storage._common import checkName, normalAdmins, normalOrigins, utcnow
from pandapush.storage.errors import AlreadyExistsError, NoSuchApplicationError, NoSuchKeyError
from pandapush.storage.interfaces import IStorage, KeyUsageBatch
from pandapush.storage.memoryoutbox import MemoryWebhooks
from pandapush.storage.models import Application, HistoryLimits, Key
from pandapush.storage.settings import ISettingsStorage
from pandapush.storage.webhooks import IWebhookStorage

__all__ = ["MemoryStorage", "makeStorage", "utcnow"]


@implementer(IStorage, IWebhookStorage, ISettingsStorage)
class MemoryStorage(MemoryWebhooks):
    """
    Dicts behind :class:`IStorage`. Answers are already-fired Deferreds, so tests
    using it need no reactor; records are frozen, so handing them out is safe.
    """

    name = "memory"

    #: The schema this mimics, so ``schemaVersion`` reads like a migrated database.
    SCHEMA_VERSION = 6

    def __init__(self, now: Callable[[], datetime.datetime] = utcnow) -> None:
        self._now = now
        self._apps: dict[str, Application] = {}
        self._keys: dict[str, Key] = {}
        self._settings: dict[str, str] = {}
        self._startWebhooks()

    def start(self) -> Deferred[None]:
        return defer.succeed(None)

    def close(self) -> Deferred[None]:
        return defer.succeed(None)

    def migrate(self) -> Deferred[list[int]]:
        return defer.succeed([])

    def schemaVersion(self) -> Deferred[int]:
        return defer.succeed(self.SCHEMA_VERSION)

    def status(self) -> dict[str, Any]:
        """For the health check: memory cannot become unreachable."""
        return {"status": "ok"}

    # settings

    def getSetting(self, name: str) -> Deferred[str | None]:
        return defer.succeed(self._settings.get(name))

    def addSetting(self, name: str, value: str) -> Deferred[str]:
        return defer.succeed(self._settings.setdefault(name, value))

    def setSetting(self, name: str, value: str) -> Deferred[None]:
        self._settings[name] = value
        return defer.succeed(None)

    # applications

    def createApplication(
        self, name: str, createdBy: str, admins: Iterable[str] = (), applicationId: str | None = None
    ) -> Deferred[Application]:
        return defer.maybeDeferred(self._createApplication, name, createdBy, admins, applicationId)

    def _createApplication(
        self, name: str, createdBy: str, admins: Iterable[str], applicationId: str | None
    ) -> Application:
        checkName(name)
        appId = applicationId or ids.newApplicationId()
        if appId in self._apps:
            raise AlreadyExistsError(f"application {appId} exists already")
        now = self._now()
        app = Application(appId, name, createdBy or "", now, now, normalAdmins(admins))
        self._apps[appId] = app
        return app

    def getApplication(self, applicationId: str) -> Deferred[Application | None]:
        return defer.succeed(self._apps.get(applicationId))

    def _ordered(self, apps: Iterable[Application]) -> list[Application]:
        return sorted(apps, key=lambda app: (app.created_at, app.id))

    def listApplications(self) -> Deferred[list[Application]]:
        return defer.succeed(self._ordered(self._apps.values()))

    def listApplicationsAdministeredBy(self, username: str) -> Deferred[list[Application]]:
        return defer.succeed(self._ordered(a for a in self._apps.values() if username in a.admins))

    def updateApplication(
        self,
        applicationId: str,
        name: str | None = None,
        admins: Iterable[str] | None = None,
        allowedOrigins: Iterable[str] | None = None,
        history: HistoryLimits | None = None,
    ) -> Deferred[Application]:
        return defer.maybeDeferred(
            self._updateApplication, applicationId, name, admins, allowedOrigins, history
        )

    def _updateApplication(
        self,
        applicationId: str,
        name: str | None,
        admins: Iterable[str] | None,
        allowedOrigins: Iterable[str] | None,
        history: HistoryLimits | None = None,
    ) -> Application:
        app = self._requireApp(applicationId)
        changes: dict[str, Any] = {"updated_at": self._now()}
        if name is not None:
            changes["name"] = checkName(name)
        if admins is not None:
            changes["admins"] = normalAdmins(admins)
        if allowedOrigins is not None:
            changes["allowed_origins"] = normalOrigins(allowedOrigins)
        if history is not None:
            changes["history"] = history.checked()
        app = dataclasses.replace(app, **changes)
        self._apps[applicationId] = app
        return app

    def deleteApplication(self, applicationId: str) -> Deferred[None]:
        return defer.maybeDeferred(self._deleteApplication, applicationId)

    def _deleteApplication(self, applicationId: str) -> None:
        self._requireApp(applicationId)
        del self._apps[applicationId]
        for keyId in [k.id for k in self._keys.values() if k.application_id == applicationId]:
            del self._keys[keyId]
        self._deleteWebhooksOf(applicationId)

    def _requireApp(self, applicationId: str) -> Application:
        app = self._apps.get(applicationId)
        if app is None:
            raise NoSuchApplicationError(applicationId)
        return app

    def _requireKey(self, keyId: str) -> Key:
        key = self._keys.get(keyId)
        if key is None:
            raise NoSuchKeyError(keyId)
        return key

    # keys

    def createKey(
        self,
        applicationId: str,
        createdBy: str,
        purpose: str = "",
        expires: datetime.datetime | None = None,
        keyId: str | None = None,
        secret: str | None = None,
    ) -> Deferred[Key]:
        return defer.maybeDeferred(self._createKey, applicationId, createdBy, purpose, expires, keyId, secret)

    def _createKey(
        self,
        applicationId: str,
        createdBy: str,
        purpose: str,
        expires: datetime.datetime | None,
        keyId: str | None,
        secret: str | None,
    ) -> Key:
        self._requireApp(applicationId)
        keyId = keyId or ids.newKeyId()
        if keyId in self._keys:
            raise AlreadyExistsError(f"key {keyId} exists already")
        now = self._now()
        key = Key(
            id=keyId,
            application_id=applicationId,
            secret=secret or ids.newSecret(),
            expires=expires.astimezone(datetime.UTC) if expires is not None else None,
            purpose=purpose or "",
            created_by=createdBy or "",
            created_at=now,
            updated_at=now,
        )
        self._keys[keyId] = key
        return key

    def getKey(self, keyId: str) -> Deferred[Key | None]:
        return defer.succeed(self._keys.get(keyId))

    def listKeys(self, applicationId: str) -> Deferred[list[Key]]:
        keys = [k for k in self._keys.values() if k.application_id == applicationId]
        return defer.succeed(sorted(keys, key=lambda k: (k.created_at, k.id)))

    def revokeKey(self, keyId: str) -> Deferred[Key]:
        return defer.maybeDeferred(self._revokeKey, keyId)

    def _revokeKey(self, keyId: str) -> Key:
        key = self._requireKey(keyId)
        if key.revoked_at is None:
            now = self._now()
            key = dataclasses.replace(key, revoked_at=now, updated_at=now)
            self._keys[keyId] = key
        return key

    def deleteKey(self, keyId: str) -> Deferred[None]:
        return defer.maybeDeferred(self._deleteKey, keyId)

    def _deleteKey(self, keyId: str) -> None:
        self._requireKey(keyId)
        del self._keys[keyId]

    def recordKeyUsage(self, usage: KeyUsageBatch) -> Deferred[None]:
        for keyId, (count, lastUsed) in usage.items():
            key = self._keys.get(keyId)
            if key is None:
                continue
            lastUsed = lastUsed.astimezone(datetime.UTC)
            if key.last_used is not None and key.last_used > lastUsed:
                lastUsed = key.last_used
            self._keys[keyId] = dataclasses.replace(key, use_count=key.use_count + count, last_used=lastUsed)
        return defer.succeed(None)

    def getOrCreateKey(self, applicationId: str, purpose: str, createdBy: str) -> Deferred[Key]:
        return defer.maybeDeferred(self._getOrCreateKey, applicationId, purpose, createdBy)

    def _getOrCreateKey(self, applicationId: str, purpose: str, createdBy: str) -> Key:
        self._requireApp(applicationId)
        now = self._now()
        for key in sorted(self._keys.values(), key=lambda k: (k.created_at, k.id)):
            if key.application_id == applicationId and key.purpose == purpose and key.isUsable(now):
                return key
        return self._createKey(applicationId, createdBy, purpose, None, None, None)


def makeStorage(config: Any) -> MemoryStorage:
    """The in-memory backend for ``DATABASE=memory`` (``config`` has nothing it needs)."""
    return MemoryStorage()
