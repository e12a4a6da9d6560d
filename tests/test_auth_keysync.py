"""KeySync in one process: two key caches ("nodes") sharing invalidations over a real Redis.

The end-to-end proof with real pandapush processes is in ``tests/test_multinode.py``;
these pin the protocol (own messages ignored, app invalidations, garbage ignored)
and the reconnect rule (cache cleared after the subscriber lost Redis), fast.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from pandapush.auth.keycache import KeyCache
from pandapush.auth.keysync import KeySync, keysChannel
from pandapush.storage.models import Key
from tests.support.redis import REDIS, requireRedis
from tests.support.waiting import eventually

NOW = datetime.datetime.now(datetime.UTC)


class _Storage:
    """Just enough storage for a KeyCache: keys by id, counting reads."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.reads = 0

    def getKey(self, keyId: str) -> defer.Deferred[Any]:
        self.reads += 1
        return defer.succeed(self.keys.get(keyId))

    def recordKeyUsage(self, usage: Any) -> defer.Deferred[None]:
        return defer.succeed(None)


def _key(keyId: str, appId: str = "app1") -> Key:
    return Key(
        id=keyId,
        application_id=appId,
        secret="s",
        purpose="",
        created_by="t",
        created_at=NOW,
        updated_at=NOW,
        expires=None,
    )


class KeySyncTests(TestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        requireRedis()
        self.namespace = f"pp-test-{uuid.uuid4().hex}"
        self.storage = _Storage()
        self.storage.keys["k1"] = _key("k1")
        self.storage.keys["k2"] = _key("k2", "app2")
        self.caches = [KeyCache(self.storage, reactor), KeyCache(self.storage, reactor)]
        self.syncs = [KeySync(reactor, c, REDIS, self.namespace) for c in self.caches]
        for sync in self.syncs:
            sync.startService()
            self.addCleanup(sync.stopService)
        for sync in self.syncs:
            await sync.subscribed

    async def _warm(self) -> None:
        for cache in self.caches:
            for keyId in ("k1", "k2"):
                await cache.get(keyId)
                self.assertTrue(cache.peek(keyId)[0])

    async def test_keyInvalidationReachesOtherNode(self) -> None:
        """invalidate on node 0 drops the key from node 1's cache; node 0's own echo is ignored."""
        await self._warm()
        self.caches[0].invalidate("k1")
        self.assertTrue(await eventually(lambda: not self.caches[1].peek("k1")[0], timeout=1.0))
        self.assertTrue(self.caches[1].peek("k2")[0], "only the named key is dropped")
        await eventually(lambda: False, timeout=0.2)
        self.assertEqual(self.syncs[0].received, 0, "a node ignores its own messages")
        self.assertEqual(self.syncs[1].received, 1)

    async def test_appInvalidation(self) -> None:
        await self._warm()
        self.caches[1].invalidateApp("app2")
        self.assertTrue(await eventually(lambda: not self.caches[0].peek("k2")[0], timeout=1.0))
        self.assertTrue(self.caches[0].peek("k1")[0])

    async def test_remoteInvalidationIsNotEchoed(self) -> None:
        """An applied remote invalidation is not published again (propagate=False)."""
        await self._warm()
        self.caches[0].invalidate("k1")
        self.assertTrue(await eventually(lambda: self.syncs[1].received == 1, timeout=1.0))
        await eventually(lambda: False, timeout=0.3)
        self.assertEqual(self.syncs[0].received, 0)

    async def test_garbageIgnored(self) -> None:
        await self._warm()
        shard = self.syncs[0]._shard
        assert shard is not None
        for junk in ("not json", "[]", '{"node":"x"}', '{"key":"k1"}'):
            await shard.execute("PUBLISH", keysChannel(self.namespace), junk)
        self.caches[0].invalidate("k2")
        self.assertTrue(await eventually(lambda: not self.caches[1].peek("k2")[0], timeout=1.0))
        self.assertTrue(self.caches[1].peek("k1")[0], "garbage invalidated nothing")
        self.flushLoggedErrors()

    async def test_reconnectClearsCache(self) -> None:
        """A subscriber that lost Redis may have missed invalidations: the cache is cleared."""
        await self._warm()
        subscriber = self.syncs[1]._subscriber
        assert subscriber is not None and subscriber._protocol is not None
        subscriber._protocol.transport.abortConnection()
        self.assertTrue(await eventually(lambda: self.syncs[1].clears == 1, timeout=3.0))
        self.assertFalse(self.caches[1].peek("k1")[0])
        self.assertTrue(self.caches[0].peek("k1")[0])
        # And it works again after the reconnection.
        await self._warm()
        await eventually(lambda: subscriber._wanted.get(keysChannel(self.namespace)) is True, timeout=3.0)
        self.caches[0].invalidate("k1")
        self.assertTrue(await eventually(lambda: not self.caches[1].peek("k1")[0], timeout=1.0))
