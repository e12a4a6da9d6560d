"""Subscriptions on the Redis engine: shared in Redis, mirrored in the owner's index.

A subscription is written twice, each in one script: into the client's set (on the
client's shard) and into the key's subscriber set (on the key's shard), or both in
one script when the two are on the same shard (always, with one shard), which then also
reads the channel's position for the subscribe's reply when its history is there too
(``RedisHistory.asking``); the node
whose script saw the key's set go from empty to one member reports
``channelOccupied``. The client's owner mirrors it in its local index and SUBSCRIBEs
to the key's pub/sub channel: a subscribe handled by a node that does not own the
client is forwarded to the owner (``sub``/``unsub`` calls), and answered only once
the owner's index and SUBSCRIBE are in place, so a message published right after
the reply cannot miss the client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from pandapush.engines.redis import scripts
from pandapush.engines.redis.history import RedisHistory
from pandapush.engines.redis.node import Node
from pandapush.engines.redis.presence import Presence
from pandapush.engines.redis.restore import Restorer
from pandapush.engines.redis.rpc import NodeRPC

__all__ = ["Subscriptions"]


class Subscriptions:
    """Subscribe and unsubscribe (events go to ``notify(event, *args)``), and serve owners' updates."""

    def __init__(
        self,
        node: Node,
        rpc: NodeRPC,
        presence: Presence,
        restorer: Restorer,
        history: RedisHistory,
        notify: Callable[..., None],
    ) -> None:
        self._node = node
        self._history = history
        self._rpc = rpc
        self._presence = presence
        self._restorer = restorer
        self._notify = notify
        rpc.handle("sub", self._serveUpdate)
        rpc.handle("unsub", self._serveUpdate)

    def subscribe(self, clientId: str, key: str) -> defer.Deferred[bool]:
        return defer.Deferred.fromCoroutine(self._subscribe(clientId, key))

    async def _subscribe(self, clientId: str, key: str) -> bool:
        keys, shards = self._node.keys, self._node.shards
        clients, base, subs, _ = keys.client(clientId)
        index = shards.index(clientId)
        both = index == shards.index(key)
        script = scripts.SUBSCRIBE_BOTH if both else scripts.SUBSCRIBE_CLIENT
        if both:
            # Both sets on one shard (always, with one): one script, one round trip.
            clientKeys = [clients, base, subs, keys.subscribers(key)]
            args: list[Any] = [clientId, key]
            # With the channel's history there too (the pub/sub shard's, so always with
            # one), its position for the subscribe's reply, read in the same step.
            position = self._history.positionArgs(clientId, key) if index == 0 else None
            if position is not None:
                clientKeys += position[0]
                args += position[1]
        else:
            clientKeys, args = [clients, base, subs], [clientId, key]
        result = await shards.of(clientId).eval(script, clientKeys, args)
        if int(result[0]) == -1 and await self._restored(clientId):
            # Known here without asking Redis (clientExists), unknown to Redis: a shard
            # that came back empty, and this node's clients are written back now.
            result = await shards.of(clientId).eval(script, clientKeys, args)
        added, owner, cardinality = (*result, 0)[:3]
        if len(result) == 5:
            self._history.positioned(clientId, key, result[3], result[4])
        if int(added) != 1:
            return False
        if not both:
            _, cardinality = await shards.of(key).eval(
                scripts.SUBSCRIBE_CHANNEL, [keys.subscribers(key)], [clientId]
            )
        # Before answering, the owner's index must hold the key, or a message
        # published right after the subscribe reply could miss the client.
        await self._tellOwner(owner, "sub", clientId, key)
        self._notify("subscribed", clientId, key)
        if int(cardinality) == 1:
            self._notify("channelOccupied", key)
        return True

    async def _restored(self, clientId: str) -> bool:
        """
        For a client Redis did not know: whether this node owns it (so it may have been
        answered as known without Redis), once any restore of its shard has run.
        """
        client = self._node.local.get(clientId)
        if client is None or not client.epoch:
            return False
        await self._restorer.check(self._node.shards.index(clientId))
        return True

    def unsubscribe(self, clientId: str, key: str) -> defer.Deferred[bool]:
        return defer.Deferred.fromCoroutine(self._unsubscribe(clientId, key))

    async def _unsubscribe(self, clientId: str, key: str) -> bool:
        _, base, subs, presence = self._node.keys.client(clientId)
        removed, owner, memberId = await self._node.shards.of(clientId).eval(
            scripts.UNSUBSCRIBE_CLIENT, [base, subs, presence], [key]
        )
        if int(removed) != 1:
            return False
        await self._tellOwner(owner, "unsub", clientId, key)
        _, vacated, left = await self._presence.leave(clientId, key, memberId)
        self._notify("unsubscribed", clientId, key)
        if left:
            self._notify("memberLeft", key, memberId)
        if vacated:
            self._notify("channelVacated", key)
        return True

    def of(self, clientId: str) -> defer.Deferred[set[str]]:
        """The client's subscriptions, as Redis has them."""
        node = self._node
        client = node.local.get(clientId)
        if client is not None and node.knownRegistered(clientId):
            # Asked before every subscribe (the router's subscription limit): the owner's
            # mirror is what Redis has, every subscribe and unsubscribe updating it before
            # its reply, and a claim with the subscriptions its script read (see
            # knownRegistered for why the client is still registered). One SMEMBERS round
            # trip less a subscribe.
            if not client.checking:
                return defer.succeed(set(client.subscriptions))
            # A claim script in flight (a websocket's first connect, then its subscribe):
            # its answer may bring subscriptions made through another node. SMEMBERS would
            # have waited behind it on the same connection anyway.
            waiter: defer.Deferred[None] = defer.Deferred()
            client.checkWaiters.append(waiter)
            return waiter.addCallback(lambda _: self.of(clientId))
        d = node.shards.of(clientId).execute("SMEMBERS", node.keys.client(clientId)[2])
        return d.addCallback(lambda members: set(members or ()))

    async def _tellOwner(self, owner: str, op: str, clientId: str, key: str) -> None:
        if owner == self._node.id:
            await self._update(op, clientId, key)
        elif owner:
            await self._rpc.call(owner, op, c=clientId, k=key)

    async def _serveUpdate(self, message: dict[str, Any], reply: dict[str, Any]) -> None:
        await self._update(message["op"], message.get("c", ""), message["k"])

    async def _update(self, op: str, clientId: str, key: str) -> None:
        """The owner's side: mirror the change in this node's index (and its SUBSCRIBEs)."""
        node = self._node
        client = node.local.get(clientId)
        if client is None:
            return
        if op == "sub":
            await node.subscribe(client, key)
        else:
            node.unsubscribe(client, key)
            client.presence.pop(key, None)
