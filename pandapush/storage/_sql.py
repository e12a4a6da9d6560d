"""The relational implementation of :class:`IStorage`, shared by SQLite and PostgreSQL.

Queries are written once with ``?`` placeholders; a :class:`Dialect` turns them into
the driver's paramstyle and converts times. Every ``*_txn`` method (the SQL, in
:mod:`pandapush.storage._queries`) runs in a database thread through
``ConnectionPool.runInteraction``, so each call is one transaction and the reactor
never waits on the database; this module is how a call gets there: the pool, the
per-call deadline, and telling an outage from an error.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.defer import Deferred, TimeoutError, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pandapush.storage import ids, migrations
from pandapush.storage._common import normalAdmins, normalOrigins, utcnow
from pandapush.storage._queries import SQLQueries
from pandapush.storage._webhooks import SQLWebhooks, WebhookQueries
from pandapush.storage.errors import (
    SchemaOutOfDateError,
    StorageUnavailableError,
)
from pandapush.storage.interfaces import IStorage, KeyUsageBatch
from pandapush.storage.models import Application, HistoryLimits, Key
from pandapush.storage.settings import ISettingsStorage, SQLSettings
from pandapush.storage.webhooks import IWebhookStorage

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

    def prepareSchema_txn(self, txn: Any) -> None:
        """Before migrating, under the migration lock: make the place the tables go (PostgreSQL's schema)."""

    def lockOutbox_txn(self, txn: Any) -> None:
        """Keep two nodes' webhook outbox claims from interleaving (SQLite's writes are serial)."""

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


@implementer(IStorage, IWebhookStorage, ISettingsStorage)
class SQLStorage(SQLWebhooks, SQLSettings):
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
        #: The SQL of every call (``*_txn``), run here through :meth:`_run`.
        self.queries = SQLQueries(dialect, now)
        self.webhookQueries = WebhookQueries(dialect, now)
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

    # applications

    def createApplication(
        self, name: str, createdBy: str, admins: Iterable[str] = (), applicationId: str | None = None
    ) -> Deferred[Application]:
        return self._run(
            True,
            self.queries.createApplication_txn,
            name,
            createdBy or "",
            normalAdmins(admins),
            applicationId or ids.newApplicationId(),
        )

    def getApplication(self, applicationId: str) -> Deferred[Application | None]:
        return self._run(False, self.queries.getApplication_txn, applicationId)

    def listApplications(self) -> Deferred[list[Application]]:
        return self._run(False, self.queries.listApplications_txn, "", "", ())

    def listApplicationsAdministeredBy(self, username: str) -> Deferred[list[Application]]:
        return self._run(
            False,
            self.queries.listApplications_txn,
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
        history: HistoryLimits | None = None,
    ) -> Deferred[Application]:
        try:
            # Checked here, in the reactor thread, so a bad origin fails before any write.
            origins = None if allowedOrigins is None else normalOrigins(allowedOrigins)
            history = None if history is None else history.checked()
        except ValueError:
            return defer.fail()
        return self._run(
            True,
            self.queries.updateApplication_txn,
            applicationId,
            name,
            None if admins is None else normalAdmins(admins),
            origins,
            history,
        )

    def deleteApplication(self, applicationId: str) -> Deferred[None]:
        return self._run(True, self.queries.deleteApplication_txn, applicationId)

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
            self.queries.createKey_txn,
            applicationId,
            createdBy or "",
            purpose or "",
            expires,
            keyId or ids.newKeyId(),
            secret or ids.newSecret(),
        )

    def getKey(self, keyId: str) -> Deferred[Key | None]:
        return self._run(False, self.queries.getKey_txn, keyId)

    def listKeys(self, applicationId: str) -> Deferred[list[Key]]:
        return self._run(False, self.queries.listKeys_txn, applicationId)

    def revokeKey(self, keyId: str) -> Deferred[Key]:
        return self._run(True, self.queries.revokeKey_txn, keyId)

    def deleteKey(self, keyId: str) -> Deferred[None]:
        return self._run(True, self.queries.deleteKey_txn, keyId)

    def recordKeyUsage(self, usage: KeyUsageBatch) -> Deferred[None]:
        toDb = self.dialect.toDb
        rows = [(int(count), toDb(lastUsed), keyId) for keyId, (count, lastUsed) in sorted(usage.items())]
        return self._run(True, self.queries.recordKeyUsage_txn, rows)

    def getOrCreateKey(self, applicationId: str, purpose: str, createdBy: str) -> Deferred[Key]:
        return self._run(True, self.queries.getOrCreateKey_txn, applicationId, purpose or "", createdBy or "")
