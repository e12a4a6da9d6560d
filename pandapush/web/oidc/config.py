"""The ``OIDC_*`` settings, read from the environment and checked before the server starts."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pandapush.auth.admin import AdminAuthError

__all__ = [
    "DEFAULT_CLAIM",
    "DEFAULT_SCOPES",
    "DEFAULT_SESSION_LIFETIME",
    "MIN_SESSION_SECRET",
    "OIDCConfig",
    "OIDCConfigError",
    "checkURL",
]

DEFAULT_CLAIM = "email"
DEFAULT_SCOPES = ("openid", "email", "profile")
#: A working day: long enough not to interrupt, short enough that a stolen cookie (or an
#: admin removed at the provider) does not last.
DEFAULT_SESSION_LIFETIME = 8 * 3600.0
MAX_SESSION_LIFETIME = 7 * 24 * 3600.0
MIN_SESSION_SECRET = 32


class OIDCConfigError(AdminAuthError):
    """An ``OIDC_*`` setting is missing or unusable; the message names it."""


def _isLoopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def checkURL(url: str, what: str, allowLoopbackHTTP: bool = True) -> str:
    """
    ``url`` if it is an absolute ``https`` URL (``http`` only to this machine's loopback,
    for a provider run locally), else :class:`OIDCConfigError` naming ``what``.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host or parts.scheme not in ("https", "http"):
        raise OIDCConfigError(f"{what} must be an absolute https URL, not {url!r}")
    if parts.scheme == "http" and not (allowLoopbackHTTP and _isLoopback(host)):
        raise OIDCConfigError(f"{what} must use https (http only for a provider on this machine): {url!r}")
    if parts.username or parts.password:
        raise OIDCConfigError(f"{what} must not carry credentials: {url!r}")
    return url


@dataclass(frozen=True)
class OIDCConfig:
    """
    ``OIDC_ISSUER`` and ``OIDC_CLIENT_ID`` are required; the rest have defaults:

    - ``OIDC_CLIENT_SECRET``: the client's secret (none: a public client, PKCE alone);
    - ``OIDC_CLAIM``: the ID token claim that names an admin, as ``ROOT_ADMINS`` and the
      applications' admins list them (default ``email``, compared in lower case);
    - ``OIDC_SCOPES``: requested scopes, space- or comma-separated (``openid`` is added);
    - ``OIDC_REDIRECT_URI``: ``https://<host>/admin/auth/callback`` as registered at the
      provider (default: built from each request's host, fine without a proxy in front);
    - ``OIDC_SESSION_SECRET``: key of the signed session cookie, at least 32 characters,
      the same on every node (default: derived from the client secret);
    - ``OIDC_SESSION_LIFETIME``: seconds a sign-in lasts (default 8 hours, at most 7 days);
    - ``OIDC_ALLOWED_DOMAINS``: comma-separated domains whose addresses may sign in at all
      (empty: anyone the provider signs in; set it for Google).
    """

    issuer: str
    clientId: str
    clientSecret: str | None = field(default=None, repr=False)
    claim: str = DEFAULT_CLAIM
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    redirectURI: str | None = None
    sessionSecret: bytes = field(default=b"", repr=False)
    sessionLifetime: float = DEFAULT_SESSION_LIFETIME
    allowedDomains: frozenset[str] = frozenset()

    @classmethod
    def fromEnvironment(cls, environ: Mapping[str, str]) -> OIDCConfig:
        def get(name: str) -> str | None:
            value = environ.get(name)
            return value.strip() if value and value.strip() else None

        issuer = get("OIDC_ISSUER")
        clientId = get("OIDC_CLIENT_ID")
        if issuer is None or clientId is None:
            missing = " and ".join(
                n for n, v in (("OIDC_ISSUER", issuer), ("OIDC_CLIENT_ID", clientId)) if not v
            )
            raise OIDCConfigError(f"AUTH_METHOD=oidc needs {missing} (docs/sso.md)")
        checkURL(issuer, "OIDC_ISSUER")
        clientSecret = get("OIDC_CLIENT_SECRET")
        redirectURI = get("OIDC_REDIRECT_URI")
        if redirectURI is not None:
            checkURL(redirectURI, "OIDC_REDIRECT_URI")
            if not urlsplit(redirectURI).path.endswith("/admin/auth/callback"):
                raise OIDCConfigError(
                    f"OIDC_REDIRECT_URI must end with /admin/auth/callback: {redirectURI!r}"
                )
        sessionSecret = get("OIDC_SESSION_SECRET")
        if sessionSecret is not None:
            if len(sessionSecret) < MIN_SESSION_SECRET:
                raise OIDCConfigError(f"OIDC_SESSION_SECRET must be at least {MIN_SESSION_SECRET} characters")
            secret = b"session-secret:" + sessionSecret.encode("utf-8")
        elif clientSecret is not None:
            # Every node configured alike derives the same key, and nothing else to set.
            secret = b"client-secret:" + clientSecret.encode("utf-8")
        else:
            raise OIDCConfigError(
                "AUTH_METHOD=oidc without OIDC_CLIENT_SECRET needs OIDC_SESSION_SECRET (at least"
                f" {MIN_SESSION_SECRET} characters, the same on every node) to sign its session cookie"
            )
        lifetimeText = get("OIDC_SESSION_LIFETIME")
        lifetime = DEFAULT_SESSION_LIFETIME
        if lifetimeText is not None:
            try:
                lifetime = float(lifetimeText)
            except ValueError:
                raise OIDCConfigError(
                    f"OIDC_SESSION_LIFETIME must be seconds, not {lifetimeText!r}"
                ) from None
            if not 1 <= lifetime <= MAX_SESSION_LIFETIME:
                raise OIDCConfigError(
                    f"OIDC_SESSION_LIFETIME must be between 1 and {int(MAX_SESSION_LIFETIME)} seconds"
                )
        scopes = [s for s in (get("OIDC_SCOPES") or " ".join(DEFAULT_SCOPES)).replace(",", " ").split() if s]
        if "openid" not in scopes:
            scopes.insert(0, "openid")
        claim = get("OIDC_CLAIM") or DEFAULT_CLAIM
        domains = frozenset(
            d.strip().lower().lstrip("@") for d in (get("OIDC_ALLOWED_DOMAINS") or "").split(",") if d.strip()
        )
        return cls(
            issuer=issuer,
            clientId=clientId,
            clientSecret=clientSecret,
            claim=claim,
            scopes=tuple(scopes),
            redirectURI=redirectURI,
            sessionSecret=secret,
            sessionLifetime=lifetime,
            allowedDomains=domains,
        )
