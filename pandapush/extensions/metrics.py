"""Prometheus metrics at ``/metrics``, with ``prometheus-client``.

Counters move once per message or request, never per recipient. Gauges of
current state (clients, connections, queues) are read from the engine and the
transports when Prometheus scrapes, so keeping them costs nothing in between.
The exposition runs in the reactor thread: the state it reads is the reactor's.

Beside ours: ``prometheus_client``'s process collector (CPU, memory, open files),
its platform and garbage collector ones (``python_info``, ``python_gc_*``), and
``pandapush_build_info``. Two histograms, kept as plain bucket counts like the
counters: HTTP request duration by route family (a fixed set of labels, whatever
paths clients send), and delivery latency, the time from a publish being accepted
to the flush (once per reactor turn) that writes it to the connections of its
recipients, observed once per message per flush, never per recipient.
"""

from __future__ import annotations

import bisect
import collections
import platform
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.web.resource import Resource
from zope.interface import implementer

from pandapush import __version__
from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.message import CONNECT, DISCONNECT, HANDSHAKE, SUBSCRIBE, UNSUBSCRIBE
from pandapush.interfaces import PUBLISHES, IRouter, IScopedExtension

if TYPE_CHECKING:
    from pandapush.bayeux.delivery import Delivery
    from pandapush.transports.resource import BayeuxResource

__all__ = ["ROUTE_FAMILIES", "ErrorCounter", "Histogram", "Metrics", "routeFamily"]

#: The first path segment -> the ``route`` label of the request duration (anything else: ``other``).
ROUTE_FAMILIES: dict[bytes, str] = {
    b"push": "push",
    b"channel": "publish",
    b"apps": "api",
    b"openapi.json": "api",
    b"admin": "admin",
    b"metrics": "metrics",
    b"health_check.json": "health",
    b"ready": "health",
    b"live": "health",
    b"client.js": "client",
    b"client.mjs": "client",
    b"client.d.ts": "client",
    b"": "root",
}

#: Seconds. Requests: a REST publish takes milliseconds, a held long-poll connect --timeout (30 s).
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: Seconds. Delivery: a turn of the reactor, or the Redis round trip and the engine's flush window.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


#: Why a resume missed messages (``ext.unrecovered``'s values, pandapush.engines.history.recovery).
RESUME_GAPS = ("epoch changed", "position too old", "no history")


def routeFamily(path: bytes) -> str:
    """The ``route`` label for a request path: one of :data:`ROUTE_FAMILIES`' values, or ``other``."""
    first = path.split(b"?", 1)[0].split(b"/", 2)[1:2]
    return ROUTE_FAMILIES.get(first[0] if first else b"", "other")


class Histogram:
    """
    Bucket counts and a sum, written by the reactor thread alone. ``prometheus_client``'s
    ``Histogram`` takes a lock per observation, for values nothing else writes.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        # One more than the bounds: the +Inf bucket.
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # Prometheus buckets are "less than or equal": bisect_left finds the first bound >= value.
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts per upper bound, as Prometheus writes them."""
        cumulative, running = [], 0
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(running)))
        return cumulative


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
        failures = CounterMetricFamily(
            "pandapush_websocket_failures",
            "Websockets failed or dropped for protocol errors, by close code, unexpected pongs and refused "
            "openings (each logged once a minute at most).",
            labels=["kind"],
        )
        for kind, count in sorted(self.bayeux.websocketFactory.failureLog.totals.items()):
            failures.add_metric([kind], count)
        yield failures


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
        self.httpDuration: dict[str, Histogram] = {}
        self.deliveryLatency = Histogram(LATENCY_BUCKETS)

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
        duration = HistogramMetricFamily(
            "pandapush_http_request_duration_seconds",
            "HTTP requests from their headers to their answer, by route family (push includes held "
            "long-poll connects).",
            labels=["route"],
        )
        for route, histogram in sorted(self.httpDuration.items()):
            duration.add_metric([route], histogram.buckets(), histogram.total)
        yield duration
        latency = self.deliveryLatency
        yield HistogramMetricFamily(
            "pandapush_delivery_latency_seconds",
            "From a publish accepted (on any node) to the flush writing it to its recipients here.",
            buckets=latency.buckets(),
            sum_value=latency.total,
        )


@implementer(IScopedExtension)
class ErrorCounter:
    """
    Counts Bayeux error replies by code (an outgoing hook: once per reply), and the
    subscribes that resumed from history (``ext.recovered`` in their reply; given
    ``resumes``, the counts). Added last, so it counts replies as the client will see them.
    """

    # What the hooks act on (IScopedExtension): the router skips them for the rest.
    incomingOn: frozenset[str] = frozenset()
    outgoingOn: frozenset[str] = frozenset(
        {HANDSHAKE, CONNECT, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT, PUBLISHES}
    )
    # A publish's reply matters here only when it is an error: the router skips this hook
    # for the others (see Extensions._index; last of the publish hooks, as it is added).
    outgoingErrorsOn: frozenset[str] = frozenset({PUBLISHES})

    def __init__(self, counter: Counter, resumes: _Resumes | None = None) -> None:
        self.counter = counter
        self.resumes = resumes

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
        elif self.resumes is not None and reply.get("channel") == "/meta/subscribe":
            ext = reply.get("ext")
            if isinstance(ext, dict) and "recovered" in ext:
                self.resumes.count(ext)
        return reply


class _Resumes:
    """Subscribes that asked to resume (or for the latest message), and the channels not recovered."""

    def __init__(self) -> None:
        self.results: collections.Counter[str] = collections.Counter()
        self.gaps: collections.Counter[str] = collections.Counter()

    def count(self, ext: dict[str, Any]) -> None:
        self.results["recovered" if ext["recovered"] is True else "unrecovered"] += 1
        unrecovered = ext.get("unrecovered")
        if isinstance(unrecovered, dict):
            for why in unrecovered.values():
                self.gaps[why if why in RESUME_GAPS else "other"] += 1

    def collect(self) -> Iterator[Metric]:
        results = CounterMetricFamily(
            "pandapush_resumes",
            "Subscribes resuming from a position or asking for the latest message, by result.",
            labels=["result"],
        )
        for result in ("recovered", "unrecovered"):
            results.add_metric([result], self.results[result])
        yield results
        gaps = CounterMetricFamily(
            "pandapush_resume_gaps",
            "Channels a resuming subscribe could not recover entirely, by reason.",
            labels=["reason"],
        )
        for reason in (*RESUME_GAPS, "other"):
            gaps.add_metric([reason], self.gaps[reason])
        yield gaps


class _Fixed:
    """Metrics that never change (build information)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


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

    def __init__(self, router: IRouter, bayeux: BayeuxResource, rev: str = "dev") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # The process (CPU, memory, descriptors), the interpreter, its garbage collector.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        if GC_COLLECTOR is not None:
            GCCollector(registry=self.registry)
        info = GaugeMetricFamily(
            "pandapush_build_info",
            "Always 1: the pandapush version, revision and Python running here.",
            labels=["version", "rev", "python"],
        )
        info.add_metric([__version__, rev, platform.python_version()], 1)
        self.registry.register(_Fixed([info]))  # type: ignore[arg-type]
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
        # Engines built in offer it; a third-party one may not (no latency then).
        observeFlushes = getattr(router.engine, "addFlushObserver", None)
        if observeFlushes is not None:
            observeFlushes(self._flushed)
        router.addLimitObserver(lambda limit: self.refusals.labels(limit=limit).inc())
        self.resumes = _Resumes()
        self.registry.register(self.resumes)  # type: ignore[arg-type]
        self.errorCounter = ErrorCounter(self.errors, self.resumes)
        self.resource = MetricsResource(self.registry)

    def _published(self, channel: str, recipients: int) -> None:
        counts = self.counts
        counts.published += 1
        counts.delivered += recipients

    def _flushed(self, deliveries: Sequence[Delivery]) -> None:
        # Histogram.observe, inlined, with the first bucket (under 0.5 ms: nearly every
        # message delivered in the turn it was published) found without a bisect: this
        # runs for every message delivered, ~1.6 % of the reactor thread in the
        # private-bayeux benchmark. The counts and the running sum are observe's.
        now = time.time()
        histogram = self.counts.deliveryLatency
        bounds = histogram.bounds
        first = bounds[0]
        counts = histogram.counts
        total = histogram.total
        for delivery in deliveries:
            latency = now - delivery.accepted
            # Another node's clock may be a little ahead of ours (max(0.0, latency)).
            if not latency > 0.0:
                latency = 0.0
            counts[0 if latency <= first else bisect.bisect_left(bounds, latency)] += 1
            total += latency
        histogram.total = total

    def requestDone(self, request: Any) -> None:
        """Hook for ``Site.log``: count each finished request by its status, and time it by route."""
        counts = self.counts
        counts.httpStatus[request.code] += 1
        started = getattr(request, "started", 0.0)
        if started:
            route = routeFamily(request.path)
            histogram = counts.httpDuration.get(route)
            if histogram is None:
                histogram = counts.httpDuration[route] = Histogram(REQUEST_BUCKETS)
            histogram.observe(time.monotonic() - started)
