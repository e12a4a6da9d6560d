#!/usr/bin/env python
"""What one websocket client's set-up costs the server, in instructions (callgrind).

Wall-clock figures move with whatever else the machine runs; callgrind's instruction
counts do not. This starts ``python -m twisted pandapush`` (the checkout it is run
from) under ``valgrind --tool=callgrind``, opens ``--warmup`` websocket clients (the
imports, caches and first-call costs), zeroes the counters, opens ``--clients`` more,
dumps the counters and prints the server's instructions per client. A client does what
the storm scenarios' do (bench/lib/bayeux.js): upgrade, ``/meta/handshake``, the first
``/meta/connect`` (answered at once), the next one (held), ``/meta/subscribe``; then,
once all are set up, ``/meta/disconnect`` and a close frame. The clients are raw
sockets in this (unmeasured) process, ``--inflight`` at a time.

    .venv/bin/python bench/tools/wssetup.py                       # callgrind, 200 clients
    .venv/bin/python bench/tools/wssetup.py --source /tmp/main    # another tree (a `git archive` of main)
    .venv/bin/python bench/tools/wssetup.py --redis-hosts 127.0.0.1:6391   # on the Redis engine
        (a Redis of its own: its INFO commandstats are reset and read, per client)
    .venv/bin/python bench/tools/wssetup.py --url ws://127.0.0.1:3000/push --clients 1000
        (no callgrind: clients against a running server, timed)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import glob
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any
from urllib.parse import urlsplit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP = "BENCHbenchBENCHbench"


def frame(payload: bytes, opcode: int = 1) -> bytes:
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    else:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + masked


async def readFrame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(2)
    size = head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    return head[0] & 0x0F, await reader.readexactly(size)


class Client:
    def __init__(self, host: str, port: int, path: str, channel: str) -> None:
        self.host, self.port, self.path, self.channel = host, port, path, channel
        self.nextId = 0

    def message(self, **fields: Any) -> bytes:
        self.nextId += 1
        return frame(json.dumps([{**fields, "id": str(self.nextId)}]).encode())

    async def reply(self, channel: str) -> dict[str, Any]:
        while True:
            opcode, payload = await readFrame(self.reader)
            if opcode != 1:
                continue
            for message in json.loads(payload):
                if message.get("channel") == channel:
                    return message  # type: ignore[no-any-return]

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        # What the `ws` package sends (perMessageDeflate off).
        self.writer.write(
            f"GET {self.path} HTTP/1.1\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
            f"Connection: Upgrade\r\nUpgrade: websocket\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101 "):
            raise RuntimeError(head.decode("latin-1"))
        self.writer.write(
            self.message(channel="/meta/handshake", version="1.0", supportedConnectionTypes=["websocket"])
        )
        self.clientId = (await self.reply("/meta/handshake"))["clientId"]
        connect = {"channel": "/meta/connect", "clientId": self.clientId, "connectionType": "websocket"}
        self.writer.write(self.message(**connect, advice={"timeout": 0}))
        await self.reply("/meta/connect")
        self.writer.write(self.message(**connect))
        self.writer.write(
            self.message(channel="/meta/subscribe", clientId=self.clientId, subscription=self.channel)
        )
        reply = await self.reply("/meta/subscribe")
        if not reply["successful"]:
            raise RuntimeError(f"subscribe refused: {reply.get('error')}")

    async def close(self) -> None:
        self.writer.write(self.message(channel="/meta/disconnect", clientId=self.clientId))
        self.writer.write(frame(b"\x03\xe8", opcode=8))
        try:
            while True:
                opcode, _ = await readFrame(self.reader)
                if opcode == 8:
                    break
            await self.reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        self.writer.close()


async def storm(url: str, clients: int, inflight: int, start: int = 0) -> float:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    opened: list[Client] = []
    gate = asyncio.Semaphore(inflight)

    async def one(i: int) -> None:
        async with gate:
            client = Client(host, port, parts.path or "/push", f"/{APP}/public/bench/setup/c{i % 100}")
            await client.open()
            opened.append(client)

    began = time.perf_counter()
    await asyncio.gather(*(one(start + i) for i in range(clients)))
    seconds = time.perf_counter() - began
    gate = asyncio.Semaphore(inflight)

    async def close(client: Client) -> None:
        async with gate:
            await client.close()

    await asyncio.gather(*(close(c) for c in opened))
    return seconds


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def waitListening(port: int, child: subprocess.Popen[bytes], seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"server exited with {child.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /health_check.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("server did not answer in time")


def callgrindTotal(path: str) -> int:
    with open(path) as f:
        for line in f:
            match = re.match(r"(?:summary|totals): (\d+)", line)
            if match:
                return int(match.group(1))
    raise SystemExit(f"no totals in {path}")


def redisCli(hosts: str, *command: str) -> str:
    host, _, port = hosts.split(",")[0].rpartition(":")
    return subprocess.run(
        ["redis-cli", "-h", host, "-p", port, *command], check=True, capture_output=True, text=True
    ).stdout


def printCommands(info: str, clients: int) -> None:
    """Redis's commands per client (those scripts ran counted too), from INFO commandstats."""
    calls = {m.group(1): int(m.group(2)) for m in re.finditer(r"cmdstat_([^:]+):calls=(\d+)", info)}
    calls.pop("config|resetstat", None)
    total = sum(calls.values())
    top = ", ".join(f"{name} {n / clients:.2f}" for name, n in sorted(calls.items(), key=lambda kv: -kv[1]))
    print(f"{total / clients:.2f} Redis commands per client: {top}")


def measure(args: argparse.Namespace) -> None:
    port = freePort()
    workdir = tempfile.mkdtemp(prefix="wssetup-")
    env = {
        **os.environ,
        "DEV_APPLICATION_ID": APP,
        "DEV_KEY_ID": "PSIDbenchBENCHbench0",
        "DEV_KEY_SECRET": "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz",
        "DATABASE": "sqlite",
        "DATABASE_PATH": os.path.join(workdir, "db.sqlite"),
        "PYTHONPATH": args.source,
    }
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={workdir}/callgrind.out.%p",
        sys.executable,
        "-m",
        "twisted",
        "pandapush",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--max-connections-per-address",
        "0",
        "--max-clients-per-connection",
        "0",
        "--max-connections-per-app",
        "0",
        "--shutdown-grace",
        "1",
    ]
    if args.redis_hosts:
        command += ["--redis-hosts", args.redis_hosts]
    child = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        waitListening(port, child)
        url = f"ws://127.0.0.1:{port}/push"
        asyncio.run(storm(url, args.warmup, args.inflight))
        time.sleep(1)
        subprocess.run(["callgrind_control", "--zero", str(child.pid)], check=True, stdout=subprocess.DEVNULL)
        if args.redis_hosts:
            redisCli(args.redis_hosts, "CONFIG", "RESETSTAT")
        asyncio.run(storm(url, args.clients, args.inflight, start=args.warmup))
        time.sleep(1)
        if args.redis_hosts:
            printCommands(redisCli(args.redis_hosts, "INFO", "commandstats"), args.clients)
        subprocess.run(["callgrind_control", "--dump", str(child.pid)], check=True, stdout=subprocess.DEVNULL)
        time.sleep(1)
    finally:
        child.terminate()
        child.wait()
    dumps = sorted(glob.glob(f"{workdir}/callgrind.out.{child.pid}.*"))
    total = callgrindTotal(dumps[0])
    print(f"{total / args.clients:,.0f} instructions per client ({args.clients} clients, dump {dumps[0]})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running server's /push (no callgrind)")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--inflight", type=int, default=50)
    parser.add_argument("--source", default=ROOT, help="the pandapush tree to run (default: this checkout)")
    parser.add_argument(
        "--redis-hosts",
        help="run the server on the Redis engine (a Redis of its own: its stats are reset)",
    )
    args = parser.parse_args()
    if args.url:
        seconds = asyncio.run(storm(args.url, args.clients, args.inflight))
        print(f"{args.clients / seconds:,.0f} setups/s")
    else:
        measure(args)


if __name__ == "__main__":
    main()
