"""
``--workers N``: N pandapush processes serving one port on one machine.

The process started by ``twistd pandapush`` (worker 0) binds the listening
sockets, migrates and seeds the storage, then starts N-1 copies of itself
(``python -m pandapush.workers``) that inherit those sockets as file descriptors
3, 4, ... and adopt them (``reactor.adoptStreamPort``). Every process accepts on
the same sockets and is a full node on the Redis engine, so a client may land on
any of them and keep its session.

Why one shared socket rather than ``SO_REUSEPORT`` (one socket per process,
balanced by a hash of the 4-tuple): connections waiting in the accept queue
belong to every worker, so a worker that crashes or is restarted loses none of
them (with ``SO_REUSEPORT`` the kernel resets those queued on the dead socket);
a busy worker leaves new connections to an idle one (whoever calls ``accept``
first gets it) instead of receiving its hash share regardless of load; it works
on every POSIX system and with ``tcp:0``; and no other process of the same user
can join the group and steal connections.

The cost of sharing is balance: among idle workers the one the kernel wakes first
wins, so connections opened one by one on a quiet machine were seen spread from
50/50 to 83/17 over two workers. ``--reuse-port`` (Linux) trades the points above
for an even spread: every process listens on a socket of its own, bound with
``SO_REUSEPORT`` (the parent makes them all, when it starts a worker, so ``tcp:0``
works and a worker binds nothing; a port below 1024 needs the parent to keep the
right to bind it, as for its own listener), and the kernel hashes each new
connection to one of them. A worker's
socket lives only in that worker: when it dies, the kernel stops sending it
connections, and resets those that were waiting in its queue.

The parent owns its workers: it restarts one that exits with a backoff, relays
their log events into its own log (``log_system`` prefixed ``worker-<i>``), and on
stop sends them SIGTERM and waits for their drain (``--shutdown-grace``), killing
stragglers. A worker leaves by itself when its stdin, a pipe from the parent,
reaches end of file: the parent was SIGKILLed, so nobody else would stop it.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application import strports
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, Service
from twisted.internet import defer, error, fdesc
from twisted.internet.abstract import FileDescriptor, isIPv6Address
from twisted.internet.endpoints import (
    AdoptedStreamServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
)
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProcessTransport,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, LogLevel, eventFromJSON, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from pandapush.config import FIRST_INHERITED_FD, Configuration, formatListeners

__all__ = ["ParentWatch", "ReusePortEndpoint", "WorkerPool", "listenerServices"]


def reusePortSocket(family: socket.AddressFamily, interface: str, port: int, backlog: int) -> socket.socket:
    """A listening socket bound with ``SO_REUSEPORT``, so that others bound alike share its port."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As twisted.internet.tcp.Port does: restarting must not wait for TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((interface, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """
    ``tcp:``/``tcp6:`` as Twisted parses them, listening on a ``SO_REUSEPORT``
    socket (``--workers`` with ``--reuse-port``: the parent's own listener).
    """

    def __init__(self, reactor: Any, description: str) -> None:
        parsed = serverFromString(reactor, description)
        if not isinstance(parsed, TCP4ServerEndpoint | TCP6ServerEndpoint):
            raise ValueError(f"--reuse-port needs a tcp: or tcp6: endpoint, not {description!r}")
        self.reactor = reactor
        # Twisted keeps these private; they have not changed in a decade.
        self.port: int = parsed._port
        self.backlog: int = parsed._backlog
        self.interface: str = parsed._interface
        ipv6 = isinstance(parsed, TCP6ServerEndpoint) or isIPv6Address(self.interface)
        self.family = socket.AF_INET6 if ipv6 else socket.AF_INET

    def listen(self, factory: Any) -> defer.Deferred[IListeningPort]:
        try:
            sock = reusePortSocket(self.family, self.interface, self.port, self.backlog)
            try:
                port = self.reactor.adoptStreamPort(sock.fileno(), self.family, factory)
            finally:
                sock.close()  # adoptStreamPort kept a duplicate
        except OSError as reason:
            return defer.fail(error.CannotListenError(self.interface, self.port, reason))
        return defer.succeed(port)


def listenerServices(config: Configuration, reactor: Any, factory: IProtocolFactory) -> list[IService]:
    """
    A service listening for ``factory`` on each of ``config``'s endpoints: the
    inherited sockets, adopted, in a worker; a ``SO_REUSEPORT`` socket of its own
    with ``--reuse-port``; else ``--listen`` as ``strports`` parses it.
    """
    if config.worker is not None:
        return [
            StreamServerEndpointService(AdoptedStreamServerEndpoint(reactor, fd, family), factory)
            for fd, family in config.worker.listeners
        ]
    if config.reusePort:
        return [
            StreamServerEndpointService(ReusePortEndpoint(reactor, endpoint), factory)
            for endpoint in config.listen
        ]
    return [strports.service(endpoint, factory, reactor=reactor) for endpoint in config.listen]


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
    ) -> None:
        self.reactor = reactor
        self.count = count
        self.argv = list(argv)
        self.grace = grace
        self.executable = executable
        self.environ = environ
        self.emit = emit
        self.reusePort = reusePort
        # Lines that are not log events, logged through the same observer as those that are.
        self._strayLog = Logger(namespace="pandapush.workers", observer=emit)  # type: ignore[arg-type]
        self.workers: dict[int, _Worker] = {}
        self._listening = listening
        self._ports: list[IListeningPort] = []
        self._listeners: list[tuple[int, socket.AddressFamily]] = []
        self._failures: dict[int, int] = {}
        self._restarts: dict[int, IDelayedCall] = {}

    def startService(self) -> None:
        super().startService()
        self._listening.addCallback(self._spawnAll)
        # Failing to listen is reported (and stops the process) by StorageService.
        self._listening.addErrback(lambda _: None)

    def _spawnAll(self, ports: list[IListeningPort]) -> None:
        if not self.running:
            return
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
        inherited = [(FIRST_INHERITED_FD + n, family) for n, (_, family) in enumerate(self._listeners)]
        return [
            self.executable,
            "-m",
            "pandapush.workers",
            "--index",
            str(index),
            "--count",
            str(self.count),
            "--listeners",
            formatListeners(inherited),
            "--",
            *self.argv,
        ]

    def _ownSockets(self) -> list[socket.socket]:
        """``--reuse-port``: a new socket for a worker on each of our ports' addresses."""
        sockets: list[socket.socket] = []
        try:
            for port, (_, family) in zip(self._ports, self._listeners, strict=True):
                host = port.getHost()
                # Twisted's default backlog (a backlog= of the endpoint sets the parent's only).
                sockets.append(reusePortSocket(family, host.host, host.port, 50))  # type: ignore[attr-defined]
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
                env=dict(os.environ if self.environ is None else self.environ),
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
        lived = self.reactor.seconds() - worker.startedAt
        delay = self._scheduleRestart(index, lived)
        self._log.error(
            "worker {index} (pid {pid}) exited ({how}) after {lived:.1f}s; restarting it in {delay}s",
            index=index,
            pid=worker.pid,
            how=f"signal {-code}" if code is not None and code < 0 else f"status {code}",
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


class ParentWatch(FileDescriptor):
    """
    Calls ``gone`` when ``fd`` (the worker's stdin, a pipe from its parent) reaches
    end of file, which happens however the parent ended, SIGKILL included: the
    portable counterpart of Linux's ``PR_SET_PDEATHSIG``, and without its race
    (a parent already dead reads as end of file at once).
    """

    def __init__(self, reactor: Any, fd: int, gone: Callable[[], None]) -> None:
        super().__init__(reactor)
        self._fd = fd
        self._gone = gone
        self._parentGone = False
        fdesc.setNonBlocking(fd)

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "ParentWatch"

    def doRead(self) -> Any:
        # Nothing is ever written; only the end of file (or an error) matters.
        why = fdesc.readFromFD(self._fd, lambda data: None)
        self._parentGone = why is not None
        return why

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        # End of file (seen by doRead, or by the reactor as a hang-up), or a failed
        # read; not the ConnectionLost every descriptor gets as the reactor shuts down.
        if self._parentGone or reason.check(error.ConnectionDone):
            self._gone()


def stopReactor(reactor: Any) -> None:
    """Stop ``reactor`` unless it is stopping already (a second SIGTERM, or SIGTERM after the parent left)."""
    try:
        reactor.stop()
    except error.ReactorNotRunning:
        pass


def installWorkerSignals(reactor: Any) -> None:
    """
    Call once the reactor runs (its own handlers are in place by then). SIGINT is
    ignored: a Ctrl-C in a terminal reaches every process of the group, and the
    parent stops its workers itself. SIGTERM stops the worker once, however many
    come: systemd's default ``KillMode=control-group`` sends one to every process
    of the service, and the parent sends its own.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: reactor.callFromThread(stopReactor, reactor))
