"""Versioned schema migrations: numbered SQL files per dialect, and the code applying them.

``<dialect>/NNNN_what.sql`` moves the schema from version ``NNNN - 1`` to ``NNNN``.
Statements are separated by a ``;`` at the end of a line. The ``schema_version``
table holds one row per applied version; the schema's version is the highest.
Add a version by adding a file for every dialect (the tests check they agree);
never edit a released one.

The ``*_txn`` functions run in a database thread (``ConnectionPool.runInteraction``),
inside one transaction: a migration applies completely or not at all.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Protocol

__all__ = ["Migration", "currentVersion_txn", "latestVersion", "loadMigrations", "migrate_txn"]

_FILENAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


class _Dialect(Protocol):
    name: str

    def sql(self, query: str) -> str: ...

    def toDb(self, value: datetime.datetime | None) -> Any: ...

    def tableExists_txn(self, txn: Any, table: str) -> bool: ...

    def lockForMigration_txn(self, txn: Any) -> None: ...

    def prepareSchema_txn(self, txn: Any) -> None: ...

    schemaVersionDDL: str


@dataclass(frozen=True)
class Migration:
    """One step: the version it leads to, a name for humans, its statements."""

    version: int
    name: str
    statements: tuple[str, ...]


def _split(script: str) -> tuple[str, ...]:
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return tuple(s.strip() for s in re.split(r";\s*$", "\n".join(lines), flags=re.M) if s.strip())


@cache
def loadMigrations(dialect: str) -> tuple[Migration, ...]:
    """The dialect's migrations, in version order; versions must run 1, 2, 3... without gaps."""
    folder = resources.files(__name__) / dialect
    found = []
    for entry in folder.iterdir():
        match = _FILENAME.fullmatch(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match.group(1)), match.group(2), _split(entry.read_text("utf-8"))))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..n: {[m.version for m in found]}")
    return tuple(found)


def latestVersion(dialect: str) -> int:
    """The version the code expects the schema to be at."""
    return len(loadMigrations(dialect))


def currentVersion_txn(txn: Any, dialect: _Dialect) -> int:
    """The version the database is at; 0 when it has no ``schema_version`` table (empty)."""
    if not dialect.tableExists_txn(txn, "schema_version"):
        return 0
    txn.execute("SELECT MAX(version) FROM schema_version")
    row = txn.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate_txn(txn: Any, dialect: _Dialect, now: datetime.datetime, target: int | None = None) -> list[int]:
    """
    Apply every migration after the current version up to ``target`` (default: the
    latest); the versions applied. A database already there is left alone, so this
    is safe to run at every start and from several nodes at once (the dialect takes
    a lock first, so two runs do not interleave).
    """
    dialect.lockForMigration_txn(txn)
    dialect.prepareSchema_txn(txn)
    txn.execute(dialect.schemaVersionDDL)
    current = currentVersion_txn(txn, dialect)
    applied = []
    for migration in loadMigrations(dialect.name):
        if migration.version <= current or (target is not None and migration.version > target):
            continue
        for statement in migration.statements:
            txn.execute(statement)
        txn.execute(
            dialect.sql("INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)"),
            (migration.version, migration.name, dialect.toDb(now)),
        )
        applied.append(migration.version)
    return applied
