"""The ``oidc`` admin auth plugin object: light to import, the rest loaded when it is chosen."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from pandapush.auth.admin import AdminAuthError
from pandapush.web.adminauth import IAdminAuth, IAdminAuthPlugin
from pandapush.web.oidc.config import OIDCConfig

__all__ = ["OIDCAdminAuthPlugin", "oidcAdminAuth"]

_log = Logger(namespace="pandapush.web.oidc")

#: Providers that sign in anyone with an account of theirs: without OIDC_ALLOWED_DOMAINS,
#: every such person could sign in to the console (and create applications).
_PUBLIC_ISSUERS = ("https://accounts.google.com", "https://login.microsoftonline.com/common")


@implementer(IPlugin, IAdminAuthPlugin)
class OIDCAdminAuthPlugin:
    name = "oidc"
    description = "OpenID Connect single sign-on (Okta, Keycloak, Azure AD, Google, ...)"

    def makeAdminAuth(self, config: Any) -> IAdminAuth:
        oidc = OIDCConfig.fromEnvironment(getattr(config, "environ", None) or {})
        try:
            from pandapush.web.oidc.method import OIDCAdminAuth
        except ImportError as missing:
            raise AdminAuthError(
                f"AUTH_METHOD=oidc needs {missing.name or 'authlib'}: pip install 'pandapush[oidc]'"
            ) from None
        if not oidc.allowedDomains and oidc.issuer.rstrip("/").startswith(_PUBLIC_ISSUERS):
            _log.warn(
                "OIDC_ISSUER {issuer} signs in anyone with an account there; set OIDC_ALLOWED_DOMAINS",
                issuer=oidc.issuer,
            )
        spelled = sorted(name for name in getattr(config, "rootAdmins", ()) if name != name.lower())
        if oidc.claim == "email" and spelled:
            # Addresses are compared in lower case: these would never match anyone.
            _log.warn("with OIDC_CLAIM=email, write ROOT_ADMINS in lower case: {names}", names=spelled)
        _log.info(
            "admin sign-in through {issuer} (client {clientId}, admins named by {claim!r})",
            issuer=oidc.issuer,
            clientId=oidc.clientId,
            claim=oidc.claim,
        )
        return OIDCAdminAuth(oidc)


oidcAdminAuth = OIDCAdminAuthPlugin()  # noqa: N816 (as a drop-in names it)
