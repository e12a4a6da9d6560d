"""Pandapush tokens: HS256 JWTs signed with a key's secret, scoped to one channel.

A JWT is three base64url parts and one HMAC-SHA256; the standard library does it in a few
lines, so the package needs no JWT library.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["mint_token", "sign_hs256"]

_HEADER = {"alg": "HS256", "typ": "JWT"}


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _compactJSON(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_hs256(claims: Mapping[str, Any], secret: str | bytes) -> str:
    """``claims`` as a JWT signed with HMAC-SHA256 under ``secret``."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    signing = _b64url(_compactJSON(_HEADER)) + "." + _b64url(_compactJSON(dict(claims)))
    signature = hmac.new(key, signing.encode("ascii"), hashlib.sha256).digest()
    return signing + "." + _b64url(signature)


def _seconds(value: float | datetime.timedelta) -> float:
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expires_in must be a number of seconds or a timedelta, not {type(value).__name__}")
    return float(value)


def mint_token(
    key_id: str,
    secret: str,
    channel: str,
    *,
    pub: bool = False,
    sub: bool = False,
    presence: Mapping[str, Any] | None = None,
    expires_in: float | datetime.timedelta | None = None,
    user: str | int | None = None,
    now: float | None = None,
) -> str:
    """
    A token for ``channel`` (it may end in ``/*`` or ``/**``) with the claims pandapush reads:
    ``keyId``, ``channel``, ``pub``, ``sub``, ``presence`` (an object with at least an ``id``,
    needed on presence channels), ``exp`` (``expires_in`` seconds from ``now``; without it
    the token never expires) and ``user`` (the user the subscriber is: the server's
    ``terminate_connections`` for that user ends it).
    """
    if not key_id or not secret:
        raise ValueError("a token needs a key id and its secret")
    if not isinstance(channel, str) or not channel.startswith("/"):
        raise ValueError(f"a channel starts with '/': {channel!r}")
    claims: dict[str, Any] = {"keyId": key_id, "channel": channel, "pub": bool(pub), "sub": bool(sub)}
    if presence is not None:
        if not isinstance(presence, Mapping) or presence.get("id") in (None, ""):
            raise ValueError("presence must be a mapping with at least an 'id'")
        claims["presence"] = dict(presence)
    if user is not None:
        if isinstance(user, bool) or not isinstance(user, (str, int)) or user == "":
            raise ValueError("user must be a non-empty string or an integer")
        claims["user"] = str(user)
    if expires_in is not None:
        seconds = _seconds(expires_in)
        if seconds <= 0:
            raise ValueError(f"expires_in must be positive, not {seconds}")
        claims["exp"] = int((time.time() if now is None else now) + seconds)
    return sign_hs256(claims, secret)
