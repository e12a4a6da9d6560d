"""What storage calls fail with, so callers can tell "not found" from "database down"."""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "AlreadyExistsError",
    "NoSuchApplication",
    "NoSuchApplicationError",
    "NoSuchKey",
    "NoSuchKeyError",
    "NoSuchWebhookError",
    "NotFound",
    "NotFoundError",
    "SchemaOutOfDate",
    "SchemaOutOfDateError",
    "StorageConfigError",
    "StorageError",
    "StorageUnavailable",
    "StorageUnavailableError",
]


class StorageError(Exception):
    """Base class of the errors pandapush storage raises on purpose."""


class NotFoundError(StorageError, LookupError):
    """The application or key named does not exist (the admin API answers 404)."""


class NoSuchApplicationError(NotFoundError):
    """No application has this id."""


class NoSuchKeyError(NotFoundError):
    """No key has this id."""


class NoSuchWebhookError(NotFoundError):
    """No webhook endpoint with that id."""


class AlreadyExistsError(StorageError):
    """An application or key with the requested id exists already."""


class SchemaOutOfDateError(StorageError):
    """
    The database schema is not the version this pandapush expects.

    PostgreSQL is shared by several nodes and is migrated only when an operator says
    so (``pandapush migrate``), so a node refuses to start on an older schema rather
    than fail on its first query.
    """

    def __init__(self, current: int, expected: int, hint: str = "") -> None:
        self.current = current
        self.expected = expected
        if current < expected:
            message = (
                f"database schema is at version {current}, this pandapush needs version {expected}: "
                "run `pandapush migrate`"
            )
        else:
            message = (
                f"database schema is at version {current}, newer than this pandapush knows "
                f"(version {expected}): upgrade pandapush"
            )
        super().__init__(message + (f" ({hint})" if hint else ""))


class StorageUnavailableError(StorageError):
    """
    The database cannot be reached or did not answer in time (stopped, restarting,
    network gone). Nothing about the request is wrong: callers answer 503 and the
    client tries again later. ``reason`` says what the driver reported.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"storage unavailable: {reason}")
        self.reason = reason


class StorageConfigError(StorageError, ValueError):
    """The storage configuration names no usable backend, or a plugin is broken."""


# Shorter names, kept as aliases: code elsewhere (the admin API) reads better with them.
NotFound = NotFoundError
NoSuchApplication = NoSuchApplicationError
NoSuchKey = NoSuchKeyError
AlreadyExists = AlreadyExistsError
SchemaOutOfDate = SchemaOutOfDateError
StorageUnavailable = StorageUnavailableError
