"""The worker's side of ``--workers``: leave with the parent, and stop once on SIGTERM.

A worker is the ordinary server (``makeService`` adds a :class:`WorkerChild` to it when
``PANDAPUSH_WORKER`` says this process is a worker); this is the little that differs.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import error, fdesc
from twisted.internet.abstract import FileDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure

from pandapush.workers.collector import tuneCollector

__all__ = ["ParentWatch", "WorkerChild", "installWorkerSignals", "stopReactor"]


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


class WorkerChild(Service):
    """
    In a worker: stops the reactor when the parent is gone (its stdin, a pipe from the
    parent, reaches end of file: however the parent ended, SIGKILL included), and
    installs the worker's signal handlers once the reactor runs (its own are in place
    by then, and would otherwise stay), and the collector's settings
    (:mod:`~pandapush.workers.collector`).
    """

    _log = Logger()

    def __init__(self, reactor: Any, index: int, stdin: int = 0) -> None:
        self.reactor = reactor
        self.index = index
        self.stdin = stdin
        self._watch: ParentWatch | None = None

    def startService(self) -> None:
        super().startService()
        self._watch = ParentWatch(self.reactor, self.stdin, self._parentGone)
        self._watch.startReading()
        self.reactor.callWhenRunning(installWorkerSignals, self.reactor)
        # Once started (see pandapush.workers.collector: ~30 % of a worker's CPU in a storm).
        self.reactor.callWhenRunning(tuneCollector)

    def _parentGone(self) -> None:
        self._log.warn("worker {index}: parent gone, stopping", index=self.index)
        stopReactor(self.reactor)
