"""
``--workers N``: one ``/metrics`` scrape answers for every process on the machine.

A scrape reaches whichever worker accepts it on the shared port. So that it answers
for the machine, every process also serves its own registry on a Unix socket,
``<directory>/<index>.sock``, in a directory only this user can enter (made by the
parent with ``mkdtemp``, named to the workers in ``PANDAPUSH_WORKER``). The process
that takes a scrape reads its own registry and asks every other process for theirs
over those sockets at once (a snapshot of the collected families, as JSON: no text
to parse back), labels each series with ``worker="<index>"``, merges the families
and answers. A process that does not answer within :data:`PEER_TIMEOUT` is left
out, and ``pandapush_worker_up{worker}`` says so.

Why not ``prometheus_client``'s multiprocess mode: it shares only the values of its
own ``Counter``/``Gauge``/``Histogram`` objects, through memory-mapped files written
on every increment, and supports no custom collector; the state gauges read at
scrape time (clients, connections, queues), our lock-free counters, and the process
collector (each worker's CPU and memory) would all be missing or wrong. Asking the
live processes costs nothing between scrapes and gives each one's own numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.application.service import Service
from twisted.internet import defer, error, protocol
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from pandapush.config import Configuration

__all__ = [
    "PEER_TIMEOUT",
    "MachineMetrics",
    "MachineMetricsResource",
    "machineMetrics",
    "makeMetricsDirectory",
]

#: Seconds a scrape waits for another process's registry.
PEER_TIMEOUT = 2.0
#: A registry snapshot larger than this is refused (a process has a few hundred series).
MAX_SNAPSHOT = 16 * 1024 * 1024


def makeMetricsDirectory() -> str:
    """The parent's private directory for the processes' sockets (mode 0700)."""
    return tempfile.mkdtemp(prefix="pandapush-metrics-")


def snapshot(registry: CollectorRegistry) -> bytes:
    """A registry's families as JSON: ``[[name, help, type, unit, [[sample, labels, value]...]]...]``."""
    families = [
        [m.name, m.documentation, m.type, m.unit, [[s.name, s.labels, s.value] for s in m.samples]]
        for m in registry.collect()
    ]
    return json.dumps(families).encode()


def families(data: bytes, worker: str) -> list[Metric]:
    """A :func:`snapshot` read back, each series labelled with ``worker``; ``ValueError`` if malformed."""
    found: list[Metric] = []
    for name, documentation, kind, unit, samples in json.loads(data):
        metric = Metric(name, documentation, kind, unit)
        for sample, labels, value in samples:
            metric.add_sample(sample, {**labels, "worker": worker}, float(value))
        found.append(metric)
    return found


class _SnapshotServer(protocol.Protocol):
    """Writes this process's snapshot to whoever connects, and hangs up."""

    def connectionMade(self) -> None:
        factory: Any = self.factory
        try:
            data = factory.snapshot()
        except Exception:
            Logger().failure("metrics snapshot failed")
            data = b"[]"
        self.transport.write(data)  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]


class _SnapshotReader(protocol.Protocol):
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_SNAPSHOT:
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self.size > MAX_SNAPSHOT:
            self.done.errback(ValueError("snapshot too large"))
        else:
            self.done.callback(b"".join(self.chunks))


class _Merged:
    """A collector yielding the families gathered for one scrape, merged by name."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        byName: dict[str, Metric] = {}
        for metric in metrics:
            first = byName.setdefault(metric.name, metric)
            if first is not metric and first.type == metric.type:
                first.samples.extend(metric.samples)
        self.metrics = list(byName.values())

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


class MachineMetrics(Service):
    """
    This process's part: its registry served on ``<directory>/<index>.sock``, and
    :meth:`gather`, every process's families for a scrape. ``count`` is how many
    processes there are (indexes ``0..count-1``). The parent (index 0), given no
    ``directory``, makes one as it starts (before its workers, which are told its name)
    and removes it once the reactor has stopped.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        registry: CollectorRegistry,
        directory: str | None,
        index: int,
        count: int,
        timeout: float = PEER_TIMEOUT,
    ) -> None:
        self.reactor = reactor
        self.registry = registry
        self.directory = directory
        self.index = index
        self.count = count
        self.timeout = timeout
        self._port: IListeningPort | None = None

    def path(self, index: int) -> str:
        assert self.directory is not None, "set once started"
        return os.path.join(self.directory, f"{index}.sock")

    def startService(self) -> None:
        super().startService()
        if self.directory is None:
            self.directory = makeMetricsDirectory()
            self.reactor.addSystemEventTrigger("after", "shutdown", shutil.rmtree, self.directory, True)
        elif self.index != 0:
            self.reactor.addSystemEventTrigger("after", "shutdown", self._afterParent)
        path = self.path(self.index)
        # A worker restarted after a crash finds its predecessor's socket file.
        Path(path).unlink(missing_ok=True)
        factory = protocol.Factory.forProtocol(_SnapshotServer)
        factory.snapshot = lambda: snapshot(self.registry)  # type: ignore[attr-defined]
        factory.noisy = False
        try:
            self._port = self.reactor.listenUNIX(path, factory, mode=0o600)
        except error.CannotListenError as e:
            # A TMPDIR too long for a socket's path (107 bytes), say: this process still
            # serves, and the others' scrapes show it as down rather than failing.
            self._log.error("metrics of this process not shared with the other workers: {why}", why=e)

    def stopService(self) -> Any:
        super().stopService()
        port, self._port = self._port, None
        if port is None:
            return None
        return port.stopListening()  # removes our socket file

    def _afterParent(self) -> None:
        """
        A worker's last act: if the parent was killed (SIGKILL, the OOM killer), nothing
        removed its socket or the directory. Its socket file refusing connections says so
        (a live parent accepts; a parent stopping removes the file before closing it):
        then remove it, and the directory unless another worker's socket is still there.
        """
        assert self.directory is not None
        path = self.path(0)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            Path(path).unlink(missing_ok=True)
            try:
                os.rmdir(self.directory)
            except OSError:
                pass  # another worker's socket is still there: that worker will
        except OSError:
            pass  # gone already, or busy: alive
        finally:
            probe.close()

    async def _peer(self, index: int) -> list[Metric]:
        endpoint = UNIXClientEndpoint(self.reactor, self.path(index), timeout=self.timeout)
        reader = _SnapshotReader()
        connected = await endpoint.connect(protocol.Factory.forProtocol(lambda: reader))
        timer = self.reactor.callLater(self.timeout, connected.transport.abortConnection)
        try:
            data = await reader.done
        finally:
            if timer.active():
                timer.cancel()
        return families(data, str(index))

    async def gather(self) -> list[Metric]:
        """Every process's families, each series labelled with its worker, merged by name."""
        others = [i for i in range(self.count) if i != self.index]
        answers = await defer.DeferredList(
            [defer.Deferred.fromCoroutine(self._peer(i)) for i in others], consumeErrors=True
        )
        gathered = families(snapshot(self.registry), str(self.index))
        up = GaugeMetricFamily(
            "pandapush_worker_up",
            "1 for each process of --workers whose metrics this scrape includes, 0 if it did not answer.",
            labels=["worker"],
        )
        up.add_metric([str(self.index)], 1)
        for index, (ok, result) in zip(others, answers, strict=True):
            if ok:
                gathered += result
            else:
                failure: Any = result
                self._log.warn("worker {worker} gave no metrics: {why}", worker=index, why=failure.value)
            up.add_metric([str(index)], 1 if ok else 0)
        return [*_Merged(gathered).metrics, up]


def machineMetrics(reactor: Any, registry: CollectorRegistry, config: Configuration) -> MachineMetrics | None:
    """
    This process's part under ``--workers`` (None otherwise, or in a worker whose parent
    named no directory): the parent makes the directory as it starts; a worker is told it.
    """
    worker = config.worker
    if config.processes <= 1 or (worker is not None and worker.metrics is None):
        return None
    directory = worker.metrics if worker is not None else None
    return MachineMetrics(reactor, registry, directory, config.workerIndex, config.processes)


class MachineMetricsResource(Resource):
    """``/metrics`` under ``--workers``: every process's metrics, whichever process is asked."""

    isLeaf = True

    def __init__(self, gather: Callable[[], Any]) -> None:
        super().__init__()
        self.gather = gather

    def render_GET(self, request: Any) -> Any:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(metrics: list[Metric]) -> None:
            if gone:
                return
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Merged(metrics))  # type: ignore[arg-type]
            request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
            request.write(generate_latest(registry))
            request.finish()

        def failed(failure: Failure) -> None:
            Logger().failure("gathering metrics failed", failure)
            if not gone:
                request.setResponseCode(500)
                request.finish()

        defer.Deferred.fromCoroutine(self.gather()).addCallbacks(answer, failed)
        return NOT_DONE_YET
