"""
A real pandapush listening on 127.0.0.1 inside the test's own reactor.

``InProcessServer`` builds the same service tree as ``twistd pandapush`` (``makeService``
from parsed options and an environment of the test's choosing), on a free port and memory
storage unless told otherwise. Every test that runs the server in its own process uses
it; tests that need a separate process (signals, restarts, several nodes) use
:mod:`tests.support.process`.

By default the server is seeded with a development application and key (upstream's
``DEV_*`` variables: ``APP``, ``KEY``, ``SECRET``) and runs with ``AUTH_METHOD=none``.
``InProcessServer.withConsole()`` is the server the admin console's tests use: Basic admin
auth (``ADMIN_USER``/``ADMIN_PASSWORD``), no seeded application, statistics every second.

    server = await InProcessServer.started(self, "--timeout", "2")
    treq.post(server.url + "/channel" + channel("news"), ...)

Run by hand to look at the console::

    .venv/bin/python -m tests.support.inprocess 8089   # then http://127.0.0.1:8089/admin
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.trial.unittest import TestCase

from pandapush.tap import Options, makeService
from pandapush.workers.sockets import EndpointListener
from tests.support.ports import portNumber

__all__ = [
    "ADMIN_PASSWORD",
    "ADMIN_USER",
    "APP",
    "AUTH",
    "KEY",
    "SECRET",
    "InProcessServer",
    "channel",
]

#: The application and key every seeded server has (upstream's DEV_* variables).
APP = "testapp0000000000001"
KEY = "PSIDtestkey000000001"
SECRET = "in-process-test-secret"
AUTH = {"key": KEY, "secret": SECRET}

#: The admin of ``InProcessServer.withConsole()`` (Basic auth).
ADMIN_USER = "admin"
ADMIN_PASSWORD = "console-test-password"


def channel(path: str, kind: str = "public") -> str:
    """``/<APP>/<kind>/<path>``: a channel of the seeded application."""
    return f"/{APP}/{kind}/{path.lstrip('/')}"


class InProcessServer:
    """
    ``twistd pandapush <args>`` on ``127.0.0.1:<port>`` (a free one by default), in this process.

    ``environ`` is the environment ``makeService`` reads, added to the defaults (the seeded
    application unless ``seed=False``, and ``AUTH_METHOD=none``). ``service`` is the
    service tree (``pandapush.services.Server``); ``engine`` and ``router`` its parts that
    tests look into most.
    """

    def __init__(
        self, *args: str, environ: dict[str, str] | None = None, seed: bool = True, port: int = 0
    ) -> None:
        options = Options()
        options.parseOptions(["--listen", f"tcp:{port}:interface=127.0.0.1", "--database", "memory", *args])
        env: dict[str, str] = {}
        if seed:
            env.update({"DEV_APPLICATION_ID": APP, "DEV_KEY_ID": KEY, "DEV_KEY_SECRET": SECRET})
        env["AUTH_METHOD"] = "none"
        env.update(environ or {})
        self.service = makeService(options, environ=env)
        # The memory engine unless ``args`` choose another; tests use its extras (hasClient).
        self.engine: Any = self.service.engine
        self.router = self.service.router
        self.port: IListeningPort | None = None

    @classmethod
    def withConsole(
        cls, statsInterval: float = 1.0, environ: dict[str, str] | None = None, port: int = 0
    ) -> InProcessServer:
        """The admin console's server: Basic admin auth, no seeded application, ``--timeout 5``."""
        return cls(
            "--stats-interval",
            str(statsInterval),
            "--timeout",
            "5",
            environ={
                "AUTH_METHOD": "basic",
                "ADMIN_USERNAME": ADMIN_USER,
                "ADMIN_PASSWORD": ADMIN_PASSWORD,
                **(environ or {}),
            },
            seed=False,
            port=port,
        )

    @classmethod
    async def started(cls, testCase: TestCase, *args: str, **kwargs: Any) -> InProcessServer:
        """A started server for ``testCase``, stopped in its cleanup."""
        server = cls(*args, **kwargs)
        await server.start()
        testCase.addCleanup(server.stop)
        return server

    async def start(self) -> None:
        self.service.startService()
        await self.service.ready
        listeners = [
            c
            for s in self.service
            for c in (s if hasattr(s, "__iter__") else [])
            if isinstance(c, EndpointListener)
        ]
        # Port 0 picks a free port; the listener is the only one who knows which.
        self.port = listeners[0].port

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{portNumber(self.port)}"

    @property
    def push(self) -> str:
        """The Bayeux endpoint."""
        return self.url + "/push"

    async def stop(self) -> None:
        await defer.maybeDeferred(self.service.stopService)


def main() -> None:
    """Serve the console on the port given (8089 by default) until interrupted."""
    from twisted.internet import task
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8089

    async def run(_: Any) -> None:
        server = InProcessServer.withConsole(port=port)
        await server.start()
        print(f"console at {server.url}/admin  (user {ADMIN_USER!r}, password {ADMIN_PASSWORD!r})")
        await defer.Deferred()  # until interrupted

    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))


if __name__ == "__main__":
    main()
