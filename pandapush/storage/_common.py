"""Small helpers every backend shares, so they agree on validation and time."""

from __future__ import annotations

import datetime
from collections.abc import Iterable

__all__ = ["checkName", "normalAdmins", "utcnow"]


def utcnow() -> datetime.datetime:
    """The current time, timezone-aware UTC."""
    return datetime.datetime.now(datetime.UTC)


def normalAdmins(names: Iterable[str]) -> tuple[str, ...]:
    """An admin set as stored and returned: no blanks, no repeats, sorted."""
    return tuple(sorted({name for name in names if name}))


def checkName(name: str) -> str:
    """An application's name, refused if empty (a nameless app is unfindable in the UI)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("an application needs a non-empty name")
    return name
