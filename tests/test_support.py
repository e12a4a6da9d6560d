"""The test support's own promises (``tests/support/``), where a test relies on them."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.support.bayeux import WSClient
from tests.support.inprocess import InProcessServer
from tests.support.waiting import eventually


def _batchedTimers() -> list[Any]:
    """The reactor's calls that run txaio's batched timers (where autobahn keeps its timeouts)."""
    return [
        c
        for c in reactor.getDelayedCalls()
        if getattr(getattr(c, "func", None), "__name__", "") == "_notify_bucket"
    ]


class WSClientTests(TestCase):
    async def test_closeThenConnectionLost(self) -> None:
        """
        A websocket that sent its close frame and lost the connection before the answer
        leaves no timer behind (autobahn's connectionLost keeps the close handshake's
        timeout): a test may end at once, without waiting it out.
        """
        server = await InProcessServer.started(self)
        client = await WSClient(server.url).start()
        client.protocol.sendClose()
        client.kill()
        self.assertTrue(await eventually(lambda: client.closed))
        self.assertEqual(_batchedTimers(), [])

    async def test_close(self) -> None:
        """``close()`` ends with the close handshake, and nothing of the socket is left pending."""
        server = await InProcessServer.started(self)
        client = await WSClient(server.url).start()
        await client.close()
        self.assertTrue(client.closed)
        self.assertEqual(_batchedTimers(), [])
