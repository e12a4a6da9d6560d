"""Presence on the Redis engine: members per channel, shared by every node.

A channel's members (member id -> data) are a hash on the channel's shard, and each
member's clients a set beside it (tabs of one user share a member id); a client's
own entry (channel -> the member id it is present as) sits with its registry entry.
Scripts make each change one step, so ``memberJoined`` and ``memberLeft`` fire once,
cluster-wide, on the node where the change happened.

The client's owner also holds its memberships (``OwnedClient.presence``: channel ->
member id and data), so that a Redis that comes back empty gets them back with the
client (``restore``): a join handled by another node is told to the owner (a ``join``
call, answered before the subscribe is), an unsubscribe forgets it there (with the
``unsub`` call), and a client taken over from another node brings them along (in the
hand-over's answer, or read from Redis when the previous owner does not answer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from pandapush.bayeux import json
from pandapush.engines.redis import scripts
from pandapush.engines.redis.node import Node, OwnedClient
from pandapush.engines.redis.restore import Restorer
from pandapush.engines.redis.rpc import NodeRPC

__all__ = ["Presence"]


class Presence:
    """Joins, members, and leaving a channel; events go to ``notify(event, *args)``."""

    def __init__(self, node: Node, rpc: NodeRPC, restorer: Restorer, notify: Callable[..., None]) -> None:
        self._node = node
        self._rpc = rpc
        self._restorer = restorer
        self._notify = notify
        rpc.handle("join", self._serveJoin)

    def join(self, clientId: str, channel: str, memberId: str, data: Any) -> defer.Deferred[dict[str, Any]]:
        return defer.Deferred.fromCoroutine(self._join(clientId, channel, memberId, data))

    async def _join(self, clientId: str, channel: str, memberId: str, data: Any) -> dict[str, Any]:
        keys, shards = self._node.keys, self._node.shards
        clients, base, _, presence = keys.client(clientId)
        result = await shards.of(clientId).eval(
            scripts.PRESENCE_CLIENT, [clients, presence, base], [clientId, channel, memberId]
        )
        owned = self._node.local.get(clientId)
        if result is None and owned is not None and owned.epoch:
            # Owned here, so perhaps answered as known without Redis (clientExists), and
            # unknown to Redis: a shard that came back empty. Once restored, again.
            await self._restorer.check(shards.index(clientId))
            result = await shards.of(clientId).eval(
                scripts.PRESENCE_CLIENT, [clients, presence, base], [clientId, channel, memberId]
            )
        if result is None:
            return await self._members(channel)
        previous, owner = result
        if previous and previous != memberId:
            left = await shards.of(channel).eval(
                scripts.UNSUBSCRIBE_CHANNEL,
                [keys.nothing, keys.presence(channel), keys.member(channel, previous)],
                [clientId, previous],
            )
            if int(left[2]):
                self._notify("memberLeft", channel, previous)
        encoded = json.dumps(data).decode()
        joined, flat = await shards.of(channel).eval(
            scripts.PRESENCE_JOIN,
            [keys.presence(channel), keys.member(channel, memberId)],
            [clientId, memberId, encoded],
        )
        # Before the reply: Redis may lose the membership any time from now on.
        if owner == self._node.id:
            self._remember(clientId, channel, memberId, encoded)
        elif owner:
            await self._rpc.call(owner, "join", c=clientId, k=channel, m=memberId, d=encoded)
        if int(joined):
            self._notify("memberJoined", channel, memberId, data, clientId)
        return self._decodeMembers(flat)

    def _remember(self, clientId: str, channel: str, memberId: str, encoded: str) -> None:
        client = self._node.local.get(clientId)
        if client is not None:
            client.presence[channel] = (memberId, encoded)

    async def _serveJoin(self, message: dict[str, Any], reply: dict[str, Any]) -> None:
        self._remember(message.get("c", ""), message["k"], message["m"], message["d"])

    async def load(self, client: OwnedClient) -> None:
        """
        Read ``client``'s memberships from Redis (taken over from a node that did not
        hand them over): its channels and member ids, then each member's data.
        """
        node = self._node
        flat = await node.shards.of(client.id).execute("HGETALL", node.keys.client(client.id)[3])
        if isinstance(flat, dict):
            pairs = list(flat.items())
        else:
            flat = list(flat or ())
            pairs = list(zip(flat[::2], flat[1::2], strict=True))
        for channel, memberId in pairs:
            encoded = await node.shards.of(channel).execute("HGET", node.keys.presence(channel), memberId)
            if encoded is not None and channel not in client.presence:
                client.presence[channel] = (memberId, encoded)

    def members(self, channel: str) -> defer.Deferred[dict[str, Any]]:
        return defer.Deferred.fromCoroutine(self._members(channel))

    async def _members(self, channel: str) -> dict[str, Any]:
        node = self._node
        flat = await node.shards.of(channel).execute("HGETALL", node.keys.presence(channel))
        return self._decodeMembers(flat)

    @staticmethod
    def _decodeMembers(flat: Any) -> dict[str, Any]:
        if isinstance(flat, dict):
            return {k: json.loads(v) for k, v in flat.items()}
        flat = list(flat or ())
        return {flat[i]: json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}

    def leave(self, clientId: str, key: str, memberId: str) -> defer.Deferred[tuple[int, int, int]]:
        """
        Take the client out of ``key``'s subscribers and, when it is present there as
        ``memberId`` (not ''), out of that member: fires with (removed, the key is
        vacated, the member left).
        """
        keys = self._node.keys
        d = self._node.shards.of(key).eval(
            scripts.UNSUBSCRIBE_CHANNEL,
            [keys.subscribers(key), keys.presence(key), keys.member(key, memberId)],
            [clientId, memberId],
        )
        return d.addCallback(lambda r: (int(r[0]), int(r[1]), int(r[2])))
