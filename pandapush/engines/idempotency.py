"""Idempotent publishing on the memory engine: the keys seen in the last five minutes.

A publish may carry an idempotency key (REST ``Idempotency-Key``, Bayeux
``ext.idempotencyKey``), scoped to its application by the router
(``<appId>:<key>``): a second publish with the same key within :data:`IDEMPOTENCY_TTL`
is acknowledged like the first (with the first's position) and not delivered again.
The Redis engine keeps the keys in Redis, checked and set inside the publish script
(one atomic step, on every node alike); here they are a dictionary in the order they
were first seen, so expired ones are dropped from the front, and at most
:data:`MAX_KEYS` are kept (the oldest go first beyond it: memory stays bounded
whatever publishers send, at the price of forgetting a key early under such a flood).
"""

from __future__ import annotations

from collections import OrderedDict

from twisted.internet.interfaces import IReactorTime

__all__ = ["IDEMPOTENCY_TTL", "MAX_KEYS", "MAX_KEY_LENGTH", "IdempotencyKeys"]

#: Seconds a key is remembered.
IDEMPOTENCY_TTL = 300.0
#: The longest key a publisher may send (characters).
MAX_KEY_LENGTH = 200
#: The most keys the memory engine remembers (about 40 MB at the longest keys).
MAX_KEYS = 100_000


class IdempotencyKeys:
    """Keys seen within the last ``ttl`` seconds, each with the position its publish got."""

    def __init__(self, reactor: IReactorTime, ttl: float = IDEMPOTENCY_TTL, maxKeys: int = MAX_KEYS) -> None:
        self._reactor = reactor
        self.ttl = ttl
        self.maxKeys = maxKeys
        self._keys: OrderedDict[str, tuple[float, int, str | None]] = OrderedDict()

    def seen(self, key: str) -> tuple[int, str | None] | None:
        """The position of the publish that used ``key`` within ``ttl``, else None."""
        now = self._reactor.seconds()
        keys = self._keys
        while keys:
            first = next(iter(keys.values()))
            if first[0] > now:
                break
            keys.popitem(last=False)
        found = keys.get(key)
        return None if found is None else (found[1], found[2])

    def remember(self, key: str, offset: int, epoch: str | None) -> None:
        keys = self._keys
        keys[key] = (self._reactor.seconds() + self.ttl, offset, epoch)
        while len(keys) > self.maxKeys:
            keys.popitem(last=False)

    def __len__(self) -> int:
        return len(self._keys)
