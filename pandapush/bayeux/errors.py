"""Bayeux error strings: ``code:arg1,arg2:message``."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["BayeuxError", "formatError"]


class BayeuxError(Exception):
    """A refusal with a Bayeux error code, carried into a reply's ``error`` field."""

    VERSION_MISMATCH = 300
    CONNTYPE_MISMATCH = 301
    EXTENSION_MISMATCH = 302
    BAD_REQUEST = 400
    CLIENT_UNKNOWN = 401
    PARAMETER_MISSING = 402
    CHANNEL_FORBIDDEN = 403
    CHANNEL_UNKNOWN = 404
    CHANNEL_INVALID = 405
    EXT_UNKNOWN = 406
    PUBLISH_FAILED = 407
    SERVER_ERROR = 500

    def __init__(self, code: int, params: list[Any] | tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.code = code
        self.params = [p if isinstance(p, str) else _paramText(p) for p in params]
        self.message = message

    def __str__(self) -> str:
        return formatError(self.code, self.params, self.message)

    @classmethod
    def versionMismatch(cls, *params: Any) -> BayeuxError:
        return cls(cls.VERSION_MISMATCH, params, "Version mismatch")

    @classmethod
    def conntypeMismatch(cls, *params: Any) -> BayeuxError:
        return cls(cls.CONNTYPE_MISMATCH, params, "Connection types not supported")

    @classmethod
    def badRequest(cls, *params: Any) -> BayeuxError:
        return cls(cls.BAD_REQUEST, params, "Bad request")

    @classmethod
    def clientUnknown(cls, *params: Any) -> BayeuxError:
        return cls(cls.CLIENT_UNKNOWN, params, "Unknown client")

    @classmethod
    def parameterMissing(cls, *params: Any) -> BayeuxError:
        return cls(cls.PARAMETER_MISSING, params, "Missing required parameter")

    @classmethod
    def channelForbidden(cls, *params: Any) -> BayeuxError:
        return cls(cls.CHANNEL_FORBIDDEN, params, "Forbidden channel")

    @classmethod
    def channelUnknown(cls, *params: Any) -> BayeuxError:
        return cls(cls.CHANNEL_UNKNOWN, params, "Unknown channel")

    @classmethod
    def channelInvalid(cls, *params: Any) -> BayeuxError:
        return cls(cls.CHANNEL_INVALID, params, "Invalid channel")

    @classmethod
    def extUnknown(cls, *params: Any) -> BayeuxError:
        return cls(cls.EXT_UNKNOWN, params, "Unknown extension")

    @classmethod
    def publishFailed(cls, *params: Any) -> BayeuxError:
        return cls(cls.PUBLISH_FAILED, params, "Failed to publish")

    @classmethod
    def serverError(cls, *params: Any) -> BayeuxError:
        return cls(cls.SERVER_ERROR, params, "Internal server error")


def _paramText(value: Any) -> str:
    # Parameters echo what the client sent; anything that is not a string (a
    # hostile ``"clientId": {}``) is not worth echoing back.
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return ""


#: What a parameter may not hold as it is: the grammar's own separators, the escape, and
#: line breaks and other control characters. Parameters echo what the client sent (an
#: invalid channel name, an unknown client id), and ``405::\n:Invalid channel`` (a channel
#: named ``:`` and a line break) was no longer ``code:params:message`` for any client that
#: parses it. No valid channel name or client id holds any of these.
_UNSAFE = re.compile(r"[%:,\x00-\x1f\x7f]")


def _escaped(match: re.Match[str]) -> str:
    return f"%{ord(match.group()):02X}"


def formatError(code: int, params: list[str] | tuple[str, ...], message: str) -> str:
    """``code:arg1,arg2:message``, each argument's unsafe characters percent-encoded."""
    text = ",".join(params)
    if _UNSAFE.search(text) is not None:
        text = ",".join(_UNSAFE.sub(_escaped, param) for param in params)
    return f"{code}:{text}:{message}"
