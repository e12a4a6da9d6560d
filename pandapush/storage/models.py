"""What storage hands back: small frozen records, safe to cache and share.

Times are timezone-aware UTC :class:`datetime.datetime` values whatever the backend.
A :class:`Key` carries its secret because the auth layer checks secrets against it;
anything shown to people goes through :meth:`Key.publicDict`, which leaves it out.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Application", "Key", "isoformat"]


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
