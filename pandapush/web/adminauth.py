"""Who may use the admin API and UI: pluggable admin auth methods, over HTTP.

An admin auth method is an :class:`IAdminAuth`: it names the admin behind a request
(or nobody) and answers a request that named nobody (a Basic challenge, a redirect to
a login page, a refusal). Built in, chosen by ``AUTH_METHOD``:

- ``basic``: HTTP Basic against ``ADMIN_USERNAME``/``ADMIN_PASSWORD``, through
  ``twisted.cred`` (:class:`~pandapush.auth.admin.AdminPasswordChecker` compares in
  constant time). With no credentials configured (and ``AUTH_METHOD`` unset or
  ``basic``), the password generated once by
  :func:`~pandapush.auth.admin.firstRunPassword`; :func:`adminLoginBanner` is what
  the server logs at start.
- ``none``: the admin area is closed (every request refused), as upstream did when
  admin auth was not configured.
- ``oidc``: OpenID Connect single sign-on (:mod:`pandapush.web.oidc`), a plugin like any
  other (built on this module's public interfaces only) that ships with pandapush and is
  found by its name, imported only when chosen.
- anything else: an :class:`IAdminAuthPlugin` of that ``name``, found with
  ``twisted.plugin.getPlugins`` (drop-in modules in ``twisted/plugins/``) or the
  ``pandapush.admin_auth`` entry point group, checked with ``verifyObject``.
  ``AUTH_METHOD=plugins`` takes the one plugin installed.

A method whose login happens in pages of its own (a redirect to an identity provider and
back) also provides :class:`IAdminAuthPages`: its resource answers ``/admin/auth/...``
before any admin auth check, and the console learns from ``/admin/api/info`` where to
sign in again and out (:meth:`AdminAuthority.consoleAuth`).

This is web's side of admin auth: methods read requests and answer them. Who the
admins are, and the password check and login throttle they rely on, are
:mod:`pandapush.auth.admin` and :mod:`pandapush.auth.throttle`, free of HTTP.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from zope.interface import Attribute, Interface, implementer
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from pandapush.auth.admin import (
    DEFAULT_ADMIN,
    PASSWORD_FILE,
    AdminAuthError,
    AdminLogin,
    AdminPasswordChecker,
    AdminUser,
    adminLogin,
    adminPortal,
    firstRunPassword,
)
from pandapush.auth.config import TenancyConfig
from pandapush.auth.throttle import LoginThrottle, LoginThrottledError, parseTrustedProxies
from pandapush.web.http import ProxyTrust, basicCredentials, errorBody, header, jsonResponse

__all__ = [
    "AUTH_PAGES_PREFIX",
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "AdminAuthority",
    "BasicAdminAuth",
    "ClosedAdminAuth",
    "IAdminAuth",
    "IAdminAuthPages",
    "IAdminAuthPlugin",
    "adminLoginBanner",
    "adminLoginInfo",
    "findAdminAuthPlugins",
    "makeAdminAuthority",
    "prefersPage",
    "throttledAnswer",
]

ENTRY_POINT_GROUP = "pandapush.admin_auth"
#: Where an :class:`IAdminAuthPages` method's own pages are served.
AUTH_PAGES_PREFIX = b"/admin/auth"
#: Admin auth plugins that ship with pandapush: ``AUTH_METHOD`` name -> ``module:object``,
#: imported only when chosen (their libraries are an optional extra).
BUILTIN_PLUGINS: dict[str, str] = {"oidc": "pandapush.web.oidc:oidcAdminAuth"}

_log = Logger()


class IAdminAuth(Interface):
    """One way of telling who is using the admin area."""

    name = Attribute("Short name, as given to AUTH_METHOD.")

    def authenticate(request: IRequest) -> Deferred[str | None]:
        """The admin's user name, or None if the request does not identify one."""

    def challenge(request: IRequest) -> bytes:
        """Answer a request that identified nobody (set the code and headers; return the body)."""


class IAdminAuthPages(Interface):
    """
    Optional, beside :class:`IAdminAuth`: a method whose login happens in pages of its own
    (a redirect to an identity provider and back, a sign-out). Every request under
    ``/admin/auth`` (:data:`AUTH_PAGES_PREFIX`) goes to :meth:`pages`, before and without
    any admin auth check; the console reads :attr:`signInPath` and :attr:`signOutPath` from
    ``/admin/api/info`` (``auth``).
    """

    signInPath = Attribute(
        "Path (under /admin/auth) a browser is sent to, with ?next=<path under /admin>, to sign"
        " in (again, once its session ended)."
    )
    signOutPath = Attribute(
        "Path (under /admin/auth) the console POSTs to, with Content-Type: application/json, to"
        ' sign out; it answers {"redirect": <url>}, where the browser goes next. None: no sign-out.'
    )

    def pages() -> Any:
        """The leaf ``IResource`` answering ``/admin/auth`` and below (it sees the whole path)."""


class IAdminAuthPlugin(Interface):
    """A third-party admin auth method, found as a plugin or an entry point."""

    name = Attribute("The AUTH_METHOD value that selects it.")
    description = Attribute("One line for humans.")

    def makeAdminAuth(config: TenancyConfig) -> IAdminAuth:
        """Build the method from the configuration (raise AdminAuthError if unusable)."""


@implementer(IAdminAuth)
class BasicAdminAuth:
    """HTTP Basic through a cred portal."""

    name = "basic"

    def __init__(self, checkers: Iterable[ICredentialsChecker], realmName: str = "pandapush admin") -> None:
        self.portal = adminPortal(checkers)
        self.realmName = realmName

    def authenticate(self, request: IRequest) -> Deferred[str | None]:
        basic = basicCredentials(request)
        if basic is None:
            return defer.succeed(None)
        return adminLogin(self.portal, *basic)

    def challenge(self, request: IRequest) -> bytes:
        request.setHeader(b"WWW-Authenticate", f'Basic realm="{self.realmName}"'.encode())
        return jsonResponse(request, 401, errorBody(401, "Admin login required"))


@implementer(IAdminAuth)
class ClosedAdminAuth:
    """``AUTH_METHOD=none``: nobody gets in (the admin area is off)."""

    name = "none"

    def authenticate(self, request: IRequest) -> Deferred[str | None]:
        return defer.succeed(None)

    def challenge(self, request: IRequest) -> bytes:
        return jsonResponse(request, 403, errorBody(403, "The admin area is disabled (AUTH_METHOD=none)"))


def findAdminAuthPlugins(package: Any = None) -> dict[str, Any]:
    """
    Admin auth plugins by name: ``getPlugins(IAdminAuthPlugin, package)`` (default
    ``twisted.plugins``) and the ``pandapush.admin_auth`` entry points. Anything that
    does not provide :class:`IAdminAuthPlugin` is refused with a logged reason.
    """
    from twisted.plugin import getPlugins

    candidates: list[tuple[str, Any]] = []
    if package is None:
        import twisted.plugins as package
    for plugin in getPlugins(IAdminAuthPlugin, package):
        candidates.append((repr(plugin), plugin))
    try:
        from importlib.metadata import entry_points

        for entryPoint in entry_points(group=ENTRY_POINT_GROUP):
            try:
                loaded = entryPoint.load()
            except Exception:
                _log.failure("could not load admin auth entry point {name}", name=entryPoint.name)
                continue
            candidates.append(
                (f"entry point {entryPoint.name}", loaded() if isinstance(loaded, type) else loaded)
            )
    except Exception:
        _log.failure("could not list admin auth entry points")
    found: dict[str, Any] = {}
    for origin, plugin in candidates:
        try:
            verifyObject(IAdminAuthPlugin, plugin)
        except Invalid as reason:
            _log.error("ignoring admin auth plugin {origin}: {reason}", origin=origin, reason=str(reason))
            continue
        found[str(plugin.name).lower()] = plugin
    return found


class AdminAuthority:
    """
    An admin auth method plus the root admin list: who is this, and are they root.

    With a ``throttle`` (:class:`~pandapush.auth.throttle.LoginThrottle`; every
    authority :func:`makeAdminAuthority` builds has one), failed logins are counted per
    client address and per Basic user name, and once they are too many
    :meth:`authenticate` fails with :class:`~pandapush.auth.throttle.LoginThrottledError`
    before the method even looks at the credentials; callers answer that with
    :func:`throttledAnswer` (429). Whatever the method, a request counts as a failed
    login when it carried an ``Authorization`` header and named nobody.
    """

    def __init__(
        self,
        method: IAdminAuth,
        rootAdmins: Iterable[str] = (),
        login: AdminLogin | None = None,
        throttle: LoginThrottle | None = None,
        proxies: ProxyTrust | None = None,
    ) -> None:
        self.method = method
        self.rootAdmins = frozenset(rootAdmins)
        self.login = login
        self.throttle = throttle
        self.proxies = proxies or ProxyTrust()

    def _throttleKeys(self, request: IRequest) -> list[str]:
        keys = ["ip:" + self.proxies.clientAddress(request)]
        basic = basicCredentials(request)
        if basic is not None:
            keys.append("user:" + basic[0])
        return keys

    def authenticate(self, request: IRequest) -> Deferred[AdminUser | None]:
        throttle = self.throttle
        keys = self._throttleKeys(request) if throttle is not None else []
        if throttle is not None:
            try:
                throttle.check(keys)
            except LoginThrottledError:
                return defer.fail()
        presented = header(request, b"authorization") is not None

        def named(username: str | None) -> AdminUser | None:
            if not username:
                if throttle is not None and presented:
                    throttle.failed(keys)
                return None
            if throttle is not None:
                throttle.succeeded([keys[0], "user:" + username, *keys[1:]])
            return AdminUser(username, username in self.rootAdmins)

        return defer.maybeDeferred(self.method.authenticate, request).addCallback(named)

    def challenge(self, request: IRequest) -> bytes:
        return self.method.challenge(request)

    def pages(self) -> IAdminAuthPages | None:
        """The method's own pages, if it has any (:class:`IAdminAuthPages`)."""
        return IAdminAuthPages(self.method, None)

    def consoleAuth(self) -> dict[str, Any]:
        """
        What the console needs to know about the login (``/admin/api/info``'s ``auth``):
        ``{"method", "signIn", "signOut"}``, the paths None for methods without pages
        (a Basic login is the browser's: there is nothing to sign out of).
        """
        pages = self.pages()
        return {
            "method": str(self.method.name),
            "signIn": pages.signInPath if pages is not None else None,
            "signOut": pages.signOutPath if pages is not None else None,
        }


def prefersPage(request: IRequest) -> bool:
    """
    Whether ``request`` is a browser loading a page (``Accept`` names ``text/html`` at least
    as high as ``application/json``), which should get something a person can read,
    rather than a program (``fetch`` sends ``*/*``, API clients ``application/json``),
    which should get JSON. Anything under ``/admin/api`` is a program's.
    """
    path = request.path or b""
    if path == b"/admin/api" or path.startswith(b"/admin/api/"):
        return False
    text = header(request, b"accept")
    if not text:
        return False
    weights: dict[str, float] = {}
    for part in text.split(",")[:50]:
        mediaType, *parameters = (piece.strip() for piece in part.split(";"))
        weight = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        mediaType = mediaType.lower()
        weights[mediaType] = max(weight, weights.get(mediaType, 0.0))
    html = weights.get("text/html", 0.0)
    return html > 0 and html >= weights.get("application/json", 0.0)


def throttledAnswer(request: IRequest, throttled: LoginThrottledError) -> bytes:
    """``429 Too Many Requests`` with ``Retry-After``, and no challenge (a browser would re-prompt)."""
    request.setHeader(b"Retry-After", throttled.retryAfterHeader)
    seconds = throttled.retryAfterHeader.decode("ascii")
    return jsonResponse(
        request, 429, errorBody(429, f"Too many failed logins; try again in {seconds} seconds")
    )


def makeAdminAuthority(
    config: TenancyConfig, pluginPackage: Any = None, clock: IReactorTime | None = None
) -> AdminAuthority:
    """
    The admin authority ``config`` asks for (see the module docstring), throttling
    failed logins on ``clock`` (default: the reactor).
    """
    if clock is None:
        from twisted.internet import reactor

        clock = reactor  # type: ignore[assignment]
    assert clock is not None
    throttle = LoginThrottle(clock)
    proxies = ProxyTrust(parseTrustedProxies(config.trustedProxies))
    method = config.authMethod
    roots = set(config.rootAdmins)
    if method in (None, "basic"):
        username = config.adminUsername or DEFAULT_ADMIN
        password = config.adminPassword
        if password is None:
            password, _ = firstRunPassword(config.dataDir)
            login = AdminLogin(username, password, True, os.path.join(config.dataDir, PASSWORD_FILE))
        else:
            login = AdminLogin(username, password, False)
        roots.add(username)
        checker = AdminPasswordChecker({username: password})
        return AdminAuthority(BasicAdminAuth([checker]), roots, login, throttle, proxies)
    if method == "none":
        return AdminAuthority(ClosedAdminAuth(), roots, None, throttle, proxies)
    if method in BUILTIN_PLUGINS:
        return _fromPlugin(_builtinPlugin(method), config, roots, throttle, proxies)
    plugins = findAdminAuthPlugins(pluginPackage)
    if method == "plugins":
        if len(plugins) != 1:
            raise AdminAuthError(
                "AUTH_METHOD=plugins needs exactly one admin auth plugin installed;"
                f" found {sorted(plugins) or 'none'} (set AUTH_METHOD to one of their names)"
            )
        (plugin,) = plugins.values()
    else:
        plugin = plugins.get(method)
        if plugin is None:
            raise AdminAuthError(
                f"unknown AUTH_METHOD {method!r}: use basic, none, oidc, or an installed plugin"
                f" ({', '.join(sorted(plugins)) or 'none installed'})"
            )
    return _fromPlugin(plugin, config, roots, throttle, proxies)


def _builtinPlugin(name: str) -> Any:
    """The built-in plugin ``name`` (:data:`BUILTIN_PLUGINS`), checked like any other."""
    import importlib

    moduleName, _, attribute = BUILTIN_PLUGINS[name].partition(":")
    plugin = getattr(importlib.import_module(moduleName), attribute)
    try:
        verifyObject(IAdminAuthPlugin, plugin)
    except Invalid as reason:
        raise AdminAuthError(f"built-in admin auth plugin {name!r} is broken: {reason}") from None
    return plugin


def _fromPlugin(
    plugin: Any, config: TenancyConfig, roots: set[str], throttle: LoginThrottle, proxies: ProxyTrust
) -> AdminAuthority:
    adminAuth = plugin.makeAdminAuth(config)
    try:
        verifyObject(IAdminAuth, adminAuth)
        if IAdminAuthPages.providedBy(adminAuth):
            verifyObject(IAdminAuthPages, adminAuth)
    except Invalid as reason:
        raise AdminAuthError(f"admin auth plugin {plugin.name!r} built an invalid method: {reason}") from None
    return AdminAuthority(adminAuth, roots, None, throttle, proxies)


def adminLoginInfo(authority: AdminAuthority, baseURL: str) -> dict[str, Any] | None:
    """
    ``{"url", "username", "password", "generated", "passwordFile"}`` for the built-in
    Basic admin (``password`` only when generated: a configured one is the
    operator's and is not repeated), or None for other methods.
    """
    login = authority.login
    if login is None:
        return None
    return {
        "url": baseURL.rstrip("/") + "/admin",
        "username": login.username,
        "password": login.password if login.generated else None,
        "generated": login.generated,
        "passwordFile": login.passwordFile,
    }


def adminLoginBanner(authority: AdminAuthority, baseURL: str) -> str | None:
    """
    One line for the server to log at start (as Jupyter prints its token): the admin
    URL and, when the password was generated, the user name, password and file.
    """
    info = adminLoginInfo(authority, baseURL)
    if info is None:
        return None
    if not info["generated"]:
        return f"Admin UI at {info['url']} (user {info['username']!r}, password from ADMIN_PASSWORD)"
    return (
        f"Admin UI at {info['url']} -- user: {info['username']}  password: {info['password']}"
        f"  (generated once, kept in {info['passwordFile']}; set ADMIN_USERNAME/ADMIN_PASSWORD"
        " or AUTH_METHOD to change)"
    )
