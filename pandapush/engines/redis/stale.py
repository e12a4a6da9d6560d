"""Stale copies: clients this node still holds although another node owns them now.

A client moving to another node is claimed there, and the new owner asks the old one
to hand it over (see :mod:`~pandapush.engines.redis.claims`). When that request never
arrives (the old owner's subscriber was reconnecting, or the request timed out after
``handoverTimeout``), the old owner keeps its copy, subscribed and queueing whatever
is published on its channels, until the client is attached there again (the claim
script then takes it back) or destroyed through that node; a destroy elsewhere only
tells the current owner. Without this sweep such a copy lasted as long as the node.

Every ``interval`` the node asks each shard, in scripts of at most ``BATCH`` clients,
whether its idle copies (no connection, no claim under way) are still current: owned
by this node at the epoch the copy holds. A copy found stale twice in a row, at least
``interval`` apart, with nothing changed here in between, is dropped as a hand-over
drops it (locally: the current owner, or the destroy that removed the client, is
responsible for the cluster's events). Twice, because a claim elsewhere makes the copy
look stale at once while the new owner's request for its queue is still on its way:
dropping it then would lose that queue. The interval is at least twice the hand-over
timeout, by which the new owner has been answered or has given up asking.

A shard this node cannot reach, that is being restored, or whose generation token is
not the one this node knows (it may have come back empty: every client would look
unknown) is skipped until the next sweep.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger

from pandapush.engines.redis.node import Node, OwnedClient
from pandapush.engines.redis.restore import Restorer

__all__ = ["BATCH", "CURRENT", "StaleCopies"]

#: Clients one script checks: HMGETs only, but a node may hold 50,000 copies.
BATCH = 500

#: KEYS: the shard's generation key, then the hash of each client. ARGV: this node's id,
#: then the epoch each copy holds. Returns {the generation token ('' if none), then the
#: positions (1-based) of the clients not owned by this node at that epoch (unknown ones
#: included)}.
CURRENT = """
local out = {redis.call('GET', KEYS[1]) or ''}
for i = 2, #KEYS do
  local held = redis.call('HMGET', KEYS[i], 'owner', 'epoch')
  if held[1] ~= ARGV[1] or tonumber(held[2] or '0') ~= tonumber(ARGV[i]) then
    out[#out + 1] = i - 1
  end
end
return out
"""


class StaleCopies:
    """Ends this node's copies of clients that other nodes own (``loop``, every ``interval``)."""

    _log = Logger()

    def __init__(self, node: Node, restorer: Restorer, interval: float) -> None:
        self._node = node
        self._restorer = restorer
        # clientId -> (the copy, its epoch) found stale by the last sweep.
        self._suspects: dict[str, tuple[OwnedClient, int]] = {}
        self._sweeping: defer.Deferred[None] | None = None
        self.loop = task.LoopingCall(self._start)
        self.loop.clock = node.reactor
        self.loop.start(interval, now=False).addErrback(node.loopFailed, "stale copies")

    def stop(self) -> None:
        if self.loop.running:
            self.loop.stop()

    def _start(self) -> None:
        if self._sweeping is None and not self._node.closed:
            d = self._sweeping = defer.Deferred.fromCoroutine(self._sweepOnce())
            d.addBoth(self._swept)
            self._node.track(d, "looking for stale copies")

    def _swept(self, result: Any) -> Any:
        self._sweeping = None
        return result

    async def _sweepOnce(self) -> None:
        await self.sweep()

    @staticmethod
    def _idle(client: OwnedClient) -> bool:
        # Attached, or a claim or a hand-over under way: not for the sweep to judge.
        return client.sink is None and not client.held and not client.checking and client.epoch != 0

    async def sweep(self) -> int:
        """One sweep: the number of copies dropped."""
        node = self._node
        byShard: dict[int, list[tuple[OwnedClient, int]]] = {}
        for client in node.local.values():
            if self._idle(client):
                byShard.setdefault(node.shards.index(client.id), []).append((client, client.epoch))
        suspects: dict[str, tuple[OwnedClient, int]] = {}
        for index, copies in byShard.items():
            for start in range(0, len(copies), BATCH):
                found = await self._check(index, copies[start : start + BATCH])
                if found is None:
                    break
                suspects.update((client.id, (client, epoch)) for client, epoch in found)
        previous, self._suspects = self._suspects, suspects
        dropped = 0
        for clientId, (client, epoch) in list(suspects.items()):
            if previous.get(clientId) != (client, epoch) or node.local.get(clientId) is not client:
                continue
            if self._idle(client) and client.epoch == epoch:
                node.drop(clientId)
                del self._suspects[clientId]
                dropped += 1
        if dropped:
            self._log.info("dropped {n} stale copies of clients other nodes own", n=dropped)
        return dropped

    async def _check(
        self, index: int, copies: list[tuple[OwnedClient, int]]
    ) -> list[tuple[OwnedClient, int]] | None:
        """The copies of ``copies`` shard ``index`` says are stale; None to skip the shard."""
        node, restorer = self._node, self._restorer
        if node.closed or index in restorer.restoring or node.shards.troubledWithin(index, node.expiry):
            return None
        keys = [node.keys.generation]
        keys += [node.keys.client(client.id)[1] for client, _ in copies]
        try:
            result = await node.shards[index].eval(CURRENT, keys, [node.id, *(epoch for _, epoch in copies)])
        except Exception as e:
            # Redis unavailable or late: try again at the next sweep.
            self._log.debug("stale copies not checked on shard {i}: {e}", i=index, e=e)
            return None
        generation, *positions = result
        if not generation or generation != restorer.known(index):
            # Emptied (or not checked yet): the restore, not this sweep, deals with it.
            node.track(restorer.check(index), "checking Redis for lost data")
            return None
        return [copies[int(p) - 1] for p in positions]
