"""Limits counted across nodes (``--cluster-limits``): a key's publish rate and an application's clients.

Without it every node (and every ``--workers`` process) applies :mod:`pandapush.extensions.limits`
on its own, so N nodes allow N times the configured numbers. With it they share one budget
through the first of ``REDIS_HOSTS`` (the shard that carries pub/sub; key sync uses it too),
under ``<namespace>:lim:``, without a Redis round trip per message:

- **Publish rate** (:class:`ClusterPublishRate`): the token bucket of each key lives in Redis
  (``<ns>:lim:r:<keyId>``, refilled from Redis's clock by :data:`TAKE`, expiring once it would
  be full again). A node takes a *lease*: a slice of tokens it spends locally, in memory,
  like the per-node bucket; it asks Redis again only when the slice is spent (one ``EVAL``
  per slice, the publishes arriving meanwhile wait for that one answer). A slice starts at
  one token and doubles while the node keeps spending them, up to 5% of a second's rate
  (50 at the default 1000/s), so a busy key costs about 20 ``EVAL`` a second per node and
  an idle node holds nothing. A lease lasts a second; what it has left then is dropped
  (at most one slice per node and key: that is how far below the rate the cluster may
  allow, never above it by more than a slice per node).
- **Clients per application** (:class:`ClusterConnectionLimiter`): each node keeps the
  counts of the clients it admitted (in memory, as per node) and mirrors them into a hash
  of its own, ``<ns>:lim:n:<nodeId>`` (``a:<appId>`` authenticated, ``n:<appId>``
  anonymous), whose TTL the node refreshes every ``interval`` seconds (:data:`BEAT`, which
  also keeps the sorted set ``<ns>:lim:nodes`` of live nodes). A node that dies stops
  refreshing: its hash, and with it its counts, expires ``3 * interval`` seconds later, so
  no key outlives its node; a node that stops cleanly deletes it. A client's admission is
  one ``EVAL`` (:data:`ADMIT`: the sum of the field over the live nodes' hashes against
  the limit, and the node's own field incremented), once per client and application,
  beside the ``clientExists`` check admission makes anyway; departures are written back in
  batches (every 50 ms at most), as absolute counts, so a lost write heals at the next.
  A node whose hash has gone (Redis restarted empty, or the node was cut off longer than
  the TTL) writes it again whole at its next heartbeat.

When Redis does not answer, each node falls back to its own per-node limits (the behaviour
without the option) and logs it once per outage; Redis is tried again after a second, so a
Redis outage delays no publish by more than one command timeout.

Refusals are those of the per-node limits: Bayeux ``429``/``403`` and REST ``429`` with
``Retry-After`` (the bucket's own wait, computed in Redis).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from pandapush.extensions.limits import (
    ANONYMOUS_CONNECTIONS_PER_APP,
    CONNECTIONS_PER_APP,
    PUBLISH_RATE,
    AppConnectionLimiter,
    PublishRateLimiter,
)
from pandapush.interfaces import IEngine
from pandapush.redis import RedisAddress, RedisShard

__all__ = [
    "ADMIT",
    "BEAT",
    "LEAVE",
    "TAKE",
    "WRITE",
    "ClusterConnectionLimiter",
    "ClusterLimits",
    "ClusterPublishRate",
]

_NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"

#: KEYS: the key's bucket. ARGV: rate/s, burst, tokens wanted, tokens needed (at most the
#: burst). Returns {tokens granted (0: refused), milliseconds to wait when refused}. Grants
#: between the needed and the wanted count, as many as the bucket holds.
TAKE = (
    _NOW
    + """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local want, need = tonumber(ARGV[3]), tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 't', 's')
local tokens, stamp = tonumber(b[1]), tonumber(b[2])
if not tokens then tokens = burst; stamp = now end
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local granted = 0
if tokens >= need then
  granted = math.max(need, math.min(want, math.floor(tokens)))
  tokens = math.max(0, tokens - granted)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 's', tostring(now))
-- Full again after this long: then it is the same as no bucket at all.
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
if granted == 0 then return {0, math.ceil((need - tokens) / rate * 1000)} end
return {granted, 0}
"""
)

#: KEYS: the live nodes (sorted set of deadlines), this node's counts. ARGV: node id, TTL in
#: ms. Returns 1 if this node's hash is whole (its "_" field), else 0.
BEAT = (
    _NOW
    + """
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl / 1000, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(last[2]) - now) * 1000) + 1000)
local whole = redis.call('HEXISTS', KEYS[2], '_')
if whole == 1 then redis.call('PEXPIRE', KEYS[2], ttl) end
return whole
"""
)

#: KEYS: this node's counts, the live nodes. ARGV: the field, the limit, the TTL in ms, the
#: field the client leaves ("" for none: an anonymous client that came back with
#: credentials), the prefix of the nodes' counts. Returns 1 (counted here) or 0 (full).
#: The other nodes' hashes are named here, from the live nodes, not passed in KEYS (as the
#: engine's scripts do): a node list the caller held could miss a node started since.
#: pandapush shards with a ring of its own, never on Redis Cluster, where this would not run.
ADMIT = (
    _NOW
    + """
local total = 0
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], now, '+inf')) do
  local key = ARGV[5] .. node
  if key ~= KEYS[1] then total = total + (tonumber(redis.call('HGET', key, ARGV[1])) or 0) end
end
total = total + (tonumber(redis.call('HGET', KEYS[1], ARGV[1])) or 0)
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if ARGV[4] ~= '' and redis.call('HINCRBY', KEYS[1], ARGV[4], -1) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

#: KEYS: this node's counts. ARGV: "1" to replace the whole hash (then marked whole), the
#: TTL in ms, then field, count pairs (0: the field goes).
WRITE = """
if ARGV[1] == '1' then redis.call('DEL', KEYS[1]); redis.call('HSET', KEYS[1], '_', 1) end
for i = 3, #ARGV, 2 do
  if tonumber(ARGV[i + 1]) > 0 then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  else redis.call('HDEL', KEYS[1], ARGV[i]) end
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


#: KEYS: the live nodes, this node's counts. ARGV: node id. A clean exit: nothing of this
#: node is left, nor of nodes dead meanwhile (an empty sorted set is no key).
LEAVE = (
    _NOW
    + """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('DEL', KEYS[2])
"""
)


class ClusterLimits(Service):
    """
    The Redis side of ``--cluster-limits``: one shard, the node's heartbeat, the live nodes.

    Every call goes through :meth:`eval`, which fails at once while Redis is known to be
    unreachable (for ``retryAfter`` seconds after a failure): the callers then apply the
    per-node limits, and no message waits for a command timeout more than once a second.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        address: RedisAddress,
        namespace: str,
        nodeId: str,
        interval: float = 5.0,
        commandTimeout: float = 2.0,
        retryAfter: float = 1.0,
    ) -> None:
        self.reactor = reactor
        self.address = address
        self.nodeId = nodeId
        self.interval = interval
        #: A dead node's counts expire after this long.
        self.ttl = 3.0 * interval
        self.commandTimeout = commandTimeout
        self.retryAfter = retryAfter
        self.prefix = f"{namespace}:lim:"
        self.nodesKey = self.prefix + "nodes"
        self.countsKey = self.countsOf(nodeId)
        self._shard: RedisShard | None = None
        self._beats: task.LoopingCall | None = None
        self._downUntil = 0.0
        self._down = False
        self._lost: list[Callable[[], None]] = []

    def rateKey(self, keyId: str) -> str:
        return f"{self.prefix}r:{keyId}"

    def countsOf(self, nodeId: str) -> str:
        return self.prefix + "n:" + nodeId

    @property
    def usable(self) -> bool:
        """False while Redis is known to be unreachable (then the per-node limits apply)."""
        return self._shard is not None and self.reactor.seconds() >= self._downUntil

    def onCountsLost(self, listener: Callable[[], None]) -> None:
        """``listener()`` when this node's counts must be written whole again."""
        self._lost.append(listener)

    async def eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
        if self._shard is None or not self.usable:
            raise ConnectionError("Redis unavailable for cluster limits")
        try:
            result = await self._shard.eval(script, keys, args)
        except Exception as e:
            self._downUntil = self.reactor.seconds() + self.retryAfter
            if not self._down:
                self._down = True
                self._log.warn(
                    "cluster limits: Redis {shard} did not answer ({why}); applying per-node limits",
                    shard=self.address.name,
                    why=str(e),
                )
            raise
        if self._down:
            self._down = False
            self._log.info("cluster limits: Redis answers again; limits are cluster-wide again")
            for listener in self._lost:
                listener()
        return result

    async def take(self, keyId: str, want: int, need: int, rate: float, burst: float) -> tuple[int, float]:
        """Tokens granted from ``keyId``'s bucket (0: refused) and, if refused, seconds to wait."""
        granted, wait = await self.eval(TAKE, [self.rateKey(keyId)], [rate, burst, want, need])
        return int(granted), int(wait) / 1000.0

    async def admit(self, field: str, limit: int, leaving: str = "") -> bool:
        keys = [self.countsKey, self.nodesKey]
        args = [field, limit, self._ttlMs(), leaving, self.countsOf("")]
        return int(await self.eval(ADMIT, keys, args)) == 1

    async def write(self, counts: dict[str, int], whole: bool = False) -> None:
        args: list[Any] = ["1" if whole else "0", self._ttlMs()]
        for field, count in counts.items():
            args += [field, count]
        await self.eval(WRITE, [self.countsKey], args)

    def _ttlMs(self) -> int:
        return int(self.ttl * 1000)

    # heartbeat

    def startService(self) -> None:
        super().startService()
        self._shard = RedisShard(self.reactor, self.address, self.commandTimeout)
        self._beats = task.LoopingCall(self._beat)
        self._beats.clock = self.reactor
        self._beats.start(self.interval, now=True).addErrback(
            lambda f: self._log.failure("cluster limits heartbeat stopped", f)
        )

    def _beat(self) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(self.beat())

    async def beat(self) -> None:
        """Refresh this node's TTLs; tell the listeners if its counts were lost."""
        try:
            whole = await self.eval(BEAT, [self.nodesKey, self.countsKey], [self.nodeId, self._ttlMs()])
        except Exception:
            return  # logged by eval; the next beat tries again
        if int(whole) != 1:
            for listener in self._lost:
                listener()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        if self._beats is not None and self._beats.running:
            self._beats.stop()
        return defer.Deferred.fromCoroutine(self._leave())

    async def _leave(self) -> None:
        shard, self._shard = self._shard, None
        if shard is None:
            return
        # A clean exit leaves nothing behind (a dead node's keys expire by themselves).
        try:
            await shard.eval(LEAVE, [self.nodesKey, self.countsKey], [self.nodeId])
        except Exception as e:
            self._log.info("cluster limits: could not remove this node's counts: {why}", why=str(e))
        await shard.close()


class _Lease:
    __slots__ = ("chunk", "expires", "tokens", "waiters")

    def __init__(self) -> None:
        self.tokens = 0
        self.expires = 0.0
        self.chunk = 1
        #: Publishes waiting for the Redis call under way (None: no call under way).
        self.waiters: list[defer.Deferred[None]] | None = None


class ClusterPublishRate:
    """
    A key's publishes per second across the cluster: leases of its Redis bucket, spent here
    (see the module). ``local`` is the per-node limiter of the same rate, used while Redis
    does not answer. ``acquire`` answers at once while the lease lasts, else a Deferred.
    """

    def __init__(
        self, cluster: ClusterLimits, local: PublishRateLimiter, clock: IReactorTime, leaseTime: float = 1.0
    ) -> None:
        self.cluster = cluster
        self.local = local
        self.clock = clock
        self.leaseTime = leaseTime
        self.rate = local.rate
        self.burst = local.burst
        self.maxChunk = max(1, int(min(self.rate * 0.05, self.burst / 4)))
        self._leases: OrderedDict[str, _Lease] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.local.enabled

    def refusal(self, keyId: str) -> str:
        return self.local.refusal(keyId)

    def __len__(self) -> int:
        return len(self._leases)

    def acquire(self, keyId: str, count: int = 1) -> float | defer.Deferred[float]:
        if not self.local.enabled:
            return 0.0
        lease = self._leases.get(keyId)
        if lease is not None and lease.tokens >= count and lease.expires > self.clock.seconds():
            lease.tokens -= count  # the hot path: no Redis, no Deferred
            return 0.0
        if not self.cluster.usable:
            return self.local.acquire(keyId, count)
        return defer.Deferred.fromCoroutine(self._refill(keyId, count))

    async def _refill(self, keyId: str, count: int) -> float:
        while True:
            now = self.clock.seconds()
            self._evict(now)
            lease = self._leases.get(keyId)
            if lease is None:
                lease = self._leases[keyId] = _Lease()
            if lease.expires <= now and lease.tokens:
                # Left unspent for a whole lease: ask for less next time.
                lease.tokens, lease.chunk = 0, max(1, lease.chunk // 2)
            if lease.tokens >= count:
                lease.tokens -= count
                return 0.0
            if lease.waiters is None:
                break
            waiting: defer.Deferred[None] = defer.Deferred()
            lease.waiters.append(waiting)
            await waiting
        lease.waiters = []
        try:
            need = int(min(count, self.burst))
            granted, wait = await self.cluster.take(
                keyId, max(count, lease.chunk), need, self.rate, self.burst
            )
        except Exception:
            return self.local.acquire(keyId, count)
        finally:
            waiters, lease.waiters = lease.waiters, None
            for waiting in waiters:
                waiting.callback(None)
        if not granted:
            if self.local.onRefused is not None:
                self.local.onRefused(PUBLISH_RATE)
            return max(wait, 0.001)
        lease.tokens = max(0, lease.tokens + granted - count)
        lease.expires = self.clock.seconds() + self.leaseTime
        lease.chunk = min(self.maxChunk, lease.chunk * 2)
        self._leases.move_to_end(keyId)
        return 0.0

    def _evict(self, now: float) -> None:
        leases = self._leases
        while leases:
            keyId, oldest = next(iter(leases.items()))
            if oldest.expires > now or oldest.waiters is not None:
                return
            del leases[keyId]


class ClusterConnectionLimiter(AppConnectionLimiter):
    """
    :class:`AppConnectionLimiter` whose budgets are the cluster's (see the module): this
    node's counts stay here and are mirrored into its Redis hash; admitting a client asks
    Redis. A refusal also asks every node (an engine broadcast) to look for clients gone
    without a word, since the stale counts may be another node's.
    """

    SWEEP = "limits-sweep"

    def __init__(
        self,
        engine: IEngine,
        clock: IReactorTime,
        cluster: ClusterLimits,
        *args: Any,
        flushDelay: float = 0.05,
        **kwargs: Any,
    ) -> None:
        super().__init__(engine, clock, *args, **kwargs)
        self.cluster = cluster
        self.flushDelay = flushDelay
        # (appId, authenticated) -> admissions under way; their clients (destroyed meanwhile: gone).
        self._pending: dict[tuple[str, bool], int] = {}
        self._reserving: dict[str, int] = {}
        self._gone: set[str] = set()
        self._dirty: set[tuple[str, bool]] = set()
        self._flush: IDelayedCall | None = None
        if self.enabled:
            cluster.onCountsLost(self._rewrite)
            engine.onBroadcast(self.SWEEP, self._sweepAsked)

    @staticmethod
    def field(appId: str, authenticated: bool) -> str:
        return ("a:" if authenticated else "n:") + appId

    def count(self, appId: str, authenticated: bool) -> int:
        """This node's share: admitted here, or being admitted."""
        return len(self._budgets[authenticated].get(appId, ())) + self._pending.get((appId, authenticated), 0)

    def reserve(self, clientId: str, appId: str, authenticated: bool = True) -> bool | defer.Deferred[bool]:
        if not self.enabled or self.admitted(clientId, appId, authenticated):
            return True
        if self.limit(authenticated) <= 0 or not self.cluster.usable:
            return self.admit(clientId, appId, authenticated)
        return defer.Deferred.fromCoroutine(self._reserve(clientId, appId, authenticated))

    async def _reserve(self, clientId: str, appId: str, authenticated: bool) -> bool:
        budget = (appId, authenticated)
        leaving = ""
        if authenticated and self._clients.get(clientId, {}).get(appId) is False:
            leaving = self.field(appId, False)
        self._pending[budget] = self._pending.get(budget, 0) + 1
        self._reserving[clientId] = self._reserving.get(clientId, 0) + 1
        try:
            admitted: bool | None = await self.cluster.admit(
                self.field(appId, authenticated), self.limit(authenticated), leaving
            )
        except Exception:
            admitted = None
        finally:
            self._pending[budget] -= 1
            if not self._pending[budget]:
                del self._pending[budget]
            self._reserving[clientId] -= 1
            if not self._reserving[clientId]:
                del self._reserving[clientId]
        gone = clientId in self._gone
        if clientId not in self._reserving:
            self._gone.discard(clientId)
        if admitted is None:
            return self.admit(clientId, appId, authenticated)  # per node while Redis is away
        if not admitted:
            self.refused(appId, authenticated)
            return False
        if gone or self.admitted(clientId, appId, authenticated):
            self._changed(appId, authenticated)  # counted in Redis, not here: written back
        else:
            AppConnectionLimiter._count(self, clientId, appId, authenticated)  # Redis has it already
        return True

    def refused(self, appId: str, authenticated: bool) -> None:
        if self.onRefused is not None:
            self.onRefused(CONNECTIONS_PER_APP if authenticated else ANONYMOUS_CONNECTIONS_PER_APP)
        if self._maybeSweep(appId):
            d = self.engine.broadcast(self.SWEEP, {"app": appId})
            d.addErrback(lambda f: self._log.info("no sweep asked: {why}", why=f.getErrorMessage()))

    def _sweepAsked(self, data: Any) -> None:
        if isinstance(data, dict) and isinstance(data.get("app"), str):
            self._maybeSweep(data["app"])

    # this node's counts, mirrored

    def _count(self, clientId: str, appId: str, authenticated: bool) -> None:
        # Counted here only (Redis away, or an unlimited budget): written back.
        super()._count(clientId, appId, authenticated)
        self._changed(appId, authenticated)

    def _uncount(self, clientId: str, appId: str) -> None:
        for authenticated, budget in self._budgets.items():
            if clientId in budget.get(appId, ()):
                self._changed(appId, authenticated)
        super()._uncount(clientId, appId)

    def forget(self, clientId: str) -> None:
        if clientId in self._reserving:
            self._gone.add(clientId)
        super().forget(clientId)

    def _changed(self, appId: str, authenticated: bool) -> None:
        self._dirty.add((appId, authenticated))
        if self._flush is None or not self._flush.active():
            self._flush = self.clock.callLater(self.flushDelay, self._write)

    def _write(self) -> None:
        dirty, self._dirty = self._dirty, set()
        counts = {self.field(app, auth): self.count(app, auth) for app, auth in dirty}
        d = defer.Deferred.fromCoroutine(self.cluster.write(counts))
        # Not written: the next heartbeat finds the hash not whole only if Redis lost it,
        # so keep what is owed and write it with the next change or the rewrite.
        d.addErrback(lambda _: self._dirty.update(dirty))

    def _rewrite(self) -> None:
        apps = set().union(*self._budgets.values(), (app for app, _ in self._pending))
        counts = {
            self.field(app, auth): n for app in apps for auth in (True, False) if (n := self.count(app, auth))
        }
        d = defer.Deferred.fromCoroutine(self.cluster.write(counts, whole=True))
        d.addErrback(lambda _: None)  # logged by eval; the next heartbeat asks again
