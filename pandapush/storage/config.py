"""Storage configuration, read from upstream's environment names or given directly."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_DATABASE", "DEFAULT_SQLITE_PATH", "StorageConfig"]

DEFAULT_DATABASE = "sqlite"
DEFAULT_SQLITE_PATH = os.path.join("localdata", "db.sqlite")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _flag(value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"not a yes/no value: {value!r}")


@dataclass(frozen=True)
class StorageConfig:
    """
    Which backend, and how to reach it. ``environ`` keeps every variable it was read
    from, so a third-party backend can read its own settings without a field here.
    """

    database: str = DEFAULT_DATABASE
    path: str = DEFAULT_SQLITE_PATH
    address: str = "127.0.0.1"
    port: int = 5432
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    name: str = "pandapush"
    #: PostgreSQL schema (``search_path``) to use instead of ``public``.
    schema: str | None = None
    #: None: the backend's default (SQLite migrates at start, PostgreSQL does not).
    migrateAtStart: bool | None = None
    poolSize: int = 5
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def fromEnvironment(cls, environ: Mapping[str, str] | None = None) -> StorageConfig:
        """
        From ``DATABASE`` (sqlite|postgres|memory|a plugin's name), ``DATABASE_PATH``,
        ``DATABASE_ADDRESS``, ``DATABASE_PORT``, ``DATABASE_USERNAME``, ``DATABASE_PASSWORD``,
        ``DATABASE_NAME`` (upstream's names) and ``DATABASE_SCHEMA``, ``DATABASE_MIGRATE``
        (yes/no: migrate at start), ``DATABASE_POOL_SIZE``.
        """
        env = dict(os.environ if environ is None else environ)

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value else None

        port = get("DATABASE_PORT")
        poolSize = get("DATABASE_POOL_SIZE")
        return cls(
            database=(get("DATABASE") or DEFAULT_DATABASE).lower(),
            path=get("DATABASE_PATH") or DEFAULT_SQLITE_PATH,
            address=get("DATABASE_ADDRESS") or "127.0.0.1",
            port=int(port) if port else 5432,
            username=get("DATABASE_USERNAME"),
            password=get("DATABASE_PASSWORD"),
            name=get("DATABASE_NAME") or "pandapush",
            schema=get("DATABASE_SCHEMA"),
            migrateAtStart=_flag(get("DATABASE_MIGRATE")),
            poolSize=int(poolSize) if poolSize else 5,
            environ=env,
        )

    @classmethod
    def coerce(cls, config: StorageConfig | Mapping[str, Any] | None) -> StorageConfig:
        """A config from a config, an environment-style mapping, or None (the process environment)."""
        if isinstance(config, StorageConfig):
            return config
        return cls.fromEnvironment(None if config is None else {k: str(v) for k, v in config.items()})

    def replace(self, **changes: Any) -> StorageConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)
