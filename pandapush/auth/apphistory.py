"""Each application's history limits, from the storage into the engine, kept current.

The engine reads a channel's history limits for every publish, so they must be in its
memory (:meth:`IEngine.setHistoryLimits`): every application's are loaded before the
server listens (:meth:`AppHistoryLimits.prepare`), and an application's are read again
whenever the key cache invalidates it (:meth:`KeyCache.addApplicationObserver`): the admin
API does so on every change, and key sync carries it to every node. An application that
is gone (deleted) has its history dropped at once (:meth:`IEngine.forgetHistory`).

While the storage cannot answer, the limits read before stay in force.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger

from pandapush.auth.keycache import KeyCache
from pandapush.interfaces import IEngine
from pandapush.storage.errors import StorageUnavailableError
from pandapush.storage.interfaces import IStorage

__all__ = ["AppHistoryLimits"]


class AppHistoryLimits:
    """Keeps ``engine``'s per-application history limits as ``storage`` has them."""

    _log = Logger()

    def __init__(self, storage: IStorage, keys: KeyCache, engine: IEngine) -> None:
        self.storage = storage
        self.engine = engine
        keys.addApplicationObserver(self._changed)

    async def prepare(self) -> None:
        """Load every application's limits (before the server listens; again if the cache is cleared)."""
        for app in await self.storage.listApplications():
            self.engine.setHistoryLimits(app.id, app.history.size, app.history.ttl)

    def _changed(self, appId: str | None) -> None:
        # None: the whole key cache was cleared (key sync lost Redis and may have missed changes).
        d = defer.Deferred.fromCoroutine(self.reload(appId) if appId is not None else self.prepare())
        d.addErrback(
            lambda f: self._log.failure("reading application {appId}'s history limits", f, appId=appId)
        )

    async def reload(self, appId: str) -> None:
        """Read the application's limits again; if it is gone, drop its history."""
        try:
            app = await self.storage.getApplication(appId)
        except StorageUnavailableError:
            self._log.warn("history limits of {appId} not re-read: storage unavailable", appId=appId)
            return
        if app is None:
            self.engine.setHistoryLimits(appId, None, None)
            await self.engine.forgetHistory(appId)
            return
        self.engine.setHistoryLimits(appId, app.history.size, app.history.ttl)
