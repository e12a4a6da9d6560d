"""PostgreSQL storage (psycopg2 in a thread pool), for several nodes sharing one database.

It migrates only when told (``pandapush migrate``, or ``DATABASE_MIGRATE=yes``) and
otherwise refuses to start on a schema of another version, as upstream did with knex:
schema changes on a shared database are an operator's decision.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

from twisted.enterprise import adbapi

from pandapush.storage._common import utcnow
from pandapush.storage._sql import Dialect, SQLStorage
from pandapush.storage.config import StorageConfig
from pandapush.storage.errors import StorageConfigError

__all__ = ["PostgresDialect", "PostgresStorage", "connectionArguments", "makeStorage"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

#: pg_advisory_xact_lock key serialising migrations ("pandapush" in ASCII, truncated).
_MIGRATION_LOCK = 0x70616E6461707573
#: The same, serialising webhook outbox claims between nodes.
_OUTBOX_LOCK = 0x77656268


class PostgresDialect(Dialect):
    """Native ``timestamptz`` values; ``%s`` placeholders."""

    name = "postgres"
    placeholder = "%s"
    schemaVersionDDL = (
        "CREATE TABLE IF NOT EXISTS schema_version"
        " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    )
    lockRowSuffix = " FOR UPDATE"

    def __init__(self, schema: str | None = None) -> None:
        #: ``DATABASE_SCHEMA``: created by the first migration if it does not exist.
        self.schema = schema

    def toDb(self, value: datetime.datetime | None) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass timezone-aware times")
        return value.astimezone(datetime.UTC)

    def fromDb(self, value: Any) -> datetime.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return value.astimezone(datetime.UTC)  # type: ignore[no-any-return]

    def tableExists_txn(self, txn: Any, table: str) -> bool:
        # to_regclass follows search_path, so a per-schema database sees only its own table.
        txn.execute("SELECT to_regclass(%s)", (table,))
        row = txn.fetchone()
        return row is not None and row[0] is not None

    def lockForMigration_txn(self, txn: Any) -> None:
        txn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))

    def lockOutbox_txn(self, txn: Any) -> None:
        txn.execute("SELECT pg_advisory_xact_lock(%s)", (_OUTBOX_LOCK,))

    def prepareSchema_txn(self, txn: Any) -> None:
        # A DATABASE_SCHEMA that does not exist yet: search_path names it, but nothing
        # can be created in it until it exists (PostgreSQL: "no schema has been selected
        # to create in"). Under the migration lock, so two nodes do not race to create it.
        if not self.schema:
            return
        from psycopg2 import errors, sql

        txn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,))
        if txn.fetchone() is not None:
            return
        try:
            txn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
        except errors.InsufficientPrivilege:
            raise StorageConfigError(
                f"schema {self.schema!r} does not exist and this database user may not create it:"
                f" have a superuser run CREATE SCHEMA {self.schema} AUTHORIZATION <this user>,"
                " then `pandapush migrate` again"
            ) from None

    def unavailable(self, error: BaseException) -> bool:
        import psycopg2

        # OperationalError: refused, reset, server shutting down, timed out;
        # InterfaceError: a connection psycopg2 already knows to be closed.
        return isinstance(error, psycopg2.OperationalError | psycopg2.InterfaceError) or super().unavailable(
            error
        )

    def connectionBroken_txn(self, txn: Any) -> bool:
        # A psycopg2 cursor knows its connection, and ``closed`` turns non-zero once
        # the connection is found dead.
        return bool(txn.connection.closed)


class _Connection(adbapi.Connection):
    """
    adbapi's connection wrapper, minus a traceback per query while PostgreSQL is down.

    adbapi's ``rollback`` after a failed interaction tries the dead connection, logs
    "Rollback failed" with a traceback (twice), then drops it. A psycopg2 connection
    that is already known dead has nothing to roll back: drop it quietly, so the next
    interaction of this thread connects afresh. The storage logs the outage once.
    """

    def rollback(self) -> None:
        raw = self._connection
        if raw is not None and getattr(raw, "closed", False):
            pool = self._pool
            # Gone already if a reconnect of this interaction failed.
            if pool.connections.get(pool.threadID()) is raw:
                pool.disconnect(raw)
            return
        super().rollback()


class _ConnectionPool(adbapi.ConnectionPool):
    connectionFactory = _Connection


def connectionArguments(config: StorageConfig) -> dict[str, Any]:
    """psycopg2 ``connect`` arguments from the config (times in UTC, optional schema)."""
    options = "-c timezone=UTC"
    if config.schema:
        if not _IDENTIFIER.fullmatch(config.schema):
            raise ValueError(f"not a plain schema name: {config.schema!r}")
        options += f" -c search_path={config.schema}"
    arguments: dict[str, Any] = {
        "host": config.address,
        "port": config.port,
        "dbname": config.name,
        "options": options,
        "connect_timeout": 10,
        "application_name": "pandapush",
        # A database host that vanished (no RST) is noticed in about a minute rather
        # than after the kernel's two hours; each call also has its own deadline.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    if config.username:
        arguments["user"] = config.username
    if config.password:
        arguments["password"] = config.password
    return arguments


class PostgresStorage(SQLStorage):
    """:class:`SQLStorage` over a psycopg2 pool that reconnects after the server restarts."""

    name = "postgres"
    migrateAtStart = False

    def __init__(
        self,
        config: StorageConfig,
        now: Callable[[], datetime.datetime] = utcnow,
    ) -> None:
        self.config = config
        pool = _ConnectionPool(
            "psycopg2",
            cp_min=1,
            cp_max=max(1, config.poolSize),
            cp_reconnect=True,
            **connectionArguments(config),
        )
        super().__init__(pool, PostgresDialect(config.schema), now=now, migrateAtStart=config.migrateAtStart)


def makeStorage(config: StorageConfig) -> PostgresStorage:
    """The PostgreSQL backend for ``DATABASE=postgres``."""
    return PostgresStorage(config)
