"""
An in-process pandapush with the admin console mounted, for the console's tests.

Until the server mounts the console itself, tests mount it the way the server is meant to:
``root.mount(b"admin", adminResource(tenancy))`` (``/admin/api/...`` to the API app,
everything else under ``/admin`` to the console, both under the same ``AdminAuthority``). Once the server's
own ``/admin`` mount is something other than the bare API app, it is left alone, so the same
tests then check the server's real wiring.

Run by hand to look at the console::

    .venv/bin/python -m tests.browser_admin.server 8089   # then http://127.0.0.1:8089/admin
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort

from pandapush.tap import Options, makeService
from pandapush.web.adminui import AdminUIResource, adminResource

ADMIN_USER = "admin"
ADMIN_PASSWORD = "console-test-password"


def serverMountsConsole(service: Any) -> bool:
    """Has ``makeService`` already put something other than the bare API app at ``/admin``?"""
    from klein.resource import KleinResource

    mounted = getattr(service.site.resource, "_mounts", {}).get(b"admin")
    return mounted is not None and not isinstance(mounted, KleinResource)


def mountConsole(service: Any) -> AdminUIResource | None:
    """Mounts the console on ``service``'s root as the lead will (unless the server does)."""
    if serverMountsConsole(service):
        return None
    admin = adminResource(service.adminApp, service.adminAuthority)
    service.site.resource.mount(b"admin", admin)
    return admin.ui  # type: ignore[return-value]


class ConsoleServer:
    """pandapush on 127.0.0.1 (memory storage, Basic admin auth), with the console mounted."""

    def __init__(
        self,
        port: int = 0,
        statsInterval: float = 1.0,
        mount: bool = True,
        environ: dict[str, str] | None = None,
    ) -> None:
        options = Options()
        options.parseOptions(
            [
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--database",
                "memory",
                "--stats-interval",
                str(statsInterval),
                "--timeout",
                "5",
            ]
        )
        environ = {
            "AUTH_METHOD": "basic",
            "ADMIN_USERNAME": ADMIN_USER,
            "ADMIN_PASSWORD": ADMIN_PASSWORD,
            **(environ or {}),
        }
        self.service: Any = makeService(options, environ=environ)
        if mount:
            mountConsole(self.service)
        self.port: IListeningPort | None = None

    async def start(self) -> None:
        self.service.startService()
        await self.service.ready
        listeners = [
            c
            for s in self.service
            for c in (s if hasattr(s, "__iter__") else [])
            if hasattr(c, "_waitingForPort")
        ]
        self.port = await listeners[0]._waitingForPort

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port.getHost().port}"  # type: ignore[attr-defined]

    async def stop(self) -> None:
        await defer.maybeDeferred(self.service.stopService)


def main() -> None:
    from twisted.internet import reactor, task
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8089

    async def run(_: Any) -> None:
        server = ConsoleServer(port)
        await server.start()
        print(f"console at {server.url}/admin  (user {ADMIN_USER!r}, password {ADMIN_PASSWORD!r})")
        await defer.Deferred()  # until interrupted

    task.react(lambda r: defer.Deferred.fromCoroutine(run(r)))
    del reactor


if __name__ == "__main__":
    main()
