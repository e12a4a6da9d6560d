"""The database down, in process: what storage, key cache, admin API and health check make of it.

``tests/test_faults_postgres.py`` does the same end to end against a real PostgreSQL
stopped under traffic; these pin each piece's part with fakes and a Clock.
"""

from __future__ import annotations

import base64
import datetime
import sqlite3
from typing import Any, cast

import psycopg2
from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from pandapush.auth.admin import AdminPasswordChecker
from pandapush.auth.keycache import KeyCache
from pandapush.auth.tenancy import TenancyExtension
from pandapush.bayeux import json
from pandapush.storage._sql import SQLStorage
from pandapush.storage.errors import StorageUnavailableError
from pandapush.storage.memory import MemoryStorage
from pandapush.storage.postgres import PostgresDialect
from pandapush.storage.sqlite import SQLiteDialect
from pandapush.web.admin import AdminApp
from pandapush.web.adminauth import AdminAuthority, BasicAdminAuth
from pandapush.web.site import HealthApp
from tests.support.auth import APP, KEY, NOW, SECRET, FakeKey, FakeKeyStore, at
from tests.support.http import stubTreq


class _Pool:
    """Stands in for an adbapi pool: each interaction's outcome is given by the test."""

    def __init__(self) -> None:
        self.outcomes: list[Deferred[Any]] = []
        self.calls = 0

    def runInteraction(self, interaction: Any, *args: Any) -> Deferred[Any]:
        self.calls += 1
        return self.outcomes.pop(0) if self.outcomes else defer.succeed(None)


class _Logged:
    """Collects log events while a test runs."""

    def __init__(self, testCase: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        observer: Any = self.events.append
        globalLogPublisher.addObserver(observer)
        testCase.addCleanup(globalLogPublisher.removeObserver, observer)

    def matching(self, text: str) -> list[dict[str, Any]]:
        return [e for e in self.events if text in (e.get("log_format") or "")]


def result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "not fired"
    return out[0]


class SQLStorageUnavailableTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = _Pool()
        self.storage = SQLStorage(cast(Any, self.pool), PostgresDialect(), queryTimeout=10, clock=self.clock)
        self.storage.name = "postgres"
        self.logged = _Logged(self)

    def test_driverErrorsBecomeUnavailable(self) -> None:
        """A refused or dropped connection fails with StorageUnavailableError (first line of the reason)."""
        for error in [
            psycopg2.OperationalError(
                "connection to server failed: Connection refused\n\tIs the server running?"
            ),
            psycopg2.InterfaceError("connection already closed"),
            adbapi.ConnectionLost(),
        ]:
            self.pool.outcomes.append(defer.fail(error))
            failure = self.failureResultOf(self.storage.getKey(KEY), StorageUnavailableError)
            self.assertNotIn("\n", failure.value.reason)
        self.assertEqual(failure.value.reason, "ConnectionLost")

    def test_otherErrorsPassThrough(self) -> None:
        """Errors that are about the query (constraints, bugs) stay what they are."""
        self.pool.outcomes.append(defer.fail(psycopg2.IntegrityError("duplicate key")))
        self.failureResultOf(self.storage.getKey(KEY), psycopg2.IntegrityError)
        self.assertEqual(self.storage.status(), {"status": "ok"})

    def test_deadline(self) -> None:
        """A database that does not answer fails the call after queryTimeout, not never."""
        self.pool.outcomes.append(Deferred())
        d = self.storage.listApplications()
        self.assertNoResult(d)
        self.clock.advance(10)
        failure = self.failureResultOf(d, StorageUnavailableError)
        self.assertIn("no answer in 10s", str(failure.value))

    def test_failFastWhileStuck(self) -> None:
        """
        Down, with a call already waiting over a second (an unreachable host), later calls
        fail at once instead of queueing for the pool's threads; once one answers, calls
        go to the database again. A refused connection (fails fast anyway) changes nothing.
        """
        self.pool.outcomes.append(defer.fail(psycopg2.OperationalError("Connection refused")))
        self.failureResultOf(self.storage.getKey(KEY), StorageUnavailableError)
        self.pool.outcomes.append(defer.fail(psycopg2.OperationalError("Connection refused")))
        self.failureResultOf(self.storage.getKey(KEY), StorageUnavailableError)
        self.assertEqual(self.pool.calls, 2)
        waiting: Deferred[Any] = Deferred()
        self.pool.outcomes.append(waiting)
        probe = self.storage.getKey(KEY)
        self.pool.outcomes.append(defer.fail(psycopg2.OperationalError("Connection refused")))
        self.failureResultOf(self.storage.getKey(KEY), StorageUnavailableError)  # asked: not stuck yet
        self.clock.advance(1)
        self.assertEqual(self.pool.calls, 4)
        self.pool.outcomes.append(defer.succeed(None))  # would answer, but is not asked
        self.failureResultOf(self.storage.listApplications(), StorageUnavailableError)
        self.assertEqual(self.pool.calls, 4)
        self.pool.outcomes.clear()
        waiting.callback(None)
        self.successResultOf(probe)
        self.assertEqual(self.storage.status(), {"status": "ok"})
        self.successResultOf(self.storage.listApplications())
        self.assertEqual(self.pool.calls, 5)

    def test_migrationsHaveNoDeadline(self) -> None:
        """Migrating (at start, from the command line) may take as long as it takes."""
        self.pool.outcomes.append(Deferred())
        d = self.storage.migrate()
        self.clock.advance(3600)
        self.assertNoResult(d)

    def test_outageLoggedOnceAndStatus(self) -> None:
        """One warning per outage, one line when it ends; status() tells the health check."""
        self.clock.advance(100)
        for _ in range(3):
            self.pool.outcomes.append(defer.fail(psycopg2.OperationalError("Connection refused")))
            self.failureResultOf(self.storage.getKey(KEY), StorageUnavailableError)
        self.assertEqual(len(self.logged.matching("unavailable")), 1)
        self.assertEqual(
            self.storage.status(), {"status": "unavailable", "since": 100.0, "reason": "Connection refused"}
        )
        self.clock.advance(5)
        self.assertIsNone(self.successResultOf(self.storage.getKey(KEY)))
        self.assertEqual(self.storage.status(), {"status": "ok"})
        (back,) = self.logged.matching("answers again")
        self.assertEqual(back["seconds"], 5.0)

    def test_dialects(self) -> None:
        """Lost connections (PostgreSQL), locked or unreadable files (SQLite): unavailable; bad SQL not."""
        self.assertTrue(PostgresDialect().unavailable(psycopg2.OperationalError()))
        self.assertFalse(PostgresDialect().unavailable(psycopg2.ProgrammingError()))
        self.assertFalse(SQLiteDialect().unavailable(ValueError()))
        self.assertTrue(SQLiteDialect().unavailable(sqlite3.OperationalError("database is locked")))
        self.assertFalse(SQLiteDialect().unavailable(sqlite3.OperationalError("no such table: keys")))
        self.assertTrue(SQLiteDialect().unavailable(adbapi.ConnectionLost()))


class _DownStore(FakeKeyStore):
    """A key store whose database can be switched off."""

    down = False

    def getKey(self, keyId: str) -> Deferred[FakeKey | None]:
        if self.down:
            self.lookups.append(keyId)
            return defer.fail(StorageUnavailableError("Connection refused"))
        return super().getKey(keyId)

    def recordKeyUsage(self, usage: dict[str, tuple[int, datetime.datetime]]) -> Deferred[None]:
        if self.down:
            return defer.fail(StorageUnavailableError("Connection refused"))
        return super().recordKeyUsage(usage)


class KeyCacheOutageTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = _DownStore()
        self.store.add(FakeKey(KEY, APP, SECRET))
        self.cache = KeyCache(self.store, self.clock, ttl=60, negativeTTL=5)
        self.logged = _Logged(self)

    def test_staleKeyUsedWhileDown(self) -> None:
        """Past its TTL a cached key is used as last read while the storage cannot answer,
        asked again every negativeTTL seconds, and refreshed once the storage answers."""
        result(self.cache.get(KEY))
        self.store.down = True
        self.clock.advance(61)
        self.assertEqual(result(self.cache.get(KEY)).keyId, KEY)
        self.assertEqual(self.cache.peek(KEY)[0], True)  # the hot path stays synchronous
        self.clock.advance(1)
        result(self.cache.get(KEY))
        self.assertEqual(self.store.lookups, [KEY, KEY])
        self.clock.advance(5)
        result(self.cache.get(KEY))
        self.assertEqual(self.store.lookups, [KEY, KEY, KEY])
        self.assertEqual(len(self.logged.matching("could not look up keys")), 1)
        self.store.down = False
        self.store.keys[KEY].revoked_at = at(NOW)
        self.clock.advance(5)
        self.assertTrue(result(self.cache.get(KEY)).revoked)
        self.assertEqual(len(self.logged.matching("key lookups work again")), 1)

    def test_unknownKeyFailsWhileDown(self) -> None:
        """A key never read fails its lookup with the storage's error (callers answer 503)."""
        self.store.down = True
        failure = result(self.cache.get("PSIDunknown"))
        self.assertIsInstance(failure.value, StorageUnavailableError)

    def test_invalidatedKeyNotServedStale(self) -> None:
        """An invalidated (revoked, deleted) key is forgotten, so never used as last read."""
        result(self.cache.get(KEY))
        self.cache.invalidate(KEY)
        self.store.down = True
        self.assertIsInstance(result(self.cache.get(KEY)).value, StorageUnavailableError)

    def test_usageKeptAndLoggedOnce(self) -> None:
        """Usage writes failing every flush: one warning, counts kept, all written when back."""
        for _ in range(3):
            self.cache.recordUse(KEY)
            self.store.down = True
            result(self.cache.flushUsage())
        self.assertEqual(len(self.logged.matching("could not record key usage")), 1)
        self.assertEqual([e for e in self.logged.events if e.get("log_failure")], [])
        self.store.down = False
        result(self.cache.flushUsage())
        self.assertEqual(self.store.usage[0][KEY][0], 3)
        self.assertEqual(len(self.logged.matching("key usage recorded again")), 1)


class _UnavailableStorage(MemoryStorage):
    """Memory storage whose database has gone away."""

    def listApplications(self) -> Deferred[Any]:
        return defer.fail(StorageUnavailableError("Connection refused"))

    def getApplication(self, applicationId: str) -> Deferred[Any]:
        return defer.fail(StorageUnavailableError("Connection refused"))


class AdminUnavailableTests(SynchronousTestCase):
    def test_503(self) -> None:
        """Every admin route the storage cannot serve answers 503, Retry-After and a JSON error."""
        clock = Clock()
        storage = _UnavailableStorage()
        authority = AdminAuthority(
            BasicAdminAuth([AdminPasswordChecker({"root": "pw"})]), rootAdmins={"root"}
        )
        app = AdminApp(storage, authority, KeyCache(storage, clock), clock)
        stub = stubTreq(app.resource())
        auth = {b"Authorization": [b"Basic " + base64.b64encode(b"root:pw")]}
        for method, path, body in [
            ("GET", "/admin/api/applications", None),
            ("GET", "/admin/api/application/x", None),
            ("POST", "/admin/api/application/x/keys", b"{}"),
        ]:
            headers = {**auth, b"Content-Type": [b"application/json"]}
            d = stub.request(method, "http://localhost" + path, headers=headers, data=body)
            stub.flush()
            response = self.successResultOf(d)
            content = self.successResultOf(response.content())
            self.assertEqual(response.code, 503, path)
            self.assertEqual(response.headers.getRawHeaders(b"Retry-After"), [b"5"])
            self.assertEqual(
                json.loads(content),
                {
                    "code": 503,
                    "params": [],
                    "message": "Storage unavailable: the database cannot be reached; try again later",
                },
            )
        self.assertEqual(self.flushLoggedErrors(), [])


class TenancyUnavailableTests(SynchronousTestCase):
    def test_bayeuxError(self) -> None:
        """Over Bayeux an uncached key while the database is down is 503, not 500 or 'Could not find key'."""
        message: dict[str, Any] = {"channel": f"/{APP}/private/x"}
        extension = TenancyExtension.__new__(TenancyExtension)
        extension._refuse(message, Failure(StorageUnavailableError("Connection refused")))
        self.assertEqual(message["error"], "503::Storage unavailable; try again later")
        self.assertEqual(self.flushLoggedErrors(), [])


class HealthStorageTests(SynchronousTestCase):
    def _health(self, app: HealthApp) -> Any:
        stub = stubTreq(app.app.resource())
        response = self.successResultOf(stub.get("http://localhost/health_check.json"))
        self.assertEqual(response.code, 200)
        return json.loads(self.successResultOf(response.content()))

    def test_storageStatus(self) -> None:
        """
        The health check says whether the storage answers, stays 200, never waits for the
        database, and pings it at most every probeInterval seconds to stay current.
        """
        clock = Clock()
        pool = _Pool()
        storage = SQLStorage(cast(Any, pool), PostgresDialect(), clock=clock)
        app = HealthApp(storage=storage, clock=clock)
        self.assertEqual(self._health(app)["storage"], {"status": "ok"})
        self.assertEqual(pool.calls, 1)  # the first health check started a ping
        answer: Deferred[Any] = Deferred()
        pool.outcomes.append(answer)
        clock.advance(5)
        self.assertEqual(self._health(app)["storage"], {"status": "ok"})  # not waited for
        self.assertEqual(pool.calls, 2)
        answer.errback(psycopg2.OperationalError("Connection refused"))
        health = self._health(app)
        self.assertEqual(health["storage"]["status"], "unavailable")
        self.assertEqual(health["storage"]["reason"], "Connection refused")
        self.assertEqual(pool.calls, 2)  # within probeInterval: no other ping
        clock.advance(5)
        self._health(app)  # pings again: answered this time
        self.assertEqual(self._health(app)["storage"], {"status": "ok"})
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_otherStorages(self) -> None:
        """Memory is always ok; a storage without status() (a plugin's) is reported unknown."""
        self.assertEqual(self._health(HealthApp(storage=MemoryStorage()))["storage"], {"status": "ok"})
        self.assertEqual(self._health(HealthApp(storage=object()))["storage"], {"status": "unknown"})
