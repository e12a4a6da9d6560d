"""The exceptions a :class:`~pandapush_client.Client` raises.

Every failure of a call is a :class:`PandapushError`. A refusal by the server carries its
HTTP ``status`` and the server's error body (``{"code", "params", "message"}``, the shape of a
Faye error); a failure on the way (connection refused, reset, timed out) has ``status`` None.
Messages name the method and path of the request, never its headers: the key's secret travels
in ``Authorization`` and must not reach a log through an exception.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthError",
    "AuthenticationError",
    "BadRequestError",
    "ForbiddenError",
    "InvalidWebhookError",
    "NetworkError",
    "NotFoundError",
    "PandapushError",
    "RateLimitedError",
    "RequestTimeoutError",
    "ServerError",
    "UnavailableError",
    "errorForStatus",
]


class PandapushError(Exception):
    """
    A call failed. ``status`` is the HTTP status (None when no answer came), ``code`` the
    server's error code (the HTTP status too, today), ``message`` its text, ``params`` its
    parameters, ``method`` and ``path`` the request's, ``retry_after`` the seconds the server
    asked to wait (429, 503), if it did.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        params: list[Any] | None = None,
        method: str | None = None,
        path: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.code = code if code is not None else status
        self.params = list(params or [])
        self.method = method
        self.path = path
        self.retry_after = retry_after
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f" on {self.method} {self.path}" if self.method and self.path else ""
        if self.status is None:
            return f"{self.message}{where}"
        return f"HTTP {self.status}{where}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()!r})"


class AuthError(PandapushError):
    """The credentials were refused (401 or 403)."""


class AuthenticationError(AuthError):
    """401: no credentials the server could read."""


class ForbiddenError(AuthError):
    """403: the key, secret or token is wrong, expired or does not allow this (``Invalid secret``...)."""


class NotFoundError(PandapushError):
    """404: no such application, channel type or endpoint."""


class BadRequestError(PandapushError):
    """400, 413 and the other 4xx refusals: the request itself is wrong; sending it again will not help."""


class RateLimitedError(PandapushError):
    """429: past the key's publishes per second; ``retry_after`` says when to try again."""


class ServerError(PandapushError):
    """A 5xx answer."""


class UnavailableError(ServerError):
    """502, 503, 504: the server could not do it now (storage down, publish timed out); retried."""


class NetworkError(PandapushError):
    """No answer came: the connection could not be made, or broke. Retried."""


class RequestTimeoutError(NetworkError):
    """No answer came within the client's ``timeout``. Retried (with the same idempotency key)."""


class InvalidWebhookError(PandapushError):
    """A webhook request whose signature, key or body is not what pandapush sends."""


def errorForStatus(status: int) -> type[PandapushError]:
    """The exception class for an HTTP error status."""
    if status == 401:
        return AuthenticationError
    if status == 403:
        return ForbiddenError
    if status == 404:
        return NotFoundError
    if status == 429:
        return RateLimitedError
    if status in (502, 503, 504):
        return UnavailableError
    if status >= 500:
        return ServerError
    if 400 <= status < 500:
        return BadRequestError
    return PandapushError
