"""Decoding and verifying pandapush JWTs (pyjwt), refusing everything but HMAC-SHA2.

Two steps, as the contract orders its errors: :func:`readToken` looks inside a token
without trusting it, only to learn which key signed it (``Invalid token`` if it cannot
even be read); :func:`verifyToken` checks the signature with that key's secret and the
time claims (``Invalid token provided`` if anything is wrong).

Time claims are checked here rather than by pyjwt, against the caller's clock, so
tests run on a fake clock and every node applies the same leeway. pyjwt's other
claim checks are off on purpose: pandapush tokens carry ``sub: true`` (a boolean),
which pyjwt would refuse as a malformed RFC 7519 subject.
"""

from __future__ import annotations

import warnings
from typing import Any

import jwt

from pandapush.auth.rules import MAX_TOKEN_LENGTH
from pandapush.tokens import ALGORITHMS

__all__ = ["DEFAULT_LEEWAY", "readToken", "timesValid", "verifySignature", "verifyToken"]

DEFAULT_LEEWAY = 30.0

_NO_CLAIM_CHECKS: Any = {
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
}
# pyjwt warns below the digest size of the algorithm; HS512's is the largest.
_LONG_ENOUGH = 64
_UNVERIFIED: Any = {"verify_signature": False, **_NO_CLAIM_CHECKS}


def readToken(token: str) -> dict[str, Any] | None:
    """The claims of ``token`` read without verification, if it has a string ``keyId``."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        claims = jwt.decode(token, options=_UNVERIFIED)
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
        return None
    keyId = claims.get("keyId")
    if not isinstance(keyId, str) or not keyId:
        return None
    return claims


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def verifySignature(token: str, secret: str) -> dict[str, Any] | None:
    """The claims of ``token`` if it is HS256/384/512-signed with ``secret``, else None."""
    key = secret.encode("utf-8")
    try:
        if len(key) >= _LONG_ENOUGH:
            return jwt.decode(token, key, algorithms=list(ALGORITHMS), options=_NO_CLAIM_CHECKS)
        # Short secrets (a hand-picked DEV_KEY_SECRET) are the operator's choice;
        # pyjwt would warn about them on every message.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
            return jwt.decode(token, key, algorithms=list(ALGORITHMS), options=_NO_CLAIM_CHECKS)
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
        return None


def timesValid(claims: dict[str, Any], now: float, leeway: float = DEFAULT_LEEWAY) -> bool:
    """``exp`` not past and ``nbf`` not ahead (with ``leeway``); both numbers if present."""
    if "exp" in claims:
        exp = _number(claims["exp"])
        if exp is None or now > exp + leeway:
            return False
    if "nbf" in claims:
        nbf = _number(claims["nbf"])
        if nbf is None or now < nbf - leeway:
            return False
    return True


def verifyToken(token: str, secret: str, now: float, leeway: float = DEFAULT_LEEWAY) -> dict[str, Any] | None:
    """
    The verified claims of ``token`` signed with ``secret``, or None.

    None if the algorithm is not HS256/384/512, the signature does not match, ``exp``
    is past or ``nbf`` still ahead (each with ``leeway`` seconds of clock skew), or a
    time claim is not a number.
    """
    claims = verifySignature(token, secret)
    if claims is None or not timesValid(claims, now, leeway):
        return None
    return claims
