"""
Redis for tests: the machine's own, and throw-away redis-servers a test may stop.

The machine's Redis is expected on 127.0.0.1:6379 (``PANDAPUSH_TEST_REDIS`` overrides, as
``host:port``). Without it the tests that need it are skipped, except under ``CI`` where
a missing Redis is a failure. Every test works in a key namespace of its own and deletes
its keys afterwards (``deleteNamespace``), so parallel runs never collide; that Redis is
never stopped. A test that stops or restarts Redis runs a :class:`RedisProcess` of its
own on a free port (no persistence: a restart comes back empty).
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest

from pandapush.engines.redis import RedisEngine
from pandapush.redis import RedisAddress, RedisShard, parseRedisHosts
from tests.support.ports import freePort
from tests.support.waiting import eventually

__all__ = [
    "REDIS",
    "RedisEngineCase",
    "RedisProcess",
    "deleteNamespace",
    "namespaceKeys",
    "redisReachable",
    "requireRedis",
    "requireRedisServer",
]

#: The machine's Redis, as ``host:port`` (what ``--redis-hosts`` takes).
REDIS = os.environ.get("PANDAPUSH_TEST_REDIS", "127.0.0.1:6379")


def redisReachable(address: RedisAddress | None = None, timeout: float = 1.0) -> bool:
    """Whether a Redis answers PING at ``address`` (the machine's by default). Blocking: for set-up only."""
    address = address or parseRedisHosts(REDIS)[0]
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def requireRedis() -> RedisAddress:
    """The machine's Redis; the test is skipped without one (failed under ``CI``)."""
    address = parseRedisHosts(REDIS)[0]
    if not redisReachable(address):
        if os.environ.get("CI"):
            raise AssertionError(f"CI is set but Redis is not reachable at {address.name}")
        raise SkipTest(f"Redis not reachable at {address.name} (set CI=true to make this a failure)")
    return address


def requireRedisServer() -> str:
    """The ``redis-server`` binary, for a Redis of the test's own; else skip (fail under ``CI``)."""
    found = shutil.which("redis-server")
    if found is None:
        if os.environ.get("CI"):
            raise AssertionError("redis-server is not installed and CI is set")
        raise SkipTest("redis-server is not installed: cannot run a Redis of our own")
    return found


async def deleteNamespace(addresses: list[RedisAddress], namespace: str) -> int:
    """Delete every key under ``namespace`` on every shard; how many were deleted."""
    deleted = 0
    for address in addresses:
        if not redisReachable(address, timeout=0.5):
            continue  # a Redis of the test's own, stopped already
        shard = RedisShard(_reactor, address)
        try:
            cursor = "0"
            while True:
                cursor, keys = await shard.execute("SCAN", cursor, "MATCH", f"{namespace}:*", "COUNT", 1000)
                if keys:
                    deleted += int(await shard.execute("DEL", *keys))
                if str(cursor) == "0":
                    break
        finally:
            await shard.close()
    return deleted


async def namespaceKeys(address: RedisAddress, namespace: str) -> list[str]:
    """Every key under ``namespace`` on one shard."""
    shard = RedisShard(_reactor, address)
    try:
        return list(await shard.execute("KEYS", f"{namespace}:*"))
    finally:
        await shard.close()


class RedisEngineCase:
    """A mixin for trial cases that make Redis engines: fresh namespaces, engines closed and keys deleted."""

    hosts: str = REDIS
    expiry = 1.0

    def newNamespace(self: Any) -> str:
        requireRedis()
        namespace = f"pandapush-test-{uuid.uuid4().hex}"
        addresses = parseRedisHosts(self.hosts)
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(deleteNamespace(addresses, namespace)))
        return namespace

    def newEngine(self: Any, namespace: str, **kwargs: Any) -> RedisEngine:
        options: dict[str, Any] = {
            "hosts": self.hosts,
            "namespace": namespace,
            "timeout": 30,
            "expiry": self.expiry,
            "sweepInterval": 0.1,
            "commandTimeout": 2.0,
            "handoverTimeout": 1.0,
        }
        options.update(kwargs)
        engine = RedisEngine(_reactor, **options)
        self.addCleanup(engine.close)
        return engine


class _RedisProtocol(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.output: list[bytes] = []

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.output.append(data)

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class RedisProcess:
    """
    A throw-away redis-server on a free port (no persistence), restartable on that port;
    ``args`` are more of its options (e.g. ``--enable-debug-command local``).
    """

    def __init__(self, reactor: Any = None, args: Sequence[str] = ()) -> None:
        self.reactor: Any = reactor or _reactor
        self.args = list(args)
        self.port = freePort()
        self.protocol: _RedisProtocol | None = None
        self.transport: Any = None

    @property
    def address(self) -> RedisAddress:
        return RedisAddress("127.0.0.1", self.port)

    async def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not installed")
        self.protocol = _RedisProtocol()
        argv = [executable, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no", *self.args]
        self.transport = self.reactor.spawnProcess(self.protocol, executable, argv, env=dict(os.environ))
        if not await eventually(lambda: redisReachable(self.address, timeout=0.5), timeout=10):
            raise RuntimeError(
                f"redis-server on port {self.port} did not start: {b''.join(self.protocol.output).decode()}"
            )

    async def stop(self, sig: str | int = "TERM") -> None:
        """Signal it (SIGTERM by default, ``"KILL"`` or a number too) and wait until it is gone."""
        if self.protocol is None or self.protocol.ended.called:
            return
        try:
            self.transport.signalProcess(sig)
        except Exception:
            pass
        await self.protocol.ended
