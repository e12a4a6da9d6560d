"""The SQL of :class:`~pandapush.storage._sql.SQLStorage`: one method per transaction.

Each ``*_txn`` method runs in a database thread, inside the transaction
``SQLStorage`` opened for it (``ConnectionPool.runInteraction``), and is given its
cursor. Queries are written once with ``?`` placeholders; the :class:`Dialect`
turns them into the driver's paramstyle and converts times. How a call reaches the
database (the pool, the deadline, outages) is ``SQLStorage``'s business, not this.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pandapush.storage import ids
from pandapush.storage._common import checkName
from pandapush.storage.errors import AlreadyExistsError, NoSuchApplicationError, NoSuchKeyError
from pandapush.storage.models import Application, HistoryLimits, Key

if TYPE_CHECKING:
    from pandapush.storage._sql import Dialect

__all__ = ["SQLQueries"]

_APP_COLUMNS = "id, name, created_by, created_at, updated_at, allowed_origins, history_size, history_ttl"
_KEY_COLUMNS = (
    "id, application_id, secret, expires, purpose, created_by, created_at, updated_at,"
    " last_used, use_count, revoked_at"
)


def _require(value: datetime.datetime | None) -> datetime.datetime:
    assert value is not None
    return value


class SQLQueries:
    """The transactions of :class:`~pandapush.storage.interfaces.IStorage`, for one ``dialect``."""

    def __init__(self, dialect: Dialect, now: Callable[[], datetime.datetime]) -> None:
        self.dialect = dialect
        self.now = now

    def execute(self, txn: Any, query: str, params: Sequence[Any] = ()) -> None:
        txn.execute(self.dialect.sql(query), tuple(params))

    def application(self, row: Sequence[Any], admins: Iterable[str]) -> Application:
        fromDb = self.dialect.fromDb
        return Application(
            id=row[0],
            name=row[1],
            created_by=row[2] or "",
            created_at=_require(fromDb(row[3])),
            updated_at=_require(fromDb(row[4])),
            admins=tuple(sorted(admins)),
            allowed_origins=tuple((row[5] or "").split()),
            history=HistoryLimits(row[6], None if row[7] is None else float(row[7])),
        )

    def key(self, row: Sequence[Any]) -> Key:
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

    def createApplication_txn(
        self, txn: Any, name: str, createdBy: str, admins: tuple[str, ...], appId: str
    ) -> Application:
        checkName(name)
        self.execute(txn, "SELECT 1 FROM applications WHERE id = ?", (appId,))
        if txn.fetchone() is not None:
            raise AlreadyExistsError(f"application {appId} exists already")
        now = self.dialect.toDb(self.now())
        self.execute(
            txn,
            f"INSERT INTO applications ({_APP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (appId, name, createdBy, now, now, "", None, None),
        )
        self.setAdmins_txn(txn, appId, admins)
        app = self.getApplication_txn(txn, appId)
        assert app is not None
        return app

    def setAdmins_txn(self, txn: Any, appId: str, admins: tuple[str, ...]) -> None:
        self.execute(txn, "DELETE FROM application_admins WHERE application_id = ?", (appId,))
        for username in admins:
            self.execute(
                txn,
                "INSERT INTO application_admins (application_id, username) VALUES (?, ?)",
                (appId, username),
            )

    def getApplication_txn(self, txn: Any, appId: str) -> Application | None:
        self.execute(txn, f"SELECT {_APP_COLUMNS} FROM applications WHERE id = ?", (appId,))
        row = txn.fetchone()
        if row is None:
            return None
        self.execute(txn, "SELECT username FROM application_admins WHERE application_id = ?", (appId,))
        return self.application(row, (r[0] for r in txn.fetchall()))

    def listApplications_txn(
        self, txn: Any, appWhere: str, adminWhere: str, params: Sequence[Any]
    ) -> list[Application]:
        # Two queries rather than one per application: admins for all of them at once.
        self.execute(
            txn, f"SELECT {_APP_COLUMNS} FROM applications {appWhere} ORDER BY created_at, id", params
        )
        rows = txn.fetchall()
        self.execute(txn, f"SELECT application_id, username FROM application_admins {adminWhere}", params)
        admins: dict[str, list[str]] = {}
        for appId, username in txn.fetchall():
            admins.setdefault(appId, []).append(username)
        return [self.application(row, admins.get(row[0], ())) for row in rows]

    def updateApplication_txn(
        self,
        txn: Any,
        appId: str,
        name: str | None,
        admins: tuple[str, ...] | None,
        origins: tuple[str, ...] | None = None,
        history: HistoryLimits | None = None,
    ) -> Application:
        if name is not None:
            checkName(name)
        now = self.dialect.toDb(self.now())
        assignments = ["updated_at = ?"]
        params: list[Any] = [now]
        if name is not None:
            assignments.append("name = ?")
            params.append(name)
        if origins is not None:
            assignments.append("allowed_origins = ?")
            params.append(" ".join(origins))
        if history is not None:
            assignments += ["history_size = ?", "history_ttl = ?"]
            params += [history.size, history.ttl]
        self.execute(txn, f"UPDATE applications SET {', '.join(assignments)} WHERE id = ?", (*params, appId))
        if txn.rowcount == 0:
            raise NoSuchApplicationError(appId)
        if admins is not None:
            self.setAdmins_txn(txn, appId, admins)
        app = self.getApplication_txn(txn, appId)
        assert app is not None
        return app

    def deleteApplication_txn(self, txn: Any, appId: str) -> None:
        # Children first and explicitly: correct even where foreign keys are not enforced.
        self.execute(txn, "DELETE FROM keys WHERE application_id = ?", (appId,))
        endpoints = "SELECT id FROM webhooks WHERE application_id = ?"
        for table in ("webhook_outbox", "webhook_deliveries"):
            self.execute(txn, f"DELETE FROM {table} WHERE endpoint_id IN ({endpoints})", (appId,))
        self.execute(txn, "DELETE FROM webhooks WHERE application_id = ?", (appId,))
        self.execute(txn, "DELETE FROM application_admins WHERE application_id = ?", (appId,))
        self.execute(txn, "DELETE FROM applications WHERE id = ?", (appId,))
        if txn.rowcount == 0:
            raise NoSuchApplicationError(appId)

    def createKey_txn(
        self,
        txn: Any,
        appId: str,
        createdBy: str,
        purpose: str,
        expires: datetime.datetime | None,
        keyId: str,
        secret: str,
    ) -> Key:
        self.execute(txn, "SELECT 1 FROM applications WHERE id = ?" + self.dialect.lockRowSuffix, (appId,))
        if txn.fetchone() is None:
            raise NoSuchApplicationError(appId)
        self.execute(txn, "SELECT 1 FROM keys WHERE id = ?", (keyId,))
        if txn.fetchone() is not None:
            raise AlreadyExistsError(f"key {keyId} exists already")
        toDb = self.dialect.toDb
        now = toDb(self.now())
        self.execute(
            txn,
            f"INSERT INTO keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (keyId, appId, secret, toDb(expires), purpose, createdBy, now, now, None, 0, None),
        )
        key = self.getKey_txn(txn, keyId)
        assert key is not None
        return key

    def getKey_txn(self, txn: Any, keyId: str) -> Key | None:
        self.execute(txn, f"SELECT {_KEY_COLUMNS} FROM keys WHERE id = ?", (keyId,))
        row = txn.fetchone()
        return None if row is None else self.key(row)

    def listKeys_txn(self, txn: Any, appId: str) -> list[Key]:
        self.execute(
            txn, f"SELECT {_KEY_COLUMNS} FROM keys WHERE application_id = ? ORDER BY created_at, id", (appId,)
        )
        return [self.key(row) for row in txn.fetchall()]

    def revokeKey_txn(self, txn: Any, keyId: str) -> Key:
        now = self.dialect.toDb(self.now())
        self.execute(
            txn,
            "UPDATE keys SET revoked_at = ?, updated_at = ? WHERE id = ? AND revoked_at IS NULL",
            (now, now, keyId),
        )
        key = self.getKey_txn(txn, keyId)
        if key is None:
            raise NoSuchKeyError(keyId)
        return key

    def deleteKey_txn(self, txn: Any, keyId: str) -> None:
        self.execute(txn, "DELETE FROM keys WHERE id = ?", (keyId,))
        if txn.rowcount == 0:
            raise NoSuchKeyError(keyId)

    def recordKeyUsage_txn(self, txn: Any, rows: list[tuple[int, Any, str]]) -> None:
        # Sorted by key id above, so concurrent batches lock rows in the same order.
        for count, lastUsed, keyId in rows:
            self.execute(
                txn,
                "UPDATE keys SET use_count = use_count + ?,"
                " last_used = CASE WHEN last_used IS NULL OR last_used < ? THEN ? ELSE last_used END"
                " WHERE id = ?",
                (count, lastUsed, lastUsed, keyId),
            )

    def getOrCreateKey_txn(self, txn: Any, appId: str, purpose: str, createdBy: str) -> Key:
        # Locking the application row (PostgreSQL; SQLite's BEGIN IMMEDIATE locks the
        # database) keeps two nodes from each creating a console key at once.
        self.execute(txn, "SELECT 1 FROM applications WHERE id = ?" + self.dialect.lockRowSuffix, (appId,))
        if txn.fetchone() is None:
            raise NoSuchApplicationError(appId)
        self.execute(
            txn,
            f"SELECT {_KEY_COLUMNS} FROM keys WHERE application_id = ? AND purpose = ?"
            " AND revoked_at IS NULL AND (expires IS NULL OR expires > ?) ORDER BY created_at, id",
            (appId, purpose, self.dialect.toDb(self.now())),
        )
        row = txn.fetchone()
        if row is not None:
            return self.key(row)
        return self.createKey_txn(txn, appId, createdBy, purpose, None, ids.newKeyId(), ids.newSecret())
