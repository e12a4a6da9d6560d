"""
A real pandapush daemon in a child process, for end-to-end tests.

``PandapushProcess`` runs ``python -m twisted pandapush`` (the same interpreter as the
tests, with the source tree first on PYTHONPATH so its package and its dropin are the ones
found, in a scratch directory of its own) on a free 127.0.0.1 port, waits until
``GET /health_check.json`` answers, and stops it with SIGTERM (then SIGKILL).
``restart()`` brings up a fresh process on the same port: a server that went away and
came back, with no memory of its clients. ``env`` adds to the child's environment
(storage, ``DEV_*`` seeding, auth settings; ``seededEnvironment`` builds the usual ones).
Tests that need no separate process use :mod:`tests.support.inprocess` instead.

Everything is asynchronous: a trial test awaits ``start()``/``stop()``/``restart()`` and
the reactor keeps running, so clients in other processes are served meanwhile.

    server = await PandapushProcess.started(self, "--timeout", "2", env={"DATABASE": "memory"})
    url = server.push  # http://127.0.0.1:<port>/push
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import treq
from twisted.internet import defer, error
from twisted.internet import reactor as _reactor
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.support import REPO_ROOT
from tests.support.ports import freePort
from tests.support.waiting import sleep

__all__ = ["PandapushProcess", "ServerFailedError", "seededEnvironment"]


class ServerFailedError(Exception):
    """The server did not come up, or did not go down; the message holds its output."""


def seededEnvironment(
    app: str, key: str, secret: str, admin: tuple[str, str] | None = None, **more: str
) -> dict[str, str]:
    """
    A server's environment with a development application and key (upstream's ``DEV_*``
    variables) and, given ``admin``, Basic admin auth for that user and password (else no
    admin area: ``AUTH_METHOD=none``); ``more`` is added as it is.
    """
    env = {"DEV_APPLICATION_ID": app, "DEV_KEY_ID": key, "DEV_KEY_SECRET": secret}
    if admin is None:
        env["AUTH_METHOD"] = "none"
    else:
        env.update({"AUTH_METHOD": "basic", "ADMIN_USERNAME": admin[0], "ADMIN_PASSWORD": admin[1]})
    env.update(more)
    return env


class _ServerProtocol(ProcessProtocol):
    """Hands the child's output to ``write``, a line at a time, and tells when it has ended."""

    def __init__(self, write: Callable[[str], object], tag: str) -> None:
        self.write = write
        self.tag = tag
        self.exitCode: int | None = None
        self.hasEnded = False
        self._waiting: list[defer.Deferred[int | None]] = []
        self._partial = {1: b"", 2: b""}

    def whenEnded(self) -> defer.Deferred[int | None]:
        """Fires with the exit code (negative: killed by that signal) once the child is gone."""
        if self.hasEnded:
            return defer.succeed(self.exitCode)
        d: defer.Deferred[int | None] = defer.Deferred()
        self._waiting.append(d)
        return d

    def childDataReceived(self, fd: int, data: bytes) -> None:
        buffered = self._partial.get(fd, b"") + data
        *lines, self._partial[fd] = buffered.split(b"\n")
        for line in lines:
            self.write(f"[{self.tag}] " + line.decode("utf-8", "replace"))

    def processEnded(self, reason: Failure) -> None:
        for rest in self._partial.values():
            if rest:
                self.write(f"[{self.tag}] " + rest.decode("utf-8", "replace"))
        self._partial = {1: b"", 2: b""}
        code: int | None = 0
        if isinstance(reason.value, error.ProcessTerminated):
            code = reason.value.exitCode
            if code is None and reason.value.signal is not None:
                code = -reason.value.signal
        self.exitCode, self.hasEnded = code, True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(code)


class PandapushProcess:
    """
    One pandapush daemon on ``127.0.0.1:<port>``; ``args`` are ``twistd pandapush`` options
    (``--listen`` is added), ``env`` is added to the child's environment (storage, seeding,
    auth: see ``seededEnvironment``). ``output`` keeps every line the server printed, across
    restarts, each tagged with its run number; with ``logFile`` the lines go to that file
    instead (a long run, e.g. ``bench/fuzz.py``'s, would hold them all in memory).
    """

    startTimeout = 30.0
    stopTimeout = 10.0
    #: Where the child runs: by default a scratch directory of its own (removed at the
    #: end), so whatever the server writes relative to its cwd (``localdata/``) stays out
    #: of the checkout. With ``sourceOnPath`` the source tree is first on its PYTHONPATH;
    #: a subclass that runs an installed copy turns that off.
    workingDirectory: Path | None = None
    sourceOnPath = True

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        reactor: Any = None,
        logFile: Path | None = None,
    ) -> None:
        self.args = list(args)
        self.logFile = logFile
        self.env = dict(env or {})
        self.port = port or freePort()
        self.reactor: Any = reactor or _reactor
        self.output: list[str] = []
        self.runs = 0
        self._transport: Any = None
        self._protocol: _ServerProtocol | None = None
        self._scratch: Path | None = None

    @classmethod
    async def started(cls, testCase: TestCase, *args: str, **kwargs: Any) -> Self:
        """Start a server for ``testCase`` and stop it in its cleanup, whatever happens."""
        server = cls(*args, **kwargs)
        testCase.addCleanup(server.removeScratch)  # cleanups run last-in first-out: after stop
        testCase.addCleanup(server.stop)
        await server.start()
        return server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def push(self) -> str:
        """The Bayeux endpoint."""
        return self.url + "/push"

    @property
    def pid(self) -> int | None:
        """The process id of the current run (None before the first start)."""
        return self._transport.pid if self._transport is not None else None

    @property
    def running(self) -> bool:
        return self._protocol is not None and not self._protocol.hasEnded

    def directory(self) -> Path:
        """The child's working directory (see ``workingDirectory``)."""
        if self.workingDirectory is not None:
            return self.workingDirectory
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="pandapush-server-"))
            atexit.register(shutil.rmtree, self._scratch, True)
        return self._scratch

    def removeScratch(self) -> None:
        if self._scratch is not None and not self.running:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "twisted",
            # Text, not JSON: the log is read by people when a test fails.
            "--log-format",
            "text",
            "pandapush",
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
            *self.args,
        ]

    def childEnvironment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.sourceOnPath:
            # The source tree first: its package and its twisted/plugins dropin.
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        else:
            env.pop("PYTHONPATH", None)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        return env

    async def start(self) -> None:
        protocol = self.launch()
        await self._waitUntilHealthy(protocol)

    async def runUntilExit(self) -> int | None:
        """
        Start a server that is expected not to come up, and wait for it to exit by itself;
        its exit code. One still running after ``startTimeout`` is stopped and the test fails.
        """
        protocol = self.launch()
        timer = self.reactor.callLater(self.startTimeout, self._kill, self._transport)
        code = await protocol.whenEnded()
        if not timer.active():
            raise ServerFailedError(f"still running after {self.startTimeout}s:\n{self.log()}")
        timer.cancel()
        return code

    def sendSignal(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the running server and return at once (``exited`` waits for its end)."""
        if self._transport is not None and self.running:
            self._transport.signalProcess(sig)

    async def exited(self) -> int | None:
        """The exit code of the current run, once it has ended."""
        assert self._protocol is not None
        return await self._protocol.whenEnded()

    async def waitForLine(self, text: str) -> str:
        """The first line of this run's output holding ``text``, once printed (within ``startTimeout``)."""
        clock: IReactorTime = self.reactor
        deadline = clock.seconds() + self.startTimeout
        tag = f"[server#{self.runs}] "
        while clock.seconds() < deadline:
            for line in self.output:
                if line.startswith(tag) and text in line:
                    return line
            if not self.running:
                break
            await sleep(0.05, self.reactor)
        raise ServerFailedError(f"no line with {text!r}:\n{self.log()}")

    def launch(self) -> _ServerProtocol:
        """Start the process, without waiting for anything."""
        if self.running:
            raise ServerFailedError("already running")
        self.runs += 1
        write, ended = self._writer()
        protocol = _ServerProtocol(write, f"server#{self.runs}")
        protocol.whenEnded().addBoth(lambda result: (ended(), result)[1])
        command = self.command()
        protocol.write(f"[server#{self.runs}] $ {' '.join(command)}")
        self._protocol = protocol
        self._transport = IReactorProcess(self.reactor).spawnProcess(
            protocol, command[0], command, env=self.childEnvironment(), path=str(self.directory())
        )
        return protocol

    async def _waitUntilHealthy(self, protocol: _ServerProtocol) -> None:
        clock: IReactorTime = self.reactor
        deadline = clock.seconds() + self.startTimeout
        while True:
            if protocol.hasEnded:
                raise ServerFailedError(f"server exited before answering /health_check.json:\n{self.log()}")
            try:
                response = await treq.get(
                    self.url + "/health_check.json", persistent=False, timeout=2, reactor=self.reactor
                )
                await response.content()
                if response.code == 200:
                    return
            except Exception:
                pass
            if clock.seconds() > deadline:
                await self.stop()
                raise ServerFailedError(
                    f"no answer on {self.url}/health_check.json in {self.startTimeout}s:\n{self.log()}"
                )
            await sleep(0.05, self.reactor)

    async def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop the server (``sig``, then SIGKILL after ``stopTimeout``); its exit code."""
        protocol, transport = self._protocol, self._transport
        if protocol is None or protocol.hasEnded:
            return protocol.exitCode if protocol is not None else None
        try:
            transport.signalProcess(sig)
        except error.ProcessExitedAlready:
            pass
        timer = self.reactor.callLater(self.stopTimeout, self._kill, transport)
        code = await protocol.whenEnded()
        if timer.active():
            timer.cancel()
        return code

    def _writer(self) -> tuple[Callable[[str], object], Callable[[], object]]:
        """Where the lines of a run go, and what to do once it has ended."""
        if self.logFile is None:
            return self.output.append, lambda: None
        handle = self.logFile.open("a", encoding="utf-8", buffering=1)
        return (lambda line: handle.write(line + "\n")), handle.close

    def _kill(self, transport: Any) -> None:
        assert self._protocol is not None
        self._protocol.write(f"[server#{self.runs}] did not stop in {self.stopTimeout}s: SIGKILL")
        try:
            transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass

    async def restart(self, sig: int = signal.SIGTERM) -> None:
        """A new process on the same port: every client and subscription is forgotten."""
        await self.stop(sig)
        await self.start()

    def log(self) -> str:
        """The last 200 lines the server printed (for failure messages)."""
        if self.logFile is not None:
            lines = self.logFile.read_text(encoding="utf-8", errors="replace").splitlines()
            return "\n".join(lines[-200:])
        return "\n".join(self.output[-200:])
