"""Who the admins are: the built-in admin's login, its password check, root admins.

The HTTP side (which ``AUTH_METHOD`` is used, reading a request, answering one that
named nobody, the login throttle's 429) is :mod:`pandapush.web.adminauth`; this
module is what it builds on, free of HTTP:

- :class:`AdminPasswordChecker`: a ``twisted.cred`` checker of admin user names and
  passwords, compared in constant time, behind :func:`adminPortal` / :func:`adminLogin`;
- :func:`firstRunPassword`: with no credentials configured (and ``AUTH_METHOD`` unset
  or ``basic``), a password generated once and kept in ``<data dir>/admin-password``
  (mode 0600) for user ``admin``, so a newcomer can log in;
- :class:`AdminUser`: who was let in. Root admins (``ROOT_ADMINS``, and the Basic
  admin user) see every application; other admins see the applications they administer.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import Interface, implementer

from pandapush.auth.rules import secretsEqual

__all__ = [
    "DEFAULT_ADMIN",
    "PASSWORD_FILE",
    "AdminAuthError",
    "AdminLogin",
    "AdminPasswordChecker",
    "AdminUser",
    "adminLogin",
    "adminPortal",
    "firstRunPassword",
]

PASSWORD_FILE = "admin-password"
DEFAULT_ADMIN = "admin"


class AdminAuthError(Exception):
    """Admin auth is configured in a way that cannot work (unknown method, bad plugin)."""


@dataclass(frozen=True)
class AdminLogin:
    """The built-in Basic admin's login, for the start banner (``repr`` hides the password)."""

    username: str
    password: str = field(repr=False)
    generated: bool
    passwordFile: str | None = None


@dataclass(frozen=True)
class AdminUser:
    """An authenticated admin; ``root`` sees and changes every application."""

    username: str
    root: bool


@implementer(ICredentialsChecker)
class AdminPasswordChecker:
    """
    Admin user names and passwords, compared in constant time: an unknown user costs
    the same comparison as a wrong password, so timing tells nothing.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)
        self._decoy = secrets.token_urlsafe(18)

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        username = _text(credentials.username)
        password = _text(credentials.password)
        expected = self._users.get(username)
        passwordOK = secretsEqual(password, expected if expected is not None else self._decoy)
        if expected is not None and passwordOK:
            return defer.succeed(username)
        return defer.fail(UnauthorizedLogin("wrong admin user name or password"))


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class IAdminName(Interface):
    """The avatar of an admin login: just the name."""


@implementer(IRealm)
class _AdminRealm:
    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple[Any, Any, Any]:
        return IAdminName, _text(avatarId), lambda: None


def adminPortal(checkers: Iterable[ICredentialsChecker]) -> Portal:
    """A ``twisted.cred`` portal whose avatars are admin names, over ``checkers``."""
    return Portal(_AdminRealm(), list(checkers))


def adminLogin(portal: Portal, username: str, password: str) -> Deferred[str | None]:
    """The admin's name if ``portal`` accepts ``username`` and ``password``, else None."""
    credentials = UsernamePassword(username.encode("utf-8"), password.encode("utf-8"))

    def refused(failure: Any) -> None:
        failure.trap(UnauthorizedLogin)
        return None

    return portal.login(credentials, None, IAdminName).addCallbacks(lambda result: result[1], refused)


def firstRunPassword(dataDir: str) -> tuple[str, bool]:
    """
    The generated admin password kept in ``<dataDir>/admin-password``, creating it
    (mode 0600, directory 0700) the first time. Returns ``(password, created)``.
    Runs once at start, so plain blocking file I/O is fine.
    """
    path = os.path.join(dataDir, PASSWORD_FILE)
    try:
        with open(path, encoding="utf-8") as existing:
            password = existing.read().strip()
        if password:
            return password, False
    except FileNotFoundError:
        pass
    os.makedirs(dataDir, mode=0o700, exist_ok=True)
    password = secrets.token_urlsafe(18)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process won the race (two nodes starting at once): use theirs.
        return firstRunPassword(dataDir)
    with os.fdopen(descriptor, "w", encoding="utf-8") as created:
        created.write(password + "\n")
    return password, True
