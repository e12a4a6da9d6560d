"""The relational implementation of :class:`IStorage`, shared by SQLite and PostgreSQL.

Queries are written once with ``?`` placeholders; a :class:`Dialect` turns them into
the driver's paramstyle and converts times. Every ``*_txn`` method runs in a
database thread through ``ConnectionPool.runInteraction``, so each call is one
transaction and the reactor never waits on the database.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.defer import Deferred, TimeoutError, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pandapush.storage import ids, migrations
from pandapush.storage._common import checkName, normalAdmins, normalOrigins, utcnow
from pandapush.storage.errors import (
    AlreadyExistsError,
    NoSuchApplicationError,
    NoSuchKeyError,
    SchemaOutOfDateError,
    StorageUnavailableError,
)
from pandapush.storage.interfaces import IStorage, KeyUsageBatch
from pandapush.storage.models import Application, Key

__all__ = ["DEFAULT_QUERY_TIMEOUT", "STUCK_AFTER", "Dialect", "SQLStorage"]

T = TypeVar("T")

#: Seconds a call may take before it fails with :class:`StorageUnavailableError`: a
#: database that stopped answering (network gone, server frozen) must not hold an
#: admin request or a key lookup forever. Migrations have no deadline.
DEFAULT_QUERY_TIMEOUT = 10.0

#: While the database is known to be down and a call has been waiting this long (an
#: unreachable host: connecting takes the whole deadline), further calls fail at once
#: instead of queueing behind it in the pool's few threads.
STUCK_AFTER = 1.0

_APP_COLUMNS = "id, name, created_by, created_at, updated_at, allowed_origins"
_KEY_COLUMNS = (
    "id, application_id, secret, expires, purpose, created_by, created_at, updated_at,"
    " last_used, use_count, revoked_at"
)


class Dialect:
    """What differs between databases: placeholders, time values, locking, catalog queries."""

    name: str = ""
    placeholder = "?"
    schemaVersionDDL = ""
    #: Appended to the application lookup that serialises ``getOrCreateKey``.
    lockRowSuffix = ""

    def sql(self, query: str) -> str:
        """``query`` with its ``?`` placeholders in the driver's style."""
        return query if self.placeholder == "?" else query.replace("?", self.placeholder)

    def toDb(self, value: datetime.datetime | None) -> Any:
        raise NotImplementedError

    def fromDb(self, value: Any) -> datetime.datetime | None:
        raise NotImplementedError

    def begin_txn(self, txn: Any, write: bool) -> None:
        """Start the interaction's transaction (drivers that start one implicitly do nothing)."""

    def tableExists_txn(self, txn: Any, table: str) -> bool:
        raise NotImplementedError

    def lockForMigration_txn(self, txn: Any) -> None:
        """Keep concurrent migrations (several nodes, or the command line) from interleaving."""

    def unavailable(self, error: BaseException) -> bool:
        """
        Whether ``error`` means the database could not be reached or used just now
        (the caller should try again later), rather than that the query was wrong.
        """
        return isinstance(error, adbapi.ConnectionLost)

    def connectionBroken_txn(self, txn: Any) -> bool:
        """Whether the interaction's connection is dead (its server went away since it was opened)."""
        return False


def _ping_txn(txn: Any) -> None:
    txn.execute("SELECT 1")
    txn.fetchall()


def _require(value: datetime.datetime | None) -> datetime.datetime:
    assert value is not None
    return value


@implementer(IStorage)
class SQLStorage:
    """:class:`IStorage` over an ``adbapi.ConnectionPool``; subclasses choose the driver and dialect."""

    _log = Logger()

    name = "sql"
    #: Whether :meth:`start` migrates (SQLite) or only checks the version (PostgreSQL).
    migrateAtStart = False

    def __init__(
        self,
        pool: adbapi.ConnectionPool,
        dialect: Dialect,
        now: Callable[[], datetime.datetime] = utcnow,
        migrateAtStart: bool | None = None,
        queryTimeout: float = DEFAULT_QUERY_TIMEOUT,
        clock: IReactorTime | None = None,
    ) -> None:
        self.pool = pool
        self.dialect = dialect
        self._now = now
        if migrateAtStart is not None:
            self.migrateAtStart = migrateAtStart
        self.queryTimeout = queryTimeout
        self._clock = clock
        #: Reactor time the database became unreachable, and why (None while it answers).
        self.unavailableSince: float | None = None
        self.unavailableReason: str | None = None
        # Start times of the calls under way, by call.
        self._started: dict[Deferred[Any], float] = {}

    # plumbing

    @property
    def clock(self) -> IReactorTime:
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor  # type: ignore[assignment]
        assert self._clock is not None
        return self._clock

    def _run(self, write: bool, fn: Callable[..., T], *args: Any, deadline: bool = True) -> Deferred[T]:
        dialect = self.dialect

        def interaction(txn: Any) -> T:
            try:
                dialect.begin_txn(txn, write)
                return fn(txn, *args)
            except Exception as error:
                if not (dialect.unavailable(error) and dialect.connectionBroken_txn(txn)):
                    raise
            # This thread's connection died since its last use (the server restarted
            # or dropped it) and the server rolled back what this attempt did, so it
            # is safe to run once more on a new connection. If the server is still
            # down, connecting fails and that is the answer.
            txn.reconnect()
            txn.reopen()
            dialect.begin_txn(txn, write)
            return fn(txn, *args)

        if deadline and self._stuck():
            return defer.fail(StorageUnavailableError(self.unavailableReason or "unavailable"))
        running = self.pool.runInteraction(interaction)
        if deadline and self.queryTimeout > 0:
            running.addTimeout(self.queryTimeout, self.clock)
        if not running.called:
            self._started[running] = self.clock.seconds()
            running.addBoth(self._ended, running)
        running.addCallbacks(self._answered, self._failed)
        return running

    def _ended(self, result: Any, call: Deferred[Any]) -> Any:
        self._started.pop(call, None)
        return result

    def _stuck(self) -> bool:
        """Down, and a call has waited :data:`STUCK_AFTER` seconds already: the host does not answer."""
        if self.unavailableSince is None or not self._started:
            return False
        return self.clock.seconds() - min(self._started.values()) >= STUCK_AFTER

    def _answered(self, result: T) -> T:
        if self.unavailableSince is not None:
            self._log.info(
                "{backend} answers again after {seconds:.1f}s",
                backend=self.name,
                seconds=self.clock.seconds() - self.unavailableSince,
            )
            self.unavailableSince = self.unavailableReason = None
        return result

    def _failed(self, failure: Failure) -> Failure:
        error = failure.value
        if error is None:
            return failure
        if isinstance(error, TimeoutError):
            reason = f"no answer in {self.queryTimeout:g}s"
        elif self.dialect.unavailable(error):
            # Drivers put hints on further lines ("Is the server running...?").
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        else:
            return failure
        if self.unavailableSince is None:
            # Once per outage, not once per query: callers answer 503 meanwhile.
            self._log.warn(
                "{backend} unavailable ({reason}): the admin API answers 503 and keys"
                " not in the cache cannot be checked until it is back",
                backend=self.name,
                reason=reason,
            )
            self.unavailableSince = self.clock.seconds()
        self.unavailableReason = reason
        return Failure(StorageUnavailableError(reason))

    def ping(self) -> Deferred[None]:
        """One trivial query, so that :meth:`status` is current while nothing else asks the database."""
        return self._run(False, _ping_txn)

    def status(self) -> dict[str, Any]:
        """
        ``{"status": "ok"}`` or ``{"status": "unavailable", "since", "reason"}``: the
        outcome of the last call, without asking the database (health checks read it,
        and :meth:`ping` now and then).
        """
        if self.unavailableSince is None:
            return {"status": "ok"}
        return {"status": "unavailable", "since": self.unavailableSince, "reason": self.unavailableReason}

    def _x(self, txn: Any, query: str, params: Sequence[Any] = ()) -> None:
        txn.execute(self.dialect.sql(query), tuple(params))

    # lifecycle

    @inlineCallbacks
    def start(self) -> Any:
        if self.migrateAtStart:
            applied = yield self.migrate()
            if applied:
                self._log.info(
                    "{backend} schema migrated to version {version}", backend=self.name, version=applied[-1]
                )
            return
        current = yield self.schemaVersion()
        latest = migrations.latestVersion(self.dialect.name)
        if current != latest:
            raise SchemaOutOfDateError(current, latest)

    def close(self) -> Deferred[None]:
        # Joins the pool's threads: at most one running query's wait, at shutdown only.
        self.pool.close()
        return defer.succeed(None)

    def migrate(self, target: int | None = None) -> Deferred[list[int]]:
        """Apply pending migrations (up to ``target``, for tests of old schemas)."""
        return self._run(True, migrations.migrate_txn, self.dialect, self._now(), target, deadline=False)

    def schemaVersion(self) -> Deferred[int]:
        return self._run(False, migrations.currentVersion_txn, self.dialect, deadline=False)

    # rows to records

    def _app(self, row: Sequence[Any], admins: Iterable[str]) -> Application:
        fromDb = self.dialect.fromDb
        return Application(
            id=row[0],
            name=row[1],
            created_by=row[2] or "",
            created_at=_require(fromDb(row[3])),
            updated_at=_require(fromDb(row[4])),
            admins=tuple(sorted(admins)),
            allowed_origins=tuple((row[5] or "").split()),
        )

    def _key(self, row: Sequence[Any]) -> Key:
        fromDb = self.dialect.fromDb
        return Key(
            id=row[0],
            application_id=row[1],
            secret=row[2],
            expires=fromDb(row[3]),
            purpose=row[4] or "",
            created_by=row[5] or "",
            created_at=_require(fromDb(row[6])),
            updated_at=_require(fromDb(row[7])),
            last_used=fromDb(row[8]),
            use_count=int(row[9] or 0),
            revoked_at=fromDb(row[10]),
        )

    # applications

    def createApplication(
        self, name: str, createdBy: str, admins: Iterable[str] = (), applicationId: str | None = None
    ) -> Deferred[Application]:
        return self._run(
            True,
            self._createApplication_txn,
            name,
            createdBy or "",
            normalAdmins(admins),
            applicationId or ids.newApplicationId(),
        )

    def _createApplication_txn(
        self, txn: Any, name: str, createdBy: str, admins: tuple[str, ...], appId: str
    ) -> Application:
        checkName(name)
        self._x(txn, "SELECT 1 FROM applications WHERE id = ?", (appId,))
        if txn.fetchone() is not None:
            raise AlreadyExistsError(f"application {appId} exists already")
        now = self.dialect.toDb(self._now())
        self._x(
            txn,
            f"INSERT INTO applications ({_APP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (appId, name, createdBy, now, now, ""),
        )
        self._setAdmins_txn(txn, appId, admins)
        app = self._getApplication_txn(txn, appId)
        assert app is not None
        return app

    def _setAdmins_txn(self, txn: Any, appId: str, admins: tuple[str, ...]) -> None:
        self._x(txn, "DELETE FROM application_admins WHERE application_id = ?", (appId,))
        for username in admins:
            self._x(
                txn,
                "INSERT INTO application_admins (application_id, username) VALUES (?, ?)",
                (appId, username),
            )

    def getApplication(self, applicationId: str) -> Deferred[Application | None]:
        return self._run(False, self._getApplication_txn, applicationId)

    def _getApplication_txn(self, txn: Any, appId: str) -> Application | None:
        self._x(txn, f"SELECT {_APP_COLUMNS} FROM applications WHERE id = ?", (appId,))
        row = txn.fetchone()
        if row is None:
            return None
        self._x(txn, "SELECT username FROM application_admins WHERE application_id = ?", (appId,))
        return self._app(row, (r[0] for r in txn.fetchall()))

    def _listApplications_txn(
        self, txn: Any, appWhere: str, adminWhere: str, params: Sequence[Any]
    ) -> list[Application]:
        # Two queries rather than one per application: admins for all of them at once.
        self._x(txn, f"SELECT {_APP_COLUMNS} FROM applications {appWhere} ORDER BY created_at, id", params)
        rows = txn.fetchall()
        self._x(txn, f"SELECT application_id, username FROM application_admins {adminWhere}", params)
        admins: dict[str, list[str]] = {}
        for appId, username in txn.fetchall():
            admins.setdefault(appId, []).append(username)
        return [self._app(row, admins.get(row[0], ())) for row in rows]

    def listApplications(self) -> Deferred[list[Application]]:
        return self._run(False, self._listApplications_txn, "", "", ())

    def listApplicationsAdministeredBy(self, username: str) -> Deferred[list[Application]]:
        return self._run(
            False,
            self._listApplications_txn,
            "WHERE id IN (SELECT application_id FROM application_admins WHERE username = ?)",
            "WHERE application_id IN (SELECT application_id FROM application_admins WHERE username = ?)",
            (username,),
        )

    def updateApplication(
        self,
        applicationId: str,
        name: str | None = None,
        admins: Iterable[str] | None = None,
        allowedOrigins: Iterable[str] | None = None,
    ) -> Deferred[Application]:
        try:
            # Checked here, in the reactor thread, so a bad origin fails before any write.
            origins = None if allowedOrigins is None else normalOrigins(allowedOrigins)
        except ValueError:
            return defer.fail()
        return self._run(
            True,
            self._updateApplication_txn,
            applicationId,
            name,
            None if admins is None else normalAdmins(admins),
            origins,
        )

    def _updateApplication_txn(
        self,
        txn: Any,
        appId: str,
        name: str | None,
        admins: tuple[str, ...] | None,
        origins: tuple[str, ...] | None = None,
    ) -> Application:
        if name is not None:
            checkName(name)
        now = self.dialect.toDb(self._now())
        assignments = ["updated_at = ?"]
        params: list[Any] = [now]
        if name is not None:
            assignments.append("name = ?")
            params.append(name)
        if origins is not None:
            assignments.append("allowed_origins = ?")
            params.append(" ".join(origins))
        self._x(txn, f"UPDATE applications SET {', '.join(assignments)} WHERE id = ?", (*params, appId))
        if txn.rowcount == 0:
            raise NoSuchApplicationError(appId)
        if admins is not None:
            self._setAdmins_txn(txn, appId, admins)
        app = self._getApplication_txn(txn, appId)
        assert app is not None
        return app

    def deleteApplication(self, applicationId: str) -> Deferred[None]:
        return self._run(True, self._deleteApplication_txn, applicationId)

    def _deleteApplication_txn(self, txn: Any, appId: str) -> None:
        # Children first and explicitly: correct even where foreign keys are not enforced.
        self._x(txn, "DELETE FROM keys WHERE application_id = ?", (appId,))
        self._x(txn, "DELETE FROM application_admins WHERE application_id = ?", (appId,))
        self._x(txn, "DELETE FROM applications WHERE id = ?", (appId,))
        if txn.rowcount == 0:
            raise NoSuchApplicationError(appId)

    # keys

    def createKey(
        self,
        applicationId: str,
        createdBy: str,
        purpose: str = "",
        expires: datetime.datetime | None = None,
        keyId: str | None = None,
        secret: str | None = None,
    ) -> Deferred[Key]:
        return self._run(
            True,
            self._createKey_txn,
            applicationId,
            createdBy or "",
            purpose or "",
            expires,
            keyId or ids.newKeyId(),
            secret or ids.newSecret(),
        )

    def _createKey_txn(
        self,
        txn: Any,
        appId: str,
        createdBy: str,
        purpose: str,
        expires: datetime.datetime | None,
        keyId: str,
        secret: str,
    ) -> Key:
        self._x(txn, "SELECT 1 FROM applications WHERE id = ?" + self.dialect.lockRowSuffix, (appId,))
        if txn.fetchone() is None:
            raise NoSuchApplicationError(appId)
        self._x(txn, "SELECT 1 FROM keys WHERE id = ?", (keyId,))
        if txn.fetchone() is not None:
            raise AlreadyExistsError(f"key {keyId} exists already")
        toDb = self.dialect.toDb
        now = toDb(self._now())
        self._x(
            txn,
            f"INSERT INTO keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (keyId, appId, secret, toDb(expires), purpose, createdBy, now, now, None, 0, None),
        )
        key = self._getKey_txn(txn, keyId)
        assert key is not None
        return key

    def getKey(self, keyId: str) -> Deferred[Key | None]:
        return self._run(False, self._getKey_txn, keyId)

    def _getKey_txn(self, txn: Any, keyId: str) -> Key | None:
        self._x(txn, f"SELECT {_KEY_COLUMNS} FROM keys WHERE id = ?", (keyId,))
        row = txn.fetchone()
        return None if row is None else self._key(row)

    def listKeys(self, applicationId: str) -> Deferred[list[Key]]:
        return self._run(False, self._listKeys_txn, applicationId)

    def _listKeys_txn(self, txn: Any, appId: str) -> list[Key]:
        self._x(
            txn, f"SELECT {_KEY_COLUMNS} FROM keys WHERE application_id = ? ORDER BY created_at, id", (appId,)
        )
        return [self._key(row) for row in txn.fetchall()]

    def revokeKey(self, keyId: str) -> Deferred[Key]:
        return self._run(True, self._revokeKey_txn, keyId)

    def _revokeKey_txn(self, txn: Any, keyId: str) -> Key:
        now = self.dialect.toDb(self._now())
        self._x(
            txn,
            "UPDATE keys SET revoked_at = ?, updated_at = ? WHERE id = ? AND revoked_at IS NULL",
            (now, now, keyId),
        )
        key = self._getKey_txn(txn, keyId)
        if key is None:
            raise NoSuchKeyError(keyId)
        return key

    def deleteKey(self, keyId: str) -> Deferred[None]:
        return self._run(True, self._deleteKey_txn, keyId)

    def _deleteKey_txn(self, txn: Any, keyId: str) -> None:
        self._x(txn, "DELETE FROM keys WHERE id = ?", (keyId,))
        if txn.rowcount == 0:
            raise NoSuchKeyError(keyId)

    def recordKeyUsage(self, usage: KeyUsageBatch) -> Deferred[None]:
        toDb = self.dialect.toDb
        rows = [(int(count), toDb(lastUsed), keyId) for keyId, (count, lastUsed) in sorted(usage.items())]
        return self._run(True, self._recordKeyUsage_txn, rows)

    def _recordKeyUsage_txn(self, txn: Any, rows: list[tuple[int, Any, str]]) -> None:
        # Sorted by key id above, so concurrent batches lock rows in the same order.
        for count, lastUsed, keyId in rows:
            self._x(
                txn,
                "UPDATE keys SET use_count = use_count + ?,"
                " last_used = CASE WHEN last_used IS NULL OR last_used < ? THEN ? ELSE last_used END"
                " WHERE id = ?",
                (count, lastUsed, lastUsed, keyId),
            )

    def getOrCreateKey(self, applicationId: str, purpose: str, createdBy: str) -> Deferred[Key]:
        return self._run(True, self._getOrCreateKey_txn, applicationId, purpose or "", createdBy or "")

    def _getOrCreateKey_txn(self, txn: Any, appId: str, purpose: str, createdBy: str) -> Key:
        # Locking the application row (PostgreSQL; SQLite's BEGIN IMMEDIATE locks the
        # database) keeps two nodes from each creating a console key at once.
        self._x(txn, "SELECT 1 FROM applications WHERE id = ?" + self.dialect.lockRowSuffix, (appId,))
        if txn.fetchone() is None:
            raise NoSuchApplicationError(appId)
        self._x(
            txn,
            f"SELECT {_KEY_COLUMNS} FROM keys WHERE application_id = ? AND purpose = ?"
            " AND revoked_at IS NULL AND (expires IS NULL OR expires > ?) ORDER BY created_at, id",
            (appId, purpose, self.dialect.toDb(self._now())),
        )
        row = txn.fetchone()
        if row is not None:
            return self._key(row)
        return self._createKey_txn(txn, appId, createdBy, purpose, None, ids.newKeyId(), ids.newSecret())
