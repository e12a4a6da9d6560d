"""``twisted.cred`` credentials for the ways a client proves who it is.

Channel credentials are scoped to the application named by the channel: a key of
another application must be refused exactly like an unknown key, so the
application id travels with the credentials to the checker. Admin users use
twisted's own :class:`~twisted.cred.credentials.UsernamePassword`.

Reading credentials is pure here: :func:`parseBasic` and :func:`channelCredentials`
take the text of an ``Authorization`` header (and a ``?token=``), never a request;
:mod:`pandapush.web.http` hands them what a request carries.
"""

from __future__ import annotations

import base64
import binascii

from twisted.cred.credentials import ICredentials
from zope.interface import Attribute, implementer

from pandapush.auth.rules import MAX_TOKEN_LENGTH, secretsEqual

__all__ = ["BearerToken", "IBearerToken", "IKeySecret", "KeySecret", "channelCredentials", "parseBasic"]


class IKeySecret(ICredentials):
    """A key id and its secret (server-side publishers), for one application's channels."""

    appId = Attribute("The application whose channel is being used.")
    keyId = Attribute("The key's id (``PSID...``).")

    def checkSecret(secret: str) -> bool:
        """Whether the supplied secret equals ``secret`` (in constant time)."""


class IBearerToken(ICredentials):
    """A JWT signed with one of the application's keys (browsers)."""

    appId = Attribute("The application whose channel is being used.")
    token = Attribute("The encoded JWT, unverified.")


@implementer(IKeySecret)
class KeySecret:
    """Key+secret; the secret stays private to this object (``repr`` hides it)."""

    def __init__(self, appId: str, keyId: str, secret: str) -> None:
        self.appId = appId
        self.keyId = keyId
        self._secret = secret

    def checkSecret(self, secret: str) -> bool:
        return secretsEqual(self._secret, secret)

    def __repr__(self) -> str:
        return f"KeySecret(appId={self.appId!r}, keyId={self.keyId!r})"


@implementer(IBearerToken)
class BearerToken:
    """A bearer JWT for an application's channel."""

    def __init__(self, appId: str, token: str) -> None:
        self.appId = appId
        self.token = token

    def __repr__(self) -> str:
        return f"BearerToken(appId={self.appId!r})"


def parseBasic(authorization: str | None) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization: Basic`` value, or None if absent or malformed."""
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


def channelCredentials(
    appId: str, authorization: str | None, token: str | None = None
) -> KeySecret | BearerToken | None:
    """
    The credentials of a REST publish, for the channel's application: ``token`` (a
    ``?token=``) first, as upstream, then ``Authorization: Basic <keyId:secret>``, then
    ``Authorization: Token <jwt>`` or ``Bearer <jwt>``. None if there are none.
    """
    if token:
        # Cut just past the longest token accepted: enough to refuse it as too long.
        return BearerToken(appId, token[: MAX_TOKEN_LENGTH + 1])
    basic = parseBasic(authorization)
    if basic is not None:
        return KeySecret(appId, basic[0], basic[1])
    if authorization is None:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() in ("token", "bearer") and value:
        return BearerToken(appId, value)
    return None
