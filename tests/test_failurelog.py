"""Autobahn's per-connection failure warnings are gathered: a client cannot flood the log."""

from __future__ import annotations

import socket
import struct
from typing import Any

import treq
from twisted.internet import threads
from twisted.internet.task import Clock
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase

from pandapush.transports.failurelog import WINDOW, FailureLog
from tests.support.logs import captureLogs
from tests.test_fastframes import _UPGRADE, frame
from tests.test_transports import ServerTestCase

_FAILING = 'failing WebSocket connection (code={code}): "{reason}"'
_DROPPING = "dropping connection to peer {peer} with abort={abort}: {reason}"
_PONG = "Auto ping/pong: received non-pending pong"
_REFUSING = "failing WebSocket opening handshake ('{reason}')"


class _Logger:
    """A txaio-like logger that records what reaches it."""

    level = "info"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def warn(self, format: str, **kwargs: Any) -> None:
        self.calls.append(("warn", format, kwargs))

    def debug(self, format: str, **kwargs: Any) -> None:
        self.calls.append(("debug", format, kwargs))

    def info(self, format: str, **kwargs: Any) -> None:
        self.calls.append(("info", format, kwargs))


class FailureLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.log = _Logger()
        self.failures = FailureLog(self.log, self.clock)
        self.logged = captureLogs(self)

    def summaries(self) -> list[Any]:
        return self.logged.matching("more websocket failures")

    def test_firstLoggedRestCounted(self) -> None:
        """The first failure of a window is logged as it was; the rest are counted by kind."""
        self.failures.warn(_FAILING, code=1007, reason="invalid UTF-8")
        self.failures.warn(_DROPPING, peer="tcp:1.2.3.4:5", abort=False, reason="failed")
        self.failures.warn(_FAILING, code=1007, reason="invalid UTF-8")
        self.failures.warn(_FAILING, code=1002, reason="unmasked client-to-server frame")
        self.failures.warn(_PONG)
        self.failures.info(_REFUSING, reason="Origin not allowed")
        self.assertEqual(self.log.calls, [("warn", _FAILING, {"code": 1007, "reason": "invalid UTF-8"})])
        counted = {"code 1007": 1, "code 1002": 1, "dropped": 1, "unexpected pong": 1, "opening refused": 1}
        self.assertEqual(dict(self.failures.counted), counted)
        # Every one of them, the logged one too, for /metrics.
        self.assertEqual(dict(self.failures.totals), {**counted, "code 1007": 2})
        self.assertEqual(self.summaries(), [])
        self.clock.advance(WINDOW)
        [summary] = self.summaries()
        self.assertEqual(summary["count"], 5)
        self.assertEqual(summary["counts"], counted)
        self.assertIn(
            "code 1002: 1, code 1007: 1, dropped: 1, opening refused: 1, unexpected pong: 1",
            formatEvent(summary),
        )
        self.assertEqual(self.failures.counted, {})
        # The next failure opens a window of its own, logged as it happens.
        self.failures.warn(_FAILING, code=1009, reason="too big")
        self.assertEqual(self.log.calls[-1][2]["code"], 1009)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_quietWindow(self) -> None:
        """A window with only its first failure writes no summary."""
        self.failures.warn(_FAILING, code=1007, reason="invalid UTF-8")
        self.clock.advance(WINDOW)
        self.assertEqual(self.summaries(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_everythingElseUnchanged(self) -> None:
        """Other warnings, and every other level, are autobahn's logger's own."""
        self.failures.warn("Unexpected exception in onConnect ['{err.value}']", err=None)
        self.failures.warn("Unexpected exception in onConnect ['{err.value}']", err=None)
        self.failures.debug("dropping connection to peer {peer} with abort={abort}", peer="p", abort=False)
        self.failures.info("connection from {peer}", peer="p")
        self.failures.info("connection from {peer}", peer="p")
        self.assertEqual([call[0] for call in self.log.calls], ["warn", "warn", "debug", "info", "info"])
        self.assertEqual(self.failures.level, "info")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop(self) -> None:
        """Stopping writes what is counted and cancels the window; later failures are logged as they come."""
        self.failures.warn(_FAILING, code=1007, reason="a")
        self.failures.warn(_FAILING, code=1007, reason="b")
        self.failures.stop()
        [summary] = self.summaries()
        self.assertEqual(summary["count"], 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.failures.warn(_FAILING, code=1002, reason="c")
        self.assertEqual(self.log.calls[-1][2]["reason"], "c")
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ServerFailureLogTests(ServerTestCase):
    """A real server: spoiled websockets are still failed with 1002, and logged once, not each."""

    def spoil(self, port: int) -> bytes:
        """
        Open a websocket, send a frame that is not masked, and answer the server's close
        frame (the close handshake completes: nothing of autobahn's left waiting); the
        close frame (blocking).
        """
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(_UPGRADE)
            received = b""
            while b"\r\n\r\n" not in received:
                received += client.recv(4096)
            received = received.split(b"\r\n\r\n", 1)[1]
            # Not masked: autobahn fails the connection with 1002, once.
            client.sendall(frame(b"[]", mask=None))
            while len(received) < 2 or len(received) < 2 + (received[1] & 0x7F):
                received += client.recv(4096)
            close = received[: 2 + (received[1] & 0x7F)]
            client.sendall(frame(close[2:4], opcode=8))
            try:
                while client.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            return close

    async def test_spoiledConnections(self) -> None:
        logged = captureLogs(self)
        port = int(self.server.url.rsplit(":", 1)[1])
        for _ in range(5):
            answer = await threads.deferToThread(self.spoil, port)
            # A close frame with 1002, as autobahn sends it.
            self.assertEqual(answer[0], 0x88)
            self.assertEqual(struct.unpack("!H", answer[2:4])[0], 1002)
        failing = logged.matching("failing WebSocket connection")
        self.assertEqual(len(failing), 1, [e.get("log_format") for e in logged.events])
        failureLog = self.server.service.bayeux.websocketFactory.failureLog
        self.assertEqual(failureLog.counted["code 1002"], 4)
        response = await treq.get(self.server.url + "/metrics", persistent=False)
        text = (await response.content()).decode()
        self.assertIn('pandapush_websocket_failures_total{kind="code 1002"} 5.0', text)
        await self.server.stop()
        [summary] = logged.matching("more websocket failures")
        self.assertGreaterEqual(summary["count"], 4)

    def refused(self, port: int) -> bytes:
        """The status line autobahn answers an opening of a version it does not speak with (blocking)."""
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(_UPGRADE.replace(b"Version: 13", b"Version: 99"))
            received = b""
            while b"\r\n" not in received:
                received += client.recv(4096)
            return received.split(b"\r\n", 1)[0]

    async def test_refusedOpenings(self) -> None:
        logged = captureLogs(self)
        port = int(self.server.url.rsplit(":", 1)[1])
        for _ in range(4):
            status = await threads.deferToThread(self.refused, port)
            self.assertTrue(status.startswith(b"HTTP/1.1 400 WebSocket version 99 not supported"), status)
        self.assertEqual(len(logged.matching("failing WebSocket opening handshake")), 1)
        failureLog = self.server.service.bayeux.websocketFactory.failureLog
        self.assertEqual(failureLog.counted["opening refused"], 3)
