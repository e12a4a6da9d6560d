"""The listeners' accept queue: clients connecting all at once are queued, not dropped.

Twisted listens with a backlog of 50. When more clients than that connect before the
reactor's next accept (a reconnect storm after a deploy), the kernel drops their SYNs and
each waits for its retransmission, a second or more. These tests listen as the server
does (:func:`pandapush.workers.sockets.listenerServices`), stop accepting, and count how
many real connections the kernel still completes.
"""

from __future__ import annotations

import os
import select
import socket
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from pandapush.tap import Options
from pandapush.workers.sockets import LISTEN_BACKLOG, listenerServices, withBacklog


def _environ() -> dict[str, str]:
    """The process environment without settings that would make the options ask for Redis or a database."""
    return {k: v for k, v in os.environ.items() if k not in ("REDIS_HOSTS", "WORKERS", "DATABASE")}


class WithBacklogTests(TestCase):
    def test_addedWhenMissing(self) -> None:
        """Endpoints that take a backlog get the default; others and explicit ones are kept."""
        self.assertEqual(withBacklog("tcp:3000"), f"tcp:3000:backlog={LISTEN_BACKLOG}")
        ipv6 = "tcp6:3000:interface=\\:\\:1"
        self.assertEqual(withBacklog(ipv6), f"{ipv6}:backlog={LISTEN_BACKLOG}")
        self.assertEqual(withBacklog("unix:/tmp/p.sock"), f"unix:/tmp/p.sock:backlog={LISTEN_BACKLOG}")
        self.assertEqual(withBacklog("tcp:3000:backlog=10"), "tcp:3000:backlog=10")
        explicit = "tcp:port=3000:backlog=10:interface=127.0.0.1"
        self.assertEqual(withBacklog(explicit), explicit)
        self.assertEqual(withBacklog("systemd:domain=INET:index=0"), "systemd:domain=INET:index=0")


class ListenBacklogTests(TestCase):
    """Real sockets: the queue the kernel keeps for a listener that is not accepting."""

    def listen(self, *argv: str) -> Any:
        self.patch(os, "environ", _environ())
        options = Options()
        options.parseOptions(list(argv))
        services = listenerServices(options.configuration, reactor, Factory.forProtocol(Protocol))
        self.assertEqual(len(services), 1)
        service = services[0]
        service.startService()
        self.addCleanup(service.stopService)
        return service

    @defer.inlineCallbacks
    def connectedWhileNotAccepting(self, *argv: str, clients: int = 200) -> Any:
        service = self.listen(*argv)
        port = yield service.listening
        # The reactor stops accepting: what completes now is what the kernel queues.
        port.stopReading()
        address = port.getHost()
        sockets = []
        try:
            for _ in range(clients):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sockets.append(sock)
                sock.connect_ex((address.host, address.port))
            # A queued connection completes at once on loopback; a dropped SYN waits 1 s.
            pending = list(sockets)
            connected = 0
            deadline = 0.5
            while pending and deadline > 0:
                _, writable, _ = select.select([], pending, [], 0.1)
                deadline -= 0.1
                for sock in writable:
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                        connected += 1
                    pending.remove(sock)
        finally:
            for sock in sockets:
                sock.close()
        # Closed by the kernel with their queue: nothing for the reactor to accept.
        yield port.stopListening()
        return connected

    @defer.inlineCallbacks
    def test_stormQueued(self) -> Any:
        """With the default, 200 connections made at once all complete before any is accepted."""
        connected = yield self.connectedWhileNotAccepting("--listen", "tcp:0:interface=127.0.0.1")
        self.assertEqual(connected, 200)

    @defer.inlineCallbacks
    def test_explicitBacklogKept(self) -> Any:
        """``backlog=`` in the endpoint wins: with 10, about 10 complete and the rest wait."""
        connected = yield self.connectedWhileNotAccepting("--listen", "tcp:0:interface=127.0.0.1:backlog=10")
        # Linux queues backlog + 1.
        self.assertLessEqual(connected, 11)
        self.assertGreaterEqual(connected, 10)
