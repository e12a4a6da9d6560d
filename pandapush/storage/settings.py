"""Settings every node on one database shares, by name (:class:`ISettingsStorage`).

A node's own directory is not shared: the generated admin password used to be kept in
``localdata/admin-password``, so two nodes on one PostgreSQL generated two passwords.
What all nodes must agree on lives here instead, in the database they share. Values
are short text; what is secret is stored hashed by its owner (``pandapush.auth.admin``).

Optional beside :class:`~pandapush.storage.interfaces.IStorage`: the built-in backends
provide it (:class:`SQLSettings` for SQLite and PostgreSQL, a dict in memory); a
plugin backend that does not is served as before (a file in ``PANDAPUSH_DATA_DIR``).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from zope.interface import Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from pandapush.storage._sql import Dialect

__all__ = ["ADMIN_PASSWORD_SETTING", "ISettingsStorage", "SQLSettings"]

#: The generated admin password's hash (``pandapush.auth.admin.hashPassword``).
ADMIN_PASSWORD_SETTING = "admin_password"


class ISettingsStorage(Interface):
    """Short named values shared by every node on the database."""

    def getSetting(name: str) -> Deferred[str | None]:
        """The value of ``name``, or None if it has none."""

    def addSetting(name: str, value: str) -> Deferred[str]:
        """
        Store ``value`` as ``name`` unless it has a value already; answer the value stored
        (another node's, when it was first: two nodes starting at once agree on one).
        """

    def setSetting(name: str, value: str) -> Deferred[None]:
        """Store ``value`` as ``name``, replacing any."""


def _get_txn(txn: Any, dialect: Dialect, name: str) -> str | None:
    txn.execute(dialect.sql("SELECT value FROM settings WHERE name = ?"), (name,))
    row = txn.fetchone()
    return None if row is None else str(row[0])


def _add_txn(txn: Any, dialect: Dialect, name: str, value: str, now: datetime.datetime) -> str:
    # ON CONFLICT DO NOTHING (SQLite 3.24+, PostgreSQL 9.5+): the first writer wins,
    # without an error in either database's log for the others.
    txn.execute(
        dialect.sql(
            "INSERT INTO settings (name, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING"
        ),
        (name, value, dialect.toDb(now)),
    )
    stored = _get_txn(txn, dialect, name)
    assert stored is not None
    return stored


def _set_txn(txn: Any, dialect: Dialect, name: str, value: str, now: datetime.datetime) -> None:
    txn.execute(
        dialect.sql(
            "INSERT INTO settings (name, value, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
        ),
        (name, value, dialect.toDb(now)),
    )


class SQLSettings:
    """The :class:`ISettingsStorage` half of ``SQLStorage`` (through its ``_run``)."""

    dialect: Dialect
    _run: Any
    _now: Any

    def getSetting(self, name: str) -> Deferred[str | None]:
        return self._run(False, _get_txn, self.dialect, name)  # type: ignore[no-any-return]

    def addSetting(self, name: str, value: str) -> Deferred[str]:
        return self._run(True, _add_txn, self.dialect, name, value, self._now())  # type: ignore[no-any-return]

    def setSetting(self, name: str, value: str) -> Deferred[None]:
        return self._run(True, _set_txn, self.dialect, name, value, self._now())  # type: ignore[no-any-return]
