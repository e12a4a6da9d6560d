"""
Redis Sentinel for tests: a primary, a replica and three sentinels of the test's own.

:class:`SentinelDeployment` starts ``redis-server`` processes on free ports (no
persistence): a primary, a replica of it, and three ``redis-server --sentinel``
watching the primary as :attr:`SentinelDeployment.master` with short timeouts
(``down-after-milliseconds`` 1000, ``failover-timeout`` 3000), so a killed primary is
replaced within a few seconds. ``env`` is what a node is given
(``REDIS_SENTINELS``, ``REDIS_SENTINEL_MASTERS``). Everything is stopped at cleanup.

:class:`FakeSentinel` is a sentinel of our own for unit tests of the connection
logic: it names whichever address the test sets, and announces ``+switch-master``
when the test says so.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Protocol, ServerFactory

from pandapush.redis import RedisAddress, RedisShard
from tests.support.ports import listenLocally, portNumber
from tests.support.redis import RedisProcess, _RedisProtocol, redisReachable, requireRedisServer
from tests.support.waiting import eventually, sleep

__all__ = ["FakeSentinel", "RedisServer", "SentinelDeployment"]


class RedisServer(RedisProcess):
    """A throw-away redis-server with extra arguments (a replica, a sentinel)."""

    def __init__(self, *extra: str, config: str | None = None, reactor: Any = None) -> None:
        super().__init__(reactor)
        self.extra = list(extra)
        self.config = config

    async def start(self) -> None:
        executable = requireRedisServer()
        self.protocol = _RedisProtocol()
        argv = [executable]
        if self.config is not None:
            argv.append(self.config)
        argv += ["--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "no"]
        if self.config is None:
            argv += ["--save", "", "--appendonly", "no"]
        argv += self.extra
        self.transport = self.reactor.spawnProcess(self.protocol, executable, argv, env=dict(os.environ))
        if not await eventually(lambda: redisReachable(self.address, timeout=0.5), timeout=10):
            raise RuntimeError(
                f"redis-server on port {self.port} did not start: {b''.join(self.protocol.output).decode()}"
            )


async def _ask(address: RedisAddress, *command: Any) -> Any:
    shard = RedisShard(_reactor, address, commandTimeout=2.0)
    try:
        return await shard.execute(*command)
    finally:
        await shard.close()


def _fields(flat: Any) -> dict[str, str]:
    flat = list(flat or ())
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


class SentinelDeployment:
    """A primary, a replica and three sentinels on free ports; see the module docstring."""

    master = "pp-master"

    def __init__(self, downAfter: int = 1000, failoverTimeout: int = 3000) -> None:
        requireRedisServer()
        self.directory = tempfile.mkdtemp(prefix="pp-sentinel-")
        # In a directory of their own: a replica writes the primary's snapshot to disk.
        where = ["--dir", self.directory]
        self.servers = [RedisServer(*where), RedisServer(*where)]
        self.servers[1].extra += ["--replicaof", "127.0.0.1", str(self.servers[0].port)]
        self.sentinels: list[RedisServer] = []
        for i in range(3):
            path = os.path.join(self.directory, f"sentinel-{i}.conf")
            with open(path, "w") as f:
                f.write(
                    f"sentinel monitor {self.master} 127.0.0.1 {self.servers[0].port} 2\n"
                    f"sentinel down-after-milliseconds {self.master} {downAfter}\n"
                    f"sentinel failover-timeout {self.master} {failoverTimeout}\n"
                    f"sentinel parallel-syncs {self.master} 1\n"
                    f"dir {self.directory}\n"
                )
            self.sentinels.append(RedisServer("--sentinel", config=path))

    @property
    def env(self) -> dict[str, str]:
        """What a node is given to find the primary through the sentinels."""
        return {
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels),
            "REDIS_SENTINEL_MASTERS": self.master,
        }

    @property
    def shards(self) -> list[RedisAddress]:
        from pandapush.redis import parseRedisShards

        shards = parseRedisShards(None, self.env["REDIS_SENTINELS"], self.master)
        assert shards is not None
        return shards

    async def start(self) -> None:
        """Everything up, and the sentinels agreed (they know the replica and each other)."""
        for server in self.servers:
            await server.start()
        replica = self.servers[1].address

        async def linked() -> bool:
            info = await _ask(replica, "INFO", "replication")
            return "master_link_status:up" in str(info)

        await self._until(linked, "the replica never synced with the primary", 15)
        for sentinel in self.sentinels:
            await sentinel.start()

        async def agreed() -> bool:
            for sentinel in self.sentinels:
                state = _fields(await _ask(sentinel.address, "SENTINEL", "MASTER", self.master))
                if state.get("num-slaves") != "1" or state.get("num-other-sentinels") != "2":
                    return False
            return True

        # Sentinels find each other through the primary's hello channel, every 2 s.
        await self._until(agreed, "the sentinels never found each other and the replica", 20)

    async def _until(self, check: Any, what: str, timeout: float) -> None:
        deadline = _reactor.seconds() + timeout
        while True:
            try:
                if await check():
                    return
            except Exception:
                pass
            if _reactor.seconds() > deadline:
                raise RuntimeError(what)
            await sleep(0.1)

    async def primary(self) -> RedisServer:
        """The server the sentinels name as primary now."""
        reply = await _ask(self.sentinels[0].address, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master)
        port = int(reply[1])
        return next(s for s in self.servers if s.port == port)

    async def stop(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            await server.stop("KILL")
        shutil.rmtree(self.directory, ignore_errors=True)


class _FakeSentinelProtocol(Protocol):
    factory: FakeSentinel

    def connectionMade(self) -> None:
        self._buffer = b""
        self.factory.connections.append(self)

    def connectionLost(self, reason: Any = None) -> None:
        if self in self.factory.connections:
            self.factory.connections.remove(self)

    def dataReceived(self, data: bytes) -> None:
        from pandapush.redis.protocol import readReply

        self._buffer += data
        while True:
            parsed = readReply(self._buffer)
            if parsed is None:
                return
            command, end = parsed
            self._buffer = self._buffer[end:]
            self._answer(command)

    def _answer(self, command: list[str]) -> None:
        name = command[0].upper()
        if name == "SENTINEL" and command[1].upper() == "GET-MASTER-ADDR-BY-NAME":
            self.factory.asked += 1
            primary = self.factory.primaries.get(command[2])
            if primary is None:
                self.transport.write(b"*-1\r\n")  # type: ignore[union-attr]
            else:
                self.transport.write(_array([primary[0], str(primary[1])]))  # type: ignore[union-attr]
        elif name == "SUBSCRIBE":
            self.factory.subscribers.append(self)
            self.transport.write(_array(["subscribe", command[1]], 1))  # type: ignore[union-attr]
        elif name == "PING":
            self.transport.write(b"+PONG\r\n")  # type: ignore[union-attr]
        else:
            self.transport.write(b"-ERR unknown command\r\n")  # type: ignore[union-attr]


def _array(items: list[str], count: int | None = None) -> bytes:
    out = [f"*{len(items) + (count is not None)}\r\n".encode()]
    for item in items:
        data = item.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    if count is not None:
        out.append(b":%d\r\n" % count)
    return b"".join(out)


class FakeSentinel(ServerFactory):  # type: ignore[type-arg]
    """A sentinel that names ``primaries[master]`` and announces switches when told."""

    def __init__(self) -> None:
        self.primaries: dict[str, tuple[str, int]] = {}
        self.connections: list[_FakeSentinelProtocol] = []
        self.subscribers: list[_FakeSentinelProtocol] = []
        self.asked = 0
        self.port: IListeningPort | None = None

    def buildProtocol(self, addr: Any) -> Any:
        protocol = _FakeSentinelProtocol()
        protocol.factory = self
        return protocol

    def listen(self) -> int:
        self.port = listenLocally(self)
        return portNumber(self.port)

    def announce(self, master: str, old: tuple[str, int], new: tuple[str, int]) -> None:
        """``+switch-master`` to every subscriber, as real sentinels send at the end of a failover."""
        self.primaries[master] = new
        text = f"{master} {old[0]} {old[1]} {new[0]} {new[1]}"
        for subscriber in list(self.subscribers):
            if subscriber.transport is not None:
                subscriber.transport.write(_array(["message", "+switch-master", text]))

    async def stop(self) -> None:
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abortConnection()  # type: ignore[attr-defined]
        if self.port is not None:
            await defer.maybeDeferred(self.port.stopListening)
