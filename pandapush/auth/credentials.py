"""``twisted.cred`` credentials for the ways a client proves who it is.

Channel credentials are scoped to the application named by the channel: a key of
another application must be refused exactly like an unknown key, so the
application id travels with the credentials to the checker. Admin users use
twisted's own :class:`~twisted.cred.credentials.UsernamePassword`.
"""

from __future__ import annotations

from twisted.cred.credentials import ICredentials
from zope.interface import Attribute, implementer

__all__ = ["BearerToken", "IBearerToken", "IKeySecret", "KeySecret"]


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
        from pandapush.auth.rules import secretsEqual

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
