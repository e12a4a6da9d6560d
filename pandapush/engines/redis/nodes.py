"""The live nodes, and the gate that holds publishes after an outage until every node listens.

Pub/sub is at most once: a message reaches the nodes whose SUBSCRIBE connection is
subscribed when Redis runs the ``PUBLISH``. After a Sentinel failover (or a restart of
the server, or connections cut) every node's connections come back at about the same
moment, but not at the same instant; a publish that waited and ran before another
node's SUBSCRIBE connection was back would be acknowledged, yet never reach that
node's clients. So the command connection of the shard that carries pub/sub, made
again, is held (:class:`FailoverGate`, through ``RedisShard.gateReconnections``) until
every live node has shown, on that server itself, that it listens:

- each node's SUBSCRIBE connection subscribes ``<ns>:up:<nodeId>`` after all its other
  channels, on every connection (``RedisSubscriber.setMarker``); Redis runs one
  connection's commands in order, so ``PUBSUB NUMSUB`` counting it there proves the
  rest is subscribed too;
- which nodes are live is in ``<ns>:nodes``, a sorted set each node writes itself to
  every ``expiry / 2`` (:class:`NodeRegistry`), scored by Redis's own clock; the replica
  that is promoted has it, as it has the rest. Each node also remembers the live nodes
  the registry listed at its last write, for a server that came back empty.

A node is counted live if its entry is at most two of its intervals (and a second) older
than this node's own: every node alive when the primary died renewed within one interval
before. One that was SIGKILLed just before the outage is waited for in vain: the gate
gives up after ``patience`` seconds, and says which nodes it did not see. Before, a fixed
0.5 s wait after a failover stood in for the proof (and nothing at all after a restart),
and a node later than that missed what was published meanwhile (seen once under a full
test run's load).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger

from pandapush.engines.redis import scripts
from pandapush.engines.redis.node import Node
from pandapush.redis import RedisUnavailable

__all__ = ["FailoverGate", "NodeRegistry", "liveNodes"]

#: Milliseconds after which the registry forgets a node that stopped saying it is live.
FORGET_AFTER_MS = 3_600_000


def liveNodes(entries: Any, own: str, interval: float) -> list[str]:
    """
    The node ids of a registry reply (id, score, id, score...; bytes or text) that count
    as live: scored at most ``2 * interval + 1`` seconds before ``own``'s entry (or the
    newest, if ``own`` has none). ``own`` always, first.
    """
    scores: dict[str, float] = {}
    if isinstance(entries, list):
        for i in range(0, len(entries) - 1, 2):
            member, score = entries[i], entries[i + 1]
            try:
                nodeId = member.decode() if isinstance(member, bytes) else str(member)
                scores[nodeId] = float(score)
            except (UnicodeDecodeError, ValueError, TypeError):
                continue
    reference = scores.get(own, max(scores.values(), default=0.0))
    oldest = reference - (2 * interval + 1.0) * 1000
    return [own, *sorted(n for n, score in scores.items() if score >= oldest and n != own)]


class NodeRegistry:
    """This node's entry in ``<ns>:nodes``: written every ``interval`` seconds, removed at close."""

    def __init__(self, node: Node, interval: float) -> None:
        self._node = node
        self.interval = interval
        #: The live nodes as the registry listed them at this node's last write.
        self.known: list[str] = [node.id]
        self._loop = task.LoopingCall(self.announce)
        self._loop.clock = node.reactor
        self._loop.start(interval, now=True).addErrback(node.loopFailed, "node registry")

    def announce(self) -> defer.Deferred[Any]:
        node = self._node
        forgetAfter = max(FORGET_AFTER_MS, int(self.interval * 10_000))
        d = node.shards.pubsub.eval(scripts.ANNOUNCE, [node.keys.nodes], [node.id, str(forgetAfter)])

        def listed(entries: Any) -> None:
            self.known = liveNodes(entries, node.id, self.interval)

        d.addCallback(listed)
        # Tracked: the engine's close waits for it, and a failure (Redis away: the next
        # tick will do) is logged at debug level only.
        node.track(d, "node registry")
        return d

    def close(self) -> None:
        """Leave the registry (the engine's close waits for it, as for all tracked work)."""
        if self._loop.running:
            self._loop.stop()
        node = self._node
        if node.shards.pubsub.health.ok:
            # With Redis away, waiting for this would hold the close for the command
            # timeout; the entry ages out of every gate's count on its own.
            node.track(node.shards.pubsub.execute("ZREM", node.keys.nodes, node.id), "leaving the registry")


class FailoverGate:
    """A :data:`~pandapush.redis.sentinel.Gate`: see the module docstring."""

    _log = Logger()

    def __init__(self, node: Node, registry: NodeRegistry, patience: float = 5.0, poll: float = 0.01) -> None:
        self._node = node
        self._registry = registry
        self.patience = patience
        self._poll = poll

    def __call__(self, command: Callable[..., defer.Deferred[Any]]) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(self._wait(command))

    def _ask(self, command: Callable[..., defer.Deferred[Any]], *args: str) -> defer.Deferred[Any]:
        # A server that accepts connections but does not answer (paused) must not hold the
        # connection for ever: failing here closes it, and the endpoint connects again.
        def timedOut(failure: Any) -> Any:
            failure.trap(defer.TimeoutError, defer.CancelledError)
            raise RedisUnavailable(f"no answer to {args[0]} while holding a reconnection")

        d = command(*args)
        d.addTimeout(self._node.shards.pubsub.commandTimeout, self._node.reactor)  # type: ignore[arg-type]
        return d.addErrback(timedOut)

    async def _wait(self, command: Callable[..., defer.Deferred[Any]]) -> None:
        node = self._node
        shard = node.shards.pubsub.address.name
        started = node.reactor.seconds()
        entries = await self._ask(command, "ZRANGE", node.keys.nodes, "0", "-1", "WITHSCORES")
        if not isinstance(entries, list):
            self._log.warn(
                "Redis {shard}: cannot read the live nodes ({reply!r}); waiting only for those last seen",
                shard=shard,
                reply=entries,
            )
        listed = liveNodes(entries, node.id, self._registry.interval)
        nodes = listed + [n for n in self._registry.known if n not in listed]
        channels = [node.keys.up(n) for n in nodes]
        while True:
            reply = await self._ask(command, "PUBSUB", "NUMSUB", *channels)
            counts = dict(zip(reply[0::2], reply[1::2], strict=False)) if isinstance(reply, list) else {}
            missing = [n for n, c in zip(nodes, channels, strict=True) if not counts.get(c, 0)]
            waited = node.reactor.seconds() - started
            if not missing:
                self._log.info(
                    "Redis {shard}: every node ({n}) listens again after {waited:.3f} s; "
                    "sending the commands that waited",
                    shard=shard,
                    n=len(nodes),
                    waited=waited,
                )
                return
            if waited >= self.patience:
                self._log.warn(
                    "Redis {shard}: nodes {missing} do not listen again after {waited:.1f} s "
                    "(stopped, or stalled): sending the commands that waited; their clients miss what "
                    "is published before they are back",
                    shard=shard,
                    missing=", ".join(missing),
                    waited=waited,
                )
                return
            await task.deferLater(node.reactor, self._poll, lambda: None)  # type: ignore[arg-type]
