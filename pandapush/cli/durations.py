"""Durations and expiry times as operators type them (``1h``, ``30d``, ``P1Y``, ``2027-01-01``)."""

from __future__ import annotations

import datetime
import re

__all__ = ["parseDuration", "parseExpiry"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_SHORT = re.compile(r"(\d+)\s*([smhdwy])", re.I)
_ISO = re.compile(
    r"P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T?(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+)S)?)?",
    re.I,
)


def parseDuration(text: str) -> datetime.timedelta:
    """
    ``30s``, ``15m``, ``1h``, ``30d``, ``2w``, ``1y``, or ISO 8601 as upstream took it
    (``P1Y``, ``PT1H``, and moment's lenient ``P1H``). A month is 30 days, a year 365.
    """
    text = text.strip()
    short = _SHORT.fullmatch(text)
    if short:
        seconds = int(short.group(1)) * _UNITS[short.group(2).lower()]
    else:
        iso = _ISO.fullmatch(text)
        if not iso or text.upper() in ("P", "PT"):
            raise ValueError(f"not a duration: {text!r} (try 1h, 30d, 1y or P1Y)")
        n = {k: int(v) if v else 0 for k, v in iso.groupdict().items()}
        seconds = (
            n["y"] * _UNITS["y"]
            + n["mo"] * 30 * 86400
            + n["w"] * _UNITS["w"]
            + n["d"] * _UNITS["d"]
            + n["h"] * 3600
            + n["mi"] * 60
            + n["s"]
        )
    if seconds <= 0:
        raise ValueError(f"a duration must be positive: {text!r}")
    return datetime.timedelta(seconds=seconds)


def parseExpiry(text: str | None, now: datetime.datetime) -> datetime.datetime | None:
    """
    When something expires: ``never``/empty for never, a duration from ``now``
    (see :func:`parseDuration`), or a date/time (``2027-01-01``, ``2027-01-01T12:00:00Z``;
    UTC unless it says otherwise).
    """
    if text is None or text.strip().lower() in ("", "never", "none"):
        return None
    try:
        return now + parseDuration(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a duration or a date: {text!r} (try 1h, 30d, 1y, P1Y or 2027-01-01)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.astimezone(datetime.UTC)
