"""Bayeux channel grammar and wildcard expansion.

Pure functions over strings, used by the router (validation) and by every engine
(fan-out). Matching is by segments, never by string prefix: ``/a/b/**`` does not match
``/a/bc``.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = [
    "MAX_DEPTH",
    "META_PREFIX",
    "SERVICE_PREFIX",
    "depth",
    "expand",
    "isMeta",
    "isPattern",
    "isService",
    "isSubscribable",
    "isValidName",
    "isValidPattern",
    "listedApp",
    "matches",
]

_SEGMENT = r"[A-Za-z0-9\-_!~()$@]+"
_NAME = re.compile(rf"^(?:/{_SEGMENT})+$")
_PATTERN = re.compile(rf"^(?:/{_SEGMENT})*/\*{{1,2}}$")

META_PREFIX = "/meta/"
SERVICE_PREFIX = "/service/"

#: The most segments a channel may have. A message to a channel of ``n`` segments is
#: looked up under ``n + 2`` subscription keys (:func:`expand`), each up to the
#: channel's length: without a bound on ``n`` that is the square of the length (a
#: 7,000-segment REST channel cost 0.34 s of CPU and 45 MB per publish, and a script of
#: 7,004 keys on Redis). At 32 the keys are at most 34 and their size linear in the
#: length, whatever ``--max-channel-length`` allows. Real channels use a handful
#: (``/<app>/private/users/42/inbox`` has five); AWS IoT allows eight levels.
MAX_DEPTH = 32


def isValidName(channel: str) -> bool:
    """A concrete channel name one can publish to (no wildcard)."""
    if len(channel) > _MAX_CACHED_NAME:
        return _NAME.fullmatch(channel) is not None
    return _VALID_NAME(channel)


def isValidPattern(channel: str) -> bool:
    """A name whose last segment is ``*`` or ``**``."""
    if len(channel) > _MAX_CACHED_NAME:
        return _PATTERN.fullmatch(channel) is not None
    return _VALID_PATTERN(channel)


# Every publish and subscribe checks its channels, and the same channels come back with
# every message: the regular expression (a test per character) took 0.6-2 us a channel
# against 0.15 for the cache's lookup. Names of at most _MAX_CACHED_NAME characters
# (any --max-channel-length up to it; longer ones are refused or rare): under 5 MB full.
_MAX_CACHED_NAME = 256
_VALID_NAME = lru_cache(maxsize=16384)(lambda channel: _NAME.fullmatch(channel) is not None)
_VALID_PATTERN = lru_cache(maxsize=16384)(lambda channel: _PATTERN.fullmatch(channel) is not None)


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


def depth(channel: str) -> int:
    """How many segments ``channel`` has (``/a/b/**``: three)."""
    return channel.count("/")


def expand(channel: str) -> tuple[str, ...]:
    """Every subscription key that matches a message published to ``channel``.

    ``/a/b/c`` -> ``/a/b/c``, ``/a/b/*``, ``/a/b/**``, ``/a/**``, ``/**``: the
    subscription index is then a handful of dictionary lookups per message, never a
    scan of subscriptions. At most :data:`MAX_DEPTH` + 2 keys, each a slice of
    ``channel``: linear in its length. A deeper channel raises ``ValueError``: the
    router refuses those before any engine sees them, so one arriving here is a bug,
    and an error costs less than a quadratic expansion.

    Cached because the same channels are published to over and over; only channels
    of at most ``_MAX_CACHED_DEPTH`` segments, since an entry grows with the depth
    times the length (a 200-character channel of 32 segments expands to 3.5 KB) and a
    cache bounded by entries would otherwise hold up to a gigabyte of them (found by
    bench/fuzz.py).
    """
    slashes = channel.count("/")
    if slashes > _MAX_CACHED_DEPTH:
        if slashes > MAX_DEPTH:
            raise ValueError(f"channel deeper than {MAX_DEPTH} segments")
        return _expand(channel)
    return _EXPAND_CACHED(channel)


_MAX_CACHED_DEPTH = 8


def _expand(channel: str) -> tuple[str, ...]:
    # Cut at each slash from the right: one slice per key, no list of segments
    # joined again for every depth.
    cut = channel.rfind("/")
    keys = [channel, channel[:cut] + "/*"]
    while cut >= 0:
        keys.append(channel[:cut] + "/**")
        cut = channel.rfind("/", 0, cut)
    return tuple(keys)


# At most 8 segments of a channel of at most --max-channel-length (200) characters:
# under 2 KB an entry (measured 1.8 KB at worst), so under 30 MB when full; channel
# names as people write them take a fraction of that.
_EXPAND_CACHED = lru_cache(maxsize=16384)(_expand)


def matches(pattern: str, channel: str) -> bool:
    """Whether a subscription to ``pattern`` receives messages of ``channel``."""
    return pattern in expand(channel)


#: The channel types of an application one can publish to, so the ones its occupied
#: channels are listed for (``meta`` channels are the server's own).
LISTED_TYPES = frozenset({"public", "private", "presence"})


def listedApp(channel: str) -> str | None:
    """
    The application of ``/<app>/<public|private|presence>/<path>`` (no wildcard), else
    None: the channels whose occupancy the server API lists and webhooks report.
    """
    parts = channel.split("/", 3)
    if len(parts) < 4 or not parts[1] or parts[2] not in LISTED_TYPES or not parts[3]:
        return None
    if isPattern(channel):
        return None
    return parts[1]
