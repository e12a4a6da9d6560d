"""Tenancy: who may subscribe and publish on which application's channels, and who administers them.

- :mod:`pandapush.auth.rules`: the contract's channel rules and ordered error texts (pure);
- :mod:`pandapush.auth.bearer`: JWT reading and verification (HS256/384/512 only);
- :mod:`pandapush.auth.credentials`, :mod:`pandapush.auth.checkers`: ``twisted.cred``
  credentials, checkers and realm, and :class:`ChannelAuthority` over them;
- :mod:`pandapush.auth.keycache`: keys in memory, invalidation hooks, batched usage;
- :mod:`pandapush.auth.tenancy`: the Bayeux extension;
- :mod:`pandapush.auth.origins`: each application's allowed origins (an extension too);
- :mod:`pandapush.auth.keysync`: key cache invalidations shared between nodes over Redis;
- :mod:`pandapush.auth.admin`, :mod:`pandapush.auth.throttle`: who the admins are, their
  password check, the failed-login throttle (the HTTP side is :mod:`pandapush.web.adminauth`);

``pandapush.tap.makeService`` puts the pieces together with the router and the site.
"""

from pandapush.auth.admin import AdminAuthError, AdminUser
from pandapush.auth.checkers import AuthRefused, ChannelAuthority
from pandapush.auth.config import TenancyConfig
from pandapush.auth.credentials import BearerToken, IBearerToken, IKeySecret, KeySecret
from pandapush.auth.keycache import KeyCache, KeyUsageFlusher
from pandapush.auth.rules import PUBLISH, SUBSCRIBE, Allowed, Refusal
from pandapush.auth.tenancy import TenancyExtension

__all__ = [
    "PUBLISH",
    "SUBSCRIBE",
    "AdminAuthError",
    "AdminUser",
    "Allowed",
    "AuthRefused",
    "BearerToken",
    "ChannelAuthority",
    "IBearerToken",
    "IKeySecret",
    "KeyCache",
    "KeySecret",
    "KeyUsageFlusher",
    "Refusal",
    "TenancyConfig",
    "TenancyExtension",
]
