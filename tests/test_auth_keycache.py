"""The key cache: hot-path lookups, invalidation at once, usage written in batches."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pandapush.auth.keycache import KeyCache, KeyUsageFlusher
from tests.support.auth import APP, KEY, NOW, SECRET, FakeKey, FakeKeyStore, at


def result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "not fired"
    return out[0]


class KeyCacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = FakeKeyStore()
        self.store.add(FakeKey(KEY, APP, SECRET, expires=at(NOW + 100)))
        self.cache = KeyCache(self.store, self.clock, ttl=60, negativeTTL=5)

    def test_hit(self) -> None:
        """A second lookup is answered from memory, synchronously."""
        facts = result(self.cache.get(KEY))
        self.assertEqual((facts.keyId, facts.appId, facts.expires), (KEY, APP, NOW + 100))
        result(self.cache.get(KEY))
        self.assertEqual(self.store.lookups, [KEY])

    def test_noSecretInRepr(self) -> None:
        self.assertNotIn(SECRET, repr(result(self.cache.get(KEY))))

    def test_ttl(self) -> None:
        """Entries go stale after ``ttl`` (changes made by other processes show up)."""
        result(self.cache.get(KEY))
        self.clock.advance(61)
        result(self.cache.get(KEY))
        self.assertEqual(self.store.lookups, [KEY, KEY])

    def test_negative(self) -> None:
        """Unknown ids are remembered briefly, then asked again."""
        self.assertIsNone(result(self.cache.get("PSIDnope")))
        self.assertIsNone(result(self.cache.get("PSIDnope")))
        self.clock.advance(6)
        self.assertIsNone(result(self.cache.get("PSIDnope")))
        self.assertEqual(self.store.lookups, ["PSIDnope", "PSIDnope"])

    def test_absurdKeyIdsNotLookedUpNorCached(self) -> None:
        """Ids longer than any key's are "no such key" at once: no lookup, no cache entry."""
        huge = "PSID" + "x" * 65536
        self.assertEqual(self.cache.peek(huge), (True, None))
        self.assertIsNone(result(self.cache.get(huge)))
        self.assertEqual(self.store.lookups, [])
        self.assertEqual(len(self.cache._entries), 0)
        self.assertIsNone(result(self.cache.get("PSID" + "x" * 124)))  # 128: still asked
        self.assertEqual(len(self.store.lookups), 1)

    def test_invalidate(self) -> None:
        """A revoked key is re-read at once, and a key created after a miss is found at once."""
        result(self.cache.get(KEY))
        self.store.keys[KEY].revoked_at = at(NOW)
        self.cache.invalidate(KEY)
        self.assertTrue(result(self.cache.get(KEY)).revoked)
        self.assertIsNone(result(self.cache.get("PSIDnew")))
        self.store.add(FakeKey("PSIDnew", APP, SECRET))
        self.cache.invalidate("PSIDnew")
        self.assertIsNotNone(result(self.cache.get("PSIDnew")))

    def test_invalidateApp(self) -> None:
        """Deleting an application forgets all its keys."""
        result(self.cache.get(KEY))
        del self.store.keys[KEY]
        self.cache.invalidateApp(APP)
        self.assertIsNone(result(self.cache.get(KEY)))

    def test_listeners(self) -> None:
        """Local invalidations are reported (for broadcasting); remote ones are not echoed."""
        heard: list[tuple[str | None, str | None]] = []
        self.cache.addInvalidationListener(lambda k, a: heard.append((k, a)))
        self.cache.invalidate(KEY)
        self.cache.invalidateApp(APP)
        self.cache.invalidate("PSIDx", propagate=False)
        self.assertEqual(heard, [(KEY, None), (None, APP)])

    def test_raceWithInvalidation(self) -> None:
        """A lookup in flight across an invalidation does not cache the old state."""
        self.store.hold = Deferred()
        first = self.cache.get(KEY)
        self.cache.invalidate(KEY)
        hold, self.store.hold = self.store.hold, None
        hold.callback(None)
        result(first)
        result(self.cache.get(KEY))
        self.assertEqual(self.store.lookups, [KEY, KEY])

    def test_concurrentLookupsShared(self) -> None:
        """Simultaneous misses for one key make one storage call."""
        self.store.hold = Deferred()
        a, b = self.cache.get(KEY), self.cache.get(KEY)
        hold, self.store.hold = self.store.hold, None
        hold.callback(None)
        self.assertEqual(result(a), result(b))
        self.assertEqual(self.store.lookups, [KEY])

    def test_bounded(self) -> None:
        """The cache never holds more than ``maxEntries``."""
        cache = KeyCache(self.store, self.clock, maxEntries=3)
        for i in range(10):
            result(cache.get(f"PSID{i}"))
        self.assertEqual(len(cache._entries), 3)

    def test_usageBatched(self) -> None:
        """Uses add up in memory and go to storage in one call per flush."""
        for _ in range(3):
            self.cache.recordUse(KEY)
        self.clock.advance(2)
        self.cache.recordUse("PSIDother")
        result(self.cache.flushUsage())
        (batch,) = self.store.usage
        self.assertEqual(batch[KEY][0], 3)
        self.assertEqual(batch["PSIDother"], (1, at(NOW + 2)))
        result(self.cache.flushUsage())
        self.assertEqual(len(self.store.usage), 1)

    def test_usageKeptOnFailure(self) -> None:
        """If storage fails, counts are kept for the next flush."""
        self.cache.recordUse(KEY)
        self.store.failUsage = True
        result(self.cache.flushUsage())
        self.flushLoggedErrors(RuntimeError)
        self.cache.recordUse(KEY)
        self.store.failUsage = False
        result(self.cache.flushUsage())
        self.assertEqual(self.store.usage[0][KEY][0], 2)

    def test_flusher(self) -> None:
        """The flusher writes every interval and once more when the service stops."""
        flusher = KeyUsageFlusher(self.cache, interval=5)
        flusher.startService()
        self.cache.recordUse(KEY)
        self.clock.advance(5)
        self.assertEqual(len(self.store.usage), 1)
        self.cache.recordUse(KEY)
        result(flusher.stopService())
        self.assertEqual(len(self.store.usage), 2)
