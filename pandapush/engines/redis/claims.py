"""Claims and hand-over: a client is owned by the node it last attached a connection to.

A long-poll client whose next connect lands on another node is claimed by that
node (atomically in Redis, which bumps the client's ownership epoch), which
subscribes the client's keys first and then asks the previous owner to hand over:
the old owner drops the client and answers with its queued messages; the new owner
puts them in front of what it buffered meanwhile, removing duplicates by message
id, so nothing is lost or repeated and order is kept. Every attach checks (in the
script that renews the lease) that this node's copy is the current one, and takes
the client back like any other if it is not. A closing node parks its clients'
queues in Redis for the nodes they reconnect to. The engine module's docstring
has the whole design and why.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from pandapush.engines.redis import scripts
from pandapush.engines.redis.node import Node, OwnedClient, RelayedDelivery
from pandapush.engines.redis.presence import Presence
from pandapush.engines.redis.restore import Restorer
from pandapush.engines.redis.rpc import NodeRPC
from pandapush.interfaces import IDeliverySink

__all__ = ["Claims"]


class Claims:
    """Takes clients over from other nodes, hands this node's over, and parks queues at close."""

    _log = Logger()

    def __init__(self, node: Node, rpc: NodeRPC, restorer: Restorer, presence: Presence) -> None:
        self._node = node
        self._rpc = rpc
        self._restorer = restorer
        self._presence = presence
        rpc.handle("handover", self._serveHandover)

    def attach(self, clientId: str, sink: IDeliverySink) -> None:
        """The client's messages go to ``sink`` from now on, once this node owns it."""
        local = self._node.local
        client = local.get(clientId)
        if client is None:
            client = local.add(OwnedClient(clientId))
        client.sink = sink
        if client.held:
            # The claim under way renews the lease and hands out what is queued.
            return
        # Even a client this node has is checked (the claim script also renews its
        # lease): another node may have claimed it a moment ago, its request to hand
        # it over still on its way here. Attached to that stale copy, the connection
        # would be cut off by the hand-over (left unanswered, its lease not renewed:
        # the client expired while it waited). If the copy is stale, the client is
        # taken back like any other.
        client.held = True
        self._node.track(defer.Deferred.fromCoroutine(self._claim(client)), "taking over a client")
        if client.queue and client.held:
            # What is queued goes now, as before (a connect answered at once must not
            # wait for Redis, or it would never get anything); its ids are kept until
            # the check ends, so that a stale copy's messages are not given twice.
            client.sent = {d.messageId for d in client.queue}
            local.handOut(client, sink)

    async def _claim(self, client: OwnedClient) -> None:
        try:
            await self._takeOver(client)
        finally:
            self._checked(client)
            client.sent = None
            waiters, client.claimWaiters = client.claimWaiters, []
            for waiter in waiters:
                waiter.callback(None)

    @staticmethod
    def _checked(client: OwnedClient) -> None:
        client.checking = False
        waiters, client.checkWaiters = client.checkWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    async def _takeOver(self, client: OwnedClient) -> None:
        node = self._node
        clientId = client.id
        keys = node.keys.client(clientId)
        shard = node.shards.of(clientId)
        client.checking = True
        try:
            await node.ready
            sent = node.reactor.seconds()
            result = await shard.eval(
                scripts.CLAIM, keys[:3], [clientId, node.id, 2 * node.expiry, client.epoch]
            )
            if result is None and client.epoch:
                # Unknown to Redis although this node owned it: the shard may have come
                # back empty. Once this node's clients are restored, ask again.
                await self._restorer.check(node.shards.index(clientId))
                sent = node.reactor.seconds()
                result = await shard.eval(
                    scripts.CLAIM, keys[:3], [clientId, node.id, 2 * node.expiry, client.epoch]
                )
        except Exception:
            if node.local.get(clientId) is client:
                if client.epoch:
                    # Redis could not say: carry on with the copy we have, as before.
                    self._claimed(client)
                else:
                    node.drop(clientId)
            raise
        if node.local.get(clientId) is client and result is not None and int(result[0]):
            # Before waking the hand-over requests that waited for the script: one from the
            # claim before ours must see our newer epoch and be answered now. Woken with the
            # old one, it waited for our whole claim, which waited for the asker's: both
            # stood until the call timed out, and the asker carried on without our answer.
            client.epoch = int(result[1])
        if result is not None:
            # Registered, with a lease of 2 * expiry from the script on.
            node.confirm([clientId], sent)
        self._checked(client)
        if node.local.get(clientId) is not client:
            return
        if result is None:
            node.drop(clientId)
            return
        if not int(result[0]):
            self._claimed(client)
            return
        epoch, previous, subscriptions = client.epoch, result[2], result[3:]
        client.subscriptions.update(subscriptions)
        # Subscribe before asking for the old queue: from here on nothing can fall between the two.
        await defer.gatherResults(
            [node.subscribe(client, key) for key in client.subscriptions], consumeErrors=True
        )
        handed: list[list[str]] = []
        loadPresence = False
        if previous and previous != node.id:
            reply = await self._rpc.call(previous, "handover", c=clientId, e=epoch)
            if reply is not None:
                handed = reply.get("queue", [])
            # Its presence memberships, held by its owner for a Redis that comes back empty.
            if reply is not None and "presence" in reply:
                for channel, (memberId, encoded) in reply["presence"].items():
                    client.presence.setdefault(channel, (memberId, encoded))
            else:
                loadPresence = True
            # What a closed previous owner left behind (older than anything handed now).
            parked = await shard.eval(scripts.UNPARK, [node.keys.parked(clientId)])
            handed = [entry.split("\n", 2) for entry in parked or ()] + handed
        if node.local.get(clientId) is not client:
            return
        if client.sent:
            handed = [entry for entry in handed if entry[0] not in client.sent]
        if handed:
            seen: set[str] = set()
            queue: list[RelayedDelivery] = []
            for messageId, channel, payload in handed:
                if messageId not in seen:
                    seen.add(messageId)
                    queue.append(RelayedDelivery(channel, payload.encode(), None, messageId))
            queue += [d for d in client.queue if d.messageId not in seen]
            client.queue = queue
        self._claimed(client)
        if loadPresence:
            # Read afterwards: nothing of the claim waits for it.
            node.track(defer.Deferred.fromCoroutine(self._presence.load(client)), "reading presence")

    def _claimed(self, client: OwnedClient) -> None:
        """The client is this node's now: hand out what waited for the claim."""
        client.held = False
        if client.sink is not None and client.queue:
            self._node.local.handOut(client, client.sink)

    async def _serveHandover(self, message: dict[str, Any], reply: dict[str, Any]) -> None:
        client = self._node.local.get(message.get("c", ""))
        queue = await self.handOver(message.get("c", ""), message.get("e"))
        if queue is not None:
            reply["queue"] = queue
            if client is not None:
                reply["presence"] = client.presence

    async def handOver(self, clientId: str, epoch: int | None) -> list[list[str]] | None:
        """
        Another node claimed the client at ``epoch`` (None from a node that does not
        say) and asks for what this node queued for it: the answer (None if this
        node does not have the client).

        Our copy may be newer: the client came back here after that claim and this
        node took it back (at a higher epoch). Then it stays, and the asker gets a
        copy of its queue (older messages it must not miss; the duplicates are
        removed by id when this node takes its queue back in turn). An older copy is
        given up, once its own claim has ended: its claim's hand-over brings the
        messages before ours, and waiting cannot deadlock since a claim only ever
        waits for older ones. A connection still attached to it is answered now (the
        client has connected elsewhere since), so it neither hangs unanswered nor
        keeps a lease nobody renews.
        """
        node = self._node
        while True:
            client = node.local.get(clientId)
            if client is None:
                return None
            waiter: defer.Deferred[None] = defer.Deferred()
            if client.checking:
                # Only for the script: the rest of our claim may be waiting for the asker.
                client.checkWaiters.append(waiter)
            elif epoch is not None and client.epoch > epoch:
                return self._encodeQueue(client)
            elif client.held:
                client.claimWaiters.append(waiter)
            else:
                break
            # Then look again: the client may have been destroyed, or attached here again.
            await waiter
        sink = client.sink
        node.drop(clientId)
        queue = self._encodeQueue(client)
        if sink is not None:
            node.endSink(clientId, sink, "moved")
        return queue

    @staticmethod
    def _encodeQueue(client: OwnedClient) -> list[list[str]]:
        return [[d.messageId, d.channel, d.payload.decode()] for d in client.queue]

    async def park(self) -> None:
        """
        Leave the queues of this node's clients in Redis for the nodes they will
        reconnect to (a drained node told them to): without this, what was queued
        here between two polls would die with the process. Until the subscriber
        closes, this node still answers hand-overs; a message in both places is
        taken once (the new owner removes duplicates by id).
        """
        node = self._node
        ttl = int(2 * node.expiry) + 1
        parking = []
        for client in node.local.values():
            if not client.queue:
                continue
            entries = [f"{d.messageId}\n{d.channel}\n".encode() + d.payload for d in client.queue]
            parking.append(
                node.shards.of(client.id).eval(scripts.PARK, [node.keys.parked(client.id)], [ttl, *entries])
            )
        if parking:
            results = await defer.DeferredList(parking, consumeErrors=True)
            lost = sum(1 for ok, _ in results if not ok)
            self._log.info(
                "closing: parked the queues of {n} clients ({lost} failed)", n=len(parking), lost=lost
            )
