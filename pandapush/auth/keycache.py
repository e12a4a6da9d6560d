"""Keys in memory for the hot path, and their usage counted off it.

Every subscribe and publish names a key; asking the database each time would put a
round trip on every message. :class:`KeyCache` keeps what the rules need
(:class:`~pandapush.auth.rules.KeyFacts`, never usage counters) for ``ttl`` seconds,
remembers unknown key ids for ``negativeTTL`` seconds (so garbage ids cannot hammer
the database), and forgets entries the moment they are invalidated: the admin API
calls :meth:`KeyCache.invalidate` / :meth:`KeyCache.invalidateApp` on create, revoke
and delete, and a many-node engine can subscribe to those calls
(:meth:`KeyCache.addInvalidationListener`) to broadcast them, then apply remote ones
with ``propagate=False`` (:mod:`pandapush.auth.keysync`; the ``pandapush`` command sends
the same broadcast when given ``REDIS_HOSTS``). ``ttl`` bounds staleness for changes
nobody broadcast (no Redis, or Redis unreachable at the time).

Usage (``use_count``, ``last_used``) is added up in memory by :meth:`KeyCache.recordUse`
and written in one batch by :meth:`KeyCache.flushUsage`, which
:class:`KeyUsageFlusher` calls every few seconds and once more at shutdown.

While the storage cannot answer (PostgreSQL stopped), publishing and subscribing with
known keys must keep working: a key whose entry went stale is used as last read, and
looked up again every ``negativeTTL`` seconds until the storage answers; a key never
read fails its lookup (callers answer 503). Usage that could not be written is kept
and goes out with a later flush. Each outage is logged once, and its end once.
"""

from __future__ import annotations

import datetime
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pandapush.auth.rules import KeyFacts
from pandapush.storage.errors import StorageUnavailableError

__all__ = ["MAX_KEY_ID_LENGTH", "KeyCache", "KeyUsage", "KeyUsageFlusher", "keyFacts"]

DEFAULT_TTL = 60.0
DEFAULT_NEGATIVE_TTL = 5.0
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_FLUSH_INTERVAL = 5.0
#: Longer ids name no key (ours are ``PSID`` + 16 characters; imported ones are short
#: too). They are answered "no such key" without a lookup and never cached: a cache
#: bounded by entries would otherwise hold up to 100,000 ids of up to a message's
#: size each (found by bench/fuzz.py).
MAX_KEY_ID_LENGTH = 128


class KeyUsage:
    """Uses of one key since the last flush."""

    __slots__ = ("count", "lastUsed")

    def __init__(self) -> None:
        self.count = 0
        self.lastUsed = 0.0

    def __repr__(self) -> str:
        return f"KeyUsage(count={self.count}, lastUsed={self.lastUsed})"


class _KeyStore(Protocol):
    def getKey(self, keyId: str) -> Deferred[Any]: ...

    def recordKeyUsage(self, usage: dict[str, tuple[int, datetime.datetime]]) -> Deferred[Any]: ...


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return _seconds(datetime.datetime.fromisoformat(value.replace("Z", "+00:00")))
    raise TypeError(f"not a time: {value!r}")


def keyFacts(key: Any) -> KeyFacts:
    """The rule-relevant facts of a storage key model (``pandapush.storage.models.Key``)."""
    revoked = getattr(key, "revoked", None)
    if revoked is None:
        revoked = getattr(key, "revoked_at", None) is not None
    return KeyFacts(
        keyId=key.id,
        appId=key.application_id,
        secret=key.secret,
        expires=_seconds(key.expires),
        revoked=bool(revoked),
    )


class KeyCache:
    """Key facts by key id, with invalidation hooks and batched usage."""

    _log = Logger()

    def __init__(
        self,
        storage: _KeyStore,
        clock: IReactorTime,
        ttl: float = DEFAULT_TTL,
        negativeTTL: float = DEFAULT_NEGATIVE_TTL,
        maxEntries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.ttl = ttl
        self.negativeTTL = negativeTTL
        self.maxEntries = maxEntries
        # keyId -> (facts or None for "no such key", time the entry goes stale)
        self._entries: OrderedDict[str, tuple[KeyFacts | None, float]] = OrderedDict()
        #: The key's entry ``(facts or None, stale at)`` or None: a new tuple whenever it changes, so
        #: a memo made with one checks it still stands with ``is`` (a C call, not a method's frame).
        self.entryOf: Callable[[str], tuple[KeyFacts | None, float] | None] = self._entries.get
        self._byApp: dict[str, set[str]] = {}
        self._pending: dict[str, Deferred[KeyFacts | None]] = {}
        # Bumped by every invalidation: a lookup that started before one must not
        # put what it read (possibly the key's state before a revoke) into the cache.
        self._generation = 0
        self._listeners: list[Callable[[str | None, str | None], None]] = []
        self._appObservers: list[Callable[[str | None], None]] = []
        self._keyObservers: list[Callable[[str], None]] = []
        self._usage: dict[str, KeyUsage] = {}
        self._usageSources: list[Callable[[], None]] = []
        self._flushing: Deferred[None] | None = None
        # Whether lookups, and usage writes, are failing now: an outage is logged once.
        self._lookupsFailing = False
        self._usageFailing = False

    # lookups

    def peek(self, keyId: str) -> tuple[bool, KeyFacts | None]:
        """``(True, facts or None)`` if the cache knows the answer now, else ``(False, None)``."""
        if len(keyId) > MAX_KEY_ID_LENGTH:
            return True, None
        entry = self._entries.get(keyId)
        if entry is not None and self.clock.seconds() < entry[1]:
            return True, entry[0]
        return False, None

    def get(self, keyId: str) -> Deferred[KeyFacts | None]:
        """The key's facts (None if there is no such key); synchronous on a cache hit."""
        if len(keyId) > MAX_KEY_ID_LENGTH:
            return defer.succeed(None)
        entry = self._entries.get(keyId)
        now = self.clock.seconds()
        if entry is not None:
            facts, staleAt = entry
            if now < staleAt:
                self._entries.move_to_end(keyId)
                return defer.succeed(facts)
            if facts is None:
                self._forget(keyId)
            # A stale key stays until the lookup answers: it is what we use if the
            # storage cannot.
        pending = self._pending.get(keyId)
        if pending is None:
            pending = self._load(keyId)
            if not pending.called:
                self._pending[keyId] = pending
        result: Deferred[KeyFacts | None] = Deferred()
        pending.addBoth(self._share, result)
        return result

    @staticmethod
    def _share(value: Any, result: Deferred[Any]) -> Any:
        # Each caller gets its own Deferred, so one caller's callbacks cannot change
        # what the others see.
        if isinstance(value, defer.Failure):
            result.errback(value)
            return None  # handed on: the caller's Deferred carries it now
        result.callback(value)
        return value

    def _load(self, keyId: str) -> Deferred[KeyFacts | None]:
        generation = self._generation

        def loaded(key: Any) -> KeyFacts | None:
            facts = keyFacts(key) if key is not None else None
            if self._pending.get(keyId) is pending:
                del self._pending[keyId]
            if self._lookupsFailing:
                self._lookupsFailing = False
                self._log.info("key lookups work again")
            if generation == self._generation:
                self._store(keyId, facts)
            else:
                # Not stored (it may predate a revoke), nor the stale entry kept as a fallback.
                self._forget(keyId)
            return facts

        def failed(reason: defer.Failure) -> KeyFacts | defer.Failure:
            if self._pending.get(keyId) is pending:
                del self._pending[keyId]
            if not self._lookupsFailing:
                self._lookupsFailing = True
                # One line: the callers log unexpected errors (not an outage) in full.
                self._log.warn(
                    "could not look up keys ({error}): cached keys are used as last read,"
                    " unknown ones refused with 503, until the storage answers",
                    error=reason.getErrorMessage(),
                )
            entry = self._entries.get(keyId)
            if entry is None or entry[0] is None:
                return reason
            # Invalidations forget entries, so what is left was true when last read;
            # asked again after negativeTTL rather than on every message.
            self._entries[keyId] = (entry[0], self.clock.seconds() + self.negativeTTL)
            return entry[0]

        pending: Deferred[KeyFacts | None] = defer.maybeDeferred(self.storage.getKey, keyId)
        pending.addCallbacks(loaded, failed)
        return pending

    def _store(self, keyId: str, facts: KeyFacts | None) -> None:
        ttl = self.ttl if facts is not None else self.negativeTTL
        if ttl <= 0:
            return
        self._entries[keyId] = (facts, self.clock.seconds() + ttl)
        if facts is not None:
            self._byApp.setdefault(facts.appId, set()).add(keyId)
        while len(self._entries) > self.maxEntries:
            oldest = next(iter(self._entries))
            self._forget(oldest)

    def _forget(self, keyId: str) -> None:
        entry = self._entries.pop(keyId, None)
        if entry is not None and entry[0] is not None:
            keys = self._byApp.get(entry[0].appId)
            if keys is not None:
                keys.discard(keyId)
                if not keys:
                    del self._byApp[entry[0].appId]

    # invalidation

    def addInvalidationListener(self, listener: Callable[[str | None, str | None], None]) -> None:
        """
        Call ``listener(keyId, appId)`` (one of them None) on every local
        invalidation, e.g. to broadcast it to the other nodes.
        """
        self._listeners.append(listener)

    def removeInvalidationListener(self, listener: Callable[[str | None, str | None], None]) -> None:
        self._listeners.remove(listener)

    def addApplicationObserver(self, observer: Callable[[str | None], None]) -> None:
        """
        Call ``observer(appId)`` whenever ``appId`` is invalidated, here or (with
        ``propagate=False``) from another node, and ``observer(None)`` when the whole
        cache is cleared: caches of other per-application facts (allowed origins) follow
        the keys' invalidations, and so their cross-node broadcast, without one of their own.
        """
        self._appObservers.append(observer)

    def addKeyObserver(self, observer: Callable[[str], None]) -> None:
        """
        Call ``observer(keyId)`` whenever ``keyId`` is invalidated, here or (with
        ``propagate=False``) from another node: whatever was granted with the key may have
        to end (:mod:`pandapush.extensions.expiry` reads it again).
        """
        self._keyObservers.append(observer)

    def _observe(self, appId: str | None) -> None:
        for observer in list(self._appObservers):
            try:
                observer(appId)
            except Exception:
                self._log.failure("application invalidation observer failed")

    def invalidate(self, keyId: str, propagate: bool = True) -> None:
        """Forget ``keyId`` (known or known-missing) now: it was created, revoked or deleted."""
        self._generation += 1
        self._forget(keyId)
        self._pending.pop(keyId, None)
        for observer in list(self._keyObservers):
            try:
                observer(keyId)
            except Exception:
                self._log.failure("key invalidation observer failed")
        if propagate:
            self._tell(keyId, None)

    def invalidateApp(self, appId: str, propagate: bool = True) -> None:
        """Forget every key of ``appId`` (and what observers keep of it): the application changed or went."""
        self._generation += 1
        for keyId in list(self._byApp.get(appId, ())):
            self._forget(keyId)
        # A lookup in flight may be for one of its keys; let it finish uncached.
        self._pending.clear()
        self._observe(appId)
        if propagate:
            self._tell(None, appId)

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()
        self._byApp.clear()
        self._pending.clear()
        self._observe(None)

    def _tell(self, keyId: str | None, appId: str | None) -> None:
        for listener in list(self._listeners):
            try:
                listener(keyId, appId)
            except Exception:
                self._log.failure("key invalidation listener failed")

    # usage

    def recordUse(self, keyId: str) -> None:
        """Count one use of ``keyId`` now; written later by :meth:`flushUsage`."""
        usage = self._usage.get(keyId)
        if usage is None:
            usage = self._usage[keyId] = KeyUsage()
        usage.count += 1
        usage.lastUsed = self.clock.seconds()

    def recordUses(self, keyId: str, count: int, lastUsed: float) -> None:
        """Count ``count`` uses of ``keyId``, the last at ``lastUsed``, counted by a usage source."""
        usage = self._usage.get(keyId)
        if usage is None:
            usage = self._usage[keyId] = KeyUsage()
        usage.count += count
        usage.lastUsed = max(usage.lastUsed, lastUsed)

    def addUsageSource(self, source: Callable[[], None]) -> None:
        """Call ``source()`` before usage is read or written: it hands over its counts (recordUses)."""
        self._usageSources.append(source)

    def _gatherUsage(self) -> None:
        for source in self._usageSources:
            source()

    def pendingUsage(self) -> dict[str, KeyUsage]:
        self._gatherUsage()
        return dict(self._usage)

    def flushUsage(self) -> Deferred[None]:
        """
        Write the usage counted since the last flush, as
        ``{keyId: (count, lastUsed datetime)}``. If the write fails the counts are
        put back, so they go out with the next flush. One flush at a time.
        """
        self._gatherUsage()
        if self._flushing is not None or not self._usage:
            return self._flushing if self._flushing is not None else defer.succeed(None)
        batch, self._usage = self._usage, {}
        payload = {
            keyId: (usage.count, datetime.datetime.fromtimestamp(usage.lastUsed, datetime.UTC))
            for keyId, usage in batch.items()
        }

        def failed(reason: defer.Failure) -> None:
            if not self._usageFailing:
                self._usageFailing = True
                self._logFailure(
                    reason,
                    "could not record key usage ({error}): kept, and written by a later flush",
                )
            for keyId, usage in batch.items():
                current = self._usage.setdefault(keyId, KeyUsage())
                current.count += usage.count
                current.lastUsed = max(current.lastUsed, usage.lastUsed)

        def done(result: Any) -> None:
            self._flushing = None

        def written(_: Any) -> None:
            if self._usageFailing:
                self._usageFailing = False
                self._log.info("key usage recorded again")

        flushing: Deferred[None] = defer.maybeDeferred(self.storage.recordKeyUsage, payload)
        flushing.addCallbacks(written, failed)
        flushing.addBoth(done)
        if not flushing.called:
            self._flushing = flushing
        return flushing

    def _logFailure(self, reason: defer.Failure, text: str) -> None:
        if reason.check(StorageUnavailableError):
            # Expected while the database is down: one line says it all.
            self._log.warn(text, error=reason.getErrorMessage())
        else:
            self._log.failure(text, reason, error=reason.getErrorMessage())


class KeyUsageFlusher(TimerService):
    """Flushes key usage every ``interval`` seconds, and once more when stopping."""

    def __init__(self, cache: KeyCache, interval: float = DEFAULT_FLUSH_INTERVAL) -> None:
        super().__init__(interval, self._flush)
        self.cache = cache
        self.clock = cache.clock

    def _flush(self) -> Deferred[None]:
        return self.cache.flushUsage()

    def stopService(self) -> Deferred[None]:
        stopped = super().stopService()

        def final(_: Any) -> Deferred[None]:
            # The first call may only wait for a flush already under way; the
            # second writes what was counted meanwhile.
            return self.cache.flushUsage().addCallback(lambda _: self.cache.flushUsage())

        return defer.maybeDeferred(lambda: stopped).addCallback(final)
