"""Schema migrations on SQLite and PostgreSQL: from empty, again, and from version 1 with rows."""

from __future__ import annotations

import datetime
import os
from collections.abc import Generator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from pandapush.storage import migrations
from pandapush.storage._sql import SQLStorage
from pandapush.storage.errors import SchemaOutOfDateError
from tests.test_storage import T0, FakeTime, postgresConfig, postgresSchema

APP = "fRP0y2aVpYCKiW6PIFOK"
KEY = "PSIDv4ADyV6V9fQ2BgJZ"
SECRET = "aWvMCPXnV599u6hJ71YJqAKSz0t0Lihs09DM92xS"
EXPIRES = datetime.datetime(2031, 1, 1, 7, 0, tzinfo=datetime.UTC)


class MigrationFilesTests(TestCase):
    """The SQL files themselves."""

    def test_dialectsAgree(self) -> None:
        """Every dialect has the same numbered steps, so both databases reach the same schema."""
        sqlite = [(m.version, m.name) for m in migrations.loadMigrations("sqlite")]
        postgres = [(m.version, m.name) for m in migrations.loadMigrations("postgres")]
        self.assertEqual(sqlite, postgres)
        self.assertTrue(len(sqlite) >= 2)
        self.assertEqual(migrations.latestVersion("sqlite"), len(sqlite))

    def test_statementsSplit(self) -> None:
        """Statements split at line-final semicolons, comments dropped."""
        first = migrations.loadMigrations("sqlite")[0]
        self.assertTrue(all(s.split()[0] == "CREATE" for s in first.statements))
        self.assertFalse(any("--" in s for s in first.statements))


class MigrationTestsMixin:
    """Migration behaviour shared by the relational backends. Subclasses make a bare storage."""

    assertEqual: Any
    assertIn: Any
    assertFailure: Any
    addCleanup: Any

    def bareStorage(self) -> SQLStorage:
        """A storage on an empty database, not started."""
        raise NotImplementedError

    def run_txn(self, storage: SQLStorage, query: str, params: tuple[Any, ...] = ()) -> Deferred[Any]:
        def txn(cursor: Any) -> Any:
            storage.dialect.begin_txn(cursor, True)
            cursor.execute(storage.dialect.sql(query), params)
            return cursor.fetchall() if cursor.description else None

        return storage.pool.runInteraction(txn)

    @inlineCallbacks
    def test_fromEmpty(self) -> Generator[Deferred[Any], Any, None]:
        """An empty database is at version 0 and migrates through every version."""
        storage = self.bareStorage()
        self.assertEqual((yield storage.schemaVersion()), 0)
        latest = migrations.latestVersion(storage.dialect.name)
        self.assertEqual((yield storage.migrate()), list(range(1, latest + 1)))
        self.assertEqual((yield storage.schemaVersion()), latest)
        rows = yield self.run_txn(storage, "SELECT version, name FROM schema_version ORDER BY version")
        self.assertEqual(
            [tuple(r) for r in rows],
            [
                (1, "initial"),
                (2, "revocation_and_usage"),
                (3, "allowed_origins"),
                (4, "webhooks"),
                (5, "settings"),
                (6, "history"),
            ],
        )

    @inlineCallbacks
    def test_idempotent(self) -> Generator[Deferred[Any], Any, None]:
        """Migrating a current database applies nothing and changes nothing."""
        storage = self.bareStorage()
        yield storage.migrate()
        app = yield storage.createApplication("app", "alice", admins=["alice"])
        self.assertEqual((yield storage.migrate()), [])
        self.assertEqual((yield storage.migrate()), [])
        self.assertEqual((yield storage.getApplication(app.id)), app)

    @inlineCallbacks
    def test_fromVersion1KeepsRows(self) -> Generator[Deferred[Any], Any, None]:
        """A version-1 database with applications, admins and keys upgrades without losing a row."""
        storage = self.bareStorage()
        self.assertEqual((yield storage.migrate(target=1)), [1])
        toDb = storage.dialect.toDb
        yield self.run_txn(
            storage,
            "INSERT INTO applications (id, name, created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            (APP, "testapp", "alice", toDb(T0), toDb(T0)),
        )
        for user in ("alice", "bob"):
            yield self.run_txn(
                storage,
                "INSERT INTO application_admins (application_id, username) VALUES (?, ?)",
                (APP, user),
            )
        yield self.run_txn(
            storage,
            "INSERT INTO keys (id, application_id, secret, expires, purpose, created_by,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (KEY, APP, SECRET, toDb(EXPIRES), "server", "alice", toDb(T0), toDb(T0)),
        )
        self.assertEqual((yield storage.schemaVersion()), 1)

        self.assertEqual((yield storage.migrate()), list(range(2, migrations.latestVersion("sqlite") + 1)))
        yield storage.start()
        app = yield storage.getApplication(APP)
        self.assertEqual(
            (app.name, app.created_by, app.created_at, app.admins), ("testapp", "alice", T0, ("alice", "bob"))
        )
        key = yield storage.getKey(KEY)
        self.assertEqual(
            (key.application_id, key.secret, key.expires, key.purpose, key.created_at),
            (APP, SECRET, EXPIRES, "server", T0),
        )
        self.assertEqual((key.use_count, key.last_used, key.revoked_at), (0, None, None))
        # The new columns work on the old rows.
        yield storage.recordKeyUsage({KEY: (4, T0)})
        revoked = yield storage.revokeKey(KEY)
        self.assertEqual((revoked.use_count, revoked.last_used, revoked.revoked), (4, T0, True))

    @inlineCallbacks
    def test_fromVersion2KeepsRows(self) -> Generator[Deferred[Any], Any, None]:
        """Version 3 gives existing applications no origin list of their own, and lists can be set."""
        storage = self.bareStorage()
        self.assertEqual((yield storage.migrate(target=2)), [1, 2])
        toDb = storage.dialect.toDb
        yield self.run_txn(
            storage,
            "INSERT INTO applications (id, name, created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            (APP, "testapp", "alice", toDb(T0), toDb(T0)),
        )
        self.assertEqual((yield storage.migrate()), list(range(3, migrations.latestVersion("sqlite") + 1)))
        yield storage.start()
        app = yield storage.getApplication(APP)
        self.assertEqual((app.name, app.allowed_origins), ("testapp", ()))
        updated = yield storage.updateApplication(APP, allowedOrigins=["https://a.example"])
        self.assertEqual(updated.allowed_origins, ("https://a.example",))


class SQLiteMigrationTests(MigrationTestsMixin, TestCase):
    """Migrations on SQLite, which also migrates itself at start."""

    def bareStorage(self, migrateAtStart: bool | None = None) -> SQLStorage:
        from pandapush.storage.sqlite import SQLiteStorage

        self.path = os.path.join(self.mktemp(), "sub", "db.sqlite")
        os.makedirs(os.path.dirname(self.path))
        storage = SQLiteStorage(self.path, now=FakeTime(), migrateAtStart=migrateAtStart)
        self.addCleanup(storage.close)
        return storage

    @inlineCallbacks
    def test_startMigrates(self) -> Generator[Deferred[Any], Any, None]:
        """SQLite needs no migrate step: start brings an empty or old file to the latest version."""
        storage = self.bareStorage()
        yield storage.start()
        self.assertEqual((yield storage.schemaVersion()), migrations.latestVersion("sqlite"))

    @inlineCallbacks
    def test_startCreatesFolder(self) -> Generator[Deferred[Any], Any, None]:
        """The database's folder (localdata/) is created when missing."""
        from pandapush.storage.sqlite import SQLiteStorage

        path = os.path.join(self.mktemp(), "localdata", "db.sqlite")
        storage = SQLiteStorage(path)
        self.addCleanup(storage.close)
        yield storage.start()
        self.assertEqual(os.path.exists(path), True)

    @inlineCallbacks
    def test_walAndForeignKeys(self) -> Generator[Deferred[Any], Any, None]:
        """The connection runs in WAL mode with foreign keys enforced."""
        storage = self.bareStorage()
        yield storage.start()
        self.assertEqual((yield self.run_txn(storage, "PRAGMA journal_mode"))[0][0], "wal")
        self.assertEqual((yield self.run_txn(storage, "PRAGMA foreign_keys"))[0][0], 1)

    @inlineCallbacks
    def test_noMigrateRefusesOldSchema(self) -> Generator[Deferred[Any], Any, None]:
        """With migration at start turned off, SQLite refuses an old schema like PostgreSQL does."""
        storage = self.bareStorage(migrateAtStart=False)
        yield self.assertFailure(storage.start(), SchemaOutOfDateError)


class PostgresMigrationTests(MigrationTestsMixin, TestCase):
    """Migrations on PostgreSQL, which migrates only when told."""

    def bareStorage(self, **changes: Any) -> SQLStorage:
        from pandapush.storage.postgres import PostgresStorage

        schema, drop = postgresSchema()
        self.addCleanup(drop)
        storage = PostgresStorage(postgresConfig(schema, **changes), now=FakeTime())
        self.addCleanup(storage.close)
        return storage

    @inlineCallbacks
    def test_startRefusesEmpty(self) -> Generator[Deferred[Any], Any, None]:
        """Start on an unmigrated database fails, telling the operator to run `pandapush migrate`."""
        storage = self.bareStorage()
        error = yield self.assertFailure(storage.start(), SchemaOutOfDateError)
        self.assertIn("pandapush migrate", str(error))
        self.assertEqual((error.current, error.expected), (0, migrations.latestVersion("postgres")))
        self.assertEqual((yield storage.schemaVersion()), 0)

    @inlineCallbacks
    def test_startRefusesOld(self) -> Generator[Deferred[Any], Any, None]:
        """Start on a version-1 database fails without touching it."""
        storage = self.bareStorage()
        yield storage.migrate(target=1)
        yield self.assertFailure(storage.start(), SchemaOutOfDateError)
        self.assertEqual((yield storage.schemaVersion()), 1)

    @inlineCallbacks
    def test_startRefusesNewer(self) -> Generator[Deferred[Any], Any, None]:
        """A schema from a newer pandapush is refused too, with advice to upgrade."""
        storage = self.bareStorage()
        yield storage.migrate()
        yield self.run_txn(
            storage,
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
            (99, "future", storage.dialect.toDb(T0)),
        )
        error = yield self.assertFailure(storage.start(), SchemaOutOfDateError)
        self.assertIn("upgrade pandapush", str(error))

    @inlineCallbacks
    def test_migrateAtStartWhenConfigured(self) -> Generator[Deferred[Any], Any, None]:
        """DATABASE_MIGRATE=yes makes a PostgreSQL node migrate at start."""
        storage = self.bareStorage(migrateAtStart=True)
        yield storage.start()
        self.assertEqual((yield storage.schemaVersion()), migrations.latestVersion("postgres"))

    @inlineCallbacks
    def test_concurrentMigrations(self) -> Generator[Deferred[Any], Any, None]:
        """Two nodes migrating at once: the lock lets one apply and the other find nothing to do."""
        from twisted.internet.defer import gatherResults

        storage = self.bareStorage()
        results = yield gatherResults([storage.migrate(), storage.migrate()])
        self.assertEqual(sorted(results), [[], list(range(1, migrations.latestVersion("postgres") + 1))])
