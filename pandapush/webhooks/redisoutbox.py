"""The webhook outbox in Redis, for servers on the Redis engine (every node shares it).

All of it lives on one shard (the first of ``REDIS_HOSTS``, the one carrying pub/sub), so
every change is one Lua script, atomic with the reads it depends on. Under ``<ns>:wh:``:

- ``seq``: the counter ordering every event ever written;
- ``e:<seq>``: an event (a hash: id, endpoint, app, channel, name, user, data, created,
  due, attempts, error, and the lease: owner, until);
- ``q:<endpoint>\\n<channel>``: the seqs waiting for one endpoint and channel, in order;
- ``ready``: every non-empty queue, scored by when its head can be claimed (its due time,
  or the end of its lease), so a claim reads only what is due;
- ``eq:<endpoint>``: the endpoint's queues (to forget an endpoint); ``n``: the count of
  waiting events; ``d:<endpoint>``: its recent deliveries (JSON, newest first).

The scripts build key names from the prefix they are given (which queues exist is what
they read), so unlike the engine's they would not run on Redis Cluster as they are.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from pandapush.bayeux import json
from pandapush.redis import RedisShard
from pandapush.storage.webhooks import CANCELLED_BY, DeliveryRecord, IWebhookOutbox, WebhookEvent

__all__ = ["RedisOutbox"]

#: How far back from a channel's newest event an add looks for one it cancels.
CANCEL_SCAN = 50

_LIB = """
local P = ARGV[1]
local function hkey(seq) return P .. 'e:' .. seq end
local function rescore(member)
  local q = P .. 'q:' .. member
  local head = redis.call('LINDEX', q, 0)
  if not head then
    redis.call('ZREM', P .. 'ready', member)
    local ep = string.match(member, '^([^\\n]*)')
    redis.call('SREM', P .. 'eq:' .. ep, member)
    return
  end
  local h = redis.call('HMGET', hkey(head), 'due', 'until')
  local score = math.max(tonumber(h[1]), tonumber(h[2] or '0'))
  redis.call('ZADD', P .. 'ready', score, member)
end
local function remove(seq, owner)
  local h = hkey(seq)
  local f = redis.call('HMGET', h, 'owner', 'ep', 'ch')
  if not f[2] or (owner and f[1] ~= owner) then return nil end
  local member = f[2] .. '\\n' .. f[3]
  redis.call('LREM', P .. 'q:' .. member, 1, seq)
  redis.call('DEL', h)
  redis.call('DECR', P .. 'n')
  return member
end
"""

#: ARGV: prefix, now, then one JSON event each. Returns how many were written.
ADD = (
    _LIB
    + """
local now = tonumber(ARGV[2])
local cancels = cjson.decode(ARGV[3])
local written = 0
for i = 4, #ARGV do
  local e = cjson.decode(ARGV[i])
  local member = e.ep .. '\\n' .. e.ch
  local q = P .. 'q:' .. member
  local cancelled = false
  local wanted = cancels[e.name]
  if wanted then
    local seqs = redis.call('LRANGE', q, -50, -1)
    for j = #seqs, 1, -1 do
      local f = redis.call('HMGET', hkey(seqs[j]), 'until', 'name', 'user', 'due')
      if tonumber(f[1]) > now then break end
      if f[2] == wanted and f[3] == (e.user or '') and tonumber(f[4]) > now then
        remove(seqs[j], nil)
        rescore(member)
        cancelled = true
        break
      end
    end
  end
  if not cancelled then
    local seq = redis.call('INCR', P .. 'seq')
    redis.call('HSET', hkey(seq), 'id', e.id, 'ep', e.ep, 'app', e.app, 'ch', e.ch, 'name', e.name,
      'user', e.user or '', 'data', e.data or '', 'created', e.created, 'due', e.due,
      'attempts', e.attempts, 'error', e.error, 'owner', '', 'until', 0)
    redis.call('RPUSH', q, seq)
    redis.call('SADD', P .. 'eq:' .. e.ep, member)
    redis.call('INCR', P .. 'n')
    if redis.call('LLEN', q) == 1 then rescore(member) end
    written = written + 1
  end
end
return written
"""
)

#: ARGV: prefix, now, lease ms, limit, owner, excluded endpoints (JSON list).
#: Returns the claimed events, each a flat list of its fields, in seq order.
CLAIM = (
    _LIB
    + """
local now, lease, limit, owner = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local excluded = {}
for _, ep in ipairs(cjson.decode(ARGV[6])) do excluded[ep] = true end
local taken = {}
local members = redis.call('ZRANGEBYSCORE', P .. 'ready', '-inf', now, 'LIMIT', 0, limit + 200)
for _, member in ipairs(members) do
  if #taken >= limit then break end
  local ep = string.match(member, '^([^\\n]*)')
  if not excluded[ep] then
    local q = P .. 'q:' .. member
    local got = false
    for _, seq in ipairs(redis.call('LRANGE', q, 0, limit - #taken - 1)) do
      local h = hkey(seq)
      local f = redis.call('HMGET', h, 'due', 'until')
      if tonumber(f[1]) > now or tonumber(f[2]) > now then break end
      redis.call('HSET', h, 'owner', owner, 'until', now + lease)
      local e = redis.call('HMGET', h, 'id', 'ep', 'app', 'ch', 'name', 'user', 'data', 'created', 'due',
        'attempts', 'error')
      table.insert(e, seq)
      table.insert(taken, e)
      got = true
    end
    if got then rescore(member) end
  end
end
table.sort(taken, function(a, b) return tonumber(a[12]) < tonumber(b[12]) end)
return taken
"""
)

#: ARGV: prefix, owner, seq... Removes the events the owner holds.
REMOVE = (
    _LIB
    + """
local touched = {}
for i = 3, #ARGV do
  local member = remove(ARGV[i], ARGV[2])
  if member then touched[member] = true end
end
for member in pairs(touched) do rescore(member) end
return 1
"""
)

#: ARGV: prefix, owner, due, error, seq... Reschedules the events the owner holds.
RESCHEDULE = (
    _LIB
    + """
local touched = {}
for i = 5, #ARGV do
  local h = hkey(ARGV[i])
  local f = redis.call('HMGET', h, 'owner', 'ep', 'ch')
  if f[2] and f[1] == ARGV[2] then
    redis.call('HINCRBY', h, 'attempts', 1)
    redis.call('HSET', h, 'due', ARGV[3], 'error', ARGV[4], 'owner', '', 'until', 0)
    touched[f[2] .. '\\n' .. f[3]] = true
  end
end
for member in pairs(touched) do rescore(member) end
return 1
"""
)

#: ARGV: prefix, endpoint. Drops its events and deliveries.
FORGET = (
    _LIB
    + """
local ep = ARGV[2]
for _, member in ipairs(redis.call('SMEMBERS', P .. 'eq:' .. ep)) do
  local q = P .. 'q:' .. member
  for _, seq in ipairs(redis.call('LRANGE', q, 0, -1)) do
    redis.call('DEL', hkey(seq))
    redis.call('DECR', P .. 'n')
  end
  redis.call('DEL', q)
  redis.call('ZREM', P .. 'ready', member)
end
redis.call('DEL', P .. 'eq:' .. ep, P .. 'd:' .. ep)
return 1
"""
)

#: ARGV: prefix, endpoint, keep, record (JSON).
RECORD = """
local key = ARGV[1] .. 'd:' .. ARGV[2]
redis.call('LPUSH', key, ARGV[4])
redis.call('LTRIM', key, 0, tonumber(ARGV[3]) - 1)
return 1
"""


def _event(fields: Sequence[Any]) -> WebhookEvent:
    eventId, endpointId, app, channel, name, user, data, created, due, attempts, error, seq = fields
    return WebhookEvent(
        id=eventId,
        endpointId=endpointId,
        appId=app,
        channel=channel,
        name=name,
        createdMs=int(created),
        dueMs=int(due),
        userId=user or None,
        data=json.loads(data) if data else None,
        attempts=int(attempts),
        lastError=error or "",
        seq=int(seq),
    )


@implementer(IWebhookOutbox)
class RedisOutbox:
    """The outbox on ``shard`` under ``<namespace>:wh:`` (see the module's docstring)."""

    def __init__(self, shard: RedisShard, namespace: str) -> None:
        self.shard = shard
        self.prefix = f"{namespace}:wh:"

    def _eval(self, script: str, *args: Any) -> Deferred[Any]:
        # No KEYS: the scripts name their keys from the prefix (see the module's docstring).
        return self.shard.eval(script, [], [self.prefix, *args])

    def add(self, events: Sequence[WebhookEvent], nowMs: int) -> Deferred[int]:
        encoded = [
            json.dumps(
                {
                    "id": e.id,
                    "ep": e.endpointId,
                    "app": e.appId,
                    "ch": e.channel,
                    "name": e.name,
                    "user": e.userId or "",
                    "data": json.dumps(e.data).decode() if e.data is not None else "",
                    "created": e.createdMs,
                    "due": e.dueMs,
                    "attempts": e.attempts,
                    "error": e.lastError,
                }
            )
            for e in events
        ]
        if not encoded:
            return defer.succeed(0)
        return self._eval(ADD, nowMs, json.dumps(CANCELLED_BY), *encoded).addCallback(int)

    def claim(
        self, owner: str, nowMs: int, leaseMs: int, limit: int, exclude: Collection[str]
    ) -> Deferred[list[WebhookEvent]]:
        d = self._eval(CLAIM, nowMs, leaseMs, limit, owner, json.dumps(sorted(exclude)))
        return d.addCallback(lambda rows: [_event(row) for row in rows or ()])

    def delivered(self, owner: str, events: Sequence[WebhookEvent]) -> Deferred[None]:
        return self._eval(REMOVE, owner, *[e.seq for e in events]).addCallback(lambda _: None)

    def reschedule(
        self, owner: str, events: Sequence[WebhookEvent], dueMs: int, error: str
    ) -> Deferred[None]:
        d = self._eval(RESCHEDULE, owner, dueMs, error[:1000], *[e.seq for e in events])
        return d.addCallback(lambda _: None)

    def discard(self, owner: str, events: Sequence[WebhookEvent]) -> Deferred[None]:
        return self.delivered(owner, events)

    def waiting(self) -> Deferred[int]:
        return self.shard.execute("GET", self.prefix + "n").addCallback(lambda n: int(n or 0))

    def recordDelivery(self, record: DeliveryRecord, keep: int) -> Deferred[None]:
        encoded = json.dumps(
            {
                "id": record.id,
                "time": record.timeMs,
                "status": record.status,
                "attempts": record.attempts,
                "events": list(record.events),
                "http": record.httpStatus,
                "error": record.error,
            }
        )
        return self.shard.eval(RECORD, [], [self.prefix, record.endpointId, keep, encoded]).addCallback(
            lambda _: None
        )

    def deliveries(self, endpointId: str) -> Deferred[list[DeliveryRecord]]:
        def decode(items: Any) -> list[DeliveryRecord]:
            found = []
            for item in items or ():
                r = json.loads(item)
                events = tuple(r["events"])
                found.append(
                    DeliveryRecord(
                        r["id"],
                        endpointId,
                        r["time"],
                        r["status"],
                        r["attempts"],
                        events,
                        r["http"],
                        r["error"],
                    )
                )
            return found

        return self.shard.execute("LRANGE", f"{self.prefix}d:{endpointId}", 0, -1).addCallback(decode)

    def forgetEndpoint(self, endpointId: str) -> Deferred[None]:
        return self._eval(FORGET, endpointId).addCallback(lambda _: None)

    def close(self) -> Deferred[None]:
        """Close the connection (the sender's service does, once it stopped)."""
        return self.shard.close()
