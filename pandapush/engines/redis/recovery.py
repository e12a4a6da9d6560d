"""Resuming a client whose session another node owns (a long-poller not balanced to one node).

A client's queue is on the node that owns it (``node``), and a subscribe handled by
another node is forwarded to the owner (``subscriptions``). A resume must be too, or the
history would be queued where nobody delivers it: the node handling the subscribe asks
the owner to hold the client's queue (``hold``: messages queue, none is handed out), makes
the subscription, reads the history (one script, here), and sends the owner what to queue
in front (``resume``), which puts it there, drops the live duplicates by offset and lets
the queue go: the same seam as a local recovery (:func:`~pandapush.engines.history.recoverLocally`),
two calls to the owner more. A hold the asker never ends (it died) ends by itself after
:data:`HOLD_TIMEOUT`. If the owner cannot hold (it lost the client, or is gone), the
subscription is answered ``"unavailable"`` and nothing old is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall

from pandapush.bayeux.delivery import Delivery
from pandapush.engines.history import readRequests, recoveries
from pandapush.engines.redis.history import RedisHistory
from pandapush.engines.redis.node import Node, OwnedClient, RelayedDelivery
from pandapush.engines.redis.rpc import NodeRPC
from pandapush.interfaces import Position, Recovery

__all__ = ["HOLD_TIMEOUT", "RemoteRecovery"]

#: Seconds the owner holds a client's queue for a node that does not come back to end it.
HOLD_TIMEOUT = 5.0


class RemoteRecovery:
    """Both sides: asking the owner to hold and resume, and serving those calls as the owner."""

    def __init__(
        self,
        node: Node,
        rpc: NodeRPC,
        history: RedisHistory,
        makeDelivery: Callable[[str, int, str, bytes], RelayedDelivery],
    ) -> None:
        self._node = node
        self._rpc = rpc
        self._history = history
        self._make = makeDelivery
        # clientId -> the holds this node (as owner) keeps for other nodes, oldest first.
        self._holds: dict[str, list[tuple[IDelayedCall, OwnedClient]]] = {}
        rpc.handle("hold", self._serveHold)
        rpc.handle("resume", self._serveResume)

    async def recover(
        self,
        clientId: str,
        subscribe: Callable[[], defer.Deferred[Any]],
        wanted: Mapping[str, Position | None],
        latest: Collection[str],
    ) -> dict[str, Recovery]:
        node = self._node
        owner = await node.shards.of(clientId).execute("HGET", node.keys.client(clientId)[1], "owner")
        owner = owner.decode() if isinstance(owner, bytes) else (owner or "")
        held = False
        if owner and owner != node.id:
            answer = await self._rpc.call(owner, "hold", c=clientId)
            held = bool(answer and answer.get("held"))
        pending = held
        try:
            await subscribe()
            since, limits = readRequests(wanted, latest, held)
            pages = await self._history.read(since, limits)
            outcomes, queued, sent = recoveries(pages, wanted, latest, held, limits)
            if not held:
                return outcomes
            entries = [
                [channel, offset, epoch, payload.decode()] for channel, offset, epoch, payload in queued
            ]
            pending = False
            answer = await self._rpc.call(owner, "resume", c=clientId, q=entries, s=sent)
            if answer is None or not answer.get("resumed"):
                # The owner let the client go (or the hold ran out) meanwhile: nothing was sent.
                outcomes = {
                    channel: Recovery(outcome.position, "unavailable")
                    if wanted.get(channel) is not None or channel in latest
                    else outcome
                    for channel, outcome in outcomes.items()
                }
            return outcomes
        finally:
            if pending:
                release = self._rpc.call(owner, "resume", c=clientId, q=[], s={})
                node.track(release, "releasing a client held for a recovery")

    # the owner's side

    async def _serveHold(self, message: dict[str, Any], reply: dict[str, Any]) -> None:
        clientId = message.get("c", "")
        client = self._node.local.get(clientId)
        if client is None:
            reply["held"] = False
            return
        client.recovering += 1
        timer = self._node.reactor.callLater(HOLD_TIMEOUT, self._expire, clientId)
        self._holds.setdefault(clientId, []).append((timer, client))
        reply["held"] = True

    def _take(self, clientId: str) -> OwnedClient | None:
        """End the oldest hold of ``clientId``: the client it held, if it is still the one held here."""
        holds = self._holds.get(clientId)
        if not holds:
            return None
        timer, client = holds.pop(0)
        if not holds:
            del self._holds[clientId]
        if timer.active():
            timer.cancel()
        return client if self._node.local.get(clientId) is client else None

    def _expire(self, clientId: str) -> None:
        client = self._take(clientId)
        if client is not None:
            self._node.local.resume(client, [], {})

    async def _serveResume(self, message: dict[str, Any], reply: dict[str, Any]) -> None:
        client = self._take(message.get("c", ""))
        if client is None:
            reply["resumed"] = False
            return
        queued: list[Delivery] = [
            self._make(str(c), int(o), str(e), str(p).encode()) for c, o, e, p in message.get("q", [])
        ]
        sent = {str(channel): int(offset) for channel, offset in (message.get("s") or {}).items()}
        # No wait for the live copies of what the asker read (as a local recovery has,
        # Node.caughtUp): this call was PUBLISHed after the asker's READ was answered and
        # came on the SUBSCRIBE connection that brings them, so they are queued already.
        self._node.local.resume(client, queued, sent)
        reply["resumed"] = True
