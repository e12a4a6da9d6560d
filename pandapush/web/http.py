"""HTTP helpers of the REST publish endpoint and the admin area.

Answering with the JSON error shape both APIs use, ``{"code": <HTTP status>,
"params": [], "message": <text>}`` (the shape of a Faye error object, so a client
reads errors the same way over Bayeux and HTTP); handing what a request carries to
:mod:`pandapush.auth`'s pure credential parsers; and telling a request's client
behind trusted proxies. Request headers are read with the server's one
:func:`~pandapush.transports.http.header`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.web.iweb import IRequest

from pandapush.auth import credentials
from pandapush.auth.credentials import BearerToken, KeySecret
from pandapush.auth.throttle import Network
from pandapush.bayeux import json
from pandapush.transports.http import header

__all__ = [
    "ProxyTrust",
    "basicCredentials",
    "channelCredentials",
    "errorBody",
    "header",
    "jsonResponse",
]


def basicCredentials(request: IRequest) -> tuple[str, str] | None:
    """``(user, password)`` from the request's ``Authorization: Basic``, or None if absent or malformed."""
    return credentials.parseBasic(header(request, b"authorization"))


def channelCredentials(request: IRequest, appId: str) -> KeySecret | BearerToken | None:
    """
    The credentials of a REST publish (see :func:`pandapush.auth.credentials.channelCredentials`
    for which wins): ``?token=``, then the ``Authorization`` header.
    """
    # From the query string only: twisted's request.args also holds form body fields,
    # and a body field named "token" is data to publish, not credentials.
    token: str | None = None
    # Most POSTs carry no query string: no URL split for them.
    query = urlsplit(request.uri).query if b"?" in request.uri else b""
    if query:
        tokens = parse_qs(query, max_num_fields=100).get(b"token")
        if tokens and tokens[0]:
            token = tokens[0].decode("utf-8", "replace")
    authorization = header(request, b"authorization")
    if token or authorization is None or len(authorization) > _CREDENTIALS_LONGEST:
        return credentials.channelCredentials(appId, authorization, token)
    known = (appId, authorization)
    found = _CREDENTIALS.get(known, _UNKNOWN)
    if found is _UNKNOWN:
        found = credentials.channelCredentials(appId, authorization)
        if len(_CREDENTIALS) >= _CREDENTIALS_KEPT:
            _CREDENTIALS.clear()
        _CREDENTIALS[known] = found
    return found  # type: ignore[no-any-return]


#: (application, ``Authorization`` value) -> the credentials it gives: a publisher
#: sends the same header with every request, and decoding it (base64, UTF-8, splits)
#: and making the credentials was as much as the authorization decision itself. The
#: credentials are not changed by what checks them, so requests may share them.
#: Bounded (values are the client's to choose): emptied when full, values of at most
#: ``_CREDENTIALS_LONGEST`` characters (a key and secret is under 100; a token longer).
_CREDENTIALS: dict[tuple[str, str], Any] = {}
_CREDENTIALS_KEPT = 1024
_CREDENTIALS_LONGEST = 256
_UNKNOWN = object()


def errorBody(status: int, message: str, params: list[Any] | None = None) -> dict[str, Any]:
    return {"code": status, "params": params or [], "message": message}


def jsonResponse(request: IRequest, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(body)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


class ProxyTrust:
    """Tells a request's client address, believing ``X-Forwarded-For`` only from trusted proxies."""

    #: Answers of :meth:`trusts` kept per address text, at most this many.
    cacheSize = 4096

    def __init__(self, trustedProxies: Sequence[Network] = ()) -> None:
        self.trustedProxies = tuple(trustedProxies)
        self._trusted: dict[str, bool] = {}

    def trusts(self, text: str) -> bool:
        """Whether ``text`` is the address of a trusted proxy."""
        # Asked for every long-polling request and every connection: parsing the
        # address each time (ipaddress) cost 2 us, with no proxy to compare it to.
        if not self.trustedProxies:
            return False
        trusted = self._trusted.get(text)
        if trusted is None:
            address = _address(text)
            trusted = address is not None and any(address in network for network in self.trustedProxies)
            if len(self._trusted) >= self.cacheSize:
                self._trusted.clear()
            self._trusted[text] = trusted
        return trusted

    def clientAddress(self, request: IRequest) -> str:
        peer = getattr(request.getClientAddress(), "host", None) or "unknown"
        if not self.trustedProxies or not self.trusts(peer):
            return str(peer)
        forwarded: list[str] = []
        for line in request.requestHeaders.getRawHeaders(b"x-forwarded-for") or []:
            forwarded.extend(p.strip() for p in line.decode("latin-1").split(",") if p.strip())
        # Right to left: each trusted proxy appended the address it saw; the first
        # untrusted one is the client (anything left of it the client could have forged).
        for hop in reversed(forwarded):
            if not self.trusts(hop):
                return hop if _address(hop) is not None else str(peer)
        return forwarded[0] if forwarded else str(peer)
