"""HTTP helpers shared by the REST publish endpoint and the admin API.

Reading credentials out of a request (``Authorization: Basic|Token|Bearer``,
``?token=``) and answering with the JSON error shape both APIs use:
``{"code": <HTTP status>, "params": [], "message": <text>}``, the shape of a Faye
error object, so a client reads errors the same way over Bayeux and HTTP.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.web.iweb import IRequest

from pandapush.auth.credentials import BearerToken, KeySecret
from pandapush.auth.rules import MAX_TOKEN_LENGTH
from pandapush.bayeux import json

__all__ = [
    "basicCredentials",
    "channelCredentials",
    "errorBody",
    "header",
    "jsonResponse",
]


def header(request: IRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    if value is None:
        return None
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def basicCredentials(request: IRequest) -> tuple[str, str] | None:
    """``(user, password)`` from ``Authorization: Basic``, or None if absent or malformed."""
    authorization = header(request, b"authorization")
    if authorization is None:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    if not colon:
        return None
    return user, password


def channelCredentials(request: IRequest, appId: str) -> KeySecret | BearerToken | None:
    """
    The credentials of a REST publish, for the channel's application: ``?token=``
    first (as upstream), then ``Authorization: Basic <keyId:secret>``, then
    ``Authorization: Token <jwt>`` or ``Bearer <jwt>``. None if there are none.
    """
    # From the query string only: twisted's request.args also holds form body fields,
    # and a body field named "token" is data to publish, not credentials.
    query = urlsplit(request.uri).query
    if query:
        tokens = parse_qs(query, max_num_fields=100).get(b"token")
        if tokens and tokens[0]:
            return BearerToken(appId, tokens[0].decode("utf-8", "replace")[: MAX_TOKEN_LENGTH + 1])
    basic = basicCredentials(request)
    if basic is not None:
        return KeySecret(appId, basic[0], basic[1])
    authorization = header(request, b"authorization")
    if authorization is None:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() in ("token", "bearer") and value:
        return BearerToken(appId, value)
    return None


def errorBody(status: int, message: str, params: list[Any] | None = None) -> dict[str, Any]:
    return {"code": status, "params": params or [], "message": message}


def jsonResponse(request: IRequest, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(body)
