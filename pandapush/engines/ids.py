"""Client ids, the same for every engine."""

from __future__ import annotations

import secrets

__all__ = ["newClientId"]


def newClientId() -> str:
    """160 random bits, URL-safe: unguessable, and usable as a path segment."""
    return secrets.token_urlsafe(20)
