"""Bayeux channel grammar and wildcard expansion.

Pure functions over strings, used by the router (validation) and by every engine
(fan-out). Matching is by segments, never by string prefix: ``/a/b/**`` does not match
``/a/bc``.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = [
    "META_PREFIX",
    "SERVICE_PREFIX",
    "expand",
    "isMeta",
    "isPattern",
    "isService",
    "isSubscribable",
    "isValidName",
    "isValidPattern",
    "matches",
]

_SEGMENT = r"[A-Za-z0-9\-_!~()$@]+"
_NAME = re.compile(rf"^(?:/{_SEGMENT})+$")
_PATTERN = re.compile(rf"^(?:/{_SEGMENT})*/\*{{1,2}}$")

META_PREFIX = "/meta/"
SERVICE_PREFIX = "/service/"


def isValidName(channel: str) -> bool:
    """A concrete channel name one can publish to (no wildcard)."""
    return _NAME.fullmatch(channel) is not None


def isValidPattern(channel: str) -> bool:
    """A name whose last segment is ``*`` or ``**``."""
    return _PATTERN.fullmatch(channel) is not None


def isPattern(channel: str) -> bool:
    return channel.endswith("/*") or channel.endswith("/**")


def isValid(channel: str) -> bool:
    return isValidName(channel) or isValidPattern(channel)


def isMeta(channel: str) -> bool:
    return channel == "/meta" or channel.startswith(META_PREFIX)


def isService(channel: str) -> bool:
    return channel == "/service" or channel.startswith(SERVICE_PREFIX)


def isSubscribable(channel: str) -> bool:
    """Clients may not subscribe to ``/meta/**`` or ``/service/**``."""
    return not (isMeta(channel) or isService(channel))


def expand(channel: str) -> tuple[str, ...]:
    """Every subscription key that matches a message published to ``channel``.

    ``/a/b/c`` -> ``/a/b/c``, ``/a/b/*``, ``/a/b/**``, ``/a/**``, ``/**``: the
    subscription index is then a handful of dictionary lookups per message, never a
    scan of subscriptions. Cached because the same channels are published to over
    and over; only channels of at most ``_MAX_CACHED_DEPTH`` segments, since an
    entry grows with the square of the depth (a 200-character channel of 97
    segments expands to 15 KB) and a cache bounded by entries would otherwise hold up
    to a gigabyte of them (found by bench/fuzz.py).
    """
    if channel.count("/") > _MAX_CACHED_DEPTH:
        return _expand(channel)
    return _EXPAND_CACHED(channel)


_MAX_CACHED_DEPTH = 8


def _expand(channel: str) -> tuple[str, ...]:
    segments = channel.split("/")[1:]
    keys = [channel, "/".join(["", *segments[:-1], "*"])]
    for depth in range(len(segments) - 1, -1, -1):
        keys.append("/".join(["", *segments[:depth], "**"]))
    return tuple(keys)


# At most 8 segments of a channel of at most --max-channel-length (200) characters:
# under 2 KB an entry (measured 1.8 KB at worst), so under 30 MB when full; channel
# names as people write them take a fraction of that.
_EXPAND_CACHED = lru_cache(maxsize=16384)(_expand)


def matches(pattern: str, channel: str) -> bool:
    """Whether a subscription to ``pattern`` receives messages of ``channel``."""
    return pattern in expand(channel)
