"""The storage contract, run against every backend, and schema migrations on the relational ones.

:class:`StorageTestsMixin` is the interface suite (buildbot's ``test_mq`` shape): each
``*StorageTests`` class only says how to make a backend. PostgreSQL runs against the
real server on 127.0.0.1:5432 (user ``postgres``, database ``test``), each test in a
schema of its own; it is skipped only when that server is unreachable and ``CI`` is
not set, and fails loudly under ``CI``.
"""

from __future__ import annotations

import datetime
import os
import secrets
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface.verify import verifyObject

from pandapush.storage import ids, migrations
from pandapush.storage.config import StorageConfig
from pandapush.storage.errors import (
    AlreadyExistsError,
    NoSuchApplicationError,
    NoSuchKeyError,
)
from pandapush.storage.interfaces import IStorage
from pandapush.storage.memory import MemoryStorage
from pandapush.storage.models import HistoryLimits, Key, isoformat
from pandapush.storage.settings import ISettingsStorage

UTC = datetime.UTC
T0 = datetime.datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)

# The CI machine's server; PANDAPUSH_TEST_POSTGRES_HOST/_PORT point elsewhere.
POSTGRES: dict[str, Any] = {
    "host": os.environ.get("PANDAPUSH_TEST_POSTGRES_HOST", "127.0.0.1"),
    "port": int(os.environ.get("PANDAPUSH_TEST_POSTGRES_PORT", "5432")),
    "user": "postgres",
    "dbname": "test",
}


class FakeTime:
    """A settable "now" for storage, so created/updated/expiry times are exact."""

    def __init__(self, start: datetime.datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> datetime.datetime:
        self.now += datetime.timedelta(seconds=seconds)
        return self.now


def postgresSchema() -> tuple[str, Callable[[], None]]:
    """
    A fresh schema on the test server, and a function dropping it. Skips the test if
    the server cannot be reached, unless ``CI`` is set: then the test fails.
    """
    try:
        import psycopg2

        connection = psycopg2.connect(connect_timeout=5, **POSTGRES)
    except Exception as e:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            raise AssertionError(f"CI is set but PostgreSQL at {POSTGRES} is unreachable: {e}") from e
        raise SkipTest(f"PostgreSQL at {POSTGRES} is unreachable: {e}") from e
    connection.autocommit = True
    schema = "pandapush_test_" + secrets.token_hex(6)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP SCHEMA {schema} CASCADE")
        finally:
            connection.close()

    return schema, drop


def postgresConfig(schema: str, **changes: Any) -> StorageConfig:
    return StorageConfig(
        database="postgres",
        address=str(POSTGRES["host"]),
        port=int(POSTGRES["port"]),
        username=str(POSTGRES["user"]),
        name=str(POSTGRES["dbname"]),
        schema=schema,
        poolSize=2,
        **changes,
    )


class StorageTestsMixin:
    """What every :class:`IStorage` does. Subclasses define :meth:`makeStorage`."""

    storage: Any
    time: FakeTime

    # provided by TestCase
    assertEqual: Any
    assertIsNone: Any
    assertIsNotNone: Any
    assertTrue: Any
    assertFalse: Any
    assertIn: Any
    assertNotIn: Any
    assertRegex: Any
    assertFailure: Any
    assertRaises: Any
    addCleanup: Any

    def makeStorage(self, now: Callable[[], datetime.datetime]) -> Any:
        raise NotImplementedError

    def setUp(self) -> Any:
        return self._startStorage()  # trial waits for the Deferred

    @inlineCallbacks
    def _startStorage(self) -> Generator[Deferred[Any], Any, None]:
        self.time = FakeTime()
        self.storage = yield self.makeStorage(self.time)

    def tick(self, seconds: float = 1.0) -> datetime.datetime:
        return self.time.advance(seconds)

    def test_providesIStorage(self) -> None:
        """The backend provides every method and attribute of IStorage."""
        self.assertTrue(verifyObject(IStorage, self.storage))

    async def test_settings(self) -> None:
        """
        Settings shared by the nodes (ISettingsStorage): none at first; the first add wins
        and later adds answer it; set replaces; names are independent.
        """
        self.assertTrue(verifyObject(ISettingsStorage, self.storage))
        self.assertIsNone(await self.storage.getSetting("admin_password"))
        self.assertEqual(await self.storage.addSetting("admin_password", "first"), "first")
        self.assertEqual(await self.storage.addSetting("admin_password", "second"), "first")
        self.assertEqual(await self.storage.getSetting("admin_password"), "first")
        self.tick()
        await self.storage.setSetting("admin_password", "third")
        self.assertEqual(await self.storage.getSetting("admin_password"), "third")
        await self.storage.setSetting("other", "x")
        self.assertEqual(
            (await self.storage.getSetting("other"), await self.storage.getSetting("admin_password")),
            ("x", "third"),
        )

    # applications

    @inlineCallbacks
    def test_createApplication(self) -> Generator[Deferred[Any], Any, None]:
        """A new application gets a fresh 20-character id, the creator, both times, and its admins."""
        app = yield self.storage.createApplication("testapp", "alice", admins=["bob", "alice", "bob"])
        self.assertTrue(ids.isApplicationId(app.id))
        self.assertEqual(
            (app.name, app.created_by, app.created_at, app.updated_at, app.admins),
            ("testapp", "alice", T0, T0, ("alice", "bob")),
        )
        again = yield self.storage.getApplication(app.id)
        self.assertEqual(again, app)

    @inlineCallbacks
    def test_createApplicationWithId(self) -> Generator[Deferred[Any], Any, None]:
        """A known id can be asked for (DEV_APPLICATION_ID), once."""
        app = yield self.storage.createApplication("dev", "seed", applicationId="fRP0y2aVpYCKiW6PIFOK")
        self.assertEqual(app.id, "fRP0y2aVpYCKiW6PIFOK")
        yield self.assertFailure(
            self.storage.createApplication("again", "seed", applicationId="fRP0y2aVpYCKiW6PIFOK"),
            AlreadyExistsError,
        )

    @inlineCallbacks
    def test_createApplicationNeedsName(self) -> Generator[Deferred[Any], Any, None]:
        """An empty name is refused."""
        yield self.assertFailure(self.storage.createApplication("  ", "alice"), ValueError)
        self.assertEqual((yield self.storage.listApplications()), [])

    @inlineCallbacks
    def test_getApplicationMissing(self) -> Generator[Deferred[Any], Any, None]:
        """An unknown id is None, not an error."""
        self.assertIsNone((yield self.storage.getApplication("nonexistentxxxxxxxxx")))

    @inlineCallbacks
    def test_listApplications(self) -> Generator[Deferred[Any], Any, None]:
        """Every application, oldest first, each with its admins."""
        first = yield self.storage.createApplication("one", "alice", admins=["alice"])
        self.tick()
        second = yield self.storage.createApplication("two", "bob", admins=["bob", "carol"])
        self.tick()
        third = yield self.storage.createApplication("three", "bob")
        apps = yield self.storage.listApplications()
        self.assertEqual(apps, [first, second, third])
        self.assertEqual([a.admins for a in apps], [("alice",), ("bob", "carol"), ()])

    @inlineCallbacks
    def test_listApplicationsAdministeredBy(self) -> Generator[Deferred[Any], Any, None]:
        """A user sees only the applications they administer, with all of their admins."""
        first = yield self.storage.createApplication("one", "alice", admins=["alice", "bob"])
        self.tick()
        yield self.storage.createApplication("two", "carol", admins=["carol"])
        self.tick()
        third = yield self.storage.createApplication("three", "bob", admins=["bob"])
        self.assertEqual((yield self.storage.listApplicationsAdministeredBy("bob")), [first, third])
        self.assertEqual((yield self.storage.listApplicationsAdministeredBy("alice")), [first])
        self.assertEqual((yield self.storage.listApplicationsAdministeredBy("nobody")), [])

    @inlineCallbacks
    def test_updateApplication(self) -> Generator[Deferred[Any], Any, None]:
        """Name and admins change together; updated_at moves, created_at stays."""
        app = yield self.storage.createApplication("old", "alice", admins=["alice"])
        later = self.tick(60)
        updated = yield self.storage.updateApplication(app.id, name="new", admins=["dave", "erin"])
        self.assertEqual(
            (updated.id, updated.name, updated.admins, updated.created_at, updated.updated_at),
            (app.id, "new", ("dave", "erin"), T0, later),
        )
        self.assertEqual((yield self.storage.getApplication(app.id)), updated)
        self.assertEqual((yield self.storage.listApplicationsAdministeredBy("alice")), [])

    @inlineCallbacks
    def test_updateApplicationPartly(self) -> Generator[Deferred[Any], Any, None]:
        """None leaves that part alone: a rename keeps the admins, new admins keep the name."""
        app = yield self.storage.createApplication("old", "alice", admins=["alice"])
        renamed = yield self.storage.updateApplication(app.id, name="new")
        self.assertEqual((renamed.name, renamed.admins), ("new", ("alice",)))
        readmin = yield self.storage.updateApplication(app.id, admins=[])
        self.assertEqual((readmin.name, readmin.admins), ("new", ()))

    @inlineCallbacks
    def test_updateApplicationRefusedChangesNothing(self) -> Generator[Deferred[Any], Any, None]:
        """A refused update (empty name) does not half-apply: the admins stay too."""
        app = yield self.storage.createApplication("old", "alice", admins=["alice"])
        yield self.assertFailure(
            self.storage.updateApplication(app.id, name="", admins=["mallory"]), ValueError
        )
        self.assertEqual((yield self.storage.getApplication(app.id)), app)

    @inlineCallbacks
    def test_allowedOrigins(self) -> Generator[Deferred[Any], Any, None]:
        """Origins are stored normalised (lower case, no slash, sorted, once); empty lifts the list."""
        app = yield self.storage.createApplication("app", "alice", admins=["alice"])
        self.assertEqual(app.allowed_origins, ())
        self.assertEqual(app.publicDict()["allowed_origins"], [])
        updated = yield self.storage.updateApplication(
            app.id,
            allowedOrigins=[
                "https://B.example.com:443/",
                "http://localhost:8080",
                "https://b.example.com",
                " ",
                " NULL ",
            ],
        )
        # null: what sandboxed iframes and file:// pages send, listed on purpose.
        self.assertEqual(updated.allowed_origins, ("http://localhost:8080", "https://b.example.com", "null"))
        self.assertEqual(updated.admins, ("alice",))
        self.assertEqual((yield self.storage.getApplication(app.id)), updated)
        self.assertEqual((yield self.storage.listApplications()), [updated])
        renamed = yield self.storage.updateApplication(app.id, name="renamed")
        self.assertEqual(renamed.allowed_origins, updated.allowed_origins)
        cleared = yield self.storage.updateApplication(app.id, allowedOrigins=[])
        self.assertEqual(cleared.allowed_origins, ())

    @inlineCallbacks
    def test_allowedOriginsRefused(self) -> Generator[Deferred[Any], Any, None]:
        """Something that is not an origin is refused with ValueError, and nothing else changes."""
        app = yield self.storage.createApplication("app", "alice", admins=["alice"])
        for bad in [
            "example.com",
            "https://example.com/path",
            "https://a.com?x=1",
            "https://",
            "*",
            "file://",
            "nul",
        ]:
            yield self.assertFailure(
                self.storage.updateApplication(app.id, name="changed", allowedOrigins=[bad]), ValueError
            )
        self.assertEqual((yield self.storage.getApplication(app.id)), app)

    @inlineCallbacks
    def test_historyLimits(self) -> Generator[Deferred[Any], Any, None]:
        """An application's history limits: the server's defaults at first, set, kept, set back."""
        app = yield self.storage.createApplication("app", "alice", admins=["alice"])
        self.assertEqual(app.history, HistoryLimits())
        self.assertEqual(app.publicDict()["history"], {"size": None, "ttl": None})
        updated = yield self.storage.updateApplication(app.id, history=HistoryLimits(500, 60))
        self.assertEqual(updated.history, HistoryLimits(500, 60.0))
        self.assertEqual((yield self.storage.getApplication(app.id)), updated)
        self.assertEqual((yield self.storage.listApplications()), [updated])
        renamed = yield self.storage.updateApplication(app.id, name="renamed")
        self.assertEqual(renamed.history, HistoryLimits(500, 60.0))
        off = yield self.storage.updateApplication(app.id, history=HistoryLimits(0, None))
        self.assertEqual(off.history, HistoryLimits(0, None))
        back = yield self.storage.updateApplication(app.id, history=HistoryLimits())
        self.assertEqual(back.history, HistoryLimits())

    @inlineCallbacks
    def test_historyLimitsRefused(self) -> Generator[Deferred[Any], Any, None]:
        """Limits out of range (or of the wrong type) are refused with ValueError; nothing changes."""
        app = yield self.storage.createApplication("app", "alice", admins=["alice"])
        for bad in [
            HistoryLimits(-1, None),
            HistoryLimits(10_001, None),
            HistoryLimits(True, None),  # type: ignore[arg-type]
            HistoryLimits(None, 0),
            HistoryLimits(None, 86_401),
            HistoryLimits("5", None),  # type: ignore[arg-type]
        ]:
            yield self.assertFailure(
                self.storage.updateApplication(app.id, name="changed", history=bad), ValueError
            )
        self.assertEqual((yield self.storage.getApplication(app.id)), app)

    @inlineCallbacks
    def test_updateApplicationMissing(self) -> Generator[Deferred[Any], Any, None]:
        """Updating an unknown application fails with NoSuchApplicationError."""
        yield self.assertFailure(
            self.storage.updateApplication("nonexistentxxxxxxxxx", name="x"), NoSuchApplicationError
        )

    @inlineCallbacks
    def test_deleteApplicationCascades(self) -> Generator[Deferred[Any], Any, None]:
        """Deleting an application deletes its keys and admins, and nothing of another application."""
        app = yield self.storage.createApplication("doomed", "alice", admins=["alice"])
        other = yield self.storage.createApplication("other", "alice", admins=["alice"])
        key = yield self.storage.createKey(app.id, "alice")
        otherKey = yield self.storage.createKey(other.id, "alice")
        yield self.storage.deleteApplication(app.id)
        self.assertIsNone((yield self.storage.getApplication(app.id)))
        self.assertIsNone((yield self.storage.getKey(key.id)))
        self.assertEqual((yield self.storage.listKeys(app.id)), [])
        self.assertEqual((yield self.storage.listApplicationsAdministeredBy("alice")), [other])
        self.assertEqual((yield self.storage.getKey(otherKey.id)), otherKey)
        # The id can be used again, with nothing left over from before.
        again = yield self.storage.createApplication("reborn", "bob", applicationId=app.id)
        self.assertEqual(again.admins, ())
        self.assertEqual((yield self.storage.listKeys(app.id)), [])

    @inlineCallbacks
    def test_deleteApplicationMissing(self) -> Generator[Deferred[Any], Any, None]:
        """Deleting an unknown application fails with NoSuchApplicationError."""
        yield self.assertFailure(
            self.storage.deleteApplication("nonexistentxxxxxxxxx"), NoSuchApplicationError
        )

    # keys

    @inlineCallbacks
    def test_createKey(self) -> Generator[Deferred[Any], Any, None]:
        """A new key: PSID id, a long secret, its expiry and purpose, no usage, not revoked."""
        app = yield self.storage.createApplication("app", "alice")
        expires = datetime.datetime(2031, 1, 1, 7, 0, tzinfo=UTC)
        key = yield self.storage.createKey(app.id, "alice", purpose="server", expires=expires)
        self.assertTrue(ids.isKeyId(key.id))
        self.assertTrue(len(key.secret) >= 32)
        self.assertEqual(
            (key.application_id, key.purpose, key.expires, key.created_by, key.created_at, key.updated_at),
            (app.id, "server", expires, "alice", T0, T0),
        )
        self.assertEqual((key.last_used, key.use_count, key.revoked_at, key.revoked), (None, 0, None, False))
        self.assertEqual((yield self.storage.getKey(key.id)), key)

    @inlineCallbacks
    def test_createKeyExpiresInAnyZone(self) -> Generator[Deferred[Any], Any, None]:
        """An expiry given in another time zone comes back as the same instant, in UTC."""
        app = yield self.storage.createApplication("app", "alice")
        zone = datetime.timezone(datetime.timedelta(hours=-7))
        expires = datetime.datetime(2031, 1, 1, 0, 0, tzinfo=zone)
        key = yield self.storage.createKey(app.id, "alice", expires=expires)
        stored = yield self.storage.getKey(key.id)
        self.assertEqual(stored.expires, expires)
        self.assertEqual(stored.expires.utcoffset(), datetime.timedelta(0))

    @inlineCallbacks
    def test_createKeySeeded(self) -> Generator[Deferred[Any], Any, None]:
        """A known id and secret can be given (DEV_KEY_ID/DEV_KEY_SECRET), once."""
        app = yield self.storage.createApplication("app", "alice")
        key = yield self.storage.createKey(
            app.id, "seed", keyId="PSIDv4ADyV6V9fQ2BgJZ", secret="aWvMCPXnV599u6hJ71YJqAKSz0t0Lihs09DM92xS"
        )
        self.assertEqual(
            (key.id, key.secret), ("PSIDv4ADyV6V9fQ2BgJZ", "aWvMCPXnV599u6hJ71YJqAKSz0t0Lihs09DM92xS")
        )
        yield self.assertFailure(self.storage.createKey(app.id, "seed", keyId=key.id), AlreadyExistsError)

    @inlineCallbacks
    def test_createKeyMissingApplication(self) -> Generator[Deferred[Any], Any, None]:
        """A key for an unknown application is refused."""
        yield self.assertFailure(
            self.storage.createKey("nonexistentxxxxxxxxx", "alice"), NoSuchApplicationError
        )

    @inlineCallbacks
    def test_getKeyMissing(self) -> Generator[Deferred[Any], Any, None]:
        """An unknown key id is None (the auth layer says "Could not find key")."""
        self.assertIsNone((yield self.storage.getKey("PSIDxxxxxxxxxxxxxxxx")))

    @inlineCallbacks
    def test_listKeys(self) -> Generator[Deferred[Any], Any, None]:
        """An application's keys, oldest first, revoked ones too, and no other application's."""
        app = yield self.storage.createApplication("app", "alice")
        other = yield self.storage.createApplication("other", "alice")
        first = yield self.storage.createKey(app.id, "alice", purpose="a")
        self.tick()
        yield self.storage.createKey(other.id, "alice")
        self.tick()
        second = yield self.storage.createKey(app.id, "alice", purpose="b")
        revoked = yield self.storage.revokeKey(first.id)
        keys = yield self.storage.listKeys(app.id)
        self.assertEqual(keys, [revoked, second])
        self.assertEqual((yield self.storage.listKeys("nonexistentxxxxxxxxx")), [])

    @inlineCallbacks
    def test_publicDictHasNoSecret(self) -> Generator[Deferred[Any], Any, None]:
        """Listings for people go through publicDict, which never carries the secret."""
        app = yield self.storage.createApplication("app", "alice")
        key = yield self.storage.createKey(app.id, "alice")
        for listed in (yield self.storage.listKeys(app.id)):
            public = listed.publicDict()
            self.assertNotIn("secret", public)
            self.assertNotIn(key.secret, repr(public))
            self.assertNotIn(key.secret, repr(listed))
        self.assertEqual(key.secretDict()["secret"], key.secret)

    @inlineCallbacks
    def test_revokeKey(self) -> Generator[Deferred[Any], Any, None]:
        """Revoking stamps revoked_at; revoking again keeps the first time."""
        app = yield self.storage.createApplication("app", "alice")
        key = yield self.storage.createKey(app.id, "alice")
        first = self.tick(10)
        revoked = yield self.storage.revokeKey(key.id)
        self.assertEqual((revoked.revoked_at, revoked.revoked, revoked.updated_at), (first, True, first))
        self.assertEqual(revoked.secret, key.secret)
        self.tick(10)
        again = yield self.storage.revokeKey(key.id)
        self.assertEqual(again.revoked_at, first)
        self.assertEqual((yield self.storage.getKey(key.id)), revoked)

    @inlineCallbacks
    def test_revokeKeyMissing(self) -> Generator[Deferred[Any], Any, None]:
        """Revoking an unknown key fails with NoSuchKeyError."""
        yield self.assertFailure(self.storage.revokeKey("PSIDxxxxxxxxxxxxxxxx"), NoSuchKeyError)

    @inlineCallbacks
    def test_deleteKey(self) -> Generator[Deferred[Any], Any, None]:
        """A deleted key is gone; deleting it again fails with NoSuchKeyError."""
        app = yield self.storage.createApplication("app", "alice")
        key = yield self.storage.createKey(app.id, "alice")
        keep = yield self.storage.createKey(app.id, "alice")
        yield self.storage.deleteKey(key.id)
        self.assertIsNone((yield self.storage.getKey(key.id)))
        self.assertEqual((yield self.storage.listKeys(app.id)), [keep])
        yield self.assertFailure(self.storage.deleteKey(key.id), NoSuchKeyError)

    @inlineCallbacks
    def test_recordKeyUsage(self) -> Generator[Deferred[Any], Any, None]:
        """Batched usage adds up; last_used only moves forward; unknown keys are ignored."""
        app = yield self.storage.createApplication("app", "alice")
        key = yield self.storage.createKey(app.id, "alice")
        other = yield self.storage.createKey(app.id, "alice")
        late = T0 + datetime.timedelta(minutes=5)
        early = T0 + datetime.timedelta(minutes=1)
        yield self.storage.recordKeyUsage({key.id: (3, late), "PSIDgonegonegonegone": (1, late)})
        yield self.storage.recordKeyUsage({key.id: (2, early), other.id: (7, early)})
        yield self.storage.recordKeyUsage({})
        used = yield self.storage.getKey(key.id)
        self.assertEqual((used.use_count, used.last_used), (5, late))
        usedOther = yield self.storage.getKey(other.id)
        self.assertEqual((usedOther.use_count, usedOther.last_used), (7, early))

    @inlineCallbacks
    def test_getOrCreateKey(self) -> Generator[Deferred[Any], Any, None]:
        """The console key is made once and then found again, while it stays usable."""
        app = yield self.storage.createApplication("app", "alice")
        yield self.storage.createKey(app.id, "alice", purpose="server")
        console = yield self.storage.getOrCreateKey(app.id, "web console", "alice")
        self.assertEqual(console.purpose, "web console")
        self.assertEqual((yield self.storage.getOrCreateKey(app.id, "web console", "bob")), console)
        self.assertEqual(len((yield self.storage.listKeys(app.id))), 2)

    @inlineCallbacks
    def test_getOrCreateKeyReplacesUnusable(self) -> Generator[Deferred[Any], Any, None]:
        """A revoked or expired console key is not reused: a new one is made."""
        app = yield self.storage.createApplication("app", "alice")
        console = yield self.storage.getOrCreateKey(app.id, "web console", "alice")
        yield self.storage.revokeKey(console.id)
        replacement = yield self.storage.getOrCreateKey(app.id, "web console", "alice")
        self.assertFalse(replacement.id == console.id)
        self.assertFalse(replacement.revoked)
        # An expired one is passed over too.
        expiring = yield self.storage.createKey(
            app.id, "alice", purpose="signing", expires=T0 + datetime.timedelta(seconds=30)
        )
        self.assertEqual((yield self.storage.getOrCreateKey(app.id, "signing", "alice")), expiring)
        self.tick(31)
        fresh = yield self.storage.getOrCreateKey(app.id, "signing", "alice")
        self.assertFalse(fresh.id == expiring.id)

    @inlineCallbacks
    def test_getOrCreateKeyMissingApplication(self) -> Generator[Deferred[Any], Any, None]:
        """No console key for an unknown application."""
        yield self.assertFailure(
            self.storage.getOrCreateKey("nonexistentxxxxxxxxx", "web console", "alice"),
            NoSuchApplicationError,
        )

    @inlineCallbacks
    def test_migrateWhenCurrent(self) -> Generator[Deferred[Any], Any, None]:
        """A started storage is at the latest schema; migrating again applies nothing."""
        self.assertEqual((yield self.storage.migrate()), [])
        self.assertEqual((yield self.storage.schemaVersion()), migrations.latestVersion("sqlite"))


class MemoryStorageTests(StorageTestsMixin, TestCase):
    """The suite on the in-memory backend."""

    @inlineCallbacks
    def makeStorage(self, now: Callable[[], datetime.datetime]) -> Generator[Deferred[Any], Any, Any]:
        storage = MemoryStorage(now=now)
        yield storage.start()
        self.addCleanup(storage.close)
        return storage


class SQLiteStorageTests(StorageTestsMixin, TestCase):
    """The suite on SQLite, in a temporary file."""

    @inlineCallbacks
    def makeStorage(self, now: Callable[[], datetime.datetime]) -> Generator[Deferred[Any], Any, Any]:
        from pandapush.storage.sqlite import SQLiteStorage

        storage = SQLiteStorage(os.path.join(self.mktemp(), "db.sqlite"), now=now)
        self.addCleanup(storage.close)
        yield storage.start()
        return storage


class PostgresStorageTests(StorageTestsMixin, TestCase):
    """The suite on PostgreSQL, in a schema made for the test and dropped after it."""

    @inlineCallbacks
    def makeStorage(self, now: Callable[[], datetime.datetime]) -> Generator[Deferred[Any], Any, Any]:
        from pandapush.storage.postgres import PostgresStorage

        schema, drop = postgresSchema()
        self.addCleanup(drop)
        storage = PostgresStorage(postgresConfig(schema), now=now)
        self.addCleanup(storage.close)
        yield storage.migrate()
        yield storage.start()
        return storage


class ModelTests(TestCase):
    """The records storage hands out."""

    def key(self, **changes: Any) -> Key:
        fields: dict[str, Any] = {
            "id": "PSIDv4ADyV6V9fQ2BgJZ",
            "application_id": "fRP0y2aVpYCKiW6PIFOK",
            "secret": "aWvMCPXnV599u6hJ71YJqAKSz0t0Lihs09DM92xS",
            "expires": None,
            "purpose": "",
            "created_by": "alice",
            "created_at": T0,
            "updated_at": T0,
        }
        fields.update(changes)
        return Key(**fields)

    def test_reprHidesSecret(self) -> None:
        """A key in a log line or traceback does not show its secret."""
        self.assertNotIn("aWvMCPXnV599", repr(self.key()))

    def test_usable(self) -> None:
        """Usable means neither revoked nor expired (expiry is exclusive of the instant)."""
        later = T0 + datetime.timedelta(hours=1)
        self.assertTrue(self.key().isUsable(later))
        self.assertFalse(self.key(expires=later).isUsable(later))
        self.assertTrue(self.key(expires=later).isUsable(T0))
        self.assertFalse(self.key(revoked_at=T0).isUsable(T0))

    def test_isoformat(self) -> None:
        """Times in JSON look like upstream's (JavaScript Date.toJSON)."""
        self.assertEqual(
            isoformat(datetime.datetime(2020, 1, 1, 7, 0, tzinfo=UTC)), "2020-01-01T07:00:00.000Z"
        )
        self.assertIsNone(isoformat(None))

    def test_ids(self) -> None:
        """Generated ids have upstream's shapes and do not repeat."""
        self.assertTrue(ids.isApplicationId(ids.newApplicationId()))
        self.assertTrue(ids.isKeyId(ids.newKeyId()))
        self.assertEqual(len({ids.newSecret() for _ in range(100)}), 100)
        self.assertFalse(ids.isKeyId("PSID123"))
