"""Slowing down repeated failed admin logins.

Admin auth is HTTP Basic: every request carries the password, so a script can try
passwords as fast as the server answers. :class:`LoginThrottle` counts failed logins
per client address and per user name; after ``freeFailures`` failures (5) each
further failure doubles a delay (1 s, 2 s, 4 s ... up to ``maxDelay``), and until the
delay has passed every attempt from that address, or for that user name, is refused
with ``429 Too Many Requests`` and ``Retry-After`` *without checking the password*, so
the refusals tell an attacker nothing. A success resets the address and the name.
Failures are forgotten ``window`` seconds after the last one.

Why the user name too: an attacker with many addresses would otherwise get five free
guesses per address. The price is that such an attacker can hold the real admin off
for at most ``maxDelay`` at a time; the admin's own address is never blocked by others.

Time is the reactor's (a :class:`~twisted.internet.task.Clock` in tests); memory is
bounded (``maxEntries``, least recently failed evicted first, and entries whose
window has passed are dropped as they are met).

Client addresses (:class:`pandapush.web.http.ProxyTrust`, which reads them from a
request): the TCP peer, unless it is one of ``trustedProxies`` (addresses or CIDR
networks, ``--trusted-proxies`` / ``PANDAPUSH_TRUSTED_PROXIES``, parsed here by
:func:`parseTrustedProxies`); then the right-most ``X-Forwarded-For`` address that is
not itself a trusted proxy. Without trusted proxies the header is ignored: anyone can
send it.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

__all__ = [
    "DEFAULT_FREE_FAILURES",
    "DEFAULT_MAX_DELAY",
    "DEFAULT_WINDOW",
    "LoginThrottle",
    "LoginThrottledError",
    "Network",
    "parseTrustedProxies",
]

DEFAULT_FREE_FAILURES = 5
DEFAULT_BASE_DELAY = 1.0
DEFAULT_MAX_DELAY = 300.0
DEFAULT_WINDOW = 900.0
DEFAULT_MAX_ENTRIES = 10_000

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class LoginThrottledError(Exception):
    """Too many failed logins: refuse without checking, and say when to come back."""

    def __init__(self, retryAfter: float) -> None:
        super().__init__(f"too many failed logins; retry in {retryAfter:.0f} s")
        self.retryAfter = retryAfter

    @property
    def retryAfterHeader(self) -> bytes:
        """Whole seconds, rounded up (``Retry-After: 0`` would invite an immediate retry)."""
        return str(max(1, math.ceil(self.retryAfter))).encode("ascii")


def parseTrustedProxies(value: str | Iterable[str] | None) -> tuple[Network, ...]:
    """``10.0.0.1, 10.1.0.0/16, ::1`` -> networks; raises ``ValueError`` naming a bad entry."""
    if value is None:
        return ()
    entries = value.split(",") if isinstance(value, str) else list(value)
    networks: list[Network] = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {entry!r}") from None
    return tuple(networks)


@dataclass
class _Entry:
    failures: int = 0
    lastFailure: float = 0.0
    blockedUntil: float = 0.0


class LoginThrottle:
    """Failed-login counts with exponential back-off, by key (``ip:...``, ``user:...``)."""

    def __init__(
        self,
        clock: IReactorTime,
        freeFailures: int = DEFAULT_FREE_FAILURES,
        baseDelay: float = DEFAULT_BASE_DELAY,
        maxDelay: float = DEFAULT_MAX_DELAY,
        window: float = DEFAULT_WINDOW,
        maxEntries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self.clock = clock
        self.freeFailures = freeFailures
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.window = window
        self.maxEntries = maxEntries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._refusalObservers: list[Callable[[], None]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def addRefusalObserver(self, observer: Callable[[], None]) -> None:
        """Call ``observer()`` each time an attempt is refused (metrics)."""
        self._refusalObservers.append(observer)

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and now - entry.lastFailure > self.window and now >= entry.blockedUntil:
            del self._entries[key]
            return None
        return entry

    def retryAfter(self, keys: Iterable[str]) -> float:
        """Seconds until an attempt for these keys may be checked again (0: go ahead)."""
        now = self.clock.seconds()
        wait = 0.0
        for key in keys:
            entry = self._live(key, now)
            if entry is not None:
                wait = max(wait, entry.blockedUntil - now)
        return wait

    def check(self, keys: Sequence[str]) -> None:
        """Raise :class:`LoginThrottledError` if any key is still blocked."""
        wait = self.retryAfter(keys)
        if wait > 0:
            for observer in self._refusalObservers:
                observer()
            raise LoginThrottledError(wait)

    def failed(self, keys: Iterable[str]) -> None:
        """A login with these keys failed: count it, and block past ``freeFailures``."""
        now = self.clock.seconds()
        for key in keys:
            entry = self._live(key, now)
            if entry is None:
                entry = self._entries[key] = _Entry()
            else:
                self._entries.move_to_end(key)
            entry.failures += 1
            entry.lastFailure = now
            over = entry.failures - self.freeFailures
            if over >= 0:
                delay = min(self.maxDelay, self.baseDelay * 2.0 ** min(over, 64))
                entry.blockedUntil = now + delay
        while len(self._entries) > self.maxEntries:
            self._entries.popitem(last=False)

    def succeeded(self, keys: Iterable[str]) -> None:
        """A login with these keys succeeded: forget their failures."""
        for key in keys:
            self._entries.pop(key, None)
