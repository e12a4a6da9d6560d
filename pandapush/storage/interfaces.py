"""The storage contract: applications, their admins and keys, behind one interface.

Every method answers with a :class:`~twisted.internet.defer.Deferred` and none may
block the reactor: relational backends run their queries in a thread pool
(``adbapi.ConnectionPool``). Lookups that find nothing answer ``None``; changes to
something missing fail with :class:`~pandapush.storage.errors.NotFoundError`.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from pandapush.storage.models import Application, HistoryLimits, Key

__all__ = ["IStorage", "IStorageFactory", "KeyUsageBatch"]

#: ``{keyId: (uses since the last write, time of the latest use)}``
KeyUsageBatch = Mapping[str, tuple[int, datetime.datetime]]


class IStorage(Interface):
    """Applications, admins and keys. Times are timezone-aware UTC datetimes."""

    name = Attribute("The backend's name as configured: 'memory', 'sqlite', 'postgres' or a plugin's.")

    # lifecycle

    def start() -> Deferred[None]:
        """
        Make the storage ready. SQLite migrates its schema here; PostgreSQL checks
        that its schema is current and fails with ``SchemaOutOfDateError`` if not.
        """

    def close() -> Deferred[None]:
        """Release connections and threads. Nothing may be called afterwards."""

    def migrate() -> Deferred[list[int]]:
        """Bring the schema to the latest version; the versions applied (none if current). Idempotent."""

    def schemaVersion() -> Deferred[int]:
        """The schema version the database is at (0 for an empty database)."""

    # applications

    def createApplication(
        name: str, createdBy: str, admins: Iterable[str] = (), applicationId: str | None = None
    ) -> Deferred[Application]:
        """
        A new application. ``applicationId`` is for seeding a known id (``DEV_APPLICATION_ID``);
        normally a fresh one is generated. Fails with ``AlreadyExistsError`` if the id is taken.
        """

    def getApplication(applicationId: str) -> Deferred[Application | None]:
        """The application with its admins, or None."""

    def listApplications() -> Deferred[list[Application]]:
        """Every application, oldest first."""

    def listApplicationsAdministeredBy(username: str) -> Deferred[list[Application]]:
        """The applications ``username`` is an admin of, oldest first."""

    def updateApplication(
        applicationId: str,
        name: str | None = None,
        admins: Iterable[str] | None = None,
        allowedOrigins: Iterable[str] | None = None,
        history: HistoryLimits | None = None,
    ) -> Deferred[Application]:
        """
        Rename, replace the admin set, the allowed origins and/or the history limits, in
        one transaction (all or nothing). ``None`` leaves that part alone; an empty
        ``allowedOrigins`` lifts the application's own restriction; ``history`` replaces
        both limits (a None in it: the server's default; out of range: ``ValueError``).
        Origins are normalised (``scheme://host[:port]``, lower case); one that is not an
        origin fails with ``ValueError``, as an empty name does. Fails with
        ``NoSuchApplicationError``.
        """

    def deleteApplication(applicationId: str) -> Deferred[None]:
        """Delete the application, its admins and its keys. Fails with ``NoSuchApplicationError``."""

    # keys

    def createKey(
        applicationId: str,
        createdBy: str,
        purpose: str = "",
        expires: datetime.datetime | None = None,
        keyId: str | None = None,
        secret: str | None = None,
    ) -> Deferred[Key]:
        """
        A new key for the application. Its secret is in the answer: show it once, it is
        never listed again. ``keyId``/``secret`` are for seeding known values
        (``DEV_KEY_ID``/``DEV_KEY_SECRET``). Fails with ``NoSuchApplicationError``, or
        ``AlreadyExistsError`` if the key id is taken.
        """

    def getKey(keyId: str) -> Deferred[Key | None]:
        """The key (with its secret, for checking), or None. The auth layer caches this."""

    def listKeys(applicationId: str) -> Deferred[list[Key]]:
        """
        The application's keys, oldest first, revoked ones included. The records carry
        secrets: show them through ``Key.publicDict()``.
        """

    def revokeKey(keyId: str) -> Deferred[Key]:
        """
        Mark the key revoked now (a second revoke keeps the first time). Fails with
        ``NoSuchKeyError``. Callers must also invalidate the auth layer's key cache.
        """

    def deleteKey(keyId: str) -> Deferred[None]:
        """Delete the key. Fails with ``NoSuchKeyError``."""

    def recordKeyUsage(usage: KeyUsageBatch) -> Deferred[None]:
        """
        Add counted uses in one write: ``use_count += count`` and ``last_used`` moves
        forward (never back). Ids of keys deleted meanwhile are ignored.
        """

    def getOrCreateKey(applicationId: str, purpose: str, createdBy: str) -> Deferred[Key]:
        """
        A usable (unrevoked, unexpired) key of the application with this purpose,
        created when there is none; for the admin "web console" key that signs tokens
        minted in the UI. Fails with ``NoSuchApplicationError``.
        """


class IStorageFactory(Interface):
    """
    Builds a storage backend by name. Third-party backends provide this (as a
    ``pandapush.storage`` entry point, or a Twisted plugin in ``pandapush.storage.plugins``)
    and are then chosen with ``DATABASE=<name>``.
    """

    name = Attribute("The name ``DATABASE`` selects this backend by, e.g. 'mybackend'.")
    description = Attribute("One line for humans.")

    def makeStorage(config: Any) -> IStorage:
        """A new, not yet started, storage from a ``pandapush.storage.StorageConfig``."""
