"""Fan-out over Redis: a message crosses Redis once per node with subscribers.

``publish`` runs one script that PUBLISHes the payload once per expanded key (at
most five for ``/a/b/c``) on ``<ns>:ch:<key>``; Redis sends it once to each node
subscribed to that key, and the node queues it for its local subscribers of the
key (:mod:`pandapush.engines.local`), sharing one Delivery per node (the payload
bytes travel as published, never re-encoded). A client matched by several keys is
served only by the copy of its first matching key (copies carry their key's
index), so it gets the message once. The count a publish answers with comes from
the subscriber sets, on their shards.

A copy's envelope: ``<messageId>\\n<excluded clientId>\\n<channel>\\n<key index>\\n<payload>``,
the message id being ``<publishing nodeId>.<sequence>``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet import defer

from pandapush.bayeux.channel import expand
from pandapush.bayeux.delivery import Delivery
from pandapush.engines.redis import scripts
from pandapush.engines.redis.node import Node, OwnedClient, RelayedDelivery

__all__ = ["Fanout"]


class Fanout:
    """Publishes through Redis, and queues what arrives for this node's clients."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._messageIds = itertools.count()

    def publish(self, delivery: Delivery) -> defer.Deferred[int]:
        node = self._node
        keys = expand(delivery.channel)
        exclude = delivery.exclude or ""
        header = f"{node.id}.{next(self._messageIds)}\n{exclude}\n{delivery.channel}\n"
        published = node.shards.pubsub.eval(
            scripts.PUBLISH, [node.keys.pubsub(k) for k in keys], [header, delivery.payload]
        )
        counted = defer.Deferred.fromCoroutine(self._count(keys, exclude))
        d = defer.gatherResults([published, counted], consumeErrors=True)

        def unwrap(failure: Any) -> Any:
            return failure.value.subFailure if isinstance(failure.value, defer.FirstError) else failure

        return d.addCallbacks(lambda results: results[1], unwrap)

    async def _count(self, keys: Sequence[str], exclude: str) -> int:
        """How many distinct clients a publish reaches (for the reply and statistics)."""
        shards, names = self._node.shards, self._node.keys
        byShard: dict[int, list[str]] = {}
        for key in keys:
            byShard.setdefault(shards.index(key), []).append(names.subscribers(key))
        indexes = list(byShard)
        results = await defer.gatherResults(
            [shards[i].eval(scripts.COUNT, byShard[i], [exclude, "0"]) for i in indexes],
            consumeErrors=True,
        )
        busy = [i for i, r in zip(indexes, results, strict=True) if int(r[0])]
        if len(busy) <= 1:
            return sum(int(r[1]) for r in results)
        # Sets on several shards may share clients: union them here (sharded deployments only).
        members = await defer.gatherResults(
            [shards[i].eval(scripts.COUNT, byShard[i], [exclude, "1"]) for i in busy],
            consumeErrors=True,
        )
        union: set[str] = set()
        for r in members:
            union.update(r[2])
        union.discard(exclude)
        return len(union)

    def received(self, envelope: str) -> None:
        """A copy of a message, for this node's subscribers of one key."""
        messageId, exclude, channel, position, payload = envelope.split("\n", 4)
        keys = expand(channel)
        index = int(position)
        local = self._node.local
        subscribers = local.index.subscribers(keys[index])
        if not subscribers:
            return
        earlier = keys[:index]
        recipients: Iterable[OwnedClient] = subscribers
        if exclude or earlier:
            # A client matched by an earlier key is served by that key's copy.
            recipients = [
                c
                for c in subscribers
                if c.id != exclude and (not earlier or c.subscriptions.isdisjoint(earlier))
            ]
            if not recipients:
                return
        local.enqueue(recipients, RelayedDelivery(channel, payload.encode(), exclude or None, messageId))
