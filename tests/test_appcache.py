"""AppCache: per-application values read from storage, shared, expired, invalidated, kept through outages."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pandapush.auth.appcache import RETRY_AFTER_FAILURE, AppCache
from pandapush.auth.keycache import KeyCache
from pandapush.storage.memory import MemoryStorage


class _Store:
    """A storage of one value per application, answering at once or when released."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.reads: list[str] = []
        self.held: list[Deferred[str]] = []
        self.hold = False
        self.fail = False

    def load(self, appId: str) -> Deferred[str]:
        self.reads.append(appId)
        if self.fail:
            return defer.fail(RuntimeError("storage down"))
        if self.hold:
            d: Deferred[str] = Deferred()
            self.held.append(d)
            return d
        return defer.succeed(self.values.get(appId, "none"))


class AppCacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = _Store()
        self.store.values = {"a": "1", "b": "2"}
        self.cache: AppCache[str] = AppCache(self.store.load, self.clock, ttl=60, what="values")

    def test_cachedForTTL(self) -> None:
        """One read per application per ttl; peek sees only current answers."""
        self.assertEqual(self.cache.peek("a"), (False, None))
        self.assertEqual(self.successResultOf(self.cache.get("a")), "1")
        self.assertEqual(self.cache.peek("a"), (True, "1"))
        self.successResultOf(self.cache.get("a"))
        self.assertEqual(self.store.reads, ["a"])
        self.clock.advance(61)
        self.assertEqual(self.cache.peek("a"), (False, None))

    def test_readAgainAfterTTLWhenStorageAnswersAtOnce(self) -> None:
        """
        A storage answering synchronously (the memory one) is read again once the ttl
        ran out: no finished read is left behind as "pending" to be handed out forever.
        """
        self.successResultOf(self.cache.get("a"))
        self.store.values["a"] = "changed"
        self.clock.advance(61)
        self.assertEqual(self.successResultOf(self.cache.get("a")), "changed")
        self.assertEqual(self.store.reads, ["a", "a"])

    def test_oneReadShared(self) -> None:
        """Callers asking while a read is under way share it, each with a Deferred of its own."""
        self.store.hold = True
        first, second = self.cache.get("a"), self.cache.get("a")
        self.assertEqual(len(self.store.held), 1)
        first.addCallback(lambda value: value + " (changed by the first caller)")
        self.store.held[0].callback("1")
        self.assertEqual(self.successResultOf(second), "1")
        self.assertEqual(self.cache.peek("a"), (True, "1"))

    def test_forgetWhileReading(self) -> None:
        """A read begun before forget() answers its callers but is not cached."""
        self.store.hold = True
        pending = self.cache.get("a")
        self.cache.forget("a")
        self.store.held[0].callback("old")
        self.assertEqual(self.successResultOf(pending), "old")
        self.assertEqual(self.cache.peek("a"), (False, None))

    def test_forgetAll(self) -> None:
        self.successResultOf(self.cache.get("a"))
        self.successResultOf(self.cache.get("b"))
        self.cache.forget(None)
        self.assertEqual((self.cache.peek("a"), self.cache.peek("b")), ((False, None), (False, None)))

    def test_followsTheKeyCache(self) -> None:
        """The key cache's invalidations (admin changes, key sync) reach the cache."""
        keys = KeyCache(MemoryStorage(), self.clock)
        cache: AppCache[str] = AppCache(self.store.load, self.clock, keys, ttl=60)
        self.successResultOf(cache.get("a"))
        keys.invalidateApp("a", propagate=False)
        self.assertEqual(cache.peek("a"), (False, None))
        self.successResultOf(cache.get("a"))
        keys.clear()
        self.assertEqual(cache.peek("a"), (False, None))

    def test_noTTLCachesNothing(self) -> None:
        cache: AppCache[str] = AppCache(self.store.load, self.clock, ttl=0)
        self.successResultOf(cache.get("a"))
        self.successResultOf(cache.get("a"))
        self.assertEqual(self.store.reads, ["a", "a"])

    def test_leastRecentlyReadGoFirst(self) -> None:
        cache: AppCache[str] = AppCache(self.store.load, self.clock, ttl=60, maxEntries=2)
        for appId in ("a", "b", "c"):
            self.successResultOf(cache.get(appId))
        self.assertEqual([cache.peek(a)[0] for a in ("a", "b", "c")], [False, True, True])

    def test_outageUsesTheLastKnownValue(self) -> None:
        """While the storage fails, the last value read is used and asked for again every few seconds."""
        self.successResultOf(self.cache.get("a"))
        self.clock.advance(61)
        self.store.fail = True
        self.assertEqual(self.successResultOf(self.cache.get("a")), "1")
        self.assertEqual(self.cache.peek("a"), (True, "1"))
        self.clock.advance(RETRY_AFTER_FAILURE + 0.1)
        self.assertEqual(self.successResultOf(self.cache.get("a")), "1")
        self.assertEqual(self.store.reads, ["a", "a", "a"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1, "an outage is logged once")
        self.clock.advance(RETRY_AFTER_FAILURE + 0.1)
        self.store.fail = False
        self.store.values["a"] = "after"
        self.assertEqual(self.successResultOf(self.cache.get("a")), "after")

    def test_outageNeverRead(self) -> None:
        """An application never read gets the failure, or ``unknown(appId)`` when the cache has one."""
        self.store.fail = True
        self.failureResultOf(self.cache.get("a"), RuntimeError)
        lenient: AppCache[str] = AppCache(self.store.load, self.clock, unknown=lambda appId: "unchecked")
        self.assertEqual(self.successResultOf(lenient.get("a")), "unchecked")
        self.assertEqual(lenient.peek("a"), (False, None), "a stand-in is not cached")
        self.flushLoggedErrors(RuntimeError)

    def test_loadRaising(self) -> None:
        """A load that raises instead of failing its Deferred is an outage like any other."""

        def broken(appId: str) -> Deferred[str]:
            raise RuntimeError("bug")

        cache: AppCache[str] = AppCache(broken, self.clock, unknown=lambda appId: "unchecked")
        self.assertEqual(self.successResultOf(cache.get("a")), "unchecked")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
