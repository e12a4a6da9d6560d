"""What a server owning its process (run by twistd, twist or a .tac) does to it.

Its exit status, when the server could not run. Its pid file, which twistd writes
even in the foreground (:func:`foregroundWithoutPidfile`). What it tells systemd
(:func:`notifySystemd`).

``twistd`` and ``twist`` (``python -m twisted``) exit with status 0 once the reactor
has stopped, whatever stopped it: a server that could not listen, or found its
database schema out of date, looked to systemd (``Restart=on-failure``), Kubernetes
and CI as if it had finished its work. Neither runner lets a plugin choose the
status, and an exception out of ``reactor.run()`` is printed as a traceback by
``twistd``. So the status is set here, and applied at the very end: after the
runner has returned (``twistd`` has removed its pid file) and after the other exit
handlers have run, as they would on a normal exit.
"""

from __future__ import annotations

import atexit
import functools
import os
import socket
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

__all__ = [
    "START_FAILED",
    "ProcessStatus",
    "exitStatus",
    "failProcess",
    "foregroundWithoutPidfile",
    "notifySystemd",
    "oneLineFailures",
    "setExitStatus",
    "twistdOptions",
]

#: The status of a server that could not start (or whose workers could not).
START_FAILED = 1

_status: int | None = None


def setExitStatus(status: int) -> None:
    """Make this process exit with ``status`` (not 0) once its runner is done."""
    global _status
    if _status is None:
        atexit.register(_exitNow)
    _status = status


def exitStatus() -> int | None:
    """The status set with :func:`setExitStatus`, if any."""
    return _status


def _exitNow() -> None:
    # Registered last, so called first: let the others run, as on a normal exit,
    # then leave with the status (an exception in an exit handler cannot change it).
    atexit.unregister(_exitNow)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(_status if _status is not None else 0)


def foregroundWithoutPidfile(runnerOptions: Any) -> None:
    """
    twistd writes ``twistd.pid`` into the working directory by default, even with
    ``--nodaemon``; a second server (or ``twistd -ny pandapush.tac``) started from the
    same directory is then refused, and the file shows in ``git status``. In the
    foreground (a terminal, a container, a supervisor, which knows the pid) the file
    serves nobody: it is written only when ``--pidfile`` names it.
    """
    try:
        nodaemon, pidfile = runnerOptions["nodaemon"], runnerOptions["pidfile"]
    except (KeyError, TypeError):
        return  # not twistd's options (twist writes no pid file unless asked)
    given = any(arg == "--pidfile" or arg.startswith("--pidfile=") for arg in sys.argv)
    if nodaemon and not given and pidfile in ("twistd.pid", os.path.abspath("twistd.pid")):
        runnerOptions["pidfile"] = ""


def twistdOptions() -> Any:
    """
    The options of the twistd loading a .tac: twistd gives a .tac nothing, so they are
    found on the stack, as the ``config`` of the ``ApplicationRunner`` loading it.
    """
    from twisted.application.app import ApplicationRunner

    frame = sys._getframe(1)
    while frame is not None:
        runner = frame.f_locals.get("self")
        if isinstance(runner, ApplicationRunner):
            return runner.config
        frame = frame.f_back  # type: ignore[assignment]
    return None


def failProcess(reactor: Any) -> Callable[[], None]:
    """What a server that owns its process does when it cannot start: stop, and exit non-zero."""

    def failed() -> None:
        setExitStatus(START_FAILED)
        if reactor.running:
            reactor.stop()
        else:  # twist starts the services before the reactor runs
            reactor.callWhenRunning(reactor.stop)

    return failed


P = ParamSpec("P")
T = TypeVar("T")


def oneLineFailures(*expected: type[BaseException]) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """
    For ``makeService(options, ...)``: when the server owns its process
    (``options.ownsProcess``), an ``expected`` failure to build it (a storage or admin
    auth method that cannot work) leaves with status 1 and one line, where twistd and
    twist would print a traceback. In a test (not owning its process) it is raised as is.
    """

    def decorate(build: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(build)
        def building(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return build(*args, **kwargs)
            except expected as reason:
                options = args[0] if args else kwargs.get("options")
                if not getattr(options, "ownsProcess", False):
                    raise
                raise SystemExit(f"pandapush could not start: {reason}") from None

        return building

    return decorate


def notifySystemd(*assignments: str) -> bool:
    """
    Tell the service manager (``Type=notify``: ``READY=1`` once listening, ``STOPPING=1``
    when the drain starts, ``STATUS=...``) through ``$NOTIFY_SOCKET``, as ``sd_notify(3)``
    does, without its library: one datagram of ``NAME=value`` lines. Nothing to tell
    (no such socket, it is gone): False, and nothing happens.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not assignments:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(assignments).encode("utf-8", "replace"))
    except OSError:
        return False
    return True


class ProcessStatus:
    """
    What the server tells whoever started its process about its start and stop: systemd
    (``Type=notify``, :func:`notifySystemd`) and a daemonizing twistd's parent.

    twistd without ``-n`` forks; its first process waits on a pipe for the daemon's word
    and exits with it, and the daemon writes "started" once the services' ``startService``
    returned: before the reactor runs, so before the storage starts or a port listens,
    so ``twistd pandapush`` exited 0 for a server that then failed. The server takes the
    pipe from twistd's options (:meth:`takeStatusPipe`, when its ``privilegedStartService``
    runs, just after twistd forked) and answers it itself, when it serves or cannot start.
    ``runnerOptions``: twistd's options (``options.parent``, or :func:`twistdOptions` in a
    .tac), None under twist or a test.
    """

    def __init__(self, runnerOptions: Any = None) -> None:
        self.runnerOptions = runnerOptions
        self._pipe: int | None = None

    def takeStatusPipe(self) -> None:
        options = self.runnerOptions
        pipe = options.get("statusPipe") if isinstance(options, dict) else None
        if pipe is not None:
            options["statusPipe"] = None
            self._pipe = pipe

    def ready(self, status: str) -> None:
        notifySystemd("READY=1", f"STATUS={status}")
        self._answer(b"0")

    def failed(self, reason: str) -> None:
        notifySystemd(f"STATUS=could not start: {reason}")
        # "1 <reason>": twistd's own form, shown by its parent as it exits 1.
        self._answer(b"1 " + reason.encode("utf-8", "replace")[:95])

    def stopping(self) -> None:
        notifySystemd("STOPPING=1", "STATUS=draining")

    def _answer(self, word: bytes) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is None:
            return
        try:
            os.write(pipe, word)
            os.close(pipe)
        except OSError:
            pass  # the parent is gone: nobody to tell
