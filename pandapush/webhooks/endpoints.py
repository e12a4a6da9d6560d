"""Each application's webhook endpoints, cached: looked at for every event, changed rarely.

Entries live ``ttl`` seconds; any change through the admin API or the command line
invalidates the application in the key cache (``KeyCache.invalidateApp``), which this cache
follows (and key sync carries to every node), so a new endpoint gets the next event. While
the storage fails, the last known list is used; an application never read gets the failure
(its events wait in the queue and are tried again).
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from pandapush.auth.appcache import AppCache
from pandapush.auth.keycache import KeyCache
from pandapush.storage.webhooks import IWebhookStorage, Webhook

__all__ = ["DEFAULT_TTL", "WebhookEndpoints"]

DEFAULT_TTL = 60.0


class WebhookEndpoints(AppCache[tuple[Webhook, ...]]):
    """``get(appId)``: the application's endpoints (empty for an unknown application)."""

    def __init__(
        self,
        storage: IWebhookStorage,
        clock: IReactorTime,
        keys: KeyCache | None = None,
        ttl: float = DEFAULT_TTL,
        maxEntries: int = 100_000,
    ) -> None:
        def load(appId: str) -> Deferred[tuple[Webhook, ...]]:
            return defer.maybeDeferred(storage.listWebhooks, appId).addCallback(tuple)

        super().__init__(load, clock, keys, ttl, maxEntries, what="webhook endpoints")
        self.storage = storage
