"""Node-to-node calls over Redis pub/sub.

Each node listens on its node channel, ``<ns>:node:<nodeId>``. A call is one
PUBLISH of ``{"op", "id", "from", ...arguments}`` there, its answer a PUBLISH of
``{"op": "reply", "id", ...}`` on the caller's node channel. PUBLISH reporting
no receiver means the node is gone, and a node that does not answer within
``timeout`` is taken as dead: either way the call fires with None, never hangs.
A call to this node itself (the ``settle`` marker) is answered without a round
trip once it has come back through the SUBSCRIBE connection.

Operations: ``sub``/``unsub`` (a subscription changed through another node: the
owner updates its index before the subscribe is answered), ``handover`` (see
``claims``), ``drop`` (the client was destroyed elsewhere), ``join`` (a presence join
handled by another node: the owner holds the membership, see ``presence``), ``marker``
(nothing).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from pandapush.bayeux import json
from pandapush.engines.redis.node import Node

__all__ = ["Handler", "NodeRPC"]

#: Serves one operation: given the request and the reply to fill in.
Handler = Callable[[dict[str, Any], dict[str, Any]], Awaitable[None]]


class NodeRPC:
    """Calls to other nodes, and the handlers serving theirs."""

    _log = Logger()

    def __init__(self, node: Node, timeout: float) -> None:
        self._node = node
        self._timeout = timeout
        self._calls: dict[int, defer.Deferred[Any]] = {}
        self._callIds = itertools.count()
        self._handlers: dict[str, Handler] = {}

    def handle(self, op: str, handler: Handler) -> None:
        self._handlers[op] = handler

    def call(self, nodeId: str, op: str, **arguments: Any) -> defer.Deferred[dict[str, Any] | None]:
        """
        Ask another node (over its node channel) and fire with its answer, or with
        None if it is not subscribed (gone) or does not answer in time.
        """
        node = self._node
        callId = next(self._callIds)
        answer: defer.Deferred[dict[str, Any] | None] = defer.Deferred()
        self._calls[callId] = answer
        message = json.dumps({"op": op, "id": callId, "from": node.id, **arguments})

        def published(receivers: Any) -> None:
            if int(receivers) == 0 and self._calls.pop(callId, None) is not None:
                answer.callback(None)

        def failed(failure: Any) -> None:
            if self._calls.pop(callId, None) is not None:
                answer.errback(failure)

        def timedOut() -> None:
            if self._calls.pop(callId, None) is not None:
                self._log.warn("node {node} did not answer {op} in time", node=nodeId, op=op)
                answer.callback(None)

        node.shards.pubsub.execute("PUBLISH", node.keys.node(nodeId), message).addCallbacks(published, failed)
        timer = node.reactor.callLater(self._timeout, timedOut)

        def stopTimer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        answer.addBoth(stopTimer)
        return answer

    def received(self, text: str) -> None:
        """A message on this node's channel: an answer to one of our calls, or a call to serve."""
        message = json.loads(text)
        op = message["op"]
        if op == "reply":
            answer = self._calls.pop(message["id"], None)
            if answer is not None:
                answer.callback(message)
            return
        self._node.track(defer.Deferred.fromCoroutine(self._serve(op, message)), f"serving {op}")

    async def _serve(self, op: str, message: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"op": "reply", "id": message["id"]}
        handler = self._handlers.get(op)
        if handler is not None:
            await handler(message, reply)
        node = self._node
        if message["from"] == node.id:
            # A marker to ourselves: answer without a round trip.
            answer = self._calls.pop(message["id"], None)
            if answer is not None:
                answer.callback(reply)
            return
        await node.shards.pubsub.execute("PUBLISH", node.keys.node(message["from"]), json.dumps(reply))

    def close(self) -> None:
        """Answer every call still waiting with None (as from a node that is gone)."""
        for d in list(self._calls.values()):
            if not d.called:
                d.callback(None)
        self._calls.clear()
