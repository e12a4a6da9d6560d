"""
``AUTH_METHOD=oidc``: OpenID Connect single sign-on for the admin console.

A generic OpenID Connect relying party (Okta, Keycloak, Azure AD / Entra ID, Google, any
provider with a discovery document), built as an admin auth plugin on the public plugin
interfaces of :mod:`pandapush.web.adminauth` and nothing private, the way a third-party
method would be:

- :mod:`.plugin`: the :class:`~pandapush.web.adminauth.IAdminAuthPlugin` (``oidcAdminAuth``),
  light to import; it reads ``OIDC_*`` (:mod:`.config`) from the configuration's
  environment and imports the rest only when chosen, so that authlib stays an optional
  extra (``pip install 'pandapush[oidc]'``).
- :mod:`.method`: the :class:`~pandapush.web.adminauth.IAdminAuth` (a signed session cookie
  names the admin) and :class:`~pandapush.web.adminauth.IAdminAuthPages` (sign in, the
  provider's callback, sign out, under ``/admin/auth/``).
- :mod:`.login`: the authorization code flow with PKCE, state and nonce, and the ID
  token's checks (authlib and joserfc do the OAuth and JOSE parts).
- :mod:`.provider`: the discovery document and signing keys, fetched with treq, cached,
  refreshed when a token names an unknown key.
- :mod:`.cookies`: HMAC-signed cookies with an expiry, one key per purpose.
- :mod:`.claims`: which admin the claims name (``OIDC_CLAIM``, ``email`` by default), and
  who may sign in at all.

``ROOT_ADMINS`` and each application's admins are matched against that name, as for
every method. Setting it up with each provider: ``docs/sso.md``.
"""

from pandapush.web.oidc.config import OIDCConfig, OIDCConfigError
from pandapush.web.oidc.plugin import OIDCAdminAuthPlugin, oidcAdminAuth

__all__ = ["OIDCAdminAuthPlugin", "OIDCConfig", "OIDCConfigError", "oidcAdminAuth"]
