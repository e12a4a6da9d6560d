"""The built-in engines' factories: ``memory`` and ``redis``.

Registered in the ``pandapush.engines`` entry-point group by our packaging, and
known to :mod:`pandapush.engines` without it (a source checkout). Each imports
its engine only when asked to make one, so choosing ``memory`` loads nothing of
Redis.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from pandapush.engines.config import DEFAULT_REDIS_HOSTS, EngineConfig, EngineConfigError
from pandapush.interfaces import IEngine, IEngineFactory

__all__ = ["MemoryEngineFactory", "RedisEngineFactory", "memory", "redis"]


@implementer(IEngineFactory)
class MemoryEngineFactory:
    name = "memory"
    description = "In this process's memory: one process serves every client (the default)."
    shared = False

    def makeEngine(self, reactor: Any, config: EngineConfig) -> IEngine:
        from pandapush.engines.history import HistorySettings
        from pandapush.engines.memory import MemoryEngine

        return MemoryEngine(
            reactor,
            timeout=config.timeout,
            expiry=config.clientExpiry,
            history=HistorySettings(config.historySize, config.historyTtl),
        )


@implementer(IEngineFactory)
class RedisEngineFactory:
    name = "redis"
    description = (
        f"Shared through Redis (REDIS_HOSTS, or REDIS_SENTINELS with REDIS_SENTINEL_MASTERS; "
        f"{DEFAULT_REDIS_HOSTS} if unset): many processes and machines serve as one."
    )
    shared = True

    def makeEngine(self, reactor: Any, config: EngineConfig) -> IEngine:
        from pandapush.engines.history import HistorySettings
        from pandapush.engines.redis import RedisEngine

        try:
            addresses = config.redisShards()
        except ValueError as e:
            given = f"REDIS_HOSTS {config.redisHosts!r}" if config.redisHosts else "REDIS_SENTINELS"
            raise EngineConfigError(f"{given} is not host:port[/db][,...]: {e}") from None
        return RedisEngine(
            reactor,
            addresses,
            namespace=config.redisNamespace,
            timeout=config.timeout,
            expiry=config.clientExpiry,
            history=HistorySettings(config.historySize, config.historyTtl),
        )


memory = MemoryEngineFactory()
redis = RedisEngineFactory()
