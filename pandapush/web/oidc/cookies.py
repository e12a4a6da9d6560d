"""
Signed cookies: the admin's session, and the half-done sign-in waiting for the provider.

A value is ``v1.<payload>.<mac>``: the payload is base64url JSON ``{"p": purpose, "iat",
"exp", "v": value}``, the MAC an HMAC-SHA256 of ``v1.<payload>`` under a key derived
(HKDF-SHA256) from the configured secret for that one purpose, so a sign-in cookie can
never pass for a session and a key leaked from one use tells nothing of the other. The
server keeps nothing: any node with the same secret accepts the cookie, and a cookie ends
with its ``exp`` (it cannot be renewed without signing in again).

What a cookie holds is readable by whoever holds the cookie (signed, not encrypted): the
admin's name, and during a sign-in its state, nonce and PKCE verifier, all of which are
only of use to that same browser.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pandapush.bayeux import json

__all__ = ["MAX_COOKIE", "CookieError", "SignedCookie", "cookieHeader"]

VERSION = "v1"
#: Longer than any cookie we write (browsers keep 4096 bytes per cookie): refused unread.
MAX_COOKIE = 4096
#: Clock skew tolerated between nodes for ``iat``.
SKEW = 60.0


class CookieError(Exception):
    """Not a cookie of ours: malformed, signed with another key, for another purpose, or expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SignedCookie:
    """Signs and checks values for one ``purpose`` (``"session"``, ``"login"``)."""

    def __init__(self, secret: bytes, purpose: str) -> None:
        if not secret:
            raise ValueError("a signed cookie needs a secret")
        self.purpose = purpose
        self._key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=b"pandapush admin cookie: " + purpose.encode("ascii"),
        ).derive(secret)

    def _mac(self, signed: bytes) -> str:
        return _b64(hmac.new(self._key, signed, hashlib.sha256).digest())

    def sign(self, value: Mapping[str, Any], now: float, lifetime: float) -> str:
        """``value`` (JSON-able) signed, valid from ``now`` for ``lifetime`` seconds."""
        payload = {"p": self.purpose, "iat": int(now), "exp": int(now + lifetime), "v": dict(value)}
        signed = f"{VERSION}.{_b64(json.dumps(payload))}"
        return f"{signed}.{self._mac(signed.encode('ascii'))}"

    def verify(self, cookie: str | bytes | None, now: float) -> dict[str, Any]:
        """The value signed into ``cookie``, or :class:`CookieError` saying why not."""
        if cookie is None:
            raise CookieError("no cookie")
        if isinstance(cookie, bytes):
            try:
                cookie = cookie.decode("ascii")
            except UnicodeDecodeError:
                raise CookieError("not ASCII") from None
        if len(cookie) > MAX_COOKIE:
            raise CookieError("too long")
        version, _, rest = cookie.partition(".")
        payloadText, _, mac = rest.rpartition(".")
        if version != VERSION or not payloadText or not mac:
            raise CookieError("malformed")
        expected = self._mac(f"{version}.{payloadText}".encode("ascii"))
        # Compared before anything in the payload is read: unsigned input is never parsed.
        if not hmac.compare_digest(expected, mac):
            raise CookieError("bad signature")
        try:
            payload = json.loads(_unb64(payloadText))
        except (ValueError, binascii.Error):
            raise CookieError("malformed payload") from None
        if not isinstance(payload, dict) or payload.get("p") != self.purpose:
            raise CookieError("another purpose")
        issued, expires, value = payload.get("iat"), payload.get("exp"), payload.get("v")
        if not isinstance(issued, int) or not isinstance(expires, int) or not isinstance(value, dict):
            raise CookieError("malformed payload")
        if now >= expires:
            raise CookieError("expired")
        if issued > now + SKEW:
            raise CookieError("issued in the future")
        return value


def cookieHeader(
    name: str,
    value: str,
    path: str,
    maxAge: int,
    secure: bool,
) -> bytes:
    """
    A ``Set-Cookie`` value: ``HttpOnly`` (no script reads it), ``SameSite=Lax`` (sent on
    the provider's redirect back, a top-level GET, but not on a cross-site POST),
    ``Secure`` when the console is served over https, scoped to ``path``. ``maxAge`` 0
    deletes it.
    """
    parts = [f"{name}={value}", f"Path={path}", f"Max-Age={max(0, int(maxAge))}", "HttpOnly", "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts).encode("ascii")
