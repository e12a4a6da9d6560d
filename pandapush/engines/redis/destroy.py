"""Destroying a client so that nothing of it outlives it, whatever Redis does meanwhile.

A destroy is several scripts on several shards: take the client out of the registry
(on its shard), then out of each key's subscriber set and presence (on the keys'
shards), then delete its keys. When Redis answers later than the command timeout
(paused, or busy with thousands of disconnects at once), a script may have run on
Redis while this node took it as failed: before, the node kept the client (queueing
every later publish for it, counted as a delivery) and Redis kept its subscriber
sets, and as the registry entry was gone nobody ever came back for them (7,379
clients leaked for good in a mass disconnect). So a destroy is now done in a way
that survives any step failing or never answering:

- the node forgets the client at once (it stops queueing, is not renewed, not
  parked at shutdown);
- ``DESTROY_BEGIN`` moves the client from the registry to ``<ns>:dying``, a sorted set of
  deadlines beside the registry, and keeps its keys (owner, subscriptions, presence,
  and the reason) until ``DESTROY_FINISH`` deletes them, after every subscriber set and
  presence entry has been left. ``DESTROY_BEGIN`` on a dying client answers the same again,
  so trying a destroy twice is harmless, and every leave is idempotent (events fire
  from the step that changed something, once);
- a destroy that failed on this node is kept in :attr:`Destroyer.dying` and tried
  again at every sweep until Redis answers it;
- should the node die first, the dying entry's deadline passes and the collector
  (:mod:`~pandapush.engines.redis.gc`) finishes it, as it finishes expired clients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from pandapush.engines.redis import scripts
from pandapush.engines.redis.node import Node
from pandapush.engines.redis.presence import Presence
from pandapush.engines.redis.rpc import NodeRPC
from pandapush.interfaces import EngineUnavailableError
from pandapush.redis import RedisUnavailable

__all__ = ["Destroyer"]

#: Postponed destroys one sweep tries again.
RETRY_BATCH = 200


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
        self._node.drop(clientId)
        try:
            return await self._run(clientId, reason, False)
        except (RedisUnavailable, EngineUnavailableError):
            self._postpone(clientId, reason)
            return False
        finally:
            for joined in self._running.pop(clientId, []):
                joined.callback(None)

    def _postpone(self, clientId: str, reason: str) -> None:
        if not self.dying:
            self._log.info("client destroys postponed until Redis answers")
        self.dying[clientId] = reason

    async def _run(self, clientId: str, reason: str, onlyIfExpired: bool) -> bool:
        node = self._node
        keys = node.keys
        clients, base, subsKey, presenceKey = keys.client(clientId)
        shard = node.shards.of(clientId)
        result = await shard.eval(
            scripts.DESTROY_BEGIN,
            [clients, keys.dying, base, subsKey, presenceKey, keys.parked(clientId)],
            [clientId, "1" if onlyIfExpired else "0", self.lease, reason],
        )
        if result is None:
            self.dying.pop(clientId, None)
            self._unanswered.pop(clientId, None)
            return False
        owner, reason, subs, flatPresence = result
        presence = dict(zip(flatPresence[::2], flatPresence[1::2], strict=True))
        dropped: defer.Deferred[Any] | None = None
        if owner == node.id:
            node.drop(clientId)
        elif owner:
            dropped = self._rpc.call(owner, "drop", c=clientId, reason=reason)
            node.track(dropped, "dropping a client on its owner")
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
            if removed:
                self._notify("unsubscribed", clientId, key)
            if left:
                self._notify("memberLeft", key, presence[key])
            if vacated:
                self._notify("channelVacated", key)
        if failure is not None:
            if unanswered:
                self._unanswered[clientId] = unanswered
            failure.raiseException()
        ended = await shard.eval(scripts.DESTROY_FINISH, [keys.dying, base, subsKey, presenceKey], [clientId])
        self.dying.pop(clientId, None)
        if int(ended):
            self._notify("clientDestroyed", clientId, reason)
        if dropped is not None and not onlyIfExpired:
            # The owner answers clientExists for it without asking Redis for a moment
            # (Node.knownRegistered): a destroy is answered once the owner forgot it
            # (or did not answer within handoverTimeout). Failures were logged by track.
            await dropped
        return bool(int(ended))

    def retry(self) -> None:
        """Try the postponed destroys again (a batch at a time, in the background)."""
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
                [defer.Deferred.fromCoroutine(self._run(c, reason, False)) for c, reason in batch],
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
                    self.dying.pop(clientId, None)
                    self._log.failure("destroying {clientId} failed", result, clientId=clientId)
            if unavailable:
                return
        if not self.dying:
            self._log.info("postponed client destroys done")
