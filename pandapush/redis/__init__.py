"""Our Redis client layer: addresses, the shard ring, bounded commands, a reconnecting subscriber.

Shared by the Redis engine (:mod:`pandapush.engines.redis`) and key cache
invalidation (:mod:`pandapush.auth.keysync`); neither touches txredisapi directly.
See :mod:`pandapush.redis.connection` for why it is built the way it is, and
:mod:`pandapush.redis.sentinel` for shards found through Redis Sentinel.
"""

from __future__ import annotations

from pandapush.redis.connection import (
    HashRing,
    RedisAddress,
    RedisHealth,
    RedisShard,
    RedisSubscriber,
    RedisUnavailable,
    parseRedisHosts,
)
from pandapush.redis.sentinel import parseRedisShards

__all__ = [
    "HashRing",
    "RedisAddress",
    "RedisHealth",
    "RedisShard",
    "RedisSubscriber",
    "RedisUnavailable",
    "parseRedisHosts",
    "parseRedisShards",
]
