"""What storage hands back: small frozen records, safe to cache and share.

Times are timezone-aware UTC :class:`datetime.datetime` values whatever the backend.
A :class:`Key` carries its secret because the auth layer checks secrets against it;
anything shown to people goes through :meth:`Key.publicDict`, which leaves it out.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_HISTORY_SIZE", "MAX_HISTORY_TTL", "Application", "HistoryLimits", "Key", "isoformat"]

#: The most messages an application's channels may keep each (memory: a channel's history
#: is at most this many messages of at most --max-message-size), and the longest they may
#: keep them (seconds: a day).
MAX_HISTORY_SIZE = 10_000
MAX_HISTORY_TTL = 86_400.0


@dataclass(frozen=True)
class HistoryLimits:
    """
    An application's own channel history settings: messages each channel keeps (``size``,
    0: no history) and for how many seconds (``ttl``); None: the server's default.
    """

    size: int | None = None
    ttl: float | None = None

    def checked(self) -> HistoryLimits:
        """These limits, or ``ValueError`` saying which is out of range."""
        size, ttl = self.size, self.ttl
        if size is not None and (
            not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_HISTORY_SIZE
        ):
            raise ValueError(f"history size must be an integer from 0 to {MAX_HISTORY_SIZE}")
        if ttl is not None and (
            not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_HISTORY_TTL
        ):
            raise ValueError(f"history ttl must be a number of seconds from 1 to {int(MAX_HISTORY_TTL)}")
        return HistoryLimits(size, None if ttl is None else float(ttl))

    def publicDict(self) -> dict[str, Any]:
        return {"size": self.size, "ttl": self.ttl}


def isoformat(value: datetime.datetime | None) -> str | None:
    """``2020-01-01T07:00:00.000Z`` like upstream's JSON (JavaScript ``Date`` style), or None."""
    if value is None:
        return None
    value = value.astimezone(datetime.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Application:
    """
    A tenant: its channels are ``/<id>/...``; ``admins`` are the user names that manage it.
    ``allowed_origins`` are the browser origins its channels may be used from (empty: any
    origin the server allows).
    """

    id: str
    name: str
    created_by: str
    created_at: datetime.datetime
    updated_at: datetime.datetime
    admins: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    history: HistoryLimits = HistoryLimits()

    def publicDict(self) -> dict[str, Any]:
        """JSON-ready fields for the admin API and the command line."""
        return {
            "id": self.id,
            "name": self.name,
            "created_by": self.created_by,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
            "admins": list(self.admins),
            "allowed_origins": list(self.allowed_origins),
            "history": self.history.publicDict(),
        }


@dataclass(frozen=True)
class Key:
    """
    A key of one application. ``secret`` is left out of ``repr`` so that a logged
    key does not leak it; :meth:`publicDict` leaves it out too.
    """

    id: str
    application_id: str
    secret: str = field(repr=False)
    expires: datetime.datetime | None
    purpose: str
    created_by: str
    created_at: datetime.datetime
    updated_at: datetime.datetime
    last_used: datetime.datetime | None = None
    use_count: int = 0
    revoked_at: datetime.datetime | None = None

    @property
    def revoked(self) -> bool:
        """Whether the key was revoked (it then stops working, whatever ``expires`` says)."""
        return self.revoked_at is not None

    def isExpired(self, now: datetime.datetime) -> bool:
        """Whether ``expires`` is set and not after ``now``."""
        return self.expires is not None and self.expires <= now

    def isUsable(self, now: datetime.datetime) -> bool:
        """Neither revoked nor expired at ``now``."""
        return not self.revoked and not self.isExpired(now)

    def publicDict(self) -> dict[str, Any]:
        """JSON-ready fields without the secret, for listings in the admin API and the command line."""
        return {
            "id": self.id,
            "application_id": self.application_id,
            "expires": isoformat(self.expires),
            "purpose": self.purpose,
            "created_by": self.created_by,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
            "last_used": isoformat(self.last_used),
            "use_count": self.use_count,
            "revoked_at": isoformat(self.revoked_at),
            "revoked": self.revoked,
        }

    def secretDict(self) -> dict[str, Any]:
        """:meth:`publicDict` plus ``secret``: only for the answer to the request that created the key."""
        return {**self.publicDict(), "secret": self.secret}
