"""
``python -m pandapush.workers --index I --count N --listeners 3:AF_INET -- <pandapush options>``:
one worker of ``twistd pandapush --workers N``, started by its parent (never by hand).

It serves on the listening sockets it inherited, logs JSON events on stdout for
the parent to relay, stops on SIGTERM (draining as any node does) and by itself
when its stdin from the parent closes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from twisted.logger import Logger, globalLogBeginner, jsonFileLogObserver
from twisted.python import usage

from pandapush.config import WORKER_VARIABLE, WorkerSpec, parseListeners
from pandapush.workers import ParentWatch, installWorkerSignals, stopReactor

_log = Logger(namespace="pandapush.workers")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pandapush.workers", description=__doc__)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--listeners", type=parseListeners, required=True)
    parser.add_argument("options", nargs=argparse.REMAINDER)
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    options = args.options[1:] if args.options[:1] == ["--"] else args.options

    from twisted.internet import reactor

    from pandapush.tap import Options, makeService

    # One JSON event per line: the parent re-emits each into its own log, with its
    # own time, level and fields intact, whatever format the parent writes.
    globalLogBeginner.beginLoggingTo([jsonFileLogObserver(sys.stdout)], redirectStandardIO=False)
    spec = WorkerSpec(index=args.index, count=args.count, listeners=args.listeners)
    os.environ[WORKER_VARIABLE] = spec.format()
    serverOptions = Options()
    try:
        serverOptions.parseOptions(options)
    except usage.UsageError as refused:
        _log.critical("worker {index}: bad options: {reason}", index=args.index, reason=str(refused))
        return 2
    service = makeService(serverOptions, reactor=reactor)
    status = {"code": 0}

    def failed(failure: Any) -> None:
        status["code"] = 1

    service.ready.addErrback(failed)

    def parentGone() -> None:
        _log.warn("worker {index}: parent gone, stopping", index=args.index)
        stopReactor(reactor)

    ParentWatch(reactor, 0, parentGone).startReading()
    reactor.callWhenRunning(installWorkerSignals, reactor)  # type: ignore[attr-defined]
    reactor.callWhenRunning(service.startService)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())
