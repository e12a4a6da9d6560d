"""Minting pandapush tokens: JWTs signed with a key's secret, scoped to one channel.

Verifying them is the auth layer's job (``pandapush.auth.bearer``, with this module's
:data:`ALGORITHMS`); this module only makes them, for the command line, the admin API
and Python programs serving browsers.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping
from typing import Any

import jwt

__all__ = ["ALGORITHMS", "mintToken"]

#: What pandapush mints and accepts (:mod:`pandapush.auth.bearer` verifies with this
#: list): HMAC only. Never ``none``, never a public-key algorithm: a key's secret is a
#: shared HMAC secret, and accepting RS/ES would let anyone holding the "public key"
#: (here: the secret's text) forge tokens.
ALGORITHMS = ("HS256", "HS384", "HS512")


def _seconds(value: float | datetime.timedelta) -> float:
    return value.total_seconds() if isinstance(value, datetime.timedelta) else float(value)


def mintToken(
    keyId: str,
    secret: str,
    channel: str,
    pub: bool | None = False,
    sub: bool | None = False,
    presence: Mapping[str, Any] | None = None,
    expiresIn: float | datetime.timedelta | None = None,
    *,
    expiresAt: datetime.datetime | None = None,
    algorithm: str = "HS256",
    now: float | None = None,
    user: str | None = None,
) -> str:
    """
    A token for ``channel`` (which may end in ``/*`` or ``/**``) with claims ``keyId``,
    ``channel``, ``pub``, ``sub`` (None leaves the claim out, which grants as little as
    false: the admin API mints what it was asked for), ``presence`` (when given; it must have an ``id``, or
    presence subscriptions are refused) and ``exp`` (``expiresIn`` seconds or a
    timedelta from ``now``, or the instant ``expiresAt``; none means it never expires).
    ``user`` names the user the subscriber is (the ``user`` claim): the server API's
    ``terminate_connections`` ends its connections, presence or not.
    """
    if not keyId or not secret:
        raise ValueError("a token needs a key id and its secret")
    if not channel.startswith("/"):
        raise ValueError(f"a channel starts with '/': {channel!r}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, not {algorithm!r}")
    claims: dict[str, Any] = {"keyId": keyId, "channel": channel}
    for name, granted in (("pub", pub), ("sub", sub)):
        if granted is not None:
            claims[name] = bool(granted)
    if presence is not None:
        if not isinstance(presence, Mapping) or presence.get("id") in (None, ""):
            raise ValueError("presence must be an object with at least an 'id'")
        claims["presence"] = dict(presence)
    if user is not None:
        if not isinstance(user, str) or not user:
            raise ValueError("user must be a non-empty string")
        claims["user"] = user
    if expiresIn is not None and expiresAt is not None:
        raise ValueError("give expiresIn or expiresAt, not both")
    if expiresIn is not None:
        seconds = _seconds(expiresIn)
        if seconds <= 0:
            raise ValueError(f"expiresIn must be positive, not {seconds}")
        claims["exp"] = int((time.time() if now is None else now) + seconds)
    elif expiresAt is not None:
        if expiresAt.tzinfo is None:
            raise ValueError("expiresAt must be timezone-aware")
        claims["exp"] = int(expiresAt.timestamp())
    return jwt.encode(claims, secret, algorithm=algorithm)
