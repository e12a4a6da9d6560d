"""
The server API's two figures (issue 16), on a real pandapush process.

    .venv/bin/python bench/serverapi.py                 # both, memory and Redis engines
    .venv/bin/python bench/serverapi.py --only batch    # batch_events vs single publishes
    .venv/bin/python bench/serverapi.py --only queries --channels 10000 --redis-hosts 127.0.0.1:6379

**batch**: the server's CPU (utime+stime from ``/proc/<pid>/stat``) for ``--rounds`` rounds of
(a) 100 single ``POST /channel/<app>/public/...`` publishes over one keep-alive connection and
(b) one ``POST /apps/<app>/batch_events`` of the same 100 messages, each over 100 channels,
with nobody subscribed (the request's
own cost, which is what a batch saves) and then with one subscriber per channel (deliveries
cost the same either way). Reported: CPU ms per 100 messages and the ratio single/batch.

**queries**: ``--channels`` occupied channels (long-poll clients of a hundred channels each,
kept alive with ``--client-expiry``) and a presence channel of 50 members on the Redis engine
(a ``redis-server`` of its own unless ``--redis-hosts``); then the latency of
``GET /apps/<app>/channels`` (all of them), ``channels?prefix=`` (a tenth), ``channel?name=``
and ``members?channel=``, each asked ``--queries`` times: p50, p99, max in ms.

The server runs the checkout as it is (``PYTHONPATH`` = the repository), with a throwaway
SQLite file and the per-key publish rate off. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APP = "benchapp000000000001"
KEY = "PSIDbenchkey00000001"
SECRET = "bench-secret-0123456789abcdef0123"
TICKS = os.sysconf("SC_CLK_TCK")


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpuSeconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Server:
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = freePort()
        self.directory = tempfile.mkdtemp(prefix="pandapush-bench-")
        command = [
            sys.executable,
            "-m",
            "twisted",
            "pandapush",
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
            "--max-publish-rate",
            "0",
            "--max-connections-per-app",
            "0",
            "--shutdown-grace",
            "1",
            *args,
        ]
        childEnv = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DEV_APPLICATION_ID": APP,
            "DEV_KEY_ID": KEY,
            "DEV_KEY_SECRET": SECRET,
            "AUTH_METHOD": "none",
            "DATABASE_PATH": os.path.join(self.directory, "db.sqlite"),
            **(env or {}),
        }
        self.log = open(os.path.join(self.directory, "server.log"), "wb")
        self.process = subprocess.Popen(
            command, env=childEnv, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.directory
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if self.request("GET", "/health_check.json")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("pandapush did not start; see " + self.log.name)

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def request(self, method: str, path: str, body: Any = None, connection: Any = None) -> tuple[int, bytes]:
        own = connection is None
        connection = connection or self.connection()
        headers = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        content = response.read()
        if own:
            connection.close()
        return response.status, content

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class Poller:
    """A long-polling Bayeux client (stdlib): handshake, subscribe in batches, keep one connect going."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.connection = server.connection()
        (reply,) = self.post(
            [{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}]
        )
        self.clientId = reply["clientId"]
        self.post([{"channel": "/meta/connect", "clientId": self.clientId, "connectionType": "long-polling"}])

    def post(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.connection.request(
            "POST", "/push", body=json.dumps(messages).encode(), headers={"Content-Type": "application/json"}
        )
        return json.loads(self.connection.getresponse().read())

    def subscribe(self, channels: list[str], ext: dict[str, Any] | None = None) -> None:
        for start in range(0, len(channels), 100):
            batch = [
                {
                    "channel": "/meta/subscribe",
                    "clientId": self.clientId,
                    "subscription": c,
                    **({"ext": ext} if ext else {}),
                }
                for c in channels[start : start + 100]
            ]
            for reply in self.post(batch):
                assert reply.get("successful"), reply


def measureBatch(engine: str, rounds: int, redisHosts: str | None, subscribed: bool) -> dict[str, float]:
    args = (
        ["--redis-hosts", redisHosts, "--redis-namespace", f"bench-{uuid.uuid4().hex}"]
        if engine == "redis"
        else []
    )
    server = Server(*args, "--max-subscriptions", "200")
    try:
        channels = [f"/{APP}/public/bench/c{i}" for i in range(100)]
        if subscribed:
            Poller(server).subscribe(channels)
        connection = server.connection()
        for i in range(20):  # warm up both paths
            server.request("POST", f"/channel/{APP}/public/bench/c{i}", {"n": i}, connection)
        server.request(
            "POST",
            f"/apps/{APP}/batch_events",
            {"batch": [{"channel": c, "data": {"n": 0}} for c in channels]},
            connection,
        )
        before = cpuSeconds(server.process.pid)
        for _ in range(rounds):
            for i, c in enumerate(channels):
                status, _ = server.request("POST", "/channel" + c, {"n": i, "pad": "x" * 40}, connection)
                assert status == 200
        single = cpuSeconds(server.process.pid) - before
        before = cpuSeconds(server.process.pid)
        for _ in range(rounds):
            batch = {
                "batch": [{"channel": c, "data": {"n": i, "pad": "x" * 40}} for i, c in enumerate(channels)]
            }
            status, _ = server.request("POST", f"/apps/{APP}/batch_events", batch, connection)
            assert status == 200
        batched = cpuSeconds(server.process.pid) - before
        return {
            "single_ms": single * 1000 / rounds,
            "batch_ms": batched * 1000 / rounds,
            "ratio": single / batched if batched else float("nan"),
        }
    finally:
        server.stop()


def measureQueries(channelCount: int, queries: int, redisHosts: str) -> dict[str, dict[str, float]]:
    server = Server(
        "--redis-hosts",
        redisHosts,
        "--redis-namespace",
        f"bench-{uuid.uuid4().hex}",
        "--client-expiry",
        "3600",
    )
    try:
        channels = [f"/{APP}/public/q/c{i}" for i in range(channelCount)]
        started = time.time()
        # A hundred channels per client: a client's own subscription count is checked on
        # each subscribe, and 10,000 on one client is not what this measures.
        for start in range(0, len(channels), 100):
            Poller(server).subscribe(channels[start : start + 100])
        room = f"/{APP}/presence/q/room"
        import jwt

        for m in range(50):
            token = jwt.encode(
                {"keyId": KEY, "channel": room, "sub": True, "presence": {"id": f"u{m}", "n": m}},
                SECRET,
                algorithm="HS256",
            )
            Poller(server).subscribe([room], {"auth": {"token": token}})
        setup = time.time() - started
        connection = server.connection()
        asked = {
            "channels (all)": f"/apps/{APP}/channels",
            "channels?prefix (a tenth)": f"/apps/{APP}/channels?prefix=/{APP}/public/q/c1",
            "channel?name": f"/apps/{APP}/channel?name={channels[7]}",
            "members (50)": f"/apps/{APP}/members?channel={room}",
        }
        results: dict[str, dict[str, float]] = {}
        for name, path in asked.items():
            status, body = server.request("GET", path, connection=connection)
            assert status == 200, body
            if name == "channels (all)":
                assert len(json.loads(body)["channels"]) == channelCount + 1, len(
                    json.loads(body)["channels"]
                )
            times = []
            for _ in range(queries):
                t0 = time.perf_counter()
                server.request("GET", path, connection=connection)
                times.append((time.perf_counter() - t0) * 1000)
            times.sort()
            results[name] = {
                "p50": statistics.median(times),
                "p99": times[int(len(times) * 0.99) - 1],
                "max": times[-1],
                "setup_s": setup,
            }
        return results
    finally:
        server.stop()


def startRedis() -> tuple[str, subprocess.Popen[bytes]]:
    port = freePort()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(50):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return f"127.0.0.1:{port}", process
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("redis-server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["batch", "queries"])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--channels", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--redis-hosts")
    options = parser.parse_args()
    redis = None
    hosts = options.redis_hosts
    if hosts is None and shutil.which("redis-server"):
        hosts, redis = startRedis()
    try:
        if options.only in (None, "batch"):
            print("| engine | subscribers | 100 single publishes, CPU ms | one batch_events of 100 | ratio |")
            print("|---|---|---:|---:|---:|")
            for engine in ("memory", "redis"):
                if engine == "redis" and hosts is None:
                    continue
                for subscribed in (False, True):
                    r = measureBatch(engine, options.rounds, hosts, subscribed)
                    who = "the 100 channels" if subscribed else "none"
                    figures = f"{r['single_ms']:.1f} | {r['batch_ms']:.1f} | {r['ratio']:.1f}x"
                    print(f"| {engine} | {who} | {figures} |", flush=True)
        if options.only in (None, "queries") and hosts is not None:
            results = measureQueries(options.channels, options.queries, hosts)
            setup = next(iter(results.values()))["setup_s"]
            print(f"\n{options.channels:,} occupied channels on Redis (set up in {setup:.0f} s):\n")
            print("| query | p50 ms | p99 ms | max ms |")
            print("|---|---:|---:|---:|")
            for name, r in results.items():
                print(f"| {name} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} |", flush=True)
    finally:
        if redis is not None:
            redis.terminate()


if __name__ == "__main__":
    main()
