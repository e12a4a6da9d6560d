"""A real pandapush listening on 127.0.0.1 inside the test's own reactor."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort

from pandapush.tap import Options, makeService


class InProcessServer:
    """Builds the same service tree as ``twistd pandapush`` and listens on a free port."""

    def __init__(self, *args: str) -> None:
        options = Options()
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", *args])
        self.service: Any = makeService(options)
        self.engine = self.service.engine
        self.router = self.service.router
        self.port: IListeningPort | None = None

    async def start(self) -> None:
        self.service.startService()
        (listener,) = [c for c in self.service if type(c).__name__ == "StreamServerEndpointService"]
        # Port 0 picks a free port; the endpoint service is the only one who knows which.
        self.port = await listener._waitingForPort

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port.getHost().port}"  # type: ignore[attr-defined]

    async def stop(self) -> None:
        await defer.maybeDeferred(self.service.stopService)
