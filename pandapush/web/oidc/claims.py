"""Which admin an identity provider's claims name, and whether they may sign in at all."""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Mapping
from typing import Any

__all__ = ["MAX_NAME", "LoginRefusedError", "adminName"]

#: An e-mail address is at most 320 characters; no admin name needs more.
MAX_NAME = 320


class LoginRefusedError(Exception):
    """The provider signed someone in whom the console does not accept; the message says why."""


def _false(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def adminName(claims: Mapping[str, Any], claim: str, allowedDomains: Collection[str] = ()) -> str:
    """
    The admin name in ``claims[claim]``, as ``ROOT_ADMINS`` and the applications' admin
    lists hold names.

    - The claim must be a non-empty string without control characters, at most
      :data:`MAX_NAME` long.
    - ``email``: compared in lower case (addresses are, in practice, case-insensitive, and
      providers differ in how they spell them), and refused when the provider says it is
      not verified (``email_verified: false``): a provider that lets people register any
      address would otherwise let anyone claim an admin's.
    - With ``allowedDomains``, the name must be an address in one of them (``hd``, Google's
      hosted domain, must agree when present).
    """
    value = claims.get(claim)
    if not isinstance(value, str) or not value.strip():
        raise LoginRefusedError(f"The identity provider did not say who you are (no {claim!r} claim).")
    name = value.strip()
    if len(name) > MAX_NAME or any(unicodedata.category(c).startswith("C") for c in name):
        raise LoginRefusedError(f"The {claim!r} claim is not a usable admin name.")
    if claim == "email":
        name = name.lower()
        if _false(claims.get("email_verified")):
            raise LoginRefusedError(f"The identity provider has not verified the address {name}.")
    if allowedDomains:
        local, at, domain = name.rpartition("@")
        domain = domain.lower()
        hostedDomain = claims.get("hd")
        if not at or not local or domain not in allowedDomains:
            raise LoginRefusedError(f"{name} is not in a domain allowed to sign in here.")
        if isinstance(hostedDomain, str) and hostedDomain.lower() != domain:
            raise LoginRefusedError(f"{name} is not in a domain allowed to sign in here.")
    return name
