"""
``/metrics``: the collectors, build information, the two histograms, and under
``--workers`` one scrape answering for every process (``pandapush/workers/metrics.py``).

The pieces run in this process (the machine-wide gathering over real Unix sockets);
then ``twistd pandapush --workers 2`` for real: publishes steered to each worker are
counted under that worker's label in a scrape, whichever worker takes the scrape.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import treq
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import protocol, reactor, threads
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.test.requesthelper import DummyRequest

import pandapush
from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.delivery import Delivery
from pandapush.engines.memory import MemoryEngine
from pandapush.engines.redis.node import RelayedDelivery
from pandapush.extensions.metrics import LATENCY_BUCKETS, Histogram, Metrics, routeFamily
from pandapush.router import BayeuxRouter
from pandapush.transports.resource import BayeuxResource
from pandapush.workers.metrics import MachineMetrics, MachineMetricsResource
from tests.engine_suite import RecordingSink
from tests.support.cluster import KEY, SECRET, channel
from tests.support.failover import dataOn
from tests.support.waiting import eventually, sleep
from tests.test_logs import TwistdProcess
from tests.test_workers import WorkersCase

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def exported(text: str) -> set[str]:
    """Every name a query may use against this exposition: families (with their suffixes) and samples."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [])
        names.update(family.name + suffix for suffix in suffixes)
        names.update(s.name for s in family.samples)
    return names


class HistogramTests(TestCase):
    def test_buckets(self) -> None:
        """Buckets count values less than or equal to their bound, cumulatively; +Inf takes the rest."""
        histogram = Histogram([0.1, 1])
        for value in (0.05, 0.1, 0.5, 1, 7):
            histogram.observe(value)
        self.assertEqual(histogram.buckets(), [("0.1", 2.0), ("1.0", 4.0), ("+Inf", 5.0)])
        self.assertAlmostEqual(histogram.total, 8.65)

    def test_routeFamilies(self) -> None:
        """A bounded set of route labels, whatever path a client sends."""
        cases = {
            b"/push": "push",
            b"/push/websocket": "push",
            b"/channel/app/public/x": "publish",
            b"/apps/app/events": "api",
            b"/admin/api/apps": "admin",
            b"/health_check.json": "health",
            b"/metrics": "metrics",
            b"/client.js": "client",
            b"/": "root",
            b"": "root",
            b"/\xff\xfe/../etc": "other",
            b"/" + b"x" * 10000: "other",
        }
        for path, route in cases.items():
            self.assertEqual(routeFamily(path), route, path)


class CollectorTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.engine = MemoryEngine(self.clock, timeout=30, expiry=10)
        self.router = BayeuxRouter(self.engine, self.clock, timeout=30)
        self.metrics = Metrics(self.router, BayeuxResource(self.router, self.clock), rev="abc123")

    def scrape(self) -> str:
        body: bytes = self.metrics.resource.render_GET(DummyRequest([b"metrics"]))
        return body.decode()

    def test_processPythonAndBuild(self) -> None:
        """The process and Python collectors, and pandapush_build_info with the version and revision."""
        found = samples(self.scrape())
        names = {name for name, _ in found}
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
            self.assertIn(name, names)
        self.assertIn("python_info", names)
        self.assertIn("python_gc_collections_total", names)
        (build,) = [labels for name, labels in found if name == "pandapush_build_info"]
        self.assertEqual(dict(build)["version"], pandapush.__version__)
        self.assertEqual(dict(build)["rev"], "abc123")

    def test_deliveryLatencyOncePerMessage(self) -> None:
        """Three messages to two connected subscribers: three observations, not six, of their age."""
        for _ in range(2):
            clientId = self.successResultOf(self.engine.createClient())
            self.engine.attach(clientId, RecordingSink())
            self.successResultOf(self.engine.subscribe(clientId, "/a"))
        for n in range(3):
            delivery = Delivery.fromMessage({"channel": "/a", "data": n})
            delivery.accepted -= 0.2  # accepted 200 ms ago
            self.assertEqual(self.successResultOf(self.engine.publish(delivery)), 2)
        self.clock.advance(0)
        found = samples(self.scrape())
        self.assertEqual(found[("pandapush_delivery_latency_seconds_count", ())], 3)
        self.assertEqual(found[("pandapush_delivery_latency_seconds_bucket", (("le", "0.1"),))], 0)
        self.assertEqual(found[("pandapush_delivery_latency_seconds_bucket", (("le", "0.25"),))], 3)
        self.assertGreaterEqual(found[("pandapush_delivery_latency_seconds_sum", ())], 0.6)

    def test_deliveryLatencyAsObserve(self) -> None:
        """
        The flush observer counts each message's age as Histogram.observe would, clamped at
        zero: at each bound's edges, a clock ahead (negative ages), and past the last bound.
        """
        now = 1_700_000_000.0
        ages = [-1.0, -0.0, 0.0, 1e-9, 0.0004, 0.0005, 0.00051, 0.001, 0.3, 5, 5.0001, 100.0]
        ages += [bound for bound in LATENCY_BUCKETS]
        deliveries = [Delivery("/a", b"{}", accepted=now - age) for age in ages]
        expected = Histogram(LATENCY_BUCKETS)
        for delivery in deliveries:
            expected.observe(max(0.0, now - delivery.accepted))
        self.patch(time, "time", lambda: now)
        self.metrics._flushed(deliveries[:3])
        self.metrics._flushed(deliveries[3:])
        self.metrics._flushed([])
        histogram = self.metrics.counts.deliveryLatency
        self.assertEqual(histogram.counts, expected.counts)
        self.assertEqual(histogram.total, expected.total)
        self.assertEqual(histogram.buckets(), expected.buckets())

    def test_requestDuration(self) -> None:
        """Requests timed from their headers, by route family; a request never started is not timed."""
        now = time.monotonic()
        for path, took in [(b"/channel/a/public/x", 0.003), (b"/channel/b/public/y", 0.2), (b"/push", 20.0)]:
            self.metrics.requestDone(SimpleNamespace(code=200, path=path, started=now - took))
        self.metrics.requestDone(SimpleNamespace(code=400, path=b"/push", started=0.0))
        found = samples(self.scrape())
        publish = (("route", "publish"),)
        self.assertEqual(found[("pandapush_http_request_duration_seconds_count", publish)], 2)
        self.assertEqual(
            found[("pandapush_http_request_duration_seconds_bucket", (("le", "0.005"), *publish))], 1
        )
        self.assertEqual(found[("pandapush_http_request_duration_seconds_count", (("route", "push"),))], 1)
        self.assertEqual(found[("pandapush_http_requests_total", (("status", "400"),))], 1)

    def send(self, message: dict[str, Any]) -> dict[str, Any]:
        processed = self.router.process([message], MessageContext("long-polling"))
        replies: list[Any] = self.successResultOf(processed)
        return replies[0]  # type: ignore[no-any-return]

    def test_resumes(self) -> None:
        """Subscribes resuming from history, by result, and the channels not recovered, by reason."""
        self.router.addExtension(self.metrics.errorCounter)
        handshake = {
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["long-polling"],
        }
        clientId = self.send(dict(handshake))["clientId"]
        self.send({"channel": "/a/b", "data": 0, "clientId": clientId})
        first = self.send({"channel": "/meta/subscribe", "clientId": clientId, "subscription": "/a/b"})
        position = first["ext"]["positions"]["/a/b"]
        for n in (1, 2):
            self.send({"channel": "/a/b", "data": n, "clientId": clientId})
        other = self.send(dict(handshake))["clientId"]
        resumed = {"channel": "/meta/subscribe", "clientId": other, "subscription": "/a/b"}
        self.assertIs(self.send({**resumed, "ext": {"resume": position}})["ext"]["recovered"], True)
        stale = self.send({**resumed, "ext": {"resume": {"offset": 1, "epoch": "gone"}}})
        self.assertEqual(stale["ext"]["unrecovered"], {"/a/b": "epoch changed"})
        found = samples(self.scrape())
        self.assertEqual(found[("pandapush_resumes_total", (("result", "recovered"),))], 1)
        self.assertEqual(found[("pandapush_resumes_total", (("result", "unrecovered"),))], 1)
        self.assertEqual(found[("pandapush_resume_gaps_total", (("reason", "epoch changed"),))], 1)
        self.assertEqual(found[("pandapush_resume_gaps_total", (("reason", "other"),))], 0)

    def test_publishErrorsCountedThroughRouter(self) -> None:
        """
        Through the router, which calls the error counter for a publish's error replies
        only (``outgoingErrorsOn``): each refused publish counted by its code, none other.
        """
        self.router.addExtension(self.metrics.errorCounter)
        handshake = {
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["long-polling"],
        }
        clientId = self.send(handshake)["clientId"]
        for message in [
            {"channel": "/a/b", "data": 1, "clientId": clientId},
            {"channel": "/a/b", "clientId": clientId},
            {"channel": "/a/b", "data": 2, "clientId": clientId},
            {"channel": "/a/*", "data": 3, "clientId": clientId},
        ]:
            self.send(message)
        found = samples(self.scrape())
        counted = {
            labels: value
            for (name, labels), value in found.items()
            if name == "pandapush_bayeux_errors_total"
        }
        self.assertEqual(counted, {(("code", "402"),): 1, (("code", "405"),): 1})

    def test_relayedAcceptance(self) -> None:
        """A copy from Redis is aged from its id's stamp; an id without one (older nodes) from its arrival."""
        self.assertEqual(RelayedDelivery("/a", b"{}", None, "node.1@12.5").accepted, 12.5)
        for messageId in ("node.1", "node.1@garbage", "node@.1@", "h.3./a/b@12.5"):
            self.assertLess(abs(RelayedDelivery("/a", b"{}", None, messageId).accepted - time.time()), 5)


class _Garbage(protocol.Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b"this is not JSON")  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]


class MachineMetricsTests(TestCase):
    """Three processes' registries, played by three MachineMetrics in this one, over real sockets."""

    def setUp(self) -> None:
        # Not under _trial_temp: a Unix socket's path has at most 107 bytes.
        self.directory = tempfile.mkdtemp(prefix="pp-metrics-test-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.machines = []
        for index in range(3):
            registry = CollectorRegistry()
            Counter("pandapush_things", "Things.", registry=registry).inc(index + 1)
            machine = MachineMetrics(reactor, registry, self.directory, index, 3, timeout=1.0)
            machine.startService()
            self.addCleanup(machine.stopService)
            self.machines.append(machine)

    async def scrape(self, index: int) -> Samples:
        request = DummyRequest([b"metrics"])
        MachineMetricsResource(self.machines[index].gather).render_GET(request)
        await request.notifyFinish()
        return samples(b"".join(request.written).decode())

    async def test_everyProcessFromAnyProcess(self) -> None:
        """Whichever process is asked, the scrape has every process's series, labelled by worker."""
        for index in range(3):
            found = await self.scrape(index)
            for worker in range(3):
                self.assertEqual(found[("pandapush_things_total", (("worker", str(worker)),))], worker + 1)
                self.assertEqual(found[("pandapush_worker_up", (("worker", str(worker)),))], 1)

    async def test_missingOrBrokenPeer(self) -> None:
        """A process gone, or answering garbage, is left out and shown down; the scrape still answers."""
        await self.machines[1].stopService()
        await self.machines[2].stopService()
        unix: Any = reactor
        port = unix.listenUNIX(self.machines[2].path(2), protocol.Factory.forProtocol(_Garbage))
        self.addCleanup(port.stopListening)
        found = await self.scrape(0)
        self.assertEqual(found[("pandapush_things_total", (("worker", "0"),))], 1)
        self.assertNotIn(("pandapush_things_total", (("worker", "1"),)), found)
        self.assertNotIn(("pandapush_things_total", (("worker", "2"),)), found)
        self.assertEqual(found[("pandapush_worker_up", (("worker", "1"),))], 0)
        self.assertEqual(found[("pandapush_worker_up", (("worker", "2"),))], 0)
        self.flushLoggedErrors()

    def test_socketsPrivate(self) -> None:
        """Only this user may connect: the sockets are 0600."""
        self.assertEqual(os.stat(self.machines[0].path(0)).st_mode & 0o777, 0o600)


def _queries(dashboard: dict[str, Any]) -> list[str]:
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("type") == "datasource":
                return  # a variable choosing the data source: its query is a plugin name
            for key, item in value.items():
                if key in ("expr", "query") and isinstance(item, str):
                    found.append(item)
                elif key == "query" and isinstance(item, dict) and isinstance(item.get("query"), str):
                    found.append(item["query"])
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(dashboard)
    return found


_METRIC = re.compile(r"\b((?:pandapush|process|python)_[a-zA-Z0-9_]+)")


class WorkersMetricsTests(WorkersCase):
    async def scrapeOn(self, server: Any, pids: dict[int, int], worker: int) -> str:
        """
        A scrape taken by ``worker``: its connection is accepted while the other workers are
        stopped (onlyWorker), then they run again, to answer it as it gathers from them.
        """
        connection = socket.socket()
        connection.settimeout(10)
        self.addCleanup(connection.close)
        with self.onlyWorker(pids, worker):
            connection.connect(("127.0.0.1", server.port))
            await sleep(0.3)  # accepted by the one running worker
        connection.sendall(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")

        def receive() -> bytes:
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

        response = await threads.deferToThread(receive)
        head, _, body = response.partition(b"\r\n\r\n")
        self.assertIn(b" 200 ", head.split(b"\r\n")[0], head)
        self.assertIn(f"X-Pandapush-Worker: {worker}".encode(), head)
        return body.decode()

    async def test_oneScrapeForTheMachine(self) -> None:
        """
        --workers 2: publishes taken by each worker are counted under its label in one
        scrape, whichever worker takes it, with both processes' own collectors; and every
        metric the Grafana dashboard in docs/ queries is one this server exports.
        """
        server = await self.startWorkers(2, kind=TwistdProcess)
        pids = await self.workerPids(server, 2)
        subscriber = await self.wsOn(server, pids, 1)
        self.assertTrue((await subscriber.subscribe(channel("news")))["successful"])
        taken = {"0": 0, "1": 0}
        for worker, count in ((0, 3), (1, 5)):
            with self.onlyWorker(pids, worker):
                for n in range(count):
                    response = await treq.post(
                        f"{server.url}/channel{channel('news')}",
                        json={"n": n},
                        auth=(KEY, SECRET),
                        persistent=False,
                        timeout=15,
                    )
                    self.assertEqual(response.code, 200, await response.content())
                    taken[response.headers.getRawHeaders("X-Pandapush-Worker")[0]] += 1
        self.assertTrue(all(taken.values()), taken)
        # Acknowledged is not yet delivered: wait for the subscriber to have every message.
        self.assertTrue(await eventually(lambda: len(dataOn(subscriber, channel("news"))) == 8, timeout=10))
        for worker in (0, 1):
            text = await self.scrapeOn(server, pids, worker)
            found = samples(text)
            for w in "01":
                # Counted by the worker that took them (besides, each worker publishes its own
                # statistics on /<app>/meta/statistics every 5 s).
                published = found.get(("pandapush_messages_published_total", (("worker", w),)), 0)
                self.assertGreaterEqual(published, taken[w], f"worker {w}, scraped on worker {worker}")
                route = (("route", "publish"), ("worker", w))
                self.assertEqual(found[("pandapush_http_request_duration_seconds_count", route)], taken[w])
                self.assertIn(("process_cpu_seconds_total", (("worker", w),)), found)
                self.assertEqual(found[("pandapush_worker_up", (("worker", w),))], 1)
                build = [
                    labels
                    for name, labels in found
                    if name == "pandapush_build_info" and ("worker", w) in labels
                ]
                self.assertEqual(len(build), 1, found)
            # The subscriber is on worker 1: it wrote every message (from either worker) once.
            self.assertEqual(found[("pandapush_delivery_latency_seconds_count", (("worker", "1"),))], 8)

        # The dashboard: every metric it queries is exported by this server.
        dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        queries = _queries(dashboard)
        self.assertGreaterEqual(len(queries), 10)
        names = exported(text)
        for query in queries:
            used = _METRIC.findall(query)
            self.assertTrue(used, f"no metric in {query!r}")
            missing = [name for name in used if name not in names]
            self.assertEqual(missing, [], f"{query!r} queries metrics the server does not export")


class MetricsDirectoryTests(WorkersCase):
    def directory(self, pid: int) -> Path:
        """The metrics directory a worker was told of (its PANDAPUSH_WORKER)."""
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        (spec,) = [v.decode() for v in environ if v.startswith(b"PANDAPUSH_WORKER=")]
        fields = dict(item.partition("=")[::2] for item in spec.partition("=")[2].split())
        return Path(unquote(fields["metrics"]))

    async def test_removedWhenStopped(self) -> None:
        """The parent's private directory (0700) holds one socket per process, and is gone after a stop."""
        server = await self.startWorkers(2, kind=TwistdProcess)
        pids = await self.workerPids(server, 2)
        directory = self.directory(pids[1])
        self.assertEqual(directory.stat().st_mode & 0o777, 0o700)
        self.assertEqual(sorted(p.name for p in directory.iterdir()), ["0.sock", "1.sock"])
        await server.stop()
        self.assertFalse(directory.exists())

    async def test_removedWhenTheParentIsKilled(self) -> None:
        """A SIGKILLed parent leaves its socket: the last worker to leave removes it and the directory."""
        server = await self.startWorkers(2, kind=TwistdProcess)
        pids = await self.workerPids(server, 2)
        directory = self.directory(pids[1])
        await server.stop(signal.SIGKILL)
        # The workers drain first (up to --shutdown-grace, 2 s), writing to a pipe nobody reads.
        gone = await eventually(lambda: not directory.exists(), timeout=30)
        self.assertTrue(gone, f"{sorted(os.listdir(directory)) if directory.exists() else []}")


class DashboardTests(TestCase):
    def test_parses(self) -> None:
        """The dashboard is JSON Grafana imports: a title, a uid, panels with targets, a datasource input."""
        dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        self.assertTrue(dashboard["title"])
        self.assertTrue(dashboard["uid"])
        panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
        self.assertGreaterEqual(len(panels), 10)
        for panel in panels:
            self.assertTrue(panel.get("targets"), panel.get("title"))
            self.assertIn("gridPos", panel)
        ids = [p["id"] for p in dashboard["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids are unique")
        variables = {v["name"] for v in dashboard["templating"]["list"]}
        self.assertIn("datasource", variables)
