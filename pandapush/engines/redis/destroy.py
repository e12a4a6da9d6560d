"""Destroying a client so that nothing of it outlives it, whatever Redis does meanwhile.

A destroy takes the client out of the registry (on its shard), out of each key's
subscriber set and presence (on the keys' shards), then deletes its keys. When Redis
answers later than the command timeout (paused, or busy with thousands of disconnects
at once), a script may have run on Redis while this node took it as failed: before,
the node kept the client (queueing every later publish for it, counted as a delivery)
and Redis kept its subscriber sets, and as the registry entry was gone nobody ever came
back for them (7,379 clients leaked for good in a mass disconnect). So a destroy is now
done in a way that survives any step failing or never answering:

- the node forgets the client at once (it stops queueing, is not renewed, not
  parked at shutdown);
- ``DESTROY`` moves the client from the registry to ``<ns>:dying``, a sorted set of
  deadlines beside the registry. When the node names every channel the client is in
  (it owns it: its subscriptions and presence, mirrored) and they are all on the
  client's shard (always, with one shard), the same script leaves them all and
  ends the destroy: one round trip instead of three. What it changed (the events)
  is kept as the client's record (``done`` in its hash, the dying entry kept) until
  the node has heard the answer and reported them; it then forgets the record, for
  many clients at a time (``DESTROY_FORGET``, a moment later). A ``DESTROY`` that
  finds the record answers it again: a lost answer loses no event;
- otherwise (a channel elsewhere, or one the node did not know of) ``DESTROY`` keeps
  the client's keys (owner, subscriptions, presence, the reason) and answers them; the
  node leaves each subscriber set and presence entry, then ``DESTROY_FINISH`` deletes
  the keys. ``DESTROY`` on a dying client answers the same again, so trying a destroy
  twice is harmless, and every leave is idempotent (events fire from the step that
  changed something, once);
- a destroy that failed on this node is kept in :attr:`Destroyer.dying` and tried
  again at every sweep until Redis answers it;
- should the node die first, the dying entry's deadline passes and the collector
  (:mod:`~pandapush.engines.redis.gc`) finishes it (or reports a record's events and
  forgets it), as it finishes expired clients.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger

from pandapush.bayeux import json
from pandapush.engines.redis import scripts
from pandapush.engines.redis.node import Node, OwnedClient
from pandapush.engines.redis.presence import Presence
from pandapush.engines.redis.rpc import NodeRPC
from pandapush.interfaces import EngineUnavailableError
from pandapush.redis import RedisUnavailable

__all__ = ["DESTROY", "DESTROY_FINISH", "DESTROY_FORGET", "Destroyer"]

#: Postponed destroys one sweep tries again.
RETRY_BATCH = 200
#: Seconds a one-step destroy's record is kept after its answer, so that one script
#: forgets those of many clients (a reconnect storm's: ~1 % of a destroy's commands).
FORGET_DELAY = 0.1
#: Records one DESTROY_FORGET forgets.
FORGET_BATCH = 500

#: KEYS: clients zset, dying zset, client hash, subs, presence, parked queue, then per
#: channel the node names: its subscribers set, presence hash, and the client's member's
#: client set (all on the client's shard). ARGV: clientId, '1' to destroy only if expired
#: (its deadline, or a dying entry's, has passed), seconds the destroyer has to finish
#: before the collector may, the reason, then per channel: the channel, the member id
#: the client is present as there ('' if none). A registered client becomes dying (out
#: of the registry: unknown to every node from now on); a dying one is handed out again
#: with a new deadline. Returns nil if neither; the record (below) if the client's
#: channels are all named (now, or by an earlier call whose answer may have been lost);
#: else {owner, reason, {subscription...}, {channel, member, ...}} and the destroy goes on
#: with the leaves and DESTROY_FINISH. The record, JSON: [owner, reason, then per channel
#: named: channel, member id, removed, vacated, member left].
DESTROY = (
    scripts.NOW
    + scripts.LEAVE
    + """
local id = ARGV[1]
local s = redis.call('ZSCORE', KEYS[1], id)
if s then
  if ARGV[2] == '1' and tonumber(s) > now then return false end
  redis.call('ZREM', KEYS[1], id)
  redis.call('DEL', KEYS[6])
else
  local d = redis.call('ZSCORE', KEYS[2], id)
  if not d then return false end
  if ARGV[2] == '1' and tonumber(d) > now then return false end
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), id)
local held = redis.call('HMGET', KEYS[3], 'dying', 'owner', 'done')
if held[3] then return held[3] end
local reason = held[1] or ARGV[4]
local owner = held[2] or ''
redis.call('HSET', KEYS[3], 'dying', reason)
local subs = redis.call('SMEMBERS', KEYS[4])
local presence = redis.call('HGETALL', KEYS[5])
local named = {}
for i = 5, #ARGV, 2 do named[ARGV[i]] = ARGV[i + 1] end
local whole = true
for _, channel in ipairs(subs) do
  if not named[channel] then whole = false end
end
for i = 1, #presence, 2 do
  if named[presence[i]] ~= presence[i + 1] then whole = false end
end
if not whole then return {owner, reason, subs, presence} end
local record = {owner, reason}
local k = 7
for i = 5, #ARGV, 2 do
  local removed, vacated, left = leave(KEYS[k], KEYS[k + 1], KEYS[k + 2], id, ARGV[i + 1])
  for _, v in ipairs({ARGV[i], ARGV[i + 1], removed, vacated, left}) do table.insert(record, v) end
  k = k + 3
end
record = cjson.encode(record)
redis.call('DEL', KEYS[4], KEYS[5])
redis.call('HSET', KEYS[3], 'done', record)
return record
"""
)

#: KEYS: dying zset, client hash, subs, presence. ARGV: clientId. 1 if this call ended the
#: destroy (who reports ``clientDestroyed``), 0 if another had (a DESTROY that named every
#: channel meanwhile: its record stays for whoever heard it).
DESTROY_FINISH = """
if redis.call('HEXISTS', KEYS[2], 'done') == 1 then return 0 end
local ended = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return ended
"""

#: KEYS: dying zset, then client hashes. ARGV: their clientIds. Records of destroys whose
#: answer was heard (their events reported): the dying entry and the hash go.
DESTROY_FORGET = """
for i = 1, #ARGV do
  if redis.call('HEXISTS', KEYS[i + 1], 'done') == 1 then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('DEL', KEYS[i + 1])
  end
end
return 1
"""


class Destroyer:
    """
    Destroys clients (``destroy``), keeps those whose destroy failed (``dying``) and tries
    them again (``retry``, at every sweep). Events go to ``notify(event, *args)``.
    """

    _log = Logger()

    def __init__(self, node: Node, rpc: NodeRPC, presence: Presence, notify: Callable[..., None]) -> None:
        self._node = node
        self._rpc = rpc
        self._presence = presence
        self._notify = notify
        #: clientId -> reason: destroys this node started that Redis has not confirmed.
        self.dying: dict[str, str] = {}
        # clientId -> keys whose leave was sent by a try that did not hear its answer.
        self._unanswered: dict[str, set[str]] = {}
        # clientId -> callers waiting for the destroy this node is running for it.
        self._running: dict[str, list[defer.Deferred[None]]] = {}
        self._retrying: defer.Deferred[None] | None = None
        # clientId -> the channels a postponed destroy named (see DESTROY).
        self._named: dict[str, Mapping[str, str]] = {}
        # shard index -> clients whose record this node has reported: forgotten soon.
        self._heard: dict[int, list[str]] = {}
        self._forgetting: defer.Deferred[None] | None = None

    @property
    def lease(self) -> float:
        """Seconds a destroyer has before the collector may finish its destroy."""
        return max(2 * self._node.expiry, 1.0)

    async def destroy(self, clientId: str, reason: str, onlyIfExpired: bool = False) -> bool:
        """
        Destroy the client; whether this call did. A destroy Redis did not answer is kept
        and tried again (it is done, as far as the caller is concerned: the client is
        gone here and will be in Redis). Only the collector's (``onlyIfExpired``) fail.
        """
        if onlyIfExpired:
            return await self._run(clientId, reason, True)
        waiting = self._running.get(clientId)
        if waiting is not None:
            # Being destroyed here already: a websocket's /meta/disconnect, then its
            # socket's close while that destroy still runs. Run again, the whole destroy
            # ran twice (the client is dying: handed out again); joined, it runs once.
            joined: defer.Deferred[None] = defer.Deferred()
            waiting.append(joined)
            await joined
            return False
        self._running[clientId] = []
        # Forgotten here at once: it queues nothing more, is neither renewed nor parked.
        named = self._channelsOf(self._node.drop(clientId))
        try:
            return await self._run(clientId, reason, False, named)
        except (RedisUnavailable, EngineUnavailableError):
            self._postpone(clientId, reason, named)
            return False
        finally:
            for joined in self._running.pop(clientId, []):
                joined.callback(None)

    def _channelsOf(self, client: OwnedClient | None) -> dict[str, str]:
        """
        The channels this node holds ``client`` in (channel -> the member id it is present
        as there, or ''), for DESTROY to leave them all itself: none unless all are on the
        client's shard.
        """
        if client is None:
            return {}
        channels = dict.fromkeys(client.subscriptions, "")
        for channel, (memberId, _) in client.presence.items():
            channels[channel] = memberId
        shards = self._node.shards
        if len(shards) > 1:
            index = shards.index(client.id)
            if any(shards.index(channel) != index for channel in channels):
                return {}
        return channels

    def _postpone(self, clientId: str, reason: str, named: Mapping[str, str]) -> None:
        if not self.dying:
            self._log.info("client destroys postponed until Redis answers")
        self.dying[clientId] = reason
        if named:
            self._named[clientId] = named

    def _namedFor(self, clientId: str) -> Mapping[str, str] | None:
        """What a postponed destroy names when tried again: none after leaves went unanswered."""
        # Those are told apart in the leaves' step only (see _run).
        return None if clientId in self._unanswered else self._named.get(clientId)

    def _ended(self, clientId: str) -> None:
        self.dying.pop(clientId, None)
        self._unanswered.pop(clientId, None)
        self._named.pop(clientId, None)

    async def _run(
        self, clientId: str, reason: str, onlyIfExpired: bool, named: Mapping[str, str] | None = None
    ) -> bool:
        node = self._node
        keys = node.keys
        clients, base, subsKey, presenceKey = keys.client(clientId)
        shard = node.shards.of(clientId)
        scriptKeys = [clients, keys.dying, base, subsKey, presenceKey, keys.parked(clientId)]
        args: list[Any] = [clientId, "1" if onlyIfExpired else "0", self.lease, reason]
        for channel, memberId in sorted((named or {}).items()):
            member = keys.member(channel, memberId) if memberId else keys.nothing
            scriptKeys += [keys.subscribers(channel), keys.presence(channel), member]
            args += [channel, memberId]
        result = await shard.eval(DESTROY, scriptKeys, args)
        if result is None:
            self._ended(clientId)
            return False
        if isinstance(result, bytes | str):
            return await self._recorded(clientId, result, onlyIfExpired)
        owner, reason, subs, flatPresence = result
        presence = dict(zip(flatPresence[::2], flatPresence[1::2], strict=True))
        dropped = self._dropOnOwner(clientId, owner, reason)
        channels = sorted(set(subs) | set(presence))
        outcomes = await defer.DeferredList(
            [self._presence.leave(clientId, key, presence.get(key, "")) for key in channels],
            consumeErrors=True,
        )
        # Keys whose leave ran here before without an answer: it may have changed them.
        unanswered = self._unanswered.pop(clientId, set())
        failure: Any = None
        for key, (ok, outcome) in zip(channels, outcomes, strict=True):
            if not ok:
                failure = outcome
                unanswered.add(key)
                continue
            # From the step that changed something: a destroy tried again reports nothing twice.
            removed, vacated, left = outcome
            if key in unanswered:
                # Its leave ran before, unanswered: that one removed the client (it was in
                # its subscriptions). Whether it vacated the key, or made the member leave,
                # cannot be told apart from another client's leave: those two events are
                # lost then (the occupied-channel index heals itself, see occupancy).
                removed = 1
                unanswered.discard(key)
            self._left(clientId, key, presence.get(key, ""), removed, vacated, left)
        if failure is not None:
            if unanswered:
                self._unanswered[clientId] = unanswered
            failure.raiseException()
        ended = await shard.eval(DESTROY_FINISH, [keys.dying, base, subsKey, presenceKey], [clientId])
        self._ended(clientId)
        if int(ended):
            self._notify("clientDestroyed", clientId, reason)
        if dropped is not None and not onlyIfExpired:
            # The owner answers clientExists for it without asking Redis for a moment
            # (Node.knownRegistered): a destroy is answered once the owner forgot it
            # (or did not answer within handoverTimeout). Failures were logged by track.
            await dropped
        return bool(int(ended))

    async def _recorded(self, clientId: str, record: bytes | str, onlyIfExpired: bool) -> bool:
        """DESTROY ended the destroy (now, or in a try whose answer was lost): report its record."""
        owner, reason, *flat = json.loads(record)
        dropped = self._dropOnOwner(clientId, owner, reason)
        for i in range(0, len(flat), 5):
            channel, memberId, removed, vacated, left = flat[i : i + 5]
            self._left(clientId, channel, memberId, removed, vacated, left)
        self._ended(clientId)
        self._notify("clientDestroyed", clientId, reason)
        self._forget(clientId)
        if dropped is not None and not onlyIfExpired:
            await dropped  # as in _run
        return True

    def _left(self, clientId: str, key: str, memberId: str, removed: int, vacated: int, left: int) -> None:
        if removed:
            self._notify("unsubscribed", clientId, key)
        if left:
            self._notify("memberLeft", key, memberId)
        if vacated:
            self._notify("channelVacated", key)

    def _dropOnOwner(self, clientId: str, owner: str, reason: str) -> defer.Deferred[Any] | None:
        """The client's owner forgets it (here at once; another node is told, in the background)."""
        node = self._node
        if owner == node.id:
            node.drop(clientId)
        elif owner:
            dropped = self._rpc.call(owner, "drop", c=clientId, reason=reason)
            node.track(dropped, "dropping a client on its owner")
            return dropped
        return None

    def _forget(self, clientId: str) -> None:
        """Its record was reported: DESTROY_FORGET takes it, with others, a moment later."""
        self._heard.setdefault(self._node.shards.index(clientId), []).append(clientId)
        self._scheduleForget()

    def _scheduleForget(self) -> None:
        if self._forgetting is None and not self._node.closed:
            later: defer.Deferred[None] = task.deferLater(self._node.reactor, FORGET_DELAY)  # type: ignore[arg-type]
            d = self._forgetting = later.addCallback(
                lambda _: defer.Deferred.fromCoroutine(self._forgetHeard())
            )
            self._node.track(d, "forgetting destroyed clients")

    async def close(self) -> None:
        """Forget the records heard so far now (the engine is closing: no sweep comes after)."""
        if self._forgetting is not None:
            await self._forgetting
        if self._heard:
            await self._forgetHeard()

    async def _forgetHeard(self) -> None:
        self._forgetting = None
        heard, self._heard = self._heard, {}
        node = self._node
        batches = [
            (index, clientIds[start : start + FORGET_BATCH])
            for index, clientIds in heard.items()
            for start in range(0, len(clientIds), FORGET_BATCH)
        ]
        done = await defer.DeferredList(
            [
                node.shards[index].eval(
                    DESTROY_FORGET, [node.keys.dying, *(node.keys.client(c)[1] for c in ids)], ids
                )
                for index, ids in batches
            ],
            consumeErrors=True,
        )
        for (index, ids), (ok, _) in zip(batches, done, strict=True):
            if not ok:
                # Tried again at the next sweep (``retry``); the collector takes them
                # once their deadline has passed (reporting them again) otherwise.
                self._heard.setdefault(index, []).extend(ids)

    def retry(self) -> None:
        """Try the postponed destroys again (a batch at a time, in the background)."""
        if self._heard:
            self._scheduleForget()
        if not self.dying or self._retrying is not None or self._node.closed:
            return
        d = self._retrying = defer.Deferred.fromCoroutine(self._retry())
        d.addBoth(self._retried)  # may fire at once, clearing ``_retrying``
        self._node.track(d, "destroying clients again")

    def _retried(self, result: Any) -> Any:
        self._retrying = None
        return result

    async def _retry(self) -> None:
        # Batch after batch while Redis answers them all; after a failure, the next sweep.
        while self.dying and not self._node.closed:
            batch = list(self.dying.items())[:RETRY_BATCH]
            done = await defer.DeferredList(
                [
                    defer.Deferred.fromCoroutine(self._run(c, reason, False, self._namedFor(c)))
                    for c, reason in batch
                ],
                consumeErrors=True,
            )
            unavailable = False
            for (clientId, _), (ok, outcome) in zip(batch, done, strict=True):
                if ok:
                    continue
                result: Any = outcome
                if result.check(RedisUnavailable, EngineUnavailableError):
                    unavailable = True
                else:
                    # Not Redis's lateness: trying every second would not help, and would
                    # hide it. The collector finishes it once its deadline has passed.
                    self._ended(clientId)
                    self._log.failure("destroying {clientId} failed", result, clientId=clientId)
            if unavailable:
                return
        if not self.dying:
            self._log.info("postponed client destroys done")
