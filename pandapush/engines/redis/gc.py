"""Expiry: deadlines and leases in the registry, and the garbage collector.

The registry (``<ns>:clients``) is a sorted set of deadlines per shard. A detached
client gets ``now + expiry``; an attached one a lease of ``2 * expiry`` that its
owner renews every ``expiry / 2``, so clients of a crashed node expire (and their
presence members leave) within about ``2 * expiry``. The collector runs on
whichever node holds ``<ns>:gc`` (SET NX PX) and destroys expired clients with a
script that re-checks the deadline, so a destruction happens once. It also
finishes destroys that their node began and did not end (``<ns>:dying``, see
:mod:`~pandapush.engines.redis.destroy`) once their deadline has passed, and every
sweep tries again the destroys this node had to postpone while Redis did not answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger

from pandapush.engines.redis import scripts
from pandapush.engines.redis.destroy import Destroyer
from pandapush.engines.redis.node import Node
from pandapush.engines.redis.restore import Restorer

__all__ = ["Expiry"]

#: Expired clients one collection destroys per shard.
COLLECT_BATCH = 500
#: Attached clients whose leases one script renews.
RENEW_BATCH = 1000


class Expiry:
    """
    Moves deadlines, renews this node's leases (``renewer``) and collects expired
    clients and unfinished destroys (``sweeper``), through the ``destroyer``.
    """

    _log = Logger()

    def __init__(
        self,
        node: Node,
        restorer: Restorer,
        destroyer: Destroyer,
        sweepInterval: float,
    ) -> None:
        self._node = node
        self._restorer = restorer
        self._destroyer = destroyer
        self._sweepInterval = sweepInterval
        self._collecting: defer.Deferred[None] | None = None
        reactor, expiry = node.reactor, node.expiry
        self.sweeper = task.LoopingCall(self._sweep)
        self.sweeper.clock = reactor
        self.sweeper.start(sweepInterval, now=False).addErrback(node.loopFailed, "sweep")
        self.renewer = task.LoopingCall(self._renewLeases)
        self.renewer.clock = reactor
        self.renewer.start(max(expiry / 2, 0.05), now=False).addErrback(node.loopFailed, "lease renewal")

    def stop(self) -> None:
        for loop in (self.sweeper, self.renewer):
            if loop.running:
                loop.stop()

    def setDeadline(self, clientIds: Sequence[str], seconds: float) -> None:
        """Give registered clients ``seconds`` to live from now (in the background)."""
        node = self._node
        byShard: dict[int, list[str]] = {}
        for clientId in clientIds:
            byShard.setdefault(node.shards.index(clientId), []).append(clientId)
        sent = node.reactor.seconds()
        for i, ids in byShard.items():
            d = node.shards[i].eval(scripts.TOUCH, [node.keys.clients], [seconds, *ids])
            if seconds >= node.expiry:
                d.addCallback(self._touched, ids, sent)
            node.track(d.addErrback(node.shards.failedOn, i), "moving a deadline")

    def _touched(self, missing: Any, ids: list[str], sent: float) -> None:
        gone = set(missing or ())
        self._node.confirm((c for c in ids if c not in gone), sent)

    def _renewLeases(self) -> None:
        node = self._node
        attached = [c.id for c in node.local.values() if c.sink is not None]
        for start in range(0, len(attached), RENEW_BATCH):
            self.setDeadline(attached[start : start + RENEW_BATCH], 2 * node.expiry)
        # As often as leases: a shard that came back empty is noticed (and this node's
        # clients restored) before their leases would have run out.
        self._restorer.checkAll()

    def _sweep(self) -> None:
        self._destroyer.retry()
        if self._collecting is None:
            d = self._collecting = defer.Deferred.fromCoroutine(self._collect())
            # It may fire at once (a call failing at once), clearing ``_collecting``.
            d.addBoth(self._collected)
            self._node.track(d, "garbage collection")

    def _collected(self, result: Any) -> Any:
        self._collecting = None
        return result

    async def _collect(self) -> None:
        node = self._node
        # One node at a time: the lock expires by itself if its holder dies.
        lockMs = max(int(self._sweepInterval * 1000), 100)
        got = await node.shards.pubsub.execute("SET", node.keys.collector, node.id, "NX", "PX", lockMs)
        if got is None:
            return
        for index, shard in enumerate(node.shards):
            if index in self._restorer.restoring or node.shards.troubledWithin(index, node.expiry):
                # Leases could not be renewed while the shard was unreachable, and this
                # node's clients may be being restored on it: let their owners catch up
                # before treating anyone as expired.
                continue
            expired = await shard.eval(scripts.EXPIRED, [node.keys.clients], [COLLECT_BATCH])
            for clientId in expired or ():
                self._log.debug("client {clientId} expired", clientId=clientId)
                await self._destroyer.destroy(clientId, "expired", True)
            # Destroys whose node did not finish them (it died, or Redis's answers were
            # lost): their subscriber sets and keys would otherwise stay for good.
            unfinished = await shard.eval(scripts.EXPIRED, [node.keys.dying], [COLLECT_BATCH])
            for clientId in unfinished or ():
                self._log.debug("finishing the destroy of {clientId}", clientId=clientId)
                await self._destroyer.destroy(clientId, "expired", True)
