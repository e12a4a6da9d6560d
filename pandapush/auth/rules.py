"""The channel rules of the tenancy contract, as pure functions (no I/O, no clock).

A tenancy channel is ``/<appId>/<public|private|presence|meta>/<path...>``. Whether an
operation on it is allowed is decided in steps, because one step (finding the key)
needs storage: :func:`parseChannel`, :func:`readAuth`, then, once the key is known,
:func:`checkKey` and :func:`checkGrant`. The steps return a :class:`Refusal` in the
order the contract lists the texts, so when several things are wrong with a request
the client always reads the same, first, reason.

Token channels are matched by segments (:func:`tokenCovers`): upstream matched ``/**``
as a string prefix (a token for ``/app/private/a/**`` opened ``/app/private/ab``) and let
a ``/*`` token subscribe to ``/**``; both holes are closed here.
"""

from __future__ import annotations

import enum
import hmac
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CHANNEL_TYPES",
    "MAX_TOKEN_LENGTH",
    "PUBLISH",
    "QUERY",
    "SUBSCRIBE",
    "Allowed",
    "KeyAuth",
    "KeyFacts",
    "Refusal",
    "TenantChannel",
    "TokenAuth",
    "checkGrant",
    "checkKey",
    "isWildcard",
    "needsAuth",
    "parseChannel",
    "readAuth",
    "secretsEqual",
    "tokenCovers",
]

PUBLISH = "publish"
SUBSCRIBE = "subscribe"
#: Reading a channel's counts or members (the server API): what a subscriber could learn.
QUERY = "query"

CHANNEL_TYPES = frozenset({"public", "private", "presence", "meta"})
_WILDCARDS = frozenset({"*", "**"})
#: A whole tenancy channel name in one match (see :func:`_parseChannel`): the
#: application, the type, the path's segments before the last, and the last segment
#: (a wildcard, which only a subscribe may use).
_SEGMENT = r"[A-Za-z0-9_~-]+"
_TENANT_CHANNEL = re.compile(
    rf"/({_SEGMENT})/({'|'.join(sorted(CHANNEL_TYPES))})/((?:{_SEGMENT}/)*)({_SEGMENT}|\*\*?)"
)

# A JWT is a few hundred bytes; anything far larger is an attack on the decoder.
MAX_TOKEN_LENGTH = 8192


class Refusal(enum.Enum):
    """
    Every refusal of the contract, in the contract's order, with its Bayeux code.

    The order of the members *is* the order of the checks; tests pin it against the
    contract's list. Codes: 405 for a channel that cannot be used at all, 401 for
    missing or wrong credentials, 403 for credentials that are good but do not grant
    this operation.
    """

    INVALID_CHANNEL = ("Invalid channel name", 405)
    NO_AUTH = ("No auth supplied", 401)
    INVALID_TOKEN = ("Invalid token", 401)
    NO_TOKEN_OR_KEY = ("Auth information does not include token or key", 401)
    KEY_NOT_FOUND = ("Could not find key", 401)
    INVALID_SECRET = ("Invalid secret", 401)
    EXPIRED_KEY = ("Expired key", 401)
    REVOKED_KEY = ("Revoked key", 401)
    INVALID_TOKEN_PROVIDED = ("Invalid token provided", 401)
    TOKEN_CHANNEL_MISMATCH = ("Token does not match channel", 403)
    TOKEN_NO_SUBSCRIBE = ("Token does not allow subscribing", 403)
    TOKEN_NO_PUBLISH = ("Token does not allow publishing", 403)
    NO_PRESENCE_ID = ("No presence id specified in presence subscription", 403)

    @property
    def text(self) -> str:
        return self.value[0]

    @property
    def code(self) -> int:
        return self.value[1]

    @property
    def bayeuxError(self) -> str:
        """The ``error`` of a Bayeux reply: Faye clients show the text as ``message``."""
        return f"{self.code}::{self.text}"


@dataclass(frozen=True, slots=True)
class TenantChannel:
    """A parsed tenancy channel; ``path`` is what follows the type (wildcard last, if any)."""

    name: str
    appId: str
    type: str
    path: tuple[str, ...]

    @property
    def segments(self) -> tuple[str, ...]:
        return (self.appId, self.type, *self.path)

    @property
    def wildcard(self) -> str | None:
        last = self.path[-1]
        return last if last in _WILDCARDS else None


def isWildcard(segment: str) -> bool:
    return segment in _WILDCARDS


def parseChannel(name: Any, operation: str = SUBSCRIBE) -> TenantChannel | None:
    """
    The tenancy channel ``name`` designates, or None if it is not one (see
    :func:`_parseChannel`). Cached: the same channels and token channels come back
    with every message, and the answers are immutable.

    A dictionary per operation rather than ``lru_cache``: its two-argument key (a
    tuple made, hashed and compared per call) and LRU bookkeeping made the cached
    call ~3.6 % of the server's reactor thread in the private-bayeux bench, where
    it runs twice per publish. A full dictionary is emptied rather than trimmed (no
    LRU order to keep): names that keep coming back are parsed again once.
    """
    try:
        return _PARSED[operation][name]
    except (KeyError, TypeError):
        pass  # not cached, an unhashable name, or an operation without a cache
    if not isinstance(name, str):
        return None
    if operation == PUBLISH:
        # A name valid to publish to is valid to subscribe to, and parses the same: a
        # publish to a channel its subscribers named first (a one-to-one channel's first
        # message) takes their parse. A wildcard or a meta channel is still refused.
        subscribed = _PARSED[SUBSCRIBE].get(name, _UNPARSED)
        if subscribed is None:
            channel = None
        elif subscribed is _UNPARSED:
            channel = _parseChannel(name, operation)
        elif subscribed.type == "meta" or subscribed.path[-1] in _WILDCARDS:
            channel = None
        else:
            channel = subscribed
    else:
        channel = _parseChannel(name, operation)
    parsed = _PARSED.get(operation)
    if parsed is not None and len(name) <= _MAX_CACHED_NAME:
        if len(parsed) >= _MAX_PARSED:
            parsed.clear()
        parsed[name] = channel
    return channel


#: Longer names are parsed every time, never cached (see :func:`parseChannel`).
_MAX_CACHED_NAME = 512
#: Names cached per operation (see :func:`parseChannel`).
_MAX_PARSED = 16384
#: Not in a cache (a name's answer there may be None).
_UNPARSED: Any = object()


def _parseChannel(name: str, operation: str) -> TenantChannel | None:
    """
    The tenancy channel ``name`` designates, or None if it is not one.

    At least one path segment follows the type, so a wildcard can never cover the
    application or the type (``/app/**``, ``/app/private`` are refused). Wildcards
    only as the last segment and only to subscribe; nobody publishes to meta
    channels, so for publishing they are not valid names either.

    One regular expression over the whole name, not one per segment: a channel's
    first publish or subscribe parses it (every later one finds it cached), and
    one-to-one channels are mostly first ones.
    """
    match = _TENANT_CHANNEL.fullmatch(name)
    if match is None:
        return None
    appId, channelType, middle, last = match.groups()
    if operation != SUBSCRIBE and last in _WILDCARDS:
        return None
    if operation == PUBLISH and channelType == "meta":
        return None
    path = (*middle.split("/")[:-1], last) if middle else (last,)
    return TenantChannel(name, appId, channelType, path)


# operation -> channel name -> parseChannel's answer (see there).
_PARSED: dict[str, dict[str, TenantChannel | None]] = {PUBLISH: {}, SUBSCRIBE: {}, QUERY: {}}


def needsAuth(operation: str, channel: TenantChannel) -> bool:
    """Anyone may subscribe to public channels; everything else needs credentials."""
    return not (operation == SUBSCRIBE and channel.type == "public")


@dataclass(frozen=True, slots=True)
class KeyAuth:
    """Key and secret, as the client sent them (the secret is never logged or echoed)."""

    keyId: str
    secret: str

    def __repr__(self) -> str:
        return f"KeyAuth(keyId={self.keyId!r}, secret=<hidden>)"


@dataclass(frozen=True, slots=True)
class TokenAuth:
    """A bearer JWT, as the client sent it (not yet decoded, let alone verified)."""

    token: str

    def __repr__(self) -> str:
        return "TokenAuth(<hidden>)"


def readAuth(auth: Any) -> KeyAuth | TokenAuth | Refusal:
    """
    What credentials ``ext.auth`` (or ``data.__auth``) carries.

    Following upstream: a missing or null ``auth`` is ``No auth supplied``; an
    ``auth`` with a (non-empty) ``token`` is a token, one with a ``key`` is key+secret,
    anything else ``Auth information does not include token or key``. A token that is
    not a string, or absurdly long, is ``Invalid token`` at once; whether it decodes is
    for the token checker.
    """
    if auth is None:
        return Refusal.NO_AUTH
    if not isinstance(auth, dict):
        return Refusal.NO_TOKEN_OR_KEY
    token = auth.get("token")
    if token:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            return Refusal.INVALID_TOKEN
        return TokenAuth(token)
    key = auth.get("key")
    if key and isinstance(key, str):
        secret = auth.get("secret")
        return KeyAuth(key, secret if isinstance(secret, str) else "")
    return Refusal.NO_TOKEN_OR_KEY


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """What the rules need to know about a stored key; never carries usage counters."""

    keyId: str
    appId: str
    secret: str
    expires: float | None  # POSIX seconds; None never expires
    revoked: bool

    def __repr__(self) -> str:
        return (
            f"KeyFacts(keyId={self.keyId!r}, appId={self.appId!r},"
            f" expires={self.expires!r}, revoked={self.revoked!r})"
        )


def secretsEqual(supplied: str, stored: str) -> bool:
    """Constant-time comparison, so response timing tells nothing about the secret."""
    if supplied.isascii() and stored.isascii():
        # compare_digest takes ASCII strings as they are (isascii is a flag, not a scan):
        # no two encodings per publish.
        return hmac.compare_digest(supplied, stored)
    return hmac.compare_digest(supplied.encode("utf-8"), stored.encode("utf-8"))


def checkKey(key: KeyFacts | None, appId: str, now: float, secret: str | None) -> Refusal | None:
    """
    The key checks, in order: found (in this application: a key of another
    application is as good as no key), secret (only for key+secret; ``secret`` is None
    for a token, whose signature is checked after), not expired, not revoked.
    """
    if key is None or key.appId != appId:
        return Refusal.KEY_NOT_FOUND
    if secret is not None and not secretsEqual(secret, key.secret):
        return Refusal.INVALID_SECRET
    if key.expires is not None and key.expires <= now:
        return Refusal.EXPIRED_KEY
    if key.revoked:
        return Refusal.REVOKED_KEY
    return None


def tokenCovers(tokenChannel: Any, channel: TenantChannel) -> bool:
    """
    Whether a token issued for ``tokenChannel`` covers ``channel``, by segments.

    - a plain token channel covers exactly itself;
    - ``/x/*`` covers ``/x/<one segment>`` and the subscription ``/x/*`` itself, never
      ``/x/**`` nor anything deeper;
    - ``/x/**`` covers everything strictly below ``/x`` (names and patterns alike).
    """
    token = parseChannel(tokenChannel, SUBSCRIBE)
    if token is None:
        return False
    granted = token.segments
    wanted = channel.segments
    wildcard = token.wildcard
    if wildcard is None or granted == wanted:
        return granted == wanted
    prefix = granted[:-1]
    if wanted[: len(prefix)] != prefix:
        return False
    if wildcard == "*":
        return len(wanted) == len(prefix) + 1 and wanted[-1] not in _WILDCARDS
    return len(wanted) > len(prefix)


@dataclass(frozen=True, slots=True)
class Allowed:
    """
    The operation may go ahead. ``presence`` is the token's presence object on a
    presence subscribe (the only place presence may come from); ``keyId`` names the
    key that granted it (None on a public subscribe without credentials). ``expires``
    is the ``exp`` of the token that granted a subscribe (None: no token, or no
    ``exp``), ``keyExpires`` the expiry date of the key (None: never): the subscription
    ends at the earlier (:mod:`pandapush.extensions.expiry`). ``user`` is the token's
    ``user`` claim (a string or a whole number, as a string): the server API's
    ``terminate_connections`` ends the clients it names; webhooks' client events carry it.
    """

    keyId: str | None = None
    presence: dict[str, Any] | None = None
    expires: float | None = None
    keyExpires: float | None = None
    user: str | None = None


def _hasPresenceId(presence: Any) -> bool:
    if not isinstance(presence, dict):
        return False
    presenceId = presence.get("id")
    if isinstance(presenceId, bool):
        return False
    return (isinstance(presenceId, str) and presenceId != "") or isinstance(presenceId, int)


def checkGrant(
    operation: str,
    channel: TenantChannel,
    keyId: str,
    claims: dict[str, Any] | None,
    keyExpires: float | None = None,
) -> Allowed | Refusal:
    """
    The last checks, once the key (and, for a token, its signature) is good.

    ``claims`` is None for key+secret, which may do anything on its application's
    channels (meta publishing was refused with the channel name already). A token
    must cover the channel and allow the operation (``pub``/``sub`` exactly ``true``).
    A presence subscribe needs a presence object with an ``id``, from the token only.
    A query (:data:`QUERY`) needs what a subscribe does, but no presence.
    """
    if claims is not None:
        if not tokenCovers(claims.get("channel"), channel):
            return Refusal.TOKEN_CHANNEL_MISMATCH
        if operation in (SUBSCRIBE, QUERY) and claims.get("sub") is not True:
            return Refusal.TOKEN_NO_SUBSCRIBE
        if operation == PUBLISH and claims.get("pub") is not True:
            return Refusal.TOKEN_NO_PUBLISH
    presence: dict[str, Any] | None = None
    if operation == SUBSCRIBE and channel.type == "presence":
        presence = claims.get("presence") if claims is not None else None
        if not _hasPresenceId(presence):
            return Refusal.NO_PRESENCE_ID
        # A copy: the claims may be shared (remembered verified tokens), the presence
        # object travels on into the engine's membership.
        presence = dict(presence)  # type: ignore[arg-type]
    expires: float | None = None
    user: str | None = None
    if claims is not None:
        exp = claims.get("exp")
        # Not a number: refused before this (bearer.timesValid).
        if operation == SUBSCRIBE and isinstance(exp, int | float) and not isinstance(exp, bool):
            expires = float(exp)
        named = claims.get("user")
        if (isinstance(named, str) and named) or (isinstance(named, int) and not isinstance(named, bool)):
            user = str(named)
    return Allowed(keyId, presence, expires, keyExpires, user)
