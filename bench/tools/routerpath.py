"""
The router's per-message cost, counted in instructions: a publish and a client's set-up
through ``tap.makeService``'s router (every extension, the memory engine, memory storage
seeded like the bench's server), driven in process as the websocket transport drives it.

    python bench/tools/routerpath.py run PHASE COUNT      # once, in this process
    python bench/tools/routerpath.py measure PHASE A B    # callgrind, COUNT=A and COUNT=B

Phases:

- ``setup``: COUNT websocket clients each handshake, connect, subscribe to a list of one
  of 100 public channels; then each disconnects and closes (a storm client's life, as
  bench/lib/bayeux.js does it);
- ``private``: 2,000 subscribers each on a private channel with a token of its own, then
  COUNT publishes with the key (``ext.auth``), round robin, one recipient each;
- ``chat``: 500 public channels with 4 subscribers each, then COUNT publishes with the
  key, round robin, 4 recipients each;
- ``private-ws``: ``private`` with the publisher a real websocket (the transport's
  ``BayeuxWebSocketProtocol`` over a ``StringTransport``): each publish is a masked frame
  read by the fast frame path, its acknowledgement a frame written back (to the
  ``StringTransport``: no ``send`` syscall).

``measure`` runs the phase under ``valgrind --tool=callgrind`` with COUNT=A and COUNT=B
and prints (Ir(B) - Ir(A)) / (B - A): the instructions per item, start-up and the fixed
part of the phase cancelled out. Deterministic on a shared machine, unlike wall-clock.
Deliveries go out once per ten publishes (a reactor turn), as a loaded server batches them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from zope.interface import implementer

from pandapush.interfaces import IClientSocket

APP = "benchapp000000000001"
KEY = "PSIDbenchkey00000001"
SECRET = "bench-secret-of-at-least-32-bytes-long"
HEADERS = {
    "host": "127.0.0.1:3000",
    "upgrade": "websocket",
    "connection": "Upgrade",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    "sec-websocket-version": "13",
}
CONNECTION_TYPES = [
    "websocket",
    "eventsource",
    "long-polling",
    "cross-origin-long-polling",
    "callback-polling",
]


@implementer(IClientSocket)
class Socket:
    """An IClientSocket that keeps nothing: what the router and engine call, counted."""

    persistent = True
    endsClientOnClose = True

    def __init__(self) -> None:
        self.clientId: str | None = None
        self.delivered = 0
        self.replies = 0

    def deliver(self, deliveries: Sequence[Any]) -> None:
        self.delivered += len(deliveries)

    def sendReplies(self, replies: Sequence[Any]) -> None:
        self.replies += len(replies)

    def close(self, afterReplies: bool) -> None:
        pass


class Driver:
    def __init__(self, reactor: Any) -> None:
        from pandapush.bayeux.context import MessageContext
        from pandapush.tap import Options, makeService

        self.reactor = reactor
        options = Options()
        options.parseOptions(
            [
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--database",
                "memory",
                # As bench/lib/servers.js starts pandapush.
                "--max-publish-rate",
                "0",
                "--max-connections-per-app",
                "0",
                "--max-connections-per-address",
                "0",
                "--max-clients-per-connection",
                "0",
            ]
        )
        environ = {
            "DEV_APPLICATION_ID": APP,
            "DEV_KEY_ID": KEY,
            "DEV_KEY_SECRET": SECRET,
            "AUTH_METHOD": "none",
        }
        self.service = makeService(options, environ=environ, reactor=reactor)
        self.router = self.service.router
        self.context = MessageContext
        self.ids = 0

    def _id(self) -> str:
        self.ids += 1
        return str(self.ids)

    def send(self, socket: Socket, context: Any, messages: list[dict[str, Any]]) -> list[Any]:
        replies = self.router.processNow(messages, context.forMessage(), socket)
        assert isinstance(replies, list), replies
        for reply in replies:
            if isinstance(reply, dict) and reply.get("successful") is False:
                raise AssertionError(reply)
        return replies

    def client(self, subscription: list[str] | None = None, ext: Any = None) -> tuple[Socket, Any, str]:
        """A websocket client: handshake, first connect (answered at once), subscribe."""
        socket = Socket()
        context = self.context("websocket", HEADERS, "127.0.0.1")
        (handshake,) = self.send(
            socket,
            context,
            [
                {
                    "channel": "/meta/handshake",
                    "version": "1.0",
                    "supportedConnectionTypes": CONNECTION_TYPES,
                    "id": self._id(),
                }
            ],
        )
        clientId = handshake["clientId"]
        connect = {
            "channel": "/meta/connect",
            "clientId": clientId,
            "connectionType": "websocket",
            "id": self._id(),
            "advice": {"timeout": 0},
        }
        self.send(socket, context, [connect])
        # The client's next connect is held (its reply goes through the socket later).
        self.send(
            socket,
            context,
            [
                {
                    "channel": "/meta/connect",
                    "clientId": clientId,
                    "connectionType": "websocket",
                    "id": self._id(),
                }
            ],
        )
        if subscription is not None:
            message: dict[str, Any] = {
                "channel": "/meta/subscribe",
                "clientId": clientId,
                "subscription": subscription,
                "id": self._id(),
            }
            if ext is not None:
                message["ext"] = ext
            self.send(socket, context, [message])
        return socket, context, clientId

    def close(self, socket: Socket, context: Any, clientId: str) -> None:
        self.send(socket, context, [{"channel": "/meta/disconnect", "clientId": clientId, "id": self._id()}])
        self.router.socketClosed(socket)

    def publishes(self, count: int, channels: list[str]) -> list[tuple[Any, ...]]:
        socket, context, clientId = self.client()
        return [(socket, context, clientId, channels[i % len(channels)]) for i in range(count)]

    def websocket(self) -> tuple[Any, Any]:
        """A websocket opened through the transport's factory, over a ``StringTransport``."""
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        from pandapush.transports.http import OriginPolicy
        from pandapush.transports.websocket import BayeuxWebSocketFactory

        factory = BayeuxWebSocketFactory(self.router, OriginPolicy(), 65536, pingInterval=0)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(
            b"GET /push HTTP/1.1\r\nHost: 127.0.0.1:3000\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        assert transport.value().startswith(b"HTTP/1.1 101"), transport.value()
        transport.clear()
        return protocol, transport

    def publish(self, socket: Socket, context: Any, clientId: str, channel: str, i: int) -> None:
        message = {
            "channel": channel,
            "data": {"s": i, "t": 1234.5, "p": "x" * 40},
            "clientId": clientId,
            "id": self._id(),
            "ext": {"auth": {"key": KEY, "secret": SECRET}},
        }
        self.send(socket, context, [message])


async def phase(reactor: Any, name: str, count: int) -> None:
    from twisted.internet import defer, task

    from pandapush.tokens import mintToken

    driver = Driver(reactor)
    driver.service.startService()
    await driver.service.ready

    async def turn() -> None:
        await task.deferLater(reactor, 0, lambda: None)

    if name == "setup":
        # All open, then all closed, as the storm scenarios do: each channel is occupied
        # by its first subscriber and vacated by its last, not once per client.
        clients = []
        for i in range(count):
            clients.append(driver.client([f"/{APP}/public/bench/storm/c{i % 100}"]))
            if i % 10 == 9:
                await turn()
        for i, client in enumerate(clients):
            driver.close(*client)
            if i % 10 == 9:
                await turn()
    elif name in ("private", "chat", "private-ws"):
        sockets = []
        if name != "chat":
            channels = [f"/{APP}/private/bench/private-bayeux/c{j}" for j in range(2000)]
            for channel in channels:
                token = mintToken(KEY, SECRET, channel, sub=True)
                sockets.append(driver.client([channel], {"auth": {"token": token}})[0])
        else:
            channels = [f"/{APP}/public/bench/chat/c{j}" for j in range(500)]
            for j in range(2000):
                sockets.append(driver.client([channels[j % 500]])[0])
        await turn()
        if name == "private-ws":
            await websocketPublishes(driver, turn, channels, count)
        else:
            publisher = driver.client()
            for i in range(count):
                driver.publish(*publisher, channels[i % len(channels)], i)
                if i % 10 == 9:
                    await turn()
        await turn()
        delivered = sum(s.delivered for s in sockets)
        expected = count * (4 if name == "chat" else 1)
        assert delivered == expected, (delivered, expected)
    else:
        raise SystemExit(f"unknown phase {name!r}")
    await defer.maybeDeferred(driver.service.stopService)


def maskedFrame(payload: bytes) -> bytes:
    """
    A client's text frame as it goes on the wire, masked with zeros (the server unmasks it
    all the same; a frame costs the process that makes it only a concatenation).
    """
    size = len(payload)
    head = bytes((0x81, 0x80 | size)) if size < 126 else bytes((0x81, 0xFE, size >> 8, size & 0xFF))
    return head + b"\0\0\0\0" + payload


async def websocketPublishes(driver: Driver, turn: Any, channels: list[str], count: int) -> None:
    """COUNT publishes from one websocket publisher, as the bench's Bayeux publishers send them."""
    import json

    protocol, transport = driver.websocket()

    def send(messages: list[dict[str, Any]]) -> list[Any]:
        protocol.dataReceived(maskedFrame(json.dumps(messages, separators=(",", ":")).encode()))
        data = transport.value()
        transport.clear()
        # Server frames here are small and unfragmented: a 2- or 4-byte head.
        replies = json.loads(data[2:] if data[1] < 126 else data[4:])
        for reply in replies:
            if reply.get("successful") is False:
                raise AssertionError(reply)
        return replies

    (handshake,) = send(
        [{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": CONNECTION_TYPES}]
    )
    clientId = handshake["clientId"]
    send([{"channel": "/meta/connect", "clientId": clientId, "connectionType": "websocket"}])
    # Made before the loop from one template: a few concatenations each (counted too).
    template = json.dumps(
        [
            {
                "channel": "@@CHANNEL@@",
                "data": {"s": 0, "t": 1234.5, "p": "x" * 40},
                "clientId": clientId,
                "id": "@@ID@@",
                "ext": {"auth": {"key": KEY, "secret": SECRET}},
            }
        ],
        separators=(",", ":"),
    ).encode()
    head, rest = template.split(b"@@CHANNEL@@")
    middle, tail = rest.split(b"@@ID@@")
    frames = [
        maskedFrame(head + channels[i % len(channels)].encode() + middle + b"%d" % (i + 1) + tail)
        for i in range(count)
    ]
    acks = 0
    for i, frame in enumerate(frames):
        protocol.dataReceived(frame)
        if i % 10 == 9:
            acks += transport.value().count(b'"successful":true')
            transport.clear()
            await turn()
    acks += transport.value().count(b'"successful":true')
    assert acks == count, (acks, count)


def run(name: str, count: int) -> None:
    from twisted.internet import defer, task

    task.react(lambda reactor: defer.Deferred.fromCoroutine(phase(reactor, name, count)))


def instructions(name: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as directory:
        out = os.path.join(directory, "callgrind.out")
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                os.path.abspath(__file__),
                "run",
                name,
                str(count),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        with open(out) as f:
            for line in f:
                match = re.match(r"(?:summary|totals): (\d+)", line)
                if match:
                    return int(match.group(1))
    raise RuntimeError("no totals in callgrind's output")


def main(argv: list[str]) -> None:
    if argv[:1] == ["run"]:
        run(argv[1], int(argv[2]))
    elif argv[:1] == ["measure"]:
        name, a, b = argv[1], int(argv[2]), int(argv[3])
        ia, ib = instructions(name, a), instructions(name, b)
        print(f"{name}: {ia:,} at {a}, {ib:,} at {b}: {(ib - ia) / (b - a):,.0f} instructions per item")
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
