"""Fan-out over Redis: a message crosses Redis once per node with subscribers.

``publish`` runs one script that PUBLISHes the payload once per expanded key (at
most five for ``/a/b/c``) on ``<ns>:ch:<key>``; Redis sends it once to each node
subscribed to that key, and the node queues it for its local subscribers of the
key (:mod:`pandapush.engines.local`), sharing one Delivery per node (the payload
bytes travel as published, never re-encoded). A client matched by several keys is
served only by the copy of its first matching key (copies carry their key's
index), so it gets the message once. The count a publish answers with comes from
the subscriber sets, on their shards.

A message with history is appended to its channel's stream in the same script
(:mod:`~pandapush.engines.redis.history`), which closes its payload with its position.

A copy's envelope: ``<messageId>\\n<excluded clientId>\\n<channel>\\n<offset>\\n<key index>\\n<payload>``,
the message id being ``<publishing nodeId>.<sequence>@<accepted>``, the offset 0 without history.
``<accepted>`` is when the publishing node accepted the message (Unix time), so that each node
measures delivery latency from the publish, not from the copy's arrival. Nodes only compare ids,
so nodes of the version before (ids without ``@``, measured from arrival) run beside these.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet import defer

from pandapush.bayeux.channel import expand
from pandapush.bayeux.delivery import Delivery
from pandapush.engines.idempotency import IDEMPOTENCY_TTL
from pandapush.engines.redis import scripts
from pandapush.engines.redis.history import RedisHistory
from pandapush.engines.redis.node import Node, OwnedClient, RelayedDelivery

__all__ = ["Fanout"]


class Fanout:
    """Publishes through Redis, and queues what arrives for this node's clients."""

    def __init__(self, node: Node, history: RedisHistory) -> None:
        self._node = node
        self.history = history
        self._messageIds = itertools.count()

    def _scriptArgs(self, delivery: Delivery, keys: Sequence[str]) -> tuple[list[str], list[Any]]:
        """The PUBLISH script's keys and arguments for one message (with its history's, its key's)."""
        node = self._node
        messageId = f"{node.id}.{next(self._messageIds)}@{delivery.accepted:.6f}"
        header = f"{messageId}\n{delivery.exclude or ''}\n{delivery.channel}\n"
        channels = [node.keys.pubsub(k) for k in keys]
        history = self.history.publishArgs(delivery.channel, delivery.head)
        if history is None:
            args: list[Any] = [header, delivery.payload, 0, 0, 0, ""]
        else:
            channels += history[0]
            args = [header, delivery.head, *history[1]]
        if delivery.idempotencyKey is None:
            return channels, [*args, 0]
        channels.append(node.keys.idempotency(delivery.idempotencyKey))
        return channels, [*args, int(IDEMPOTENCY_TTL * 1000)]

    def publish(self, delivery: Delivery) -> defer.Deferred[int]:
        node = self._node
        keys = expand(delivery.channel)
        exclude = delivery.exclude or ""
        published = node.shards.pubsub.eval(scripts.PUBLISH, *self._scriptArgs(delivery, keys))
        counted = defer.Deferred.fromCoroutine(self._count(keys, exclude))
        d = defer.gatherResults([published, counted], consumeErrors=True)

        def unwrap(failure: Any) -> Any:
            return failure.value.subFailure if isinstance(failure.value, defer.FirstError) else failure

        def done(results: list[Any]) -> int:
            return 0 if _positioned(delivery, *results[0]) else int(results[1])

        return d.addCallbacks(done, unwrap)

    def publishBatch(self, deliveries: Sequence[Delivery]) -> defer.Deferred[list[int]]:
        """
        Publish several messages in order: one script for all of them on the pub/sub shard,
        one count script per shard (a server's batch costs two round trips, not two per message).
        """
        node = self._node
        expanded = [expand(d.channel) for d in deliveries]
        channels: list[str] = []
        args: list[Any] = []
        for delivery, keys in zip(deliveries, expanded, strict=True):
            messageKeys, messageArgs = self._scriptArgs(delivery, keys)
            channels += messageKeys
            args += [len(keys), *messageArgs]
        published = node.shards.pubsub.eval(scripts.PUBLISH_BATCH, channels, args)
        excluded = [d.exclude or "" for d in deliveries]
        counted = defer.Deferred.fromCoroutine(self._countBatch(expanded, excluded))
        d = defer.gatherResults([published, counted], consumeErrors=True)

        def unwrap(failure: Any) -> Any:
            return failure.value.subFailure if isinstance(failure.value, defer.FirstError) else failure

        def done(results: list[Any]) -> list[int]:
            positions, counts = results
            for i, delivery in enumerate(deliveries):
                if _positioned(delivery, positions[2 * i], positions[2 * i + 1]):
                    counts[i] = 0
            return counts  # type: ignore[no-any-return]

        return d.addCallbacks(done, unwrap)

    async def _countBatch(self, expanded: Sequence[Sequence[str]], excluded: Sequence[str]) -> list[int]:
        shards, names = self._node.shards, self._node.keys
        byShard: dict[int, tuple[list[str], list[Any]]] = {}
        for keys, exclude in zip(expanded, excluded, strict=True):
            mine: dict[int, list[str]] = {}
            for key in keys:
                mine.setdefault(shards.index(key), []).append(names.subscribers(key))
            for index in range(len(shards)):
                sets, args = byShard.setdefault(index, ([], []))
                found = mine.get(index, [])
                sets += found
                args += [len(found), exclude]
        indexes = [i for i, (sets, _) in byShard.items() if sets]
        answers = await defer.gatherResults(
            [shards[i].eval(scripts.COUNT_BATCH, *byShard[i]) for i in indexes], consumeErrors=True
        )
        counts = [0] * len(expanded)
        busy = [0] * len(expanded)
        for answer in answers:
            for position in range(len(expanded)):
                busy[position] += 1 if int(answer[2 * position]) else 0
                counts[position] += int(answer[2 * position + 1])
        for position, shardsBusy in enumerate(busy):
            if shardsBusy > 1:
                # Sets on several shards may share clients (sharded deployments only).
                counts[position] = await self._count(expanded[position], excluded[position])
        return counts

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
        messageId, exclude, channel, offset, position, payload = envelope.split("\n", 5)
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
        delivery = RelayedDelivery(channel, payload.encode(), exclude or None, messageId)
        delivery.offset = int(offset)
        local.enqueue(recipients, delivery)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _positioned(delivery: Delivery, offset: Any, epoch: Any) -> bool:
    """Give ``delivery`` the position the script answered; True if it was a duplicate."""
    offset = int(offset)
    if offset < 0:
        # A key seen before: the first publish's "<offset> <epoch>".
        first, _, firstEpoch = _text(epoch).partition(" ")
        delivery.duplicate = True
        delivery.offset, delivery.epoch = int(first), firstEpoch or None
        return True
    if offset:
        delivery.position(offset, _text(epoch))
    return False
