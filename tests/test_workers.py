"""``--workers N``: N pandapush processes on one port (issue 5).

The option checks, and the parent's side of the pool (on a fake reactor), run in this
process. The rest runs ``python -m twisted pandapush --workers 2`` for real
(``tests/support/process.py``) on the machine's Redis, in a namespace of its own
(``pp-test-<uuid>``, deleted afterwards), and tells the processes apart by what they
answer: ``/health_check.json`` names the worker and its pid, every HTTP answer and
websocket handshake carries ``X-Pandapush-Worker``; /proc tells parents and listening
sockets. Which idle worker accepts a connection on the shared socket is the kernel's
choice and is not even, so a test that needs a connection on a given worker stops the
others meanwhile (``onlyWorker``); health checks and the long-poller rely on the
natural spread, over many requests.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import treq
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogLevel, eventAsJSON, formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.http_headers import Headers

from pandapush.config import WORKER_VARIABLE, formatListeners, parseListeners, resolveWorkerCount
from pandapush.tap import Options
from pandapush.workers import child as worker_child
from pandapush.workers import collector
from pandapush.workers import pool as worker_pool
from pandapush.workers.child import WorkerChild
from pandapush.workers.pool import READY_FIELD, WorkerPool
from tests.support.bayeux import LPClient
from tests.support.cluster import ADMIN, APP, KEY, SECRET, ClusterCase, channel
from tests.support.failover import FailoverWS, FailoverWSProtocol, dataOn
from tests.support.process import PandapushProcess, ServerFailedError, seededEnvironment
from tests.support.redis import deleteNamespace
from tests.support.waiting import eventually, sleep

WORKER_HEADER = "X-Pandapush-Worker"


def _environ(**extra: str) -> dict[str, str]:
    """The process environment without any setting that decides --workers' checks."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_HOSTS", "WORKERS", "DATABASE")}
    env.update(extra)
    return env


class WorkersOptionTests(TestCase):
    def parse(self, *argv: str, **env: str) -> Options:
        self.patch(os, "environ", _environ(**env))
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_oneByDefault(self) -> None:
        """Without --workers or WORKERS there is one process, and nothing else is required."""
        self.assertEqual(self.parse()["workers"], 1)

    def test_refusedWithoutRedis(self) -> None:
        """--workers 2 (or WORKERS=2) without --redis-hosts or REDIS_HOSTS is a usage error naming Redis."""
        for argv, env in ((["--workers", "2"], {}), ([], {"WORKERS": "2"})):
            with self.assertRaises(usage.UsageError) as refused:
                self.parse(*argv, **env)
            self.assertIn("needs the Redis engine (--redis-hosts or REDIS_HOSTS)", str(refused.exception))

    def test_fromEnvironmentWithRedis(self) -> None:
        """WORKERS=3 with REDIS_HOSTS gives 3; --workers wins over WORKERS."""
        self.assertEqual(self.parse(WORKERS="3", REDIS_HOSTS="127.0.0.1:6379")["workers"], 3)
        self.assertEqual(
            self.parse("--workers", "2", "--redis-hosts", "127.0.0.1:6379", WORKERS="4")["workers"], 2
        )

    def test_zeroIsOnePerCPU(self) -> None:
        """--workers 0 means one process per CPU we may run on (and still needs Redis)."""
        if not hasattr(os, "sched_getaffinity"):
            raise SkipTest("no CPU affinity on this system")

        def unknown(pid: int) -> set[int]:
            raise OSError("not here")

        self.patch(os, "sched_getaffinity", lambda pid: {0, 1, 2})
        self.patch(os, "cpu_count", lambda: 6)
        self.assertEqual(self.parse("--workers", "0", "--redis-hosts", "127.0.0.1:6379")["workers"], 3)
        self.assertRaises(usage.UsageError, self.parse, "--workers", "0")
        self.patch(os, "sched_getaffinity", unknown)
        self.assertEqual(resolveWorkerCount(0), 6)
        self.patch(os, "cpu_count", lambda: None)
        self.assertEqual(resolveWorkerCount(0), 1)

    def test_badCountsRefused(self) -> None:
        """Negative or non-numeric counts are usage errors."""
        for value in ("-1", "two", "1.5"):
            with self.assertRaises(usage.UsageError) as refused:
                self.parse("--workers", value, "--redis-hosts", "127.0.0.1:6379")
            self.assertIn("whole number", str(refused.exception))

    def test_memoryStorageRefused(self) -> None:
        """Every worker would have its own applications and keys in DATABASE=memory."""
        with self.assertRaises(usage.UsageError) as refused:
            self.parse("--workers", "2", "--redis-hosts", "127.0.0.1:6379", DATABASE="memory")
        self.assertIn("shared by every process", str(refused.exception))

    def test_onlyTCPListenersShared(self) -> None:
        """ssl: (or unix:) listeners are refused with --workers; tcp: and tcp6: are fine."""
        with self.assertRaises(usage.UsageError) as refused:
            self.parse(
                "--workers",
                "2",
                "--redis-hosts",
                "127.0.0.1:6379",
                "--listen",
                "ssl:443:privateKey=k.pem:certKey=c.pem",
            )
        self.assertIn("terminate TLS in front", str(refused.exception))
        options = self.parse(
            "--workers", "2", "--redis-hosts", "r:6379", "--listen", "tcp:3000", "--listen", "tcp6:3000"
        )
        self.assertEqual(options["workers"], 2)

    def test_reusePortOnlyWithWorkers(self) -> None:
        """--reuse-port is refused without --workers N (N > 1), and taken with it (on Linux)."""
        with self.assertRaises(usage.UsageError) as refused:
            self.parse("--reuse-port")
        self.assertIn("only applies with --workers", str(refused.exception))
        if sys.platform.startswith("linux"):
            self.assertTrue(
                self.parse("--workers", "2", "--reuse-port", "--redis-hosts", "r:6379")["reuse-port"]
            )

    def test_argvKept(self) -> None:
        """The workers are given the options this process parsed, as they were written."""
        argv = ["--workers", "2", "--redis-hosts", "r:6379", "--timeout", "3"]
        self.assertEqual(self.parse(*argv).argv, argv)

    def test_listenersRoundTrip(self) -> None:
        """The --listeners argument of a worker names each inherited descriptor and its family."""
        listeners = ((3, socket.AF_INET), (4, socket.AF_INET6))
        self.assertEqual(formatListeners(listeners), "3:AF_INET,4:AF_INET6")
        self.assertEqual(parseListeners("3:AF_INET,4:AF_INET6"), listeners)
        self.assertRaises(ValueError, parseListeners, "3:AF_UNIX")


class _FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid: int | None = pid
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class _FakeReactor(Clock):
    """A clock that records spawned processes instead of starting them."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, list[str], dict[int, Any], _FakeProcess]] = []
        self.environments: list[dict[str, str]] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: Any, childFDs: Any) -> Any:
        process = _FakeProcess(1000 + len(self.spawned))
        self.spawned.append((protocol, args, childFDs, process))
        self.environments.append(env)
        return process

    def end(self, n: int, code: int | None = None, sig: int | None = None) -> None:
        """The n-th spawned process ends (killed by ``sig``, or exits with ``code``)."""
        protocol = self.spawned[n][0]
        protocol.processEnded(Failure(ProcessTerminated(code, sig)))


class _FakePort:
    def __init__(self, fd: int, family: socket.AddressFamily) -> None:
        self._fd = fd
        self.socket = socket.socket(family, socket.SOCK_STREAM)

    def fileno(self) -> int:
        return self._fd


class WorkerPoolTests(TestCase):
    """The parent's side on a fake reactor: what it starts, when it restarts, how it stops."""

    def startPool(self, count: int = 3) -> tuple[WorkerPool, _FakeReactor, list[dict[str, Any]]]:
        # Not this test process's collector: counted instead.
        self.tuned: list[None] = []
        self.patch(worker_pool, "tuneCollector", lambda: self.tuned.append(None))
        reactor = _FakeReactor()
        self.failures: list[None] = []
        events: list[dict[str, Any]] = []
        ports = [_FakePort(7, socket.AF_INET), _FakePort(9, socket.AF_INET6)]
        for port in ports:
            self.addCleanup(port.socket.close)
        listening: defer.Deferred[list[Any]] = defer.Deferred()
        pool = WorkerPool(
            reactor,
            count,
            ["--redis-hosts", "r:1"],
            listening,
            grace=2.0,
            executable="py",
            emit=events.append,
            onFailure=lambda: self.failures.append(None),
        )
        pool.startService()
        self.assertEqual(reactor.spawned, [], "nothing starts before this process listens")
        self.assertEqual(self.tuned, [])
        listening.callback(ports)
        return pool, reactor, events

    def test_collectorTunedOnceListening(self) -> None:
        """This process (worker 0) gets a worker's collector settings once its ports listen."""
        self.startPool(2)
        self.assertEqual(self.tuned, [None])

    def test_startsCountMinusOneWorkers(self) -> None:
        """
        Workers 1..N-1 run the same plugin with the options, get the listening sockets as
        fds 3, 4... (named in their environment), and a stdin pipe.
        """
        pool, reactor, _ = self.startPool(3)
        self.assertEqual(len(reactor.spawned), 2)
        _, args, childFDs, _ = reactor.spawned[1]
        self.assertEqual(
            args, ["py", "-m", "twisted", "--log-format", "json", "pandapush", "--redis-hosts", "r:1"]
        )
        self.assertEqual(
            reactor.environments[1][WORKER_VARIABLE], "index=2 count=3 listeners=3:AF_INET,4:AF_INET6"
        )
        self.assertEqual(childFDs, {0: "w", 1: "r", 2: "r", 3: 7, 4: 9})
        self.assertEqual(pool.pids(), {1: 1000, 2: 1001})

    def test_reusePortGivesEachWorkerItsOwnSocket(self) -> None:
        """
        With reusePort each worker gets a new socket bound to our port (not ours), and
        we keep no copy of it: the worker's socket must go when the worker does.
        """
        if not hasattr(socket, "SO_REUSEPORT"):
            raise SkipTest("no SO_REUSEPORT here")
        from pandapush.workers.sockets import reusePortSocket

        ours = reusePortSocket(socket.AF_INET, "127.0.0.1", 0, 5)
        self.addCleanup(ours.close)
        port = _FakePort(ours.fileno(), socket.AF_INET)
        self.addCleanup(port.socket.close)
        port.getHost = lambda: IPv4Address("TCP", *ours.getsockname())  # type: ignore[attr-defined]
        reactor = _FakeReactor()
        listening: defer.Deferred[list[Any]] = defer.Deferred()
        pool = WorkerPool(
            reactor, 2, [], listening, grace=1.0, executable="py", emit=lambda e: None, reusePort=True
        )
        pool.startService()
        listening.callback([port])
        ((_, _, childFDs, _),) = reactor.spawned
        given = childFDs[3]
        self.assertNotEqual(given, ours.fileno())
        self.assertIn("listeners=3:AF_INET", reactor.environments[0][WORKER_VARIABLE])
        self.assertRaises(OSError, os.fstat, given)

    def served(self, reactor: _FakeReactor, n: int) -> None:
        """The n-th spawned worker logs that it serves, as StorageService does."""
        event = {"log_namespace": "pandapush.services", "log_format": "serving", READY_FIELD: True}
        reactor.spawned[n][0].childDataReceived(1, ("\x1e" + eventAsJSON(event) + "\n").encode())

    def test_restartBackoff(self) -> None:
        """A worker dying young comes back after 0.5 s, then 1 s, 2 s...; one that lived 10 s, after 0.5 s."""
        pool, reactor, _ = self.startPool(2)
        for n, delay in enumerate([0.5, 1.0, 2.0, 4.0]):
            if n == 0:
                self.served(reactor, n)
            reactor.end(n, sig=9)
            self.assertEqual(pool.pids(), {})
            reactor.advance(delay - 0.01)
            self.assertEqual(len(reactor.spawned), n + 1, f"restarted before {delay} s")
            reactor.advance(0.01)
            self.assertEqual(len(reactor.spawned), n + 2)
        reactor.advance(pool.stableAfter)
        reactor.end(4, code=1)
        reactor.advance(0.5)
        self.assertEqual(len(reactor.spawned), 6)
        self.assertEqual(pool.pids(), {1: 1005})
        self.assertEqual(self.failures, [])

    def test_workerThatNeverServedStopsTheServer(self) -> None:
        """
        A worker that exits before it ever served could not start: no restart, onFailure
        is called (the server stops, exiting non-zero), one error line says which and how.
        """
        _, reactor, _ = self.startPool(3)
        events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.served(reactor, 0)
        reactor.end(1, code=1)
        self.assertEqual(self.failures, [None])
        reactor.advance(60)
        self.assertEqual(len(reactor.spawned), 2, "not restarted")
        errors = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.error]
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("worker 2 (pid 1001) could not start (status 1", errors[0])

    def test_stopTerminatesThenKills(self) -> None:
        """Stopping sends SIGTERM to every worker, SIGKILL grace + 5 s later to those left; no restarts."""
        pool, reactor, _ = self.startPool(3)
        stopped = pool.stopService()
        first, second = (entry[3] for entry in reactor.spawned)
        self.assertEqual((first.signals, second.signals), (["TERM"], ["TERM"]))
        reactor.end(0, sig=15)
        reactor.advance(2.0 + 5.0)
        self.assertEqual((first.signals, second.signals), (["TERM"], ["TERM", "KILL"]))
        self.assertNoResult(stopped)
        reactor.end(1, sig=9)
        self.successResultOf(stopped)
        reactor.advance(60)
        self.assertEqual(len(reactor.spawned), 2, "nothing restarted while stopping")

    def test_stopCancelsPendingRestart(self) -> None:
        """A worker waiting to be restarted is not started once the pool stops."""
        pool, reactor, _ = self.startPool(2)
        self.served(reactor, 0)
        reactor.end(0, sig=9)
        self.successResultOf(pool.stopService())
        reactor.advance(60)
        self.assertEqual(len(reactor.spawned), 1)

    def test_relaysLogEvents(self) -> None:
        """A worker's JSON log events reach our log as they were, their system prefixed with the worker."""
        _, reactor, events = self.startPool(2)
        protocol = reactor.spawned[0][0]
        event = {"log_namespace": "pandapush.tap", "log_level": LogLevel.warn, "log_format": "x {y}", "y": 1}
        protocol.childDataReceived(1, ("\x1e" + eventAsJSON(event) + "\n").encode()[:10])
        protocol.childDataReceived(1, ("\x1e" + eventAsJSON(event) + "\n").encode()[10:])
        protocol.childDataReceived(2, b"Traceback (most recent call last):\n")
        relayed = [e for e in events if e.get("log_namespace") == "pandapush.tap"]
        self.assertEqual(len(relayed), 1)
        self.assertEqual(relayed[0]["log_system"], "worker-1 pandapush.tap#warn")
        self.assertEqual(relayed[0]["log_level"], LogLevel.warn)
        self.assertEqual(formatEvent(relayed[0]), "x 1")
        stray = [e for e in events if e.get("line")]
        self.assertEqual(
            [(e["line"], e["log_system"]) for e in stray],
            [("Traceback (most recent call last):", "worker-1 stderr")],
        )


# processes


class CollectorTests(TestCase):
    """The garbage collector's settings in a --workers process, or one serving alone."""

    def setUp(self) -> None:
        thresholds = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *thresholds)
        self.addCleanup(gc.unfreeze)

    def test_tuneCollector(self) -> None:
        """What start-up left is frozen, and the youngest generation is collected every 10,000 allocations."""
        gc.unfreeze()
        collector.tuneCollector()
        self.assertGreater(gc.get_freeze_count(), 0)
        self.assertEqual(gc.get_threshold(), collector.THRESHOLDS)
        self.assertEqual(collector.THRESHOLDS[0], 10_000)

    def test_survivorsExaminedInSmallPieces(self) -> None:
        """
        Objects that outlive a burst (clients set up) reach the middle generation's
        collections in pieces of at most ~40,000, not all at once: the largest of those
        pauses bounds a publish's latency (the one-to-one benchmark's p99).
        """
        gc.set_threshold(*collector.THRESHOLDS)
        examined: list[int] = []

        def sizes(phase: str, info: dict[str, int]) -> None:
            if phase == "start" and info["generation"] == 1:
                examined.append(len(gc.get_objects(0)) + len(gc.get_objects(1)))

        gc.collect()
        gc.callbacks.append(sizes)
        try:
            kept = [[i] for i in range(200_000)]
        finally:
            gc.callbacks.remove(sizes)
        self.assertEqual(len(kept), 200_000)
        self.assertLess(max(examined), 45_000)
        self.assertGreaterEqual(len(examined), 4)
        # The oldest generation is looked at about as often as with (10,000, 10, 10).
        _, middle, oldest = collector.THRESHOLDS
        self.assertEqual((middle + 2) * (oldest + 2), (10 + 2) * (10 + 2))

    def test_workerTunesOnceRunning(self) -> None:
        """A worker tunes its collector once its reactor runs, not while it is being built."""
        tuned: list[None] = []
        self.patch(worker_child, "tuneCollector", lambda: tuned.append(None))
        later: list[Any] = []

        class Reactor:
            def callWhenRunning(self, f: Any, *args: Any) -> None:
                later.append((f, args))

            def addReader(self, reader: Any) -> None:
                pass

            def removeReader(self, reader: Any) -> None:
                pass

        read, write = os.pipe()
        self.addCleanup(os.close, read)
        self.addCleanup(os.close, write)
        WorkerChild(Reactor(), 1, stdin=read).startService()
        self.assertEqual(tuned, [])
        for f, args in later:
            if f is not worker_child.installWorkerSignals:
                f(*args)
        self.assertEqual(tuned, [None])

    def test_aloneTunesOnceListening(self) -> None:
        """A server serving alone tunes its collector once its ports listen; not if it could not start."""
        tuned: list[None] = []
        self.patch(collector, "tuneCollector", lambda: tuned.append(None))
        listening: defer.Deferred[list[Any]] = defer.Deferred()
        collector.tuneOnceListening(listening)
        self.assertEqual(tuned, [])
        ports = [object()]
        listening.callback(ports)
        self.assertEqual(tuned, [None])
        self.assertIs(self.successResultOf(listening), ports, "the ports are passed on")
        failed: defer.Deferred[list[Any]] = defer.Deferred()
        failed.addErrback(lambda _: None)  # as StorageService does for a process that cannot start
        collector.tuneOnceListening(failed)
        failed.errback(RuntimeError("cannot listen"))
        self.assertEqual(tuned, [None])


class _HeaderWSProtocol(FailoverWSProtocol):
    def onConnect(self, response: Any) -> None:
        self.factory.owner.worker = response.headers.get(WORKER_HEADER.lower())


class WorkerWS(FailoverWS):
    """test_multinode's websocket client, noting which worker accepted its socket."""

    worker: str | None = None
    protocolClass = _HeaderWSProtocol


class WorkerLP(LPClient):
    """A long-poll client noting which worker answered each of its requests (one connection each)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.workers: list[str] = []
        self.failures: list[dict[str, Any]] = []

    async def post(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = await treq.post(
            self.push,
            data=json.dumps(messages).encode(),
            headers=Headers({"Content-Type": ["application/json"]}),
            persistent=False,
            timeout=15,
        )
        self.workers.extend(response.headers.getRawHeaders(WORKER_HEADER, []))
        replies: list[dict[str, Any]] = json.loads(await response.content())
        self.failures.extend(r for r in replies if r.get("successful") is False)
        return replies


def _parentOf(pid: int) -> int | None:
    """The parent pid of ``pid`` from /proc, or None if it is gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (command) state ppid ...": the command may hold spaces, so split after it.
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return None if state in ("Z", "X") else int(ppid)


def _listeningSockets(port: int) -> int:
    """How many sockets listen on ``port`` (IPv4 and IPv6), from /proc/net/tcp*."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, _, state = line.split()[1:4]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def _alive(pid: int) -> bool:
    return _parentOf(pid) is not None


class ServedProcess(PandapushProcess):
    """The server started as ``pandapush serve ...`` (twistd in the foreground) instead of ``twist``."""

    def command(self) -> list[str]:
        listen = f"tcp:{self.port}:interface=127.0.0.1"
        return [sys.executable, "-m", "pandapush.cli", "serve", "--listen", listen, *self.args]


class WorkersCase(ClusterCase):
    """One ``pandapush --workers N`` process tree on the machine's Redis, in a namespace of its own."""

    timeout = 40

    async def setUp(self) -> None:  # type: ignore[override]
        if not Path("/proc/self/stat").exists():
            raise SkipTest("these tests read /proc to see the worker processes")
        await super().setUp()

    async def startWorkers(
        self,
        count: int = 2,
        kind: type[PandapushProcess] = PandapushProcess,
        env: dict[str, str] | None = None,
        extra: tuple[str, ...] = (),
    ) -> PandapushProcess:
        self.addCleanup(deleteNamespace, [self.mainRedis], self.namespace)
        server = kind(
            *extra,
            "--workers",
            str(count),
            "--timeout",
            "2",
            "--client-expiry",
            "5",
            "--shutdown-grace",
            "2",
            "--redis-hosts",
            f"{self.mainRedis.host}:{self.mainRedis.port}",
            "--redis-namespace",
            self.namespace,
            "--database",
            "sqlite",
            "--database-path",
            self.databasePath,
            env=seededEnvironment(APP, KEY, SECRET, admin=ADMIN, **(env or {})),
        )
        self.seenPids: set[int] = set()
        self.addCleanup(server.removeScratch)
        self.addCleanup(self._killLeftovers)
        self.addCleanup(server.stop)
        self.addCleanup(self._stopClients)
        await server.start()
        return server

    def _killLeftovers(self) -> None:
        # Whatever a failed test left behind must not outlive it; a pid is checked to
        # still be ours (its command line names our namespace) before it is killed.
        for pid in self.seenPids:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if _alive(pid) and self.namespace.encode() in command:
                os.kill(pid, signal.SIGKILL)

    async def workerPids(self, server: PandapushProcess, count: int, timeout: float = 15) -> dict[int, int]:
        """Asks /health_check.json until ``count`` workers have answered; their pids by index."""
        pids: dict[int, int] = {}
        deadline = time.monotonic() + timeout
        while len(pids) < count and time.monotonic() < deadline:
            response = await treq.get(server.url + "/health_check.json", persistent=False, timeout=5)
            health = json.loads(await response.content())
            self.assertEqual(health["workers"], count, health)
            self.assertEqual(response.headers.getRawHeaders(WORKER_HEADER), [str(health["worker"])])
            pids[health["worker"]] = health["pid"]
        self.assertEqual(sorted(pids), list(range(count)), f"workers that answered: {pids}\n{server.log()}")
        self.seenPids.update(pids.values())
        return pids

    @contextlib.contextmanager
    def onlyWorker(self, pids: dict[int, int], worker: int) -> Iterator[None]:
        """
        While inside, the other workers are stopped (SIGSTOP), so ``worker`` accepts
        every new connection. Which idle worker accepts is otherwise the kernel's
        choice, and not an even one (the worker woken first wins); tests that need a
        connection on a given worker steer it instead of retrying until lucky.
        """
        others = [pid for index, pid in pids.items() if index != worker]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)

    async def wsOn(self, server: PandapushProcess, pids: dict[int, int], worker: int) -> WorkerWS:
        """A websocket client whose socket the worker ``worker`` accepted."""
        with self.onlyWorker(pids, worker):
            client = await WorkerWS([server.url], name=f"ws-{worker}").start()
        self.clients.append(client)
        self.assertEqual(client.worker, str(worker))
        return client


def _served(server: PandapushProcess, index: int) -> int:
    """How many times worker ``index`` has said it serves (once per start)."""
    return sum(f"worker {index} serving" in line for line in server.output)


class WorkersTests(WorkersCase):
    async def test_servesOnOnePortFromTwoProcesses(self) -> None:
        """
        --workers 2: two processes (the one started, and a child of it) answer on one
        port; a REST publish reaches websocket subscribers on both; a long-poll client
        whose requests land on either worker gets every message, in order, once.
        """
        server = await self.startWorkers(2)
        pids = await self.workerPids(server, 2)
        self.assertEqual(pids[0], server._transport.pid)
        self.assertEqual(_parentOf(pids[1]), pids[0])
        self.assertEqual(_listeningSockets(server.port), 1, "one socket, shared by both")

        news = channel("news")
        subscribers = [await self.wsOn(server, pids, 0), await self.wsOn(server, pids, 1)]
        for subscriber in subscribers:
            self.assertTrue((await subscriber.subscribe(news))["successful"])
        sent = [{"n": i} for i in range(5)]
        for data in sent:
            code, body = await self.restPublish(server, "news", data)
            self.assertEqual(code, 200, body)
        self.assertTrue(
            await eventually(lambda: all(len(dataOn(s, news)) >= len(sent) for s in subscribers), timeout=10),
            [dataOn(s, news) for s in subscribers],
        )

        feed = channel("feed")
        poller = WorkerLP(server.url)
        self.clients.append(poller)
        await poller.start()
        self.assertTrue(
            (await poller.call({"channel": "/meta/subscribe", "subscription": feed}))["successful"]
        )
        sent = [{"m": i} for i in range(20)]
        for data in sent:
            code, body = await self.restPublish(server, "feed", data)
            self.assertEqual(code, 200, body)
            await sleep(0.05)
        self.assertTrue(
            await eventually(lambda: len(dataOn(poller, feed)) >= len(sent), timeout=10),
            f"{dataOn(poller, feed)} {poller.failures[:3]} {poller.workers}\n{server.log()}",
        )
        await sleep(0.3)  # a duplicate would have arrived by now
        for subscriber in subscribers:
            self.assertEqual(dataOn(subscriber, news), [{"n": i} for i in range(5)])
        self.assertEqual(dataOn(poller, feed), sent)
        self.assertEqual(set(poller.workers), {"0", "1"}, "the long-poller's requests met both workers")

    async def test_crashedWorkerRestartedThenAllStop(self) -> None:
        """
        A worker SIGKILLed is started again (logged, new pid, serving); SIGTERM to the
        parent then drains every worker and leaves no process behind.
        """
        server = await self.startWorkers(2)
        pids = await self.workerPids(server, 2)
        os.kill(pids[1], signal.SIGKILL)
        restarted: dict[int, int] = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            restarted = await self.workerPids(server, 2)
            if restarted[1] != pids[1]:
                break
            await sleep(0.1)
        self.assertNotEqual(restarted[1], pids[1], server.log())
        self.assertEqual(restarted[0], pids[0])
        self.assertEqual(_parentOf(restarted[1]), pids[0])
        self.assertIn(f"worker 1 (pid {pids[1]}) exited (signal 9)", server.log())

        subscriber = await self.wsOn(server, restarted, 1)  # the new worker serves Bayeux too
        self.assertTrue((await subscriber.subscribe(channel("after")))["successful"])
        code, body = await self.restPublish(server, "after", {"again": True})
        self.assertEqual(code, 200, body)
        self.assertTrue(await eventually(lambda: dataOn(subscriber, channel("after")) == [{"again": True}]))

        subscriber.stop()  # else it would fail over to the stopped port for ever
        started = time.monotonic()
        # twist ends with the signal that stopped it, once everything has stopped.
        self.assertIn(await server.stop(signal.SIGTERM), (0, -signal.SIGTERM), server.log())
        self.assertLess(time.monotonic() - started, 2 + 5, server.log())
        self.assertFalse(_alive(restarted[1]), "the worker outlived its parent")
        self.assertIn("[worker-1 pandapush.services.BayeuxService#info] drained", server.log())
        self.assertIn("all 1 workers stopped", server.log())

    async def test_pandapushServe(self) -> None:
        """``pandapush serve --workers 3`` (twistd underneath) runs three processes and stops them all."""
        server = await self.startWorkers(3, kind=ServedProcess)
        pids = await self.workerPids(server, 3)
        self.assertEqual({_parentOf(pids[1]), _parentOf(pids[2])}, {pids[0]})
        self.assertIn(await server.stop(signal.SIGTERM), (0, -signal.SIGTERM), server.log())
        self.assertFalse([pid for pid in pids.values() if _alive(pid)], server.log())

    async def test_reusePort(self) -> None:
        """
        --reuse-port: each worker listens on a socket of its own on the one port,
        serves Bayeux, and a worker killed and restarted has a new socket (the dead
        one's is gone, not left to collect connections nobody accepts).
        """
        server = await self.startWorkers(2, extra=("--reuse-port",))
        # A connection the kernel hashes to a worker's socket waits there until that
        # worker accepts: ask only once it serves (on a loaded machine it may still be
        # importing when the parent answers its first request).
        self.assertTrue(await eventually(lambda: _served(server, 1) == 1, timeout=30), server.log())
        pids = await self.workerPids(server, 2)
        self.assertEqual(_listeningSockets(server.port), 2)
        os.kill(pids[1], signal.SIGKILL)
        self.assertTrue(await eventually(lambda: _listeningSockets(server.port) == 1, timeout=5))
        self.assertTrue(await eventually(lambda: _served(server, 1) == 2, timeout=30), server.log())
        restarted: dict[int, int] = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            restarted = await self.workerPids(server, 2)
            if restarted[1] != pids[1]:
                break
            await sleep(0.1)
        self.assertNotEqual(restarted[1], pids[1], server.log())
        self.assertEqual(_listeningSockets(server.port), 2)
        # Stopping the other worker cannot steer here: the kernel would still queue
        # connections on its socket. The hash spreads them evenly, so a few will do.
        byWorker: dict[str, WorkerWS] = {}
        for attempt in range(30):
            client = await WorkerWS([server.url], name=f"ws-{attempt}").start()
            self.clients.append(client)
            byWorker.setdefault(client.worker or "?", client)
            if set(byWorker) == {"0", "1"}:
                break
        self.assertEqual(set(byWorker), {"0", "1"})
        even = channel("even")
        for subscriber in byWorker.values():
            self.assertTrue((await subscriber.subscribe(even))["successful"])
        code, body = await self.restPublish(server, "even", {"spread": True})
        self.assertEqual(code, 200, body)
        self.assertTrue(
            await eventually(lambda: all(dataOn(s, even) == [{"spread": True}] for s in byWorker.values()))
        )

    async def test_generatedAdminPasswordOnce(self) -> None:
        """
        With no admin password configured, one is generated once (by the parent,
        before any worker starts), announced once, and every worker accepts it.
        """
        unset = {"AUTH_METHOD": "", "ADMIN_USERNAME": "", "ADMIN_PASSWORD": ""}
        server = await self.startWorkers(2, env=unset)
        pids = await self.workerPids(server, 2)
        shown = re.findall(r"password: (\S+)", server.log())
        self.assertEqual(len(shown), 1, server.log())
        password = shown[0]
        for worker in (0, 1):
            with self.onlyWorker(pids, worker):
                response = await treq.get(
                    server.url + "/admin/api/info", auth=("admin", password), persistent=False, timeout=5
                )
                await response.content()
            self.assertEqual(response.code, 200)
            self.assertEqual(response.headers.getRawHeaders(WORKER_HEADER), [str(worker)])

    async def test_parentKilledWorkersLeave(self) -> None:
        """A SIGKILLed parent cannot stop its workers: they see their stdin close and stop themselves."""
        server = await self.startWorkers(2)
        pids = await self.workerPids(server, 2)
        await server.stop(signal.SIGKILL)
        self.assertTrue(await eventually(lambda: not _alive(pids[1]), timeout=2 + 5), server.log())


class WorkersRefusedTests(TestCase):
    async def test_refusedWithoutRedis(self) -> None:
        """The server refuses to start with --workers 2 and no Redis, saying why."""
        server = PandapushProcess("--workers", "2", env={"REDIS_HOSTS": "", "DATABASE": "sqlite"})
        self.addCleanup(server.removeScratch)
        self.addCleanup(server.stop)
        with self.assertRaises(ServerFailedError) as failed:
            await server.start()
        self.assertIn("--workers 2 needs the Redis engine", str(failed.exception))
        self.assertFalse(server.running)
