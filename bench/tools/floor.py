#!/usr/bin/env python3
"""
The floor: the least a Python server on Twisted can do for the bench's scenarios.

Issue 17 asks for targets in CPU per publish and per client set up against Faye (V8, a
JIT). This server shows how much of pandapush's cost is the runtime's own: it speaks just
enough Bayeux for ``bench/lib/bayeux.js`` (websocket and long-polling: handshake,
connect, subscribe to exact channel names, publish, disconnect) and ``POST /channel/...``
for the REST publisher, with nothing a real server needs: no tenancy, tokens or keys, no
validation of what clients send, no limits, no wildcards, no history, no extensions, no
logging, no timers but the held connect's. It parses HTTP and websocket frames itself in
one tight loop each (no twisted.web, no autobahn), uses orjson as pandapush does, answers
a read's replies in one write, and sends each delivery with one ``send`` when nothing is
buffered (as pandapush does). Whatever CPU per publish or per setup it needs is what
Twisted's reactor, the kernel's socket calls and CPython's per-object costs take before
any of pandapush's work: a floor for pandapush's figures on the same machine.

Not a server to use: it trusts every byte it reads (a hostile client can crash it).

Run from ``bench/run`` through its interpreter hook, in place of pandapush::

    PANDAPUSH_PYTHON=bench/tools/floor-python bench/run --no-faye --only private-bayeux,...

(``floor-python`` runs this file with the arguments the runner gives pandapush; only
``--listen tcp:<port>:...`` is read.)
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
from typing import Any

import orjson
from twisted.internet import reactor, tcp
from twisted.internet.protocol import Factory, Protocol

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HOLD = 30.0

# channel -> subscribers; clientId -> Client
channels: dict[str, list[Client]] = {}
clients: dict[str, Client] = {}


def send(transport: Any, data: bytes) -> None:
    """One ``send`` when nothing is waiting in Twisted's buffer, else Twisted's write."""
    if type(transport) is tcp.Server and not transport.dataBuffer and not transport._tempDataBuffer:
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


def wsFrame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


class Client:
    __slots__ = ("channels", "held", "heldId", "id", "queue", "socket", "timer")

    def __init__(self, clientId: str) -> None:
        self.id = clientId
        self.socket: Connection | None = None  # a websocket bound at its first connect
        self.held: Connection | None = None  # a long-poll connection waiting for its answer
        self.heldId: Any = None
        self.timer: Any = None
        self.queue: list[bytes] = []
        self.channels: list[str] = []

    def deliver(self, payload: bytes) -> None:
        if self.socket is not None:
            send(self.socket.transport, wsFrame(b"[" + payload + b"]"))
        else:
            self.queue.append(payload)
            if self.held is not None:
                self.answerHeld()

    def connectReply(self, messageId: Any) -> bytes:
        return orjson.dumps(
            {"channel": "/meta/connect", "successful": True, "clientId": self.id, "id": messageId}
        )

    def answerHeld(self) -> None:
        held, self.held = self.held, None
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if held is None:
            return
        parts = self.queue
        self.queue = []
        parts.append(self.connectReply(self.heldId))
        if held.ws:
            send(held.transport, wsFrame(b"[" + b",".join(parts) + b"]"))
        else:
            held.respond(b"[" + b",".join(parts) + b"]")


def bayeux(messages: Any, connection: Connection) -> tuple[list[bytes], bool]:
    """Replies, and whether a long-poll connect is held (answered later)."""
    if isinstance(messages, dict):
        messages = [messages]
    replies: list[bytes] = []
    held = False
    for m in messages:
        channel = m.get("channel")
        mid = m.get("id")
        if channel == "/meta/handshake":
            clientId = os.urandom(10).hex()
            clients[clientId] = Client(clientId)
            replies.append(
                orjson.dumps(
                    {
                        "channel": channel,
                        "successful": True,
                        "version": "1.0",
                        "supportedConnectionTypes": ["websocket", "long-polling"],
                        "clientId": clientId,
                        "id": mid,
                        "advice": {"reconnect": "retry", "interval": 0, "timeout": HOLD * 1000},
                    }
                )
            )
        elif channel == "/meta/connect":
            client = clients.get(m.get("clientId"))
            if client is None:
                replies.append(orjson.dumps({"channel": channel, "successful": False, "id": mid}))
                continue
            if client.held is not None:
                client.answerHeld()
            if connection.ws and client.socket is not connection:
                client.socket = connection
                connection.bound.append(client)
            advice = m.get("advice")
            if (advice and advice.get("timeout") == 0) or (client.queue and not connection.ws):
                replies.extend(client.queue)
                client.queue = []
                replies.append(client.connectReply(mid))
            else:
                client.held = connection
                client.heldId = mid
                if not connection.ws:
                    connection.bound.append(client)
                client.timer = reactor.callLater(HOLD, client.answerHeld)
                held = not connection.ws
        elif channel == "/meta/subscribe":
            client = clients.get(m.get("clientId"))
            subscription = m.get("subscription")
            names = subscription if isinstance(subscription, list) else [subscription]
            if client is not None:
                for name in names:
                    channels.setdefault(name, []).append(client)
                    client.channels.append(name)
            replies.append(
                orjson.dumps(
                    {
                        "channel": channel,
                        "successful": client is not None,
                        "subscription": subscription,
                        "id": mid,
                    }
                )
            )
        elif channel == "/meta/disconnect":
            client = clients.pop(m.get("clientId"), None)
            if client is not None:
                forget(client)
            replies.append(orjson.dumps({"channel": channel, "successful": True, "id": mid}))
        elif isinstance(channel, str) and not channel.startswith("/meta/"):
            publish(channel, m.get("data"))
            replies.append(orjson.dumps({"channel": channel, "successful": True, "id": mid}))
    return replies, held


def publish(channel: str, data: Any) -> None:
    subscribers = channels.get(channel)
    if subscribers:
        payload = orjson.dumps({"channel": channel, "data": data})
        for client in subscribers:
            client.deliver(payload)


def forget(client: Client) -> None:
    if client.timer is not None and client.timer.active():
        client.timer.cancel()
    for name in client.channels:
        subscribers = channels.get(name)
        if subscribers is not None:
            try:
                subscribers.remove(client)
            except ValueError:
                pass
            if not subscribers:
                del channels[name]


class Connection(Protocol):
    ws = False
    transport: Any

    def __init__(self) -> None:
        self.buffer = b""
        self.waiting = False  # a long-poll answer is held on this connection
        self.bound: list[Client] = []

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if self.ws:
            self.frames()
        else:
            self.requests()

    # HTTP/1.1, keep-alive, Content-Length bodies only

    def requests(self) -> None:
        while not self.waiting and not self.ws:
            buffer = self.buffer
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = buffer[:end].split(b"\r\n")
            method, path, _ = head[0].split(b" ", 2)
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0"))
            if len(buffer) < end + 4 + length:
                return
            body = buffer[end + 4 : end + 4 + length]
            self.buffer = buffer[end + 4 + length :]
            self.request(method, path, headers, body)

    def request(self, method: bytes, path: bytes, headers: dict[bytes, bytes], body: bytes) -> None:
        if method == b"GET" and headers.get(b"upgrade", b"").lower() == b"websocket":
            accept = base64.b64encode(hashlib.sha1(headers[b"sec-websocket-key"] + _GUID).digest())
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.ws = True
            if self.buffer:
                self.frames()
            return
        if method == b"POST" and path.startswith(b"/push"):
            replies, held = bayeux(orjson.loads(body), self)
            if held:
                self.waiting = True
                return
            self.respond(b"[" + b",".join(replies) + b"]")
            return
        if method == b"POST" and path.startswith(b"/channel/"):
            publish("/" + path[len(b"/channel/") :].decode(), orjson.loads(body))
            self.respond(b"OK", b"text/plain")
            return
        if path == b"/health_check.json":
            self.respond(b"{}")
            return
        self.respond(b"not found", b"text/plain", b"404 Not Found")

    def respond(self, body: bytes, kind: bytes = b"application/json", status: bytes = b"200 OK") -> None:
        send(
            self.transport,
            b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (status, kind, len(body), body),
        )
        if self.waiting:
            self.waiting = False
            if self.buffer:
                self.requests()

    # websocket frames from a client: masked; text, close and ping are enough here

    def frames(self) -> None:
        buffer = self.buffer
        at = 0
        replies: list[bytes] = []
        size = len(buffer)
        while size - at >= 6:
            opcode = buffer[at] & 0x0F
            length = buffer[at + 1] & 0x7F
            start = at + 2
            if length == 126:
                length = int.from_bytes(buffer[start : start + 2], "big")
                start += 2
            elif length == 127:
                length = int.from_bytes(buffer[start : start + 8], "big")
                start += 8
            if size < start + 4 + length:
                break
            mask = buffer[start : start + 4]
            start += 4
            masked = buffer[start : start + length]
            at = start + length
            key = int.from_bytes((mask * (length // 4 + 1))[:length], "little")
            payload = (int.from_bytes(masked, "little") ^ key).to_bytes(length, "little")
            if opcode == 1:
                out, _ = bayeux(orjson.loads(payload), self)
                replies.extend(out)
            elif opcode == 8:
                self.transport.loseConnection()
                break
            elif opcode == 9:
                send(self.transport, bytes((0x8A, length)) + payload)
        self.buffer = buffer[at:]
        if replies:
            send(self.transport, wsFrame(b"[" + b",".join(replies) + b"]"))

    def connectionLost(self, reason: Any = None) -> None:
        for client in self.bound:
            if client.socket is self:
                client.socket = None
            if client.held is self:
                client.held = None
                if client.timer is not None and client.timer.active():
                    client.timer.cancel()


def main() -> None:
    argv = sys.argv[1:]
    port = 3000
    if "--listen" in argv:
        port = int(argv[argv.index("--listen") + 1].split(":")[1])
    if "--help" in argv:
        print("floor: a bench stand-in (bench/tools/floor.py)")
        return
    factory: Any = Factory.forProtocol(Connection)
    reactor.listenTCP(port, factory, backlog=4096, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
