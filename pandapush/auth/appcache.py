"""Per-application facts read from storage, cached: looked at often, changed rarely.

Several parts of the server need something of an application's on a hot path (its
allowed origins on every subscribe and publish, its webhook endpoints on every event)
that only the admin side changes. :class:`AppCache` keeps each answer for ``ttl``
seconds and shares one storage read among everyone asking for the same application
meanwhile. It forgets an application whenever the key cache invalidates it
(:meth:`KeyCache.addApplicationObserver`): the admin API does so on every change, and
:mod:`pandapush.auth.keysync` carries that to every node, so a change is seen at once
everywhere, and the ttl only bounds a change made behind the server's back.

While the storage cannot answer (PostgreSQL stopped), the last answer read is used and
asked for again every :data:`RETRY_AFTER_FAILURE` seconds; an application never read
gets the cache's ``unknown(appId)`` if it has one, else the failure. The outage is
logged once, and its end too.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from pandapush.auth.keycache import DEFAULT_TTL, KeyCache

__all__ = ["DEFAULT_TTL", "RETRY_AFTER_FAILURE", "AppCache"]

T = TypeVar("T")

#: Seconds between attempts to read an application again while the storage fails.
RETRY_AFTER_FAILURE = 5.0


class AppCache(Generic[T]):
    """
    ``load(appId)`` (a Deferred) cached per application for ``ttl``
    seconds (0: not cached), at most ``maxEntries`` applications (the least recently
    read go first). ``what`` names the value in the outage's log lines.
    """

    _log = Logger()

    def __init__(
        self,
        load: Callable[[str], Deferred[T]],
        clock: IReactorTime,
        keys: KeyCache | None = None,
        ttl: float = DEFAULT_TTL,
        maxEntries: int = 100_000,
        unknown: Callable[[str], T] | None = None,
        what: str = "application settings",
    ) -> None:
        self.load = load
        self.clock = clock
        self.ttl = ttl
        self.maxEntries = maxEntries
        self.unknown = unknown
        self.what = what
        self._entries: OrderedDict[str, tuple[T, float]] = OrderedDict()
        self._pending: dict[str, Deferred[T]] = {}
        # Bumped by every invalidation, so that a read begun before it is not cached.
        self._generation = 0
        self._failing = False
        if keys is not None:
            keys.addApplicationObserver(self.forget)

    def peek(self, appId: str) -> tuple[bool, T | None]:
        """``(True, value)`` if the answer is cached and current, else ``(False, None)``."""
        entry = self._entries.get(appId)
        if entry is not None and self.clock.seconds() < entry[1]:
            return True, entry[0]
        return False, None

    def get(self, appId: str) -> Deferred[T]:
        """The application's value: from the cache, or from one read shared by every caller."""
        known, value = self.peek(appId)
        if known:
            return defer.succeed(value)  # type: ignore[arg-type]
        pending = self._pending.get(appId)
        if pending is None:
            pending = self._read(appId)
            if pending.called:
                # Answered at once (a storage in memory): nothing to share.
                return pending
            self._pending[appId] = pending
        result: Deferred[T] = Deferred()

        def share(outcome: Any) -> Any:
            # Each caller gets the outcome in a Deferred of its own, so that one
            # caller's callbacks cannot change what the others receive.
            if isinstance(outcome, Failure):
                result.errback(outcome)
                return None
            result.callback(outcome)
            return outcome

        pending.addBoth(share)
        return result

    def forget(self, appId: str | None) -> None:
        """Forget ``appId`` (every application for None); a read under way is not cached."""
        self._generation += 1
        if appId is None:
            self._entries.clear()
            self._pending.clear()
        else:
            self._entries.pop(appId, None)
            self._pending.pop(appId, None)

    def _read(self, appId: str) -> Deferred[T]:
        generation = self._generation

        def done() -> None:
            if self._pending.get(appId) is pending:
                del self._pending[appId]

        def loaded(value: T) -> T:
            done()
            if self._failing:
                self._failing = False
                self._log.info("the {what} of applications can be read again", what=self.what)
            if generation == self._generation and self.ttl > 0:
                self._entries[appId] = (value, self.clock.seconds() + self.ttl)
                self._entries.move_to_end(appId)
                while len(self._entries) > self.maxEntries:
                    self._entries.popitem(last=False)
            return value

        def failed(reason: Failure) -> T | Failure:
            done()
            if not self._failing:
                self._failing = True
                self._log.failure(
                    "could not read the {what} of {appId}: the last read are used meanwhile",
                    reason,
                    what=self.what,
                    appId=appId,
                )
            entry = self._entries.get(appId)
            if entry is None:
                return self.unknown(appId) if self.unknown is not None else reason
            # Stale, but the last known answer: keep it, and ask again in a while.
            self._entries[appId] = (entry[0], self.clock.seconds() + RETRY_AFTER_FAILURE)
            return entry[0]

        pending: Deferred[T] = defer.maybeDeferred(self.load, appId)
        pending.addCallbacks(loaded, failed)
        return pending
