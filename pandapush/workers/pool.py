"""The parent's side of ``--workers``: starting, restarting, relaying and stopping workers.

Each worker is this same program started again as the same twistd plugin, with the
same options: ``python -m twisted --log-format json pandapush <the parent's options>``,
its listening sockets inherited as file descriptors 3, 4... and named in its
environment (``PANDAPUSH_WORKER``, a :class:`~pandapush.config.WorkerSpec`). See
:mod:`pandapush.workers` for the whole design.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, LogLevel, eventFromJSON, globalLogPublisher
from twisted.python.failure import Failure

from pandapush.config import FIRST_INHERITED_FD, WORKER_VARIABLE, WorkerSpec
from pandapush.workers.collector import tuneCollector
from pandapush.workers.sockets import LISTEN_BACKLOG, reusePortSocket

__all__ = ["PLUGIN", "READY_FIELD", "WorkerPool"]

#: The twistd plugin each worker runs (``twisted/plugins/pandapush_plugin.py``).
PLUGIN = "pandapush"

#: The field a worker's log event carries once it serves (``StorageService`` logs it):
#: how its parent tells a worker that could not start from one that died later.
READY_FIELD = "pandapush_worker_ready"


class _WorkerProtocol(ProcessProtocol):
    """One worker's pipes: its log events (JSON lines on stdout), stray stderr, its end."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.ended: defer.Deferred[int | None] = defer.Deferred()
        self._partial: dict[int, bytes] = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        *lines, self._partial[childFD] = (self._partial.get(childFD, b"") + data).split(b"\n")
        for line in lines:
            self.pool.relay(self.index, childFD, line)

    def processEnded(self, reason: Failure) -> None:
        for childFD, rest in self._partial.items():
            if rest:
                self.pool.relay(self.index, childFD, rest)
        code: int | None = 0
        if isinstance(reason.value, error.ProcessTerminated):
            code = reason.value.exitCode
            if code is None and reason.value.signal is not None:
                code = -reason.value.signal
        self.ended.callback(code)


@dataclass
class _Worker:
    index: int
    #: Kept: the transport forgets its pid once the process has ended.
    pid: int
    transport: IProcessTransport
    protocol: _WorkerProtocol
    startedAt: float


class WorkerPool(Service):
    """
    Runs workers 1..count-1 beside this process (worker 0) once ``listening``
    fires with this process's listening ports, restarting any that exits while
    the pool runs (after ``minDelay`` seconds, doubling per quick failure up to
    ``maxDelay``; a worker that lived ``stableAfter`` seconds starts the count
    again). ``argv`` are the ``pandapush`` options the workers parse as this
    process did.

    A worker that exits before it ever served (its log never carried
    :data:`READY_FIELD`) could not start, and its copies would fail alike (the same
    program, options and machine): the pool logs why in one line and calls
    ``onFailure`` (the server stops, exiting non-zero) rather than restart it forever
    while the machine serves with fewer processes than asked.
    """

    _log = Logger()

    minDelay = 0.5
    maxDelay = 30.0
    stableAfter = 10.0

    def __init__(
        self,
        reactor: Any,
        count: int,
        argv: Sequence[str],
        listening: defer.Deferred[list[IListeningPort]],
        grace: float,
        executable: str = sys.executable,
        environ: dict[str, str] | None = None,
        emit: Callable[[dict[str, Any]], None] = globalLogPublisher,
        reusePort: bool = False,
        onFailure: Callable[[], object] = lambda: None,
        metrics: Callable[[], str | None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.onFailure = onFailure
        self.count = count
        self.argv = list(argv)
        self.grace = grace
        self.executable = executable
        self.environ = environ
        self.emit = emit
        self.reusePort = reusePort
        #: Where the processes' metrics sockets are (``pandapush.workers.metrics``), once known.
        self.metrics = metrics or (lambda: None)
        # Lines that are not log events, logged through the same observer as those that are.
        self._strayLog = Logger(namespace="pandapush.workers", observer=emit)  # type: ignore[arg-type]
        self.workers: dict[int, _Worker] = {}
        self._listening = listening
        self._ports: list[IListeningPort] = []
        self._listeners: list[tuple[int, socket.AddressFamily]] = []
        self._failures: dict[int, int] = {}
        self._restarts: dict[int, IDelayedCall] = {}
        #: The workers that have served at least once (their index).
        self.served: set[int] = set()

    def startService(self) -> None:
        super().startService()
        self._listening.addCallback(self._spawnAll)
        # Failing to listen is reported (and stops the process) by StorageService.
        self._listening.addErrback(lambda _: None)

    def _spawnAll(self, ports: list[IListeningPort]) -> None:
        if not self.running:
            return
        # Started, and serving from now on as worker 0: the collector's settings of a worker.
        tuneCollector()
        self._ports = ports
        self._listeners = [
            (port.fileno(), port.socket.family)  # type: ignore[attr-defined]
            for port in ports
        ]
        self._log.info(
            "starting {workers} workers beside this one (pid {pid})", workers=self.count - 1, pid=os.getpid()
        )
        for index in range(1, self.count):
            self._spawn(index)

    def command(self, index: int) -> list[str]:
        """The worker's command line: this program again, as the same plugin, with the same options."""
        return [self.executable, "-m", "twisted", "--log-format", "json", PLUGIN, *self.argv]

    def environment(self, index: int) -> dict[str, str]:
        """The worker's environment: ours, and which worker it is, with which sockets."""
        inherited = tuple((FIRST_INHERITED_FD + n, family) for n, (_, family) in enumerate(self._listeners))
        spec = WorkerSpec(index=index, count=self.count, listeners=inherited, metrics=self.metrics())
        return {**(os.environ if self.environ is None else self.environ), WORKER_VARIABLE: spec.format()}

    def _ownSockets(self) -> list[socket.socket]:
        """``--reuse-port``: a new socket for a worker on each of our ports' addresses."""
        sockets: list[socket.socket] = []
        try:
            for port, (_, family) in zip(self._ports, self._listeners, strict=True):
                host = port.getHost()
                # The default queue (a backlog= of the endpoint sets the parent's only).
                sockets.append(reusePortSocket(family, host.host, host.port, LISTEN_BACKLOG))  # type: ignore[attr-defined]
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return sockets

    def _spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        # stdin is a pipe nobody writes to: its end of file tells the worker we are gone.
        childFDs: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        protocol = _WorkerProtocol(self, index)
        own: list[socket.socket] = []
        try:
            own = self._ownSockets() if self.reusePort else []
            fds = [sock.fileno() for sock in own] or [fd for fd, _ in self._listeners]
            for n, fd in enumerate(fds):
                childFDs[FIRST_INHERITED_FD + n] = fd
            transport = self.reactor.spawnProcess(
                protocol,
                self.executable,
                self.command(index),
                env=self.environment(index),
                childFDs=childFDs,
            )
        except OSError:
            # Out of processes or descriptors, say: try again later, as after a crash.
            self._log.failure("could not start worker {index}", index=index)
            self._scheduleRestart(index, lived=0.0)
            return
        finally:
            # The worker holds its own copies; its sockets must die with it, so that
            # the kernel stops sending connections to a worker that is gone.
            for sock in own:
                sock.close()
        self.workers[index] = _Worker(index, transport.pid, transport, protocol, self.reactor.seconds())
        self._log.info("worker {index} started (pid {pid})", index=index, pid=transport.pid)
        protocol.ended.addCallback(self._ended, index, protocol)

    def _ended(self, code: int | None, index: int, protocol: _WorkerProtocol) -> None:
        worker = self.workers.get(index)
        if worker is None or worker.protocol is not protocol:
            return
        del self.workers[index]
        if not self.running:
            return
        if index not in self.served:
            self._log.error(
                "worker {index} (pid {pid}) could not start ({how}; its log is above): stopping",
                index=index,
                pid=worker.pid,
                how=_how(code),
            )
            self.onFailure()
            return
        lived = self.reactor.seconds() - worker.startedAt
        delay = self._scheduleRestart(index, lived)
        self._log.error(
            "worker {index} (pid {pid}) exited ({how}) after {lived:.1f}s; restarting it in {delay}s",
            index=index,
            pid=worker.pid,
            how=_how(code),
            lived=lived,
            delay=delay,
        )

    def _scheduleRestart(self, index: int, lived: float) -> float:
        """Start worker ``index`` again after a delay that doubles while it keeps dying young."""
        failures = 0 if lived >= self.stableAfter else self._failures.get(index, 0) + 1
        self._failures[index] = failures
        delay = min(self.maxDelay, self.minDelay * 2 ** max(0, failures - 1))
        self._restarts[index] = self.reactor.callLater(delay, self._spawn, index)
        return delay

    def relay(self, index: int, childFD: int, line: bytes) -> None:
        """A line a worker printed: its log events go on in our log, marked with its index."""
        text = line.decode("utf-8", "replace").lstrip("\x1e").rstrip("\r")
        if not text.strip():
            return
        prefix = f"worker-{index}"
        if childFD == 1 and text.startswith("{"):
            try:
                event = eventFromJSON(text)
            except ValueError:
                pass
            else:
                level = event.get("log_level")
                system = event.get("log_system") or (
                    f"{event.get('log_namespace', '-')}#{level.name if level else 'info'}"
                )
                event["log_system"] = f"{prefix} {system}"
                if event.get(READY_FIELD):
                    self.served.add(index)
                self.emit(event)
                return
        # Anything else (a traceback before logging began, a stray print) as it came.
        self._strayLog.emit(
            LogLevel.warn if childFD == 2 else LogLevel.info,
            "{line}",
            line=text,
            log_system=f"{prefix} {'stderr' if childFD == 2 else 'stdout'}",
        )

    def pids(self) -> dict[int, int]:
        """The running workers' pids by index (this process, worker 0, excluded)."""
        return {index: w.pid for index, w in self.workers.items()}

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        return defer.Deferred.fromCoroutine(self._stopAll())

    async def _stopAll(self) -> None:
        workers = list(self.workers.values())
        for worker in workers:
            self._signal(worker, "TERM")
        # Each worker drains within --shutdown-grace; past that (and a margin for
        # closing its engine) it is killed, so a stuck one cannot hold the stop.
        killer = self.reactor.callLater(self.grace + 5.0, self._killAll, workers)
        try:
            await defer.gatherResults([w.protocol.ended for w in workers], consumeErrors=True)
        finally:
            if killer.active():
                killer.cancel()
        self.workers.clear()
        if workers:
            self._log.info("all {n} workers stopped", n=len(workers))

    def _killAll(self, workers: list[_Worker]) -> None:
        for worker in workers:
            if not worker.protocol.ended.called:
                self._log.warn("worker {index} did not stop in time: SIGKILL", index=worker.index)
                self._signal(worker, "KILL")

    def _signal(self, worker: _Worker, name: str) -> None:
        try:
            worker.transport.signalProcess(name)
        except error.ProcessExitedAlready:
            pass


def _how(code: int | None) -> str:
    return f"signal {-code}" if code is not None and code < 0 else f"status {code}"
