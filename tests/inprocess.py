"""A real pandapush listening on 127.0.0.1 inside the test's own reactor."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort

from pandapush.tap import Options, makeService

#: The application and key every in-process server is seeded with (upstream's DEV_* variables).
APP = "testapp0000000000001"
KEY = "PSIDtestkey000000001"
SECRET = "in-process-test-secret"
AUTH = {"key": KEY, "secret": SECRET}


def channel(path: str, kind: str = "public") -> str:
    """``/<APP>/<kind>/<path>``: a channel of the seeded application."""
    return f"/{APP}/{kind}/{path.lstrip('/')}"


class InProcessServer:
    """Builds the same service tree as ``twistd pandapush`` and listens on a free port."""

    def __init__(self, *args: str, environ: dict[str, str] | None = None) -> None:
        options = Options()
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", "--database", "memory", *args])
        env = {
            "DEV_APPLICATION_ID": APP,
            "DEV_KEY_ID": KEY,
            "DEV_KEY_SECRET": SECRET,
            "AUTH_METHOD": "none",
            **(environ or {}),
        }
        self.service: Any = makeService(options, environ=env)
        self.engine = self.service.engine
        self.router = self.service.router
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
        # Port 0 picks a free port; the endpoint service is the only one who knows which.
        self.port = await listeners[0]._waitingForPort

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port.getHost().port}"  # type: ignore[attr-defined]

    async def stop(self) -> None:
        await defer.maybeDeferred(self.service.stopService)
