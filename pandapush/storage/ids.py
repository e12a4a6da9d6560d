"""Identifiers and secrets, from :mod:`secrets` (never :mod:`random`).

Shapes follow upstream so existing ids keep validating: an application id is 20
characters of ``[A-Za-z0-9]``, a key id is ``PSID`` and 16 more, and a secret is 40
(about 238 bits: far beyond guessing, short enough to paste into a config file).
"""

from __future__ import annotations

import re
import secrets
import string

__all__ = [
    "APPLICATION_ID_PATTERN",
    "KEY_ID_PATTERN",
    "isApplicationId",
    "isKeyId",
    "newApplicationId",
    "newKeyId",
    "newSecret",
]

_ALPHABET = string.ascii_letters + string.digits

APPLICATION_ID_LENGTH = 20
KEY_ID_PREFIX = "PSID"
KEY_ID_RANDOM_LENGTH = 16
SECRET_LENGTH = 40

APPLICATION_ID_PATTERN = re.compile(r"[A-Za-z0-9]{20}")
KEY_ID_PATTERN = re.compile(r"PSID[A-Za-z0-9]{16}")


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def newApplicationId() -> str:
    """A fresh application id: 20 characters of ``[A-Za-z0-9]``."""
    return _random(APPLICATION_ID_LENGTH)


def newKeyId() -> str:
    """A fresh key id: ``PSID`` and 16 characters of ``[A-Za-z0-9]``."""
    return KEY_ID_PREFIX + _random(KEY_ID_RANDOM_LENGTH)


def newSecret() -> str:
    """A fresh key secret (40 characters of ``[A-Za-z0-9]``)."""
    return _random(SECRET_LENGTH)


def isApplicationId(value: str) -> bool:
    """Whether ``value`` has the shape of an application id."""
    return APPLICATION_ID_PATTERN.fullmatch(value) is not None


def isKeyId(value: str) -> bool:
    """Whether ``value`` has the shape of a key id."""
    return KEY_ID_PATTERN.fullmatch(value) is not None
