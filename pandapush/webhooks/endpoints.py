"""Each application's webhook endpoints, cached: looked at for every event, changed rarely.

Entries live ``ttl`` seconds; any change through the admin API or the command line
invalidates the application in the key cache (``KeyCache.invalidateApp``), which this cache
follows (and key sync carries to every node), so a new endpoint gets the next event.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pandapush.auth.keycache import KeyCache
from pandapush.storage.webhooks import IWebhookStorage, Webhook

__all__ = ["WebhookEndpoints"]

DEFAULT_TTL = 60.0
#: Seconds before asking again after the storage failed (the last known list is used meanwhile).
RETRY_AFTER_FAILURE = 5.0


class WebhookEndpoints:
    """``get(appId)``: the application's endpoints (empty for an unknown application)."""

    _log = Logger()

    def __init__(
        self,
        storage: IWebhookStorage,
        clock: IReactorTime,
        keys: KeyCache | None = None,
        ttl: float = DEFAULT_TTL,
        maxEntries: int = 100_000,
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.ttl = ttl
        self.maxEntries = maxEntries
        self._entries: OrderedDict[str, tuple[tuple[Webhook, ...], float]] = OrderedDict()
        self._pending: dict[str, Deferred[tuple[Webhook, ...]]] = {}
        self._generation = 0
        if keys is not None:
            keys.addApplicationObserver(self.forget)

    def peek(self, appId: str) -> tuple[Webhook, ...] | None:
        entry = self._entries.get(appId)
        if entry is not None and self.clock.seconds() < entry[1]:
            return entry[0]
        return None

    def get(self, appId: str) -> Deferred[tuple[Webhook, ...]]:
        known = self.peek(appId)
        if known is not None:
            return defer.succeed(known)
        pending = self._pending.get(appId)
        if pending is None:
            pending = self._pending[appId] = self._load(appId)
        result: Deferred[tuple[Webhook, ...]] = Deferred()

        def share(value: Any) -> Any:
            if isinstance(value, defer.Failure):
                result.errback(value)
                return None
            result.callback(value)
            return value

        pending.addBoth(share)
        return result

    def _load(self, appId: str) -> Deferred[tuple[Webhook, ...]]:
        generation = self._generation

        def loaded(found: list[Webhook]) -> tuple[Webhook, ...]:
            self._pending.pop(appId, None)
            endpoints = tuple(found)
            if generation == self._generation:
                self._entries[appId] = (endpoints, self.clock.seconds() + self.ttl)
                self._entries.move_to_end(appId)
                while len(self._entries) > self.maxEntries:
                    self._entries.popitem(last=False)
            return endpoints

        def failed(reason: defer.Failure) -> Any:
            self._pending.pop(appId, None)
            entry = self._entries.get(appId)
            if entry is None:
                return reason
            self._log.warn("could not read the webhooks of {appId}; using the last known", appId=appId)
            self._entries[appId] = (entry[0], self.clock.seconds() + RETRY_AFTER_FAILURE)
            return entry[0]

        return defer.maybeDeferred(self.storage.listWebhooks, appId).addCallbacks(loaded, failed)

    def forget(self, appId: str | None) -> None:
        self._generation += 1
        if appId is None:
            self._entries.clear()
        else:
            self._entries.pop(appId, None)
        self._pending.clear()
