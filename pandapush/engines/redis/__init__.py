"""The Redis engine: pandapush nodes sharing clients, subscriptions and presence.

Chosen with ``REDIS_HOSTS=host:port[/db][,host:port[/db]...]``; see ``engine``
for the design and ``pandapush/engines/REDIS-TODO.md`` for what is not done yet.
Its connections to Redis are :mod:`pandapush.redis`'s.
"""

from __future__ import annotations

from pandapush.engines.redis.engine import DEFAULT_NAMESPACE, RedisEngine

__all__ = ["DEFAULT_NAMESPACE", "RedisEngine"]
