"""Presence on the Redis engine: members per channel, shared by every node.

A channel's members (member id -> data) are a hash on the channel's shard, and each
member's clients a set beside it (tabs of one user share a member id); a client's
own entry (channel -> the member id it is present as) sits with its registry entry.
Scripts make each change one step, so ``memberJoined`` and ``memberLeft`` fire once,
cluster-wide, on the node where the change happened. Presence data lives only in
Redis: it is not restored after Redis comes back empty (see REDIS-TODO).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from pandapush.bayeux import json
from pandapush.engines.redis import scripts
from pandapush.engines.redis.node import Node

__all__ = ["Presence"]


class Presence:
    """Joins, members, and leaving a channel; events go to ``notify(event, *args)``."""

    def __init__(self, node: Node, notify: Callable[..., None]) -> None:
        self._node = node
        self._notify = notify

    def join(self, clientId: str, channel: str, memberId: str, data: Any) -> defer.Deferred[dict[str, Any]]:
        return defer.Deferred.fromCoroutine(self._join(clientId, channel, memberId, data))

    async def _join(self, clientId: str, channel: str, memberId: str, data: Any) -> dict[str, Any]:
        keys, shards = self._node.keys, self._node.shards
        clients, _, _, presence = keys.client(clientId)
        previous = await shards.of(clientId).eval(
            scripts.PRESENCE_CLIENT, [clients, presence], [clientId, channel, memberId]
        )
        if previous is None:
            return await self._members(channel)
        if previous and previous != memberId:
            left = await shards.of(channel).eval(
                scripts.UNSUBSCRIBE_CHANNEL,
                [keys.nothing, keys.presence(channel), keys.member(channel, previous)],
                [clientId, previous],
            )
            if int(left[2]):
                self._notify("memberLeft", channel, previous)
        joined, flat = await shards.of(channel).eval(
            scripts.PRESENCE_JOIN,
            [keys.presence(channel), keys.member(channel, memberId)],
            [clientId, memberId, json.dumps(data)],
        )
        if int(joined):
            self._notify("memberJoined", channel, memberId, data, clientId)
        return self._decodeMembers(flat)

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
