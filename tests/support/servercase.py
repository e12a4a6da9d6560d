"""A test case with a real pandapush in the test's reactor, and the clients a test opens on it.

``ServerCase`` starts an :class:`~tests.support.inprocess.InProcessServer` for each test
(``--timeout 2 --client-expiry 1`` so that held connects and gone clients end quickly,
then the class's ``serverArgs``), and after the test ends every client the test opened
with :meth:`ServerCase.ws` or :meth:`ServerCase.lp`, then waits until the server holds no
socket and no connect of theirs: a test that leaves something behind fails there.
"""

from __future__ import annotations

import json
from base64 import b64encode
from typing import Any

import treq
from twisted.trial.unittest import TestCase

from tests.support.bayeux import LPClient, WSClient
from tests.support.inprocess import KEY, SECRET, InProcessServer
from tests.support.waiting import eventually

__all__ = ["BASIC", "ServerCase"]

#: The seeded key's ``Authorization`` header value.
BASIC = "Basic " + b64encode(f"{KEY}:{SECRET}".encode()).decode()


class ServerCase(TestCase):
    serverArgs: tuple[str, ...] = ()

    async def setUp(self) -> None:  # type: ignore[override]
        self.server = InProcessServer("--timeout", "2", "--client-expiry", "1", *self.serverArgs)
        await self.server.start()
        self.addCleanup(self.server.stop)
        self.clients: list[WSClient | LPClient] = []
        self.addCleanup(self._stopClients)

    async def _stopClients(self) -> None:
        for client in self.clients:
            if isinstance(client, LPClient):
                await client.stop()
            elif not client.closed:
                client.kill()
        router = self.server.router
        await eventually(lambda: router.openSockets() == 0 and router.heldConnects() == 0)

    async def ws(self) -> WSClient:
        """A websocket client, ended after the test."""
        client = await WSClient(self.server.url).start()
        self.clients.append(client)
        return client

    async def lp(self) -> LPClient:
        """A long-polling client, stopped after the test."""
        client = await LPClient(self.server.url).start()
        self.clients.append(client)
        return client

    async def publish(self, channel: str, data: Any, headers: dict[str, str] | None = None) -> Any:
        """``POST /channel/<channel>``, JSON; the seeded key's ``Authorization`` unless ``headers``."""
        sent: dict[bytes | str, bytes | str] = {"Content-Type": "application/json"}
        sent.update(headers or {"Authorization": BASIC})
        return await treq.post(
            f"{self.server.url}/channel/{channel.lstrip('/')}",
            data=json.dumps(data).encode(),
            headers=sent,
            persistent=False,
        )
