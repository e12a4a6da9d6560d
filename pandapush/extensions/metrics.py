"""Prometheus metrics at ``/metrics``, with ``prometheus-client``.

Counters move once per message or request, never per recipient. Gauges of
current state (clients, connections, queues) are read from the engine and the
transports when Prometheus scrapes, so keeping them costs nothing in between.
The exposition runs in the reactor thread: the state it reads is the reactor's.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.web.resource import Resource
from zope.interface import implementer

from pandapush.bayeux.context import MessageContext
from pandapush.interfaces import IExtension, IRouter

if TYPE_CHECKING:
    from pandapush.transports.resource import BayeuxResource

__all__ = ["ErrorCounter", "Metrics"]


class _StateCollector:
    """Gauges read at scrape time."""

    def __init__(self, router: IRouter, bayeux: BayeuxResource) -> None:
        self.router = router
        self.bayeux = bayeux

    def collect(self) -> Iterator[Metric]:
        engine: Any = self.router.engine
        stats = engine.statistics()
        for name, help in [
            ("clients", "Bayeux clients known to this node's engine."),
            ("subscriptions", "Subscriptions held by this node's engine."),
            ("channels", "Channels and patterns with at least one subscriber."),
            ("queued_messages", "Messages queued for clients with no open connection."),
        ]:
            if name in stats:
                yield GaugeMetricFamily(f"pandapush_{name}", help, value=stats[name])
        held = self.router.heldConnects()
        yield GaugeMetricFamily("pandapush_held_connects", "/meta/connect requests being held.", value=held)
        connections = GaugeMetricFamily(
            "pandapush_connections", "Open connections by transport.", labels=["transport"]
        )
        connections.add_metric(["websocket"], self.bayeux.websocketFactory.openSockets)
        connections.add_metric(["eventsource"], self.bayeux.eventSource.openStreams())
        connections.add_metric(["long-polling"], held)
        yield connections


class _Counts:
    """
    The per-message and per-request counters, as plain integers turned into
    Prometheus counters at scrape time. A ``prometheus_client.Counter`` takes a lock
    on every increment (and ``labels()`` a lookup under another): 4-5 % of a REST
    publish, for values only the reactor thread ever writes.
    """

    def __init__(self) -> None:
        self.published = 0
        self.delivered = 0
        self.httpStatus: collections.Counter[int] = collections.Counter()

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "pandapush_messages_published", "Messages published (Bayeux, REST and server).", self.published
        )
        yield CounterMetricFamily(
            "pandapush_messages_delivered", "Message copies queued for recipients.", self.delivered
        )
        http = CounterMetricFamily(
            "pandapush_http_requests", "HTTP responses by status code.", labels=["status"]
        )
        for status, count in sorted(self.httpStatus.items()):
            http.add_metric([str(status)], count)
        yield http


@implementer(IExtension)
class ErrorCounter:
    """
    Counts Bayeux error replies by code (an outgoing hook: once per reply). Added
    last, so it counts replies as the client will see them.
    """

    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def incoming(self, message: dict[str, Any], context: MessageContext) -> dict[str, Any]:
        return message

    def outgoing(self, reply: dict[str, Any], context: MessageContext) -> dict[str, Any]:
        error = reply.get("error")
        if error is not None:
            code = error.split(":", 1)[0] if isinstance(error, str) else ""
            # A message that arrives with an ``error`` is refused with it, as in Faye, so
            # the text may be the client's: one label per such text would grow the
            # registry (and every scrape) without bound (found by bench/fuzz.py).
            if not (len(code) == 3 and code.isascii() and code.isdigit()):
                code = "other"
            self.counter.labels(code=code).inc()
        return reply


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)


class Metrics:
    """
    The registry, its counters, and the hooks that feed them: the router's publish
    and limit observers (registered here) and :attr:`errorCounter`, an extension for
    whoever orders the router's extensions to add (``pandapush.tap`` adds it last).
    """

    def __init__(self, router: IRouter, bayeux: BayeuxResource) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.counts = _Counts()
        self.registry.register(self.counts)  # type: ignore[arg-type]
        self.errors = Counter(
            "pandapush_bayeux_errors", "Bayeux error replies by code.", ["code"], registry=self.registry
        )
        self.refusals = Counter(
            "pandapush_limit_refusals",
            "Requests refused for exceeding a limit.",
            ["limit"],
            registry=self.registry,
        )
        self.registry.register(_StateCollector(router, bayeux))  # type: ignore[arg-type]
        router.addPublishObserver(self._published)
        router.addLimitObserver(lambda limit: self.refusals.labels(limit=limit).inc())
        self.errorCounter = ErrorCounter(self.errors)
        self.resource = MetricsResource(self.registry)

    def _published(self, channel: str, recipients: int) -> None:
        counts = self.counts
        counts.published += 1
        counts.delivered += recipients

    def requestDone(self, request: Any) -> None:
        """Hook for ``Site.log``: count each finished request by its status."""
        self.counts.httpStatus[request.code] += 1
