#!/usr/bin/env python
"""What a REST publish, or a long-polling client's set-up, costs the server, in instructions.

Callgrind's instruction counts do not move with whatever else the machine runs. This
runs a real server in one process (``tests.support.inprocess``: memory storage, the
seeded application and key) under ``valgrind --tool=callgrind`` twice, driving it over
one real keep-alive TCP connection with ``--few`` and then ``--many`` requests (or
clients), and prints the difference per request: start-up, imports and first calls
cancel out. ``PYTHONHASHSEED=0`` makes the two runs, and runs of two trees, alike.

- ``rest``: ``POST /channel/<app>/private/x`` with Basic key:secret, ``{"text":"hello"}``,
  as the generator's REST publisher sends it (bench/lib/bayeux.js).
- ``lp``: a long-polling client: handshake, subscribe, connect (answered at once with
  ``advice.timeout`` 0), disconnect, four POSTs of ``/push``.
- ``storm``: a long-polling client's set-up as ``bench/run``'s storm-lp scenarios make it,
  over a connection of its own: handshake, its first connect (answered at once),
  subscribe to one of 100 channels, and its next connect, held (not answered in the run).

    .venv/bin/python bench/tools/httppath.py rest                 # this checkout
    .venv/bin/python bench/tools/httppath.py lp --source /tmp/main  # another tree
    .venv/bin/python bench/tools/httppath.py rest --twisted       # serveSimple off: twisted.web parses
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import socket
import subprocess
import sys
import types
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def drive(mode: str, count: int, twisted: bool) -> None:
    """The measured process: a server, and ``count`` requests or clients against it."""
    from twisted.internet import defer, reactor

    from tests.support.inprocess import APP, KEY, SECRET, InProcessServer
    from tests.support.ports import portNumber

    # A storm's held connects stay held for the run, however slow valgrind makes it.
    timeout = "600" if mode == "storm" else "2"
    server = InProcessServer(
        "--timeout", timeout, "--max-publish-rate", "0", "--max-clients-per-connection", "0",
        "--max-connections-per-address", "0",
    )  # fmt: skip
    started = defer.Deferred.fromCoroutine(server.start())
    while not started.called:
        reactor.iterate(0.01)  # type: ignore[attr-defined]
    if twisted:
        server.service.site.serveSimple = None
    sock = socket.create_connection(("127.0.0.1", portNumber(server.port)))
    sock.setblocking(False)
    #: The connection the requests go over (a storm's clients each have their own).
    conn = types.SimpleNamespace(sock=sock)
    buffered = b""

    def answer() -> bytes:
        nonlocal buffered
        while True:
            try:
                buffered += conn.sock.recv(65536)
            except BlockingIOError:
                pass
            end = buffered.find(b"\r\n\r\n")
            if end >= 0:
                length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", buffered[: end + 2]).group(1))  # type: ignore[union-attr]
                if len(buffered) >= end + 4 + length:
                    body = buffered[end + 4 : end + 4 + length]
                    buffered = buffered[end + 4 + length :]
                    return body
            reactor.iterate(0)  # type: ignore[attr-defined]

    def post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
        conn.sock.send(
            b"POST %s HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s"
            b"Host: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n%s" % (path, len(body), extra, body)
        )
        return answer()

    if mode == "storm":
        storm(count, conn, post)
        return

    auth = b"Authorization: Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()) + b"\r\n"
    channel = f"/channel/{APP}/private/x".encode()
    for i in range(count):
        if mode == "rest":
            assert post(channel, b'{"text":"hello"}', auth) == b"OK"
            continue
        handshake = {
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["long-polling"],
        }
        clientId = json.loads(post(b"/push", json.dumps([handshake]).encode()))[0]["clientId"]
        for message in [
            {"channel": "/meta/subscribe", "clientId": clientId, "subscription": f"/{APP}/public/s{i % 50}"},
            {
                "channel": "/meta/connect",
                "clientId": clientId,
                "connectionType": "long-polling",
                "advice": {"timeout": 0},
            },
            {"channel": "/meta/disconnect", "clientId": clientId},
        ]:
            assert json.loads(post(b"/push", json.dumps([message]).encode()))[0]["successful"]


def storm(count: int, conn: Any, post: Any) -> None:
    """``count`` clients set up as in a storm, each over a connection of its own (``post``'s, in turn)."""
    import socket as sockets

    from twisted.internet import reactor

    from tests.support.inprocess import APP

    held = []
    address = conn.sock.getpeername()
    for i in range(count):
        handshake = {
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["long-polling"],
        }
        clientId = json.loads(post(b"/push", json.dumps([handshake]).encode()))[0]["clientId"]
        connect = {"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"}
        assert json.loads(post(b"/push", json.dumps([connect]).encode()))[0]["successful"]
        subscribe = {
            "channel": "/meta/subscribe",
            "clientId": clientId,
            "subscription": f"/{APP}/public/c{i % 100}",
        }
        assert json.loads(post(b"/push", json.dumps([subscribe]).encode()))[0]["successful"]
        # The held connect on this connection; the next client's requests on a new one.
        body = json.dumps([connect]).encode()
        conn.sock.send(
            b"POST /push HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Host: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n%s" % (len(body), body)
        )
        for _ in range(3):
            reactor.iterate(0)  # type: ignore[attr-defined]
        held.append(conn.sock)
        conn.sock = sockets.create_connection(address)
        conn.sock.setblocking(False)


def instructions(source: str, mode: str, count: int, twisted: bool) -> int:
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, os.path.abspath(__file__), mode, "--drive", str(count), "--source", source,
    ]  # fmt: skip
    if twisted:
        command.append("--twisted")
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": source}
    output = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True, check=True).stderr
    return int(re.findall(r"Collected : (\d+)", output)[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["rest", "lp", "storm"])
    parser.add_argument("--source", default=ROOT, help="the tree to measure (default: this checkout)")
    parser.add_argument("--few", type=int, default=None, help="requests or clients of the first run")
    parser.add_argument("--many", type=int, default=None, help="requests or clients of the second run")
    parser.add_argument("--twisted", action="store_true", help="every request through twisted.web's parsing")
    parser.add_argument("--drive", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive is not None:
        sys.path.insert(0, args.source)
        drive(args.mode, args.drive, args.twisted)
        return
    few = args.few or (100 if args.mode == "rest" else 25)
    many = args.many or (600 if args.mode == "rest" else 125)
    source = os.path.abspath(args.source)
    first = instructions(source, args.mode, few, args.twisted)
    second = instructions(source, args.mode, many, args.twisted)
    unit = {"rest": "REST publish", "lp": "long-polling client", "storm": "long-polling client set up"}[
        args.mode
    ]
    print(f"{source}: {(second - first) / (many - few):,.0f} instructions per {unit}")


if __name__ == "__main__":
    main()
