"""Settings of the tenancy layer, read from upstream's environment variable names.

``AUTH_METHOD`` (``basic`` | ``none`` | a plugin's name | ``plugins``),
``ADMIN_USERNAME``, ``ADMIN_PASSWORD``, ``ROOT_ADMINS`` (comma-separated),
``ENVIRONMENTS`` (``name,url;name2,url2``) and ``ENVIRONMENT`` (this one's name) as
upstream; ``PANDAPUSH_DATA_DIR`` (where a generated admin password is kept; default
the directory of ``DATABASE_PATH``, else ``localdata``) and the ``PANDAPUSH_KEY_CACHE_TTL`` /
``PANDAPUSH_USAGE_FLUSH_INTERVAL`` / ``PANDAPUSH_TOKEN_LEEWAY`` tuning knobs are ours, as is
``PANDAPUSH_TRUSTED_PROXIES`` (whose ``X-Forwarded-For`` the admin login throttle believes).

An admin auth plugin reads settings of its own (``OIDC_*`` for the built-in ``oidc``) from
:attr:`TenancyConfig.environ`, the environment the configuration was read from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pandapush.auth.bearer import DEFAULT_LEEWAY
from pandapush.auth.keycache import DEFAULT_FLUSH_INTERVAL, DEFAULT_NEGATIVE_TTL, DEFAULT_TTL

__all__ = ["Environment", "TenancyConfig", "parseEnvironments"]


@dataclass(frozen=True)
class Environment:
    """Another deployment the admin UI can link to."""

    name: str
    url: str


def parseEnvironments(value: str | None) -> tuple[Environment, ...]:
    """``name,url;name2,url2`` -> environments; malformed entries are skipped."""
    out: list[Environment] = []
    for entry in (value or "").split(";"):
        name, comma, url = entry.partition(",")
        if comma and name.strip() and url.strip():
            out.append(Environment(name.strip(), url.strip()))
    return tuple(out)


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    value = environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {value!r}") from None


def _dataDir(environ: Mapping[str, str]) -> str:
    """``PANDAPUSH_DATA_DIR``, else the SQLite file's directory, else ``localdata``."""
    explicit = environ.get("PANDAPUSH_DATA_DIR")
    if explicit:
        return explicit
    databasePath = environ.get("DATABASE_PATH")
    if databasePath and os.path.dirname(databasePath):
        return os.path.dirname(databasePath)
    return "localdata"


@dataclass(frozen=True)
class TenancyConfig:
    """The tenancy layer's settings: admin auth, key cache and token tuning, the REST body cap."""

    authMethod: str | None = None
    adminUsername: str | None = None
    adminPassword: str | None = field(default=None, repr=False)
    rootAdmins: frozenset[str] = frozenset()
    environments: tuple[Environment, ...] = ()
    environment: str | None = None
    dataDir: str = "localdata"
    keyCacheTTL: float = DEFAULT_TTL
    negativeKeyCacheTTL: float = DEFAULT_NEGATIVE_TTL
    usageFlushInterval: float = DEFAULT_FLUSH_INTERVAL
    tokenLeeway: float = DEFAULT_LEEWAY
    maxBodySize: int = 1024 * 1024
    publishTimeout: float = 10.0
    #: Proxies whose ``X-Forwarded-For`` names the client (addresses or CIDR networks).
    trustedProxies: tuple[str, ...] = ()
    #: The environment this was read from (read-only), where an admin auth plugin finds
    #: settings of its own. Never shown (it holds secrets) nor compared.
    environ: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False, hash=False
    )

    @classmethod
    def fromEnvironment(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> TenancyConfig:
        env = os.environ if environ is None else environ
        roots = frozenset(name.strip() for name in env.get("ROOT_ADMINS", "").split(",") if name.strip())
        values: dict[str, object] = {
            "authMethod": (env.get("AUTH_METHOD") or "").strip().lower() or None,
            "adminUsername": env.get("ADMIN_USERNAME") or None,
            "adminPassword": env.get("ADMIN_PASSWORD") or None,
            "rootAdmins": roots,
            "environments": parseEnvironments(env.get("ENVIRONMENTS")),
            "environment": env.get("ENVIRONMENT") or None,
            "dataDir": _dataDir(env),
            "keyCacheTTL": _float(env, "PANDAPUSH_KEY_CACHE_TTL", DEFAULT_TTL),
            "usageFlushInterval": _float(env, "PANDAPUSH_USAGE_FLUSH_INTERVAL", DEFAULT_FLUSH_INTERVAL),
            "tokenLeeway": _float(env, "PANDAPUSH_TOKEN_LEEWAY", DEFAULT_LEEWAY),
            "trustedProxies": tuple(
                p.strip() for p in env.get("PANDAPUSH_TRUSTED_PROXIES", "").split(",") if p.strip()
            ),
            "environ": MappingProxyType(dict(env)),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
