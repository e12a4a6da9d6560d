"""What an engine is made from: :class:`EngineConfig`, and the error for a bad choice."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pandapush.redis import RedisAddress

__all__ = ["DEFAULT_REDIS_HOSTS", "EngineConfig", "EngineConfigError"]

#: The Redis the ``redis`` engine uses when chosen without ``REDIS_HOSTS``.
DEFAULT_REDIS_HOSTS = "127.0.0.1:6379"


class EngineConfigError(ValueError):
    """The engine asked for is unknown, or its plugin is broken: the server cannot start."""


@dataclass(frozen=True)
class EngineConfig:
    """
    The settings every engine is made from. ``redisHosts`` (or ``redisSentinels`` with
    ``redisSentinelMasters``) and ``redisNamespace`` are the Redis engine's
    (``REDIS_HOSTS``, ``REDIS_SENTINELS``, ``REDIS_SENTINEL_MASTERS``,
    ``REDIS_NAMESPACE``); a third-party engine reads its own settings from ``environ``.
    """

    #: Seconds a long-poll ``/meta/connect`` is held (``--timeout``).
    timeout: float = 30.0
    #: Seconds a client survives without a connection (``--client-expiry``).
    clientExpiry: float = 10.0
    #: Messages each channel keeps, and for how many seconds (``--history-size``,
    #: ``--history-ttl``); an application's own settings override them.
    historySize: int = 100
    historyTtl: float = 300.0
    redisHosts: str | None = None
    redisNamespace: str = "pandapush"
    environ: Mapping[str, str] = field(default_factory=dict)
    redisSentinels: str | None = None
    redisSentinelMasters: str | None = None

    @property
    def redisGiven(self) -> bool:
        """Whether Redis shards are named at all (which chooses the Redis engine)."""
        return bool(self.redisHosts or self.redisSentinels or self.redisSentinelMasters)

    def redisShards(self) -> list[RedisAddress]:
        """
        The Redis shards named (``DEFAULT_REDIS_HOSTS`` when none are): ValueError for
        a malformed list, or for both ``REDIS_HOSTS`` and the Sentinel pair.
        """
        from pandapush.redis import parseRedisHosts, parseRedisShards

        shards = parseRedisShards(self.redisHosts, self.redisSentinels, self.redisSentinelMasters)
        return shards if shards is not None else parseRedisHosts(DEFAULT_REDIS_HOSTS)
