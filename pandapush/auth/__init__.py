"""Tenancy: who may subscribe and publish on which application's channels, and who administers them.

- :mod:`pandapush.auth.rules`: the contract's channel rules and ordered error texts (pure);
- :mod:`pandapush.auth.bearer`: JWT reading and verification (HS256/384/512 only);
- :mod:`pandapush.auth.credentials`, :mod:`pandapush.auth.checkers`: ``twisted.cred``
  credentials, checkers and realm, and :class:`ChannelAuthority` over them;
- :mod:`pandapush.auth.keycache`: keys in memory, invalidation hooks, batched usage;
- :mod:`pandapush.auth.tenancy`: the Bayeux extension;
- :mod:`pandapush.auth.admin`, :mod:`pandapush.auth.throttle`: who the admins are, their
  password check, the failed-login throttle (the HTTP side is :mod:`pandapush.web.adminauth`);
- :func:`makeTenancy` builds all of it, with the REST publish and admin Klein apps.
"""

from pandapush.auth.admin import AdminAuthError, AdminUser
from pandapush.auth.checkers import AuthRefused, ChannelAuthority
from pandapush.auth.config import TenancyConfig
from pandapush.auth.credentials import BearerToken, IBearerToken, IKeySecret, KeySecret
from pandapush.auth.keycache import KeyCache, KeyUsageFlusher
from pandapush.auth.rules import PUBLISH, SUBSCRIBE, Allowed, Refusal
from pandapush.auth.tenancy import TenancyExtension
from pandapush.auth.wiring import Tenancy, makeTenancy

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
    "Tenancy",
    "TenancyConfig",
    "TenancyExtension",
    "makeTenancy",
]
