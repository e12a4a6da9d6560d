"""Small helpers every backend shares, so they agree on validation and time."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["checkName", "normalAdmins", "normalOrigin", "normalOrigins", "utcnow"]

_DEFAULT_PORTS = {"http": ":80", "https": ":443", "ws": ":80", "wss": ":443"}
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_~-]+(\.[a-z0-9_~-]+)*)(:[0-9]{1,5})?")


def utcnow() -> datetime.datetime:
    """The current time, timezone-aware UTC."""
    return datetime.datetime.now(datetime.UTC)


def normalAdmins(names: Iterable[str]) -> tuple[str, ...]:
    """An admin set as stored and returned: no blanks, no repeats, sorted."""
    return tuple(sorted({name for name in names if name}))


def normalOrigin(origin: str) -> str:
    """
    A browser origin as stored and compared: ``scheme://host[:port]``, lower-cased, no
    trailing slash (what browsers send in ``Origin``), or ``null``: what browsers send
    for a document without an origin of its own (a sandboxed iframe, a file:// page).
    ``ValueError`` names anything else.
    """
    if not isinstance(origin, str):
        raise ValueError(f"not an origin: {origin!r}")
    text = origin.strip().lower().rstrip("/")
    if text == "null":
        return text
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ValueError(f"not an origin: {origin!r} (use scheme://host[:port], or null)") from None
    if (
        not _SCHEME.fullmatch(parts.scheme)
        or not _HOST.fullmatch(parts.netloc)
        or parts.path
        or parts.query
        or parts.fragment
        or text != f"{parts.scheme}://{parts.netloc}"
    ):
        raise ValueError(f"not an origin: {origin!r} (use scheme://host[:port], nothing after it, or null)")
    # Browsers leave the default port out of Origin.
    default = _DEFAULT_PORTS.get(parts.scheme)
    if default is not None and text.endswith(default):
        text = text[: -len(default)]
    return text


def normalOrigins(origins: Iterable[str]) -> tuple[str, ...]:
    """An allowed-origins list as stored and returned: each normalised, no repeats, sorted."""
    return tuple(sorted({normalOrigin(o) for o in origins if not isinstance(o, str) or o.strip()}))


def checkName(name: str) -> str:
    """An application's name, refused if empty (a nameless app is unfindable in the UI)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("an application needs a non-empty name")
    return name
