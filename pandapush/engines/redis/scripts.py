"""Lua scripts: each change to one shard's shared state is one atomic step.

Atomicity is what makes listener events fire exactly once cluster-wide: the
node whose script saw the set go from empty to one member is the node that
reports ``channelOccupied``; the node whose script removed the client from the
registry is the node that reports ``clientDestroyed``.

Time comes from Redis (``TIME``), not from the nodes, so that deadlines written
by one node and compared by another do not depend on the nodes' clocks.

Keys are always passed in ``KEYS`` (never built in Lua) so the scripts would
also run on Redis Cluster with hash tags, should that ever replace our ring.

A destroy's scripts are :mod:`~pandapush.engines.redis.destroy`'s (with what they
record), the history's READ :mod:`~pandapush.engines.redis.history`'s.
"""

from __future__ import annotations

NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"

#: KEYS: clients zset, client hash, the shard's generation key. ARGV: clientId, owner node,
#: seconds to live, a fresh generation token. The creating node owns the client with epoch 1
#: (see CLAIM). Returns the shard's generation (see GENERATION).
CREATE = (
    NOW
    + """
redis.call('HSET', KEYS[2], 'owner', ARGV[2], 'epoch', 1)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('SET', KEYS[3], ARGV[4], 'NX')
return redis.call('GET', KEYS[3])
"""
)

#: KEYS: clients zset. ARGV: clientId. 1 if registered and its deadline has not passed.
EXISTS = (
    NOW
    + """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) < now then return 0 end
return 1
"""
)

#: KEYS: clients zset. ARGV: seconds to live, clientId... Moves deadlines of registered clients.
#: Returns the clientIds it did not move (not registered; rarely, the same deadline again).
TOUCH = (
    NOW
    + """
local deadline = now + tonumber(ARGV[1])
local missing = {}
for i = 2, #ARGV do
  if redis.call('ZADD', KEYS[1], 'XX', 'CH', deadline, ARGV[i]) == 0 then table.insert(missing, ARGV[i]) end
end
return missing
"""
)

#: KEYS: clients zset, client hash, client subs. ARGV: clientId, node, seconds to live,
#: the epoch the node believes it owns the client at ('0' if it does not).
#: Every change of owner bumps the client's epoch, so a node can tell whether its
#: local copy of a client is still the current one, and a hand-over request (which
#: carries the claimer's epoch) whether it is newer than the copy it would give up.
#: Returns nil for an unknown client; {0, epoch} if the node owns it at that epoch
#: still (its lease renewed); else {1, new epoch, previous owner, subscription...}
#: with the node as the owner.
CLAIM = (
    NOW
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return false end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), ARGV[1])
local held = redis.call('HMGET', KEYS[2], 'owner', 'epoch')
local old = held[1] or ''
local epoch = tonumber(held[2] or '0')
if ARGV[4] ~= '0' and old == ARGV[2] and epoch == tonumber(ARGV[4]) then return {0, epoch} end
epoch = redis.call('HINCRBY', KEYS[2], 'epoch', 1)
redis.call('HSET', KEYS[2], 'owner', ARGV[2])
local result = redis.call('SMEMBERS', KEYS[3])
table.insert(result, 1, old)
table.insert(result, 1, epoch)
table.insert(result, 1, 1)
return result
"""
)

#: KEYS: clients zset, client hash, client subs. ARGV: clientId, subscription key.
#: Returns {1 if added / 0 if already there / -1 if unknown client, owner}.
SUBSCRIBE_CLIENT = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {-1, ''} end
local added = redis.call('SADD', KEYS[3], ARGV[2])
return {added, redis.call('HGET', KEYS[2], 'owner') or ''}
"""

#: A channel's position (its history's epoch and offset: see ``history``), for READ and
#: SUBSCRIBE_BOTH. A channel without a hash gets one (offset 0), so that a subscriber has a
#: position to resume from before the first publish; only asked for (nothing published),
#: it is kept for the history's ttl, not a day, so that subscribes to made-up channels
#: cannot fill Redis (a publish makes it last a day).
POSITION = """
local function position(stream, meta, ttl, candidate)
  local epoch = redis.call('HGET', meta, 'e')
  if not epoch then
    epoch = candidate
    redis.call('DEL', stream)
    redis.call('HSET', meta, 'e', epoch)
    redis.call('HSETNX', meta, 'o', 0)
    redis.call('PEXPIRE', meta, ttl)
  end
  return epoch, tonumber(redis.call('HGET', meta, 'o') or '0')
end
"""

#: KEYS: clients zset, client hash, client subs, subscribers set of the key, and for the
#: position of a concrete channel with history its stream and hash (all on one shard).
#: ARGV: clientId, subscription key, and with the position: the history's ttl (ms), an
#: epoch should a new one start. SUBSCRIBE_CLIENT then SUBSCRIBE_CHANNEL in one step, for a
#: client and a key on the same shard (one round trip instead of two), and the channel's
#: position read in the same step (the history's READ for the subscribe's reply, another
#: round trip less, on the pub/sub shard). Returns {1 if added / 0 if already there / -1 if
#: unknown client, owner, the key's subscribers after (0 unless added)[, epoch, offset]}.
SUBSCRIBE_BOTH = (
    POSITION
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {-1, '', 0} end
local added = redis.call('SADD', KEYS[3], ARGV[2])
local owner = redis.call('HGET', KEYS[2], 'owner') or ''
local count = 0
if added == 1 then
  redis.call('SADD', KEYS[4], ARGV[1])
  count = redis.call('SCARD', KEYS[4])
end
if #KEYS == 4 then return {added, owner, count} end
local epoch, offset = position(KEYS[5], KEYS[6], ARGV[3], ARGV[4])
return {added, owner, count, epoch, offset}
"""
)

#: KEYS: subscribers set of the key. ARGV: clientId. Returns {added, cardinality after}.
SUBSCRIBE_CHANNEL = """
local added = redis.call('SADD', KEYS[1], ARGV[1])
return {added, redis.call('SCARD', KEYS[1])}
"""

#: KEYS: client hash, client subs, client presence. ARGV: subscription key.
#: Returns {removed, owner, member id present as on that channel or ''}.
UNSUBSCRIBE_CLIENT = """
if redis.call('SREM', KEYS[2], ARGV[1]) == 0 then return {0, '', ''} end
local member = redis.call('HGET', KEYS[3], ARGV[1]) or ''
if member ~= '' then redis.call('HDEL', KEYS[3], ARGV[1]) end
return {1, redis.call('HGET', KEYS[1], 'owner') or '', member}
"""

#: Takes a client out of a key's subscribers set and, when it is present there as
#: ``memberId`` (not ''), out of that member's client set, the member leaving with its
#: last client. Returns removed from subscribers, vacated, member left.
LEAVE = """
local function leave(subscribers, presence, member, clientId, memberId)
  local removed = redis.call('SREM', subscribers, clientId)
  local vacated = 0
  if removed == 1 and redis.call('EXISTS', subscribers) == 0 then vacated = 1 end
  local left = 0
  if memberId ~= '' and redis.call('SREM', member, clientId) == 1 then
    if redis.call('EXISTS', member) == 0 then
      redis.call('HDEL', presence, memberId)
      left = 1
    end
  end
  return removed, vacated, left
end
"""

#: KEYS: subscribers set, presence hash, member's client set. ARGV: clientId, member id or ''.
#: Returns {removed from subscribers, vacated, member left}.
UNSUBSCRIBE_CHANNEL = (
    LEAVE
    + """
local removed, vacated, left = leave(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
return {removed, vacated, left}
"""
)

#: KEYS: clients zset. ARGV: limit. Clients whose deadline has passed.
EXPIRED = (
    NOW
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
"""
)

#: KEYS: clients zset, client presence, client hash. ARGV: clientId, channel, member id.
#: Returns nil for an unknown client, else {the member id it was present as before ('' if
#: none), its owner}.
PRESENCE_CLIENT = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return false end
local old = redis.call('HGET', KEYS[2], ARGV[2]) or ''
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return {old, redis.call('HGET', KEYS[3], 'owner') or ''}
"""

#: KEYS: presence hash, member's client set. ARGV: clientId, member id, data (JSON).
#: Returns {joined, {member, data, ...}}.
PRESENCE_JOIN = """
local joined = 0
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then joined = 1 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return {joined, redis.call('HGETALL', KEYS[1])}
"""

#: KEYS: subscribers sets of the expanded keys held by one shard. ARGV: excluded clientId or '',
#: '1' to return the members. Returns {non-empty sets, recipients[, members]}.
COUNT = """
local nonempty = {}
for _, k in ipairs(KEYS) do
  if redis.call('EXISTS', k) == 1 then table.insert(nonempty, k) end
end
if #nonempty == 0 then return {0, 0} end
local excluded = 0
if ARGV[1] ~= '' then
  for _, k in ipairs(nonempty) do
    if redis.call('SISMEMBER', k, ARGV[1]) == 1 then excluded = 1 end
  end
end
if ARGV[2] == '1' then
  return {#nonempty, 0, redis.call('SUNION', unpack(nonempty))}
end
if #nonempty == 1 then return {1, redis.call('SCARD', nonempty[1]) - excluded} end
return {#nonempty, #redis.call('SUNION', unpack(nonempty)) - excluded}
"""

# A message appended to its channel's history (a stream whose entry ids are the offsets,
# and a hash holding the offset and the epoch): its offset, epoch and the payload closed
# with its position (see Delivery.head). A hash without an epoch is a history that was
# lost (Redis came back empty, the key expired or was evicted): a new epoch starts, and
# whatever is left of the old stream goes with it.
_APPEND = """
local function append(stream, meta, head, size, ttl, metaTtl, candidate)
  local offset = redis.call('HINCRBY', meta, 'o', 1)
  local epoch = redis.call('HGET', meta, 'e')
  if not epoch then
    epoch = candidate
    redis.call('HSET', meta, 'e', epoch)
    redis.call('DEL', stream)
  end
  local payload = head .. '"position":{"offset":' .. offset .. ',"epoch":"' .. epoch .. '"}}}'
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XADD', stream, 'MAXLEN', '~', size, offset .. '-0', 't', ms, 'p', payload)
  redis.call('PEXPIRE', stream, ttl)
  redis.call('PEXPIRE', meta, metaTtl)
  return offset, epoch, payload
end
"""

#: KEYS: pub/sub channels of the expanded keys, then with history its stream and hash, then
#: with an idempotency key that key. ARGV: envelope header, payload (with history: its head),
#: history size ('0': none), the history's and its position's time to live (ms), an epoch
#: should a new one start, the idempotency key's time to live (ms, '0': no key). One PUBLISH
#: per key, in expansion order, with the offset and the key's index in the envelope.
#: Returns {offset, epoch} ({0, ''} without history), or {-1, '<offset> <epoch>'} for a key
#: seen within its time to live: nothing published, the first publish's position.
PUBLISH = (
    _APPEND
    + """
local n, size, once = #KEYS, tonumber(ARGV[3]), tonumber(ARGV[7])
local idem
if once > 0 then
  idem, n = KEYS[n], n - 1
  local prior = redis.call('GET', idem)
  if prior then return {-1, prior} end
end
local payload, offset, epoch = ARGV[2], 0, ''
if size > 0 then
  n = n - 2
  offset, epoch, payload = append(KEYS[n + 1], KEYS[n + 2], payload, size, ARGV[4], ARGV[5], ARGV[6])
end
if idem then redis.call('SET', idem, offset .. ' ' .. epoch, 'PX', once) end
local header = ARGV[1] .. offset .. '\\n'
for i = 1, n do
  redis.call('PUBLISH', KEYS[i], header .. (i - 1) .. '\\n' .. payload)
end
return {offset, epoch}
"""
)

#: KEYS: a client's parked queue. ARGV: seconds to keep it, entries... (a closing node's
#: queued messages, for whichever node the client reconnects to).
PARK = """
for i = 2, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

#: KEYS: a client's parked queue. Returns and deletes its entries.
UNPARK = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return items
"""

#: KEYS: the shard's generation key. ARGV: a fresh token. The token naming the shard's
#: current contents: set when absent (a new or emptied Redis), so a node that remembers
#: another one knows the data it wrote there is gone (see ``restore``).
GENERATION = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""

#: KEYS: clients zset, then per client: its hash, its subs set, its presence hash. ARGV: owner
#: node, lease of an attached client, time to live of a detached one, then per client:
#: clientId, epoch, '1' if attached, number of subscriptions, subscription..., number of
#: presence channels, (channel, member id)...
#: Re-registers clients the owner holds after the shard lost them. Never overwrites: a
#: client registered meanwhile (by a claim elsewhere, so at another owner or a newer epoch)
#: has moved and is left alone. Returns per client 2 (restored), 1 (already registered with
#: this owner and epoch) or 0 (registered otherwise: not this node's to restore).
RESTORE = (
    NOW
    + """
local result = {}
local j = 4
for i = 2, #KEYS, 3 do
  local id, epoch, attached, n = ARGV[j], ARGV[j + 1], ARGV[j + 2], tonumber(ARGV[j + 3])
  local p = tonumber(ARGV[j + 4 + n])
  local status = 0
  if redis.call('ZSCORE', KEYS[1], id) then
    local owner = redis.call('HGET', KEYS[i], 'owner') or ''
    if owner == ARGV[1] and (redis.call('HGET', KEYS[i], 'epoch') or '') == epoch then status = 1 end
  elseif redis.call('EXISTS', KEYS[i]) == 0 then
    local ttl = tonumber(ARGV[3])
    if attached == '1' then ttl = tonumber(ARGV[2]) end
    redis.call('ZADD', KEYS[1], now + ttl, id)
    redis.call('HSET', KEYS[i], 'owner', ARGV[1], 'epoch', epoch)
    for m = j + 4, j + 3 + n do redis.call('SADD', KEYS[i + 1], ARGV[m]) end
    for m = j + 5 + n, j + 3 + n + 2 * p, 2 do redis.call('HSET', KEYS[i + 2], ARGV[m], ARGV[m + 1]) end
    status = 2
  end
  table.insert(result, status)
  j = j + 5 + n + 2 * p
end
return result
"""
)

#: KEYS: per member: the channel's presence hash, the member's client set. ARGV: per member:
#: member id, data (JSON), number of clients, clientId... Puts restored clients back into
#: their presence members; data written by a join since is kept.
RESTORE_PRESENCE = """
local j = 1
for i = 1, #KEYS, 2 do
  local n = tonumber(ARGV[j + 2])
  redis.call('HSETNX', KEYS[i], ARGV[j], ARGV[j + 1])
  for m = j + 3, j + 2 + n do redis.call('SADD', KEYS[i + 1], ARGV[m]) end
  j = j + 3 + n
end
return 1
"""

#: KEYS: subscribers sets. ARGV: per key: number of clients, clientId...
#: Puts restored clients back into the subscriber sets of their keys.
RESTORE_SUBSCRIBERS = """
local j = 1
for _, k in ipairs(KEYS) do
  local n = tonumber(ARGV[j])
  for m = j + 1, j + n do redis.call('SADD', k, ARGV[m]) end
  j = j + 1 + n
end
return 1
"""

#: KEYS: a channel's subscribers set, its application's occupied channels (same shard).
#: ARGV: the channel. After the channel was occupied or vacated (by any node): the set of
#: occupied channels follows what the subscribers set says now, so whichever order the
#: nodes' calls arrive in, the last one leaves it right.
SYNC_OCCUPIED = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('SADD', KEYS[2], ARGV[1])
end
return -redis.call('SREM', KEYS[2], ARGV[1])
"""

#: KEYS: a channel's subscribers set, its presence hash. Returns {subscribers, members}.
OCCUPANCY = """
return {redis.call('SCARD', KEYS[1]), redis.call('HLEN', KEYS[2])}
"""

#: KEYS: an application's occupied channels on this shard. ARGV: channel prefix, the key
#: prefixes of subscribers sets and presence hashes, '1' if the prefix is the application's
#: whole (no test per channel). Members are counted on presence channels only. Returns, as
#: one JSON array (a single reply: ten thousand channels decode in a millisecond, not in a
#: multi-bulk parse),
#: [channel, subscribers, members, ...] for the channels starting with the prefix. The one
#: script that builds key names: which channels are occupied is what it is asked, and they
#: all live on this shard. A channel found empty (its node died before it synced the set)
#: is dropped from the set.
OCCUPIED_CHANNELS = """
local result, n = {}, 0
local prefix, every = ARGV[1], ARGV[4] == '1'
local subscribers, presence = ARGV[2], ARGV[3]
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if every or string.sub(name, 1, #prefix) == prefix then
    local count = redis.call('SCARD', subscribers .. name)
    if count == 0 then
      redis.call('SREM', KEYS[1], name)
    else
      local members = 0
      if string.find(name, '/presence/', 1, true) then members = redis.call('HLEN', presence .. name) end
      result[n + 1], result[n + 2], result[n + 3] = name, count, members
      n = n + 3
    end
  end
end
if n == 0 then return '[]' end
return cjson.encode(result)
"""

#: KEYS: the pub/sub channels of every message's expanded keys, message after message
#: (each followed, with history, by its stream and hash). ARGV: per message: how many
#: keys, then PUBLISH's seven arguments. Publishes them all in order, as PUBLISH does one
#: (a server's batch: one script, not one per message). Returns {offset, epoch, ...}.
PUBLISH_BATCH = (
    _APPEND
    + """
local k, i, result = 1, 1, {}
while i <= #ARGV do
  local n, header, payload, size = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local once = tonumber(ARGV[i + 7])
  local after = k + n
  if size > 0 then after = after + 2 end
  local idem, prior = nil, false
  if once > 0 then
    idem = KEYS[after]
    after = after + 1
    prior = redis.call('GET', idem)
  end
  if prior then
    table.insert(result, -1)
    table.insert(result, prior)
  else
    local offset, epoch = 0, ''
    if size > 0 then
      offset, epoch, payload = append(
        KEYS[k + n], KEYS[k + n + 1], payload, size, ARGV[i + 4], ARGV[i + 5], ARGV[i + 6])
    end
    if idem then redis.call('SET', idem, offset .. ' ' .. epoch, 'PX', once) end
    header = header .. offset .. '\\n'
    for j = 0, n - 1 do
      redis.call('PUBLISH', KEYS[k + j], header .. j .. '\\n' .. payload)
    end
    table.insert(result, offset)
    table.insert(result, epoch)
  end
  k = after
  i = i + 8
end
return result
"""
)

#: KEYS: per message, the subscribers sets of its expanded keys held by one shard.
#: ARGV: per message: how many sets, the excluded clientId or ''. Returns per message
#: {non-empty sets, recipients} (as COUNT, for every message of a batch in one script).
COUNT_BATCH = """
local result, k = {}, 1
for i = 1, #ARGV, 2 do
  local n, excluded = tonumber(ARGV[i]), ARGV[i + 1]
  local nonempty = {}
  for j = k, k + n - 1 do
    if redis.call('EXISTS', KEYS[j]) == 1 then table.insert(nonempty, KEYS[j]) end
  end
  k = k + n
  local count = 0
  if #nonempty == 1 then
    count = redis.call('SCARD', nonempty[1])
  elseif #nonempty > 1 then
    count = #redis.call('SUNION', unpack(nonempty))
  end
  if excluded ~= '' then
    for _, set in ipairs(nonempty) do
      if redis.call('SISMEMBER', set, excluded) == 1 then
        count = count - 1
        break
      end
    end
  end
  table.insert(result, #nonempty)
  table.insert(result, count)
end
return result
"""

#: A node says it is live (``nodes``): KEYS: the registry; ARGV: the node's id, the age (ms)
#: past which an entry is dropped. Scored by Redis's clock, so every entry is on one clock.
#: Returns the registry (id, score, id, score...): the node remembers who else is live.
ANNOUNCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
"""
