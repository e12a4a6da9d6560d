"""The consistent-hash ring that spreads clients and keys over Redis shards."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence

__all__ = ["HashRing"]


class HashRing:
    """
    Consistent hashing with virtual nodes.

    Each shard owns ``replicas`` points on a 64-bit circle; a key belongs to the
    first point at or after its hash. Adding a shard takes over only the arcs
    before its own points (about 1/n of the keys), where ``hash % n`` would move
    almost every key.
    """

    def __init__(self, names: Sequence[str], replicas: int = 160) -> None:
        if not names:
            raise ValueError("a hash ring needs at least one shard")
        points: list[tuple[int, int]] = []
        for index, name in enumerate(names):
            for replica in range(replicas):
                points.append((self._hash(f"{name}#{replica}"), index))
        points.sort()
        self._hashes = [h for h, _ in points]
        self._owners = [i for _, i in points]
        self._single = len(names) == 1

    @staticmethod
    def _hash(key: str) -> int:
        return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")

    def index(self, key: str) -> int:
        """The index (in the names given) of the shard holding ``key``."""
        if self._single:
            return 0
        position = bisect.bisect_left(self._hashes, self._hash(key))
        if position == len(self._hashes):
            position = 0
        return self._owners[position]
