"""SQLite storage: the embedded default, one file (``localdata/db.sqlite``), migrated at start."""

from __future__ import annotations

import datetime
import os
import sqlite3
from collections.abc import Callable
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred

from pandapush.storage._common import utcnow
from pandapush.storage._sql import Dialect, SQLStorage
from pandapush.storage.config import StorageConfig

__all__ = ["SQLiteDialect", "SQLiteStorage", "makeStorage"]


class SQLiteDialect(Dialect):
    """Times as ISO 8601 UTC text with microseconds: one format, so text order is time order."""

    name = "sqlite"
    placeholder = "?"
    schemaVersionDDL = (
        "CREATE TABLE IF NOT EXISTS schema_version"
        " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )

    def toDb(self, value: datetime.datetime | None) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass timezone-aware times")
        return value.astimezone(datetime.UTC).isoformat(timespec="microseconds")

    def fromDb(self, value: Any) -> datetime.datetime | None:
        if value is None:
            return None
        if isinstance(value, int | float):
            # knex wrote JavaScript times (milliseconds) into SQLite.
            return datetime.datetime.fromtimestamp(value / 1000, datetime.UTC)
        parsed = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.UTC)
        return parsed.astimezone(datetime.UTC)

    def begin_txn(self, txn: Any, write: bool) -> None:
        # The connection is in autocommit mode (isolation_level=None) so that we, not
        # the sqlite3 module, decide where transactions start: IMMEDIATE takes the
        # write lock up front, so another process (the command line) cannot make a
        # read-then-write transaction fail halfway with "database is locked".
        txn.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def tableExists_txn(self, txn: Any, table: str) -> bool:
        txn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        return txn.fetchone() is not None

    def unavailable(self, error: BaseException) -> bool:
        # sqlite3 reports a bad query and a busy or unreadable file alike as
        # OperationalError: only the latter are worth a 503 and trying again.
        if isinstance(error, sqlite3.OperationalError):
            text = str(error).lower()
            return any(reason in text for reason in _UNAVAILABLE)
        return super().unavailable(error)


#: sqlite3 messages that mean "not now" rather than "wrong": another process holding the
#: lock past busy_timeout (the command line), a file that cannot be opened or read.
_UNAVAILABLE = ("database is locked", "database is busy", "unable to open", "disk i/o error")


def _openConnection(connection: sqlite3.Connection) -> None:
    # WAL: readers do not block the writer, and the command line can work on the
    # database while the server runs. busy_timeout: wait for the other's lock.
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA busy_timeout = 5000")


class SQLiteStorage(SQLStorage):
    """
    One connection in one thread (``cp_min = cp_max = 1``): SQLite allows one writer,
    so more connections would only queue on its lock instead of in the pool.
    """

    name = "sqlite"
    migrateAtStart = True

    def __init__(
        self,
        path: str,
        now: Callable[[], datetime.datetime] = utcnow,
        migrateAtStart: bool | None = None,
    ) -> None:
        self.path = path
        pool = adbapi.ConnectionPool(
            "sqlite3",
            path,
            check_same_thread=False,
            isolation_level=None,
            cp_min=1,
            cp_max=1,
            cp_openfun=_openConnection,
        )
        super().__init__(pool, SQLiteDialect(), now=now, migrateAtStart=migrateAtStart)

    def _makeFolder(self) -> None:
        # A fresh install has no localdata/ yet; one mkdir at start is not worth a thread.
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

    def start(self) -> Deferred[None]:
        self._makeFolder()
        return super().start()  # type: ignore[no-any-return]

    def migrate(self, target: int | None = None) -> Deferred[list[int]]:
        self._makeFolder()
        return super().migrate(target)


def makeStorage(config: StorageConfig) -> SQLiteStorage:
    """The SQLite backend for ``DATABASE=sqlite``."""
    return SQLiteStorage(config.path, migrateAtStart=config.migrateAtStart)
