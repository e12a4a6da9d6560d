"""``IEngine.broadcast`` on Redis: one PUBLISH on ``<ns>:bcast``, which every node SUBSCRIBEs to.

Pub/sub is at most once: a node whose SUBSCRIBE connection is down misses what is sent
meanwhile. What is broadcast (a user's connections to end) is acted on at once or not
at all, so that is what it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from pandapush.bayeux import json
from pandapush.engines.redis.node import Node

__all__ = ["Broadcasts"]


class Broadcasts:
    """Sends broadcasts, and hands those that arrive (this node's own too) to their handlers."""

    _log = Logger()

    def __init__(self, node: Node) -> None:
        self._node = node
        self._handlers: dict[str, list[Callable[[Any], None]]] = {}
        node.subscriber.subscribe(node.keys.broadcast).addErrback(
            lambda f: self._log.warn("not subscribed to broadcasts yet: {f}", f=f.getErrorMessage())
        )

    def ready(self) -> defer.Deferred[None]:
        """Fires once broadcasts reach this node."""
        return self._node.subscriber.subscribe(self._node.keys.broadcast)

    def send(self, topic: str, data: Any) -> defer.Deferred[None]:
        node = self._node
        d = node.shards.pubsub.execute("PUBLISH", node.keys.broadcast, json.dumps({"t": topic, "d": data}))
        return d.addCallback(lambda _: None)

    def handle(self, topic: str, handler: Callable[[Any], None]) -> None:
        self._handlers.setdefault(topic, []).append(handler)

    def received(self, text: str) -> None:
        message = json.loads(text)
        topic = message.get("t")
        for handler in list(self._handlers.get(topic, ())):
            try:
                handler(message.get("d"))
            except Exception:
                self._log.failure("broadcast handler for {topic} failed", topic=topic)
