"""Checkers and the realm behind channel auth: who is this, and what may they do.

The contract's refusals come out of the checkers as :class:`AuthRefused` (an
:class:`~twisted.cred.error.UnauthorizedLogin` carrying its
:class:`~pandapush.auth.rules.Refusal`), so callers show the exact text. A
successful login yields an :class:`IChannelAccess` avatar that answers the last
question (does this token cover this channel and operation) with the pure rules.

:class:`ChannelAuthority` puts it together for the two callers: the tenancy
extension (Bayeux ``ext.auth``) and the REST publish endpoint (HTTP headers).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from hmac import compare_digest
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import Attribute, Interface, implementer

from pandapush.auth import bearer
from pandapush.auth.credentials import BearerToken, IBearerToken, IKeySecret, KeySecret
from pandapush.auth.keycache import KeyCache
from pandapush.auth.rules import (
    PUBLISH,
    SUBSCRIBE,
    Allowed,
    KeyAuth,
    KeyFacts,
    Refusal,
    TenantChannel,
    TokenAuth,
    checkGrant,
    checkKey,
    needsAuth,
    parseChannel,
    readAuth,
    secretsEqual,
)

__all__ = [
    "AuthRefused",
    "BearerTokenChecker",
    "ChannelAccess",
    "ChannelAuthority",
    "ChannelRealm",
    "IChannelAccess",
    "KeyGrant",
    "KeySecretChecker",
    "Principal",
]


#: A subscribe anyone may make, without credentials (immutable: one for all).
_ANYONE = Allowed()


class AuthRefused(UnauthorizedLogin):
    """A refusal of the contract; ``refusal.text`` is what the client reads."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.text)
        self.refusal = refusal


@dataclass(frozen=True)
class Principal:
    """
    Who logged in: the key (and application) vouching for the request, and the
    verified token claims when it came with a token (None for key+secret).
    """

    appId: str
    keyId: str
    claims: dict[str, Any] | None = field(default=None, repr=False)
    #: When the key expires (None: never): what it granted ends then.
    keyExpires: float | None = None


class _CheckerBase:
    def __init__(self, keys: KeyCache, clock: IReactorTime) -> None:
        self.keys = keys
        self.clock = clock

    def _checkKey(self, facts: KeyFacts | None, appId: str, secret: str | None) -> KeyFacts:
        refusal = checkKey(facts, appId, self.clock.seconds(), secret)
        if refusal is not None:
            raise AuthRefused(refusal)
        assert facts is not None
        return facts


@implementer(ICredentialsChecker)
class KeySecretChecker(_CheckerBase):
    """Key+secret: the key must exist in the channel's application, match, and be live."""

    credentialInterfaces = (IKeySecret,)

    def keyIdOf(self, credentials: Any) -> str:
        return str(credentials.keyId)

    def verify(self, credentials: Any, facts: KeyFacts | None) -> Principal:
        """The principal, once the key's facts are known; raises :class:`AuthRefused`."""
        if facts is None or facts.appId != credentials.appId:
            raise AuthRefused(Refusal.KEY_NOT_FOUND)
        if not credentials.checkSecret(facts.secret):
            raise AuthRefused(Refusal.INVALID_SECRET)
        self._checkKey(facts, credentials.appId, None)
        self.keys.recordUse(facts.keyId)
        return Principal(facts.appId, facts.keyId, keyExpires=facts.expires)

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:  # fires with a Principal
        return self.keys.get(credentials.keyId).addCallback(lambda facts: self.verify(credentials, facts))


@implementer(ICredentialsChecker)
class BearerTokenChecker(_CheckerBase):
    """
    A JWT: readable with a ``keyId``, that key live, signature and times valid.

    Browsers send the same token with every subscribe and publish, so tokens whose
    signature checked out are remembered (a bounded memo keyed by the token, tied to
    the secret that verified it). The key's state and the token's times are checked
    again on every use; only the HMAC and the decoding are spared.
    """

    credentialInterfaces = (IBearerToken,)

    def __init__(
        self, keys: KeyCache, clock: IReactorTime, leeway: float = bearer.DEFAULT_LEEWAY, memoSize: int = 4096
    ) -> None:
        super().__init__(keys, clock)
        self.leeway = leeway
        self.memoSize = memoSize
        # token -> (secret that verified it, verified claims)
        self._verified: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()

    def keyIdOf(self, credentials: Any) -> str:
        """The key that signed the token (unverified yet); raises ``Invalid token``."""
        memo = self._verified.get(credentials.token)
        if memo is not None:
            return str(memo[1]["keyId"])
        unverified = bearer.readToken(credentials.token)
        if unverified is None:
            raise AuthRefused(Refusal.INVALID_TOKEN)
        return str(unverified["keyId"])

    def verify(self, credentials: Any, facts: KeyFacts | None) -> Principal:
        """The principal, once the key's facts are known; raises :class:`AuthRefused`."""
        facts = self._checkKey(facts, credentials.appId, None)
        claims = self._claims(credentials.token, facts.secret)
        if claims is None or claims.get("keyId") != facts.keyId:
            raise AuthRefused(Refusal.INVALID_TOKEN_PROVIDED)
        if not bearer.timesValid(claims, self.clock.seconds(), self.leeway):
            raise AuthRefused(Refusal.INVALID_TOKEN_PROVIDED)
        self.keys.recordUse(facts.keyId)
        return Principal(facts.appId, facts.keyId, claims, facts.expires)

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:  # fires with a Principal
        try:
            keyId = self.keyIdOf(credentials)
        except AuthRefused:
            return defer.fail()
        return self.keys.get(keyId).addCallback(lambda facts: self.verify(credentials, facts))

    def _claims(self, token: str, secret: str) -> dict[str, Any] | None:
        memo = self._verified.get(token)
        if memo is not None and memo[0] == secret:
            self._verified.move_to_end(token)
            return memo[1]
        claims = bearer.verifySignature(token, secret)
        if claims is not None and self.memoSize > 0:
            self._verified[token] = (secret, claims)
            if len(self._verified) > self.memoSize:
                self._verified.popitem(last=False)
        return claims


class IChannelAccess(Interface):
    """What a logged-in principal may do on an application's channels."""

    principal = Attribute("The :class:`Principal` this access belongs to.")

    def check(operation: str, channel: TenantChannel) -> Allowed | Refusal:
        """Allowed (with presence, for a presence subscribe) or the refusal."""


@implementer(IChannelAccess)
class ChannelAccess:
    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    def check(self, operation: str, channel: TenantChannel) -> Allowed | Refusal:
        principal = self.principal
        return checkGrant(operation, channel, principal.keyId, principal.claims, principal.keyExpires)


@implementer(IRealm)
class ChannelRealm:
    """Turns a :class:`Principal` into its :class:`IChannelAccess`."""

    def requestAvatar(
        self, avatarId: Any, mind: Any, *interfaces: Any
    ) -> tuple[Any, Any, Callable[[], None]]:
        if IChannelAccess not in interfaces:
            raise NotImplementedError("ChannelRealm only provides IChannelAccess")
        return IChannelAccess, ChannelAccess(avatarId), lambda: None


class KeyGrant:
    """
    A key+secret grant remembered by :class:`ChannelAuthority`: what the key's facts,
    as the key cache held them in ``entry``, were granted (``allowed``, on ``appId``'s
    channels), usable until ``until``: the entry going stale or the key expiring.
    """

    __slots__ = (
        "allowed",
        "appId",
        "asciiSecret",
        "entry",
        "keyExpires",
        "keyId",
        "lastUsed",
        "secret",
        "until",
        "uses",
    )

    def __init__(self, facts: KeyFacts, entry: tuple[KeyFacts | None, float], allowed: Allowed) -> None:
        self.keyId = facts.keyId
        self.appId = facts.appId
        self.secret = facts.secret
        # compare_digest takes two ASCII strings as they are; others go through secretsEqual.
        self.asciiSecret = facts.secret if facts.secret.isascii() else None
        self.entry = entry
        self.until = entry[1] if facts.expires is None else min(entry[1], facts.expires)
        self.allowed = allowed
        self.keyExpires = allowed.keyExpires
        # Uses counted here, on the hot path, and handed to the key cache whenever its
        # usage is read or written (KeyCache.addUsageSource) or the grant is dropped.
        self.uses = 0
        self.lastUsed = 0.0


#: The grantable channels remembered per operation (see ChannelAuthority.keyGrant).
_MAX_GRANTABLE = 16384


class ChannelAuthority:
    """
    The one place that says yes or no to a subscribe or publish on a tenancy channel.

    ``authorize`` takes a Bayeux ``ext.auth`` value; ``authorizeCredentials`` takes
    credentials already built (REST headers). Both fire with
    :class:`~pandapush.auth.rules.Allowed` or fail with :class:`AuthRefused`;
    anything else (storage down) fails with that error.

    :meth:`decide` is the same decision for the hot path: when the key is in the
    cache it answers synchronously, running the very checkers the portal holds but
    without a Deferred chain per message; only a cache miss goes through
    ``portal.login``.
    """

    def __init__(
        self,
        keys: KeyCache,
        clock: IReactorTime,
        leeway: float = bearer.DEFAULT_LEEWAY,
        maxKeyGrants: int = 4096,
    ) -> None:
        self.keys = keys
        self.clock = clock
        self.keyChecker = KeySecretChecker(keys, clock)
        self.tokenChecker = BearerTokenChecker(keys, clock, leeway)
        self.portal = Portal(ChannelRealm(), [self.keyChecker, self.tokenChecker])
        # keyId -> what a key+secret decision granted with the key cache's entry for it:
        # see keyGrant. Forgotten with the key (or its application) as well, though a
        # grant whose entry is no longer the cache's is never used anyway.
        self.maxKeyGrants = maxKeyGrants
        self._keyGrants: dict[str, KeyGrant] = {}
        # operation -> channel name -> its application, for the names a key+secret grant
        # covers whatever the channel (see keyGrant): no parsing on that path.
        self._grantable: dict[str, dict[str, str]] = {PUBLISH: {}, SUBSCRIBE: {}}
        # Bound once: keyGrant runs for every publish.
        self._seconds = clock.seconds
        self._entryOf = keys.entryOf
        keys.addUsageSource(self._handAllOver)
        keys.addKeyObserver(self._forgetKey)
        keys.addApplicationObserver(self._forgetApp)

    def _forgetKey(self, keyId: str) -> None:
        grant = self._keyGrants.pop(keyId, None)
        if grant is not None:
            self._handOver(grant)

    def _forgetApp(self, appId: str | None) -> None:
        self._handAllOver()
        self._keyGrants.clear()

    def _handOver(self, grant: KeyGrant) -> None:
        """Hand the key cache the uses ``grant`` counted since it last did."""
        if grant.uses:
            self.keys.recordUses(grant.keyId, grant.uses, grant.lastUsed)
            grant.uses = 0

    def _handAllOver(self) -> None:
        for grant in self._keyGrants.values():
            self._handOver(grant)

    def credentialsFor(self, channel: TenantChannel, auth: Any) -> KeySecret | BearerToken:
        """Credentials from a Bayeux ``ext.auth`` value; raises :class:`AuthRefused`."""
        read = readAuth(auth)
        if isinstance(read, Refusal):
            raise AuthRefused(read)
        if isinstance(read, KeyAuth):
            return KeySecret(channel.appId, read.keyId, read.secret)
        assert isinstance(read, TokenAuth)
        return BearerToken(channel.appId, read.token)

    def decide(self, operation: str, channelName: Any, auth: Any) -> Allowed | Deferred[Allowed]:
        """
        :class:`Allowed` now, or a Deferred when the key must be fetched; raises
        :class:`AuthRefused` when the answer is no and known now.
        """
        grant = self.keyGrant(operation, channelName, auth)
        if grant is not None:
            return grant.allowed
        channel = parseChannel(channelName, operation)
        if channel is None:
            raise AuthRefused(Refusal.INVALID_CHANNEL)
        # needsAuth, inline: this runs for every publish and subscribe.
        if operation == SUBSCRIBE and channel.type == "public":
            return _ANYONE if auth is None else self._vouched(channel, auth)
        return self._decide(operation, channel, self.credentialsFor(channel, auth))

    def keyGrant(self, operation: str, channelName: Any, auth: Any) -> KeyGrant | None:
        """
        The remembered grant that allows ``operation`` on ``channelName`` for the Bayeux
        ``auth`` ``{"key": ..., "secret": ...}``, its use counted, if the full decision
        would allow it with the same :class:`Allowed` now: else None, and the caller
        decides in full (:meth:`decide`), which makes the memo for next time.

        A key+secret grant depends on the key's facts only (its application, secret,
        expiry, revocation), never on the channel within the application (publishing
        anywhere, subscribing to private and meta channels: ``_grantable`` holds the
        names parsed as such, so each is parsed once), so it is remembered per key, tied to the key
        cache's entry it was made with: a key invalidated (revoked, deleted, its
        application changed, here or on another node through key sync) or read again
        after its TTL has a new entry, and is decided in full again. Its expiry is
        checked on every use (``until``), its secret compared in constant time on every
        use, its use counted on the grant (handed to the key cache whenever usage is
        read). Every refusal comes from the full decision, with its text. The decision
        in full was ~12 % of the router's instructions per publish; a memo found after
        parsing, with a method call per check, left ~25,000 instructions per publish in
        the tenancy and origin extensions; this path, ~13,500.
        """
        try:
            grant = self._keyGrants[auth["key"]]
        except (KeyError, TypeError):
            return None  # no key, none remembered, not a dict, an unhashable key
        try:
            appId: str | None = self._grantable[operation][channelName]
        except KeyError:  # a channel not seen yet, or an operation no grant covers so
            appId = self._grantableAlso(operation, channelName)
        except TypeError:
            return None  # an unhashable channel
        if appId != grant.appId or auth.get("token"):
            return None
        now = self._seconds()
        if now >= grant.until or self._entryOf(grant.keyId) is not grant.entry:
            return None
        secret = auth.get("secret")
        try:
            equal = compare_digest(secret, grant.asciiSecret)  # type: ignore[type-var]
        except TypeError:  # not two ASCII strings: a string compared as UTF-8, as ever
            equal = type(secret) is str and secretsEqual(secret, grant.secret)
        if not equal:
            return None
        grant.uses += 1
        grant.lastUsed = now
        return grant

    def _keyGranted(self, operation: str, channel: TenantChannel, keyId: str) -> KeyGrant | None:
        """
        :meth:`keyGrant` for a channel already parsed, the secret aside (the caller
        compares it) and its use not counted.
        """
        grant = self._keyGrants.get(keyId)
        if grant is None or grant.appId != channel.appId:
            return None
        if operation == SUBSCRIBE and channel.type == "presence":
            return None  # refused: presence comes from a token only
        if self._seconds() >= grant.until or self._entryOf(keyId) is not grant.entry:
            return None
        return grant

    def _remember(self, facts: KeyFacts, allowed: Allowed) -> None:
        """Remember a key+secret grant."""
        entry = self.keys.entryOf(facts.keyId)
        if entry is None or entry[0] is not facts:
            return  # not from the cache (cannot be: the caller peeked), so nothing to tie it to
        grants = self._keyGrants
        replaced = grants.get(facts.keyId)
        if replaced is not None:
            self._handOver(replaced)
        elif len(grants) >= self.maxKeyGrants:
            self._handOver(grants.pop(next(iter(grants))))  # the oldest
        grants[facts.keyId] = KeyGrant(facts, entry, allowed)

    def _grantableAlso(self, operation: str, channelName: Any) -> str | None:
        """
        The application of ``channelName`` if any key+secret grant of it covers
        ``operation`` there (noted for next time), else None.
        """
        grantable = self._grantable.get(operation)
        channel = parseChannel(channelName, operation)
        if grantable is None or channel is None:
            return None
        if operation == SUBSCRIBE and channel.type in ("public", "presence"):
            return None
        if len(grantable) >= _MAX_GRANTABLE:
            grantable.clear()
        grantable[channel.name] = channel.appId
        return channel.appId

    def _vouched(self, channel: TenantChannel, auth: Any) -> Allowed | Deferred[Allowed]:
        """
        A subscribe anyone may make, sent with credentials: never refused for them, but
        when they are good (a live key of the application, a token it signed) the
        :class:`Allowed` names the key, so the client counts as one of the application's
        own rather than as a stranger (the connection limits tell the two apart).
        """
        try:
            credentials = self.credentialsFor(channel, auth)
            checker: KeySecretChecker | BearerTokenChecker = (
                self.keyChecker if isinstance(credentials, KeySecret) else self.tokenChecker
            )
            keyId = checker.keyIdOf(credentials)
            cached, facts = self.keys.peek(keyId)
            if cached:
                return Allowed(checker.verify(credentials, facts).keyId)
        except AuthRefused:
            return Allowed()

        def verified(facts: KeyFacts | None) -> Allowed:
            return Allowed(checker.verify(credentials, facts).keyId)

        # Whatever went wrong (refused, storage down), the subscribe is a stranger's.
        return self.keys.get(keyId).addCallback(verified).addErrback(lambda _: Allowed())

    def _decide(
        self, operation: str, channel: TenantChannel, credentials: KeySecret | BearerToken | None
    ) -> Allowed | Deferred[Allowed]:
        if credentials is None:
            raise AuthRefused(Refusal.NO_AUTH)
        if isinstance(credentials, KeySecret):
            known = self._keyGranted(operation, channel, credentials.keyId)
            if known is not None and credentials.checkSecret(known.secret):
                known.uses += 1
                known.lastUsed = self._seconds()
                return known.allowed
        checker: KeySecretChecker | BearerTokenChecker = (
            self.keyChecker if isinstance(credentials, KeySecret) else self.tokenChecker
        )
        cached, facts = self.keys.peek(checker.keyIdOf(credentials))
        if not cached:
            return self._login(operation, channel, credentials)
        allowed = self._grant(operation, channel, checker.verify(credentials, facts))
        if checker is self.keyChecker and facts is not None:
            self._remember(facts, allowed)
        return allowed

    def principal(self, credentials: KeySecret | BearerToken) -> Principal | Deferred[Principal]:
        """
        Who the credentials are, for their application: at once when the key is cached,
        else a Deferred; raises (or fails with) :class:`AuthRefused`. The server API logs
        in once per request and then checks each channel with :class:`ChannelAccess`.
        """
        checker: KeySecretChecker | BearerTokenChecker = (
            self.keyChecker if isinstance(credentials, KeySecret) else self.tokenChecker
        )
        cached, facts = self.keys.peek(checker.keyIdOf(credentials))
        if cached:
            return checker.verify(credentials, facts)

        def loggedIn(login: tuple[Any, Any, Any]) -> Principal:
            access: ChannelAccess = login[1]
            return access.principal

        return self.portal.login(credentials, None, IChannelAccess).addCallback(loggedIn)

    def _grant(self, operation: str, channel: TenantChannel, principal: Principal) -> Allowed:
        decision = ChannelAccess(principal).check(operation, channel)
        if isinstance(decision, Refusal):
            raise AuthRefused(decision)
        return decision

    def _login(
        self, operation: str, channel: TenantChannel, credentials: KeySecret | BearerToken
    ) -> Deferred[Allowed]:
        def granted(login: tuple[Any, Any, Any]) -> Allowed:
            _, access, _ = login
            decision = access.check(operation, channel)
            if isinstance(decision, Refusal):
                raise AuthRefused(decision)
            return decision

        return self.portal.login(credentials, None, IChannelAccess).addCallback(granted)

    def authorize(self, operation: str, channelName: Any, auth: Any) -> Deferred[Allowed]:
        try:
            decision = self.decide(operation, channelName, auth)
        except Exception:
            return defer.fail()
        return decision if isinstance(decision, Deferred) else defer.succeed(decision)

    def decideCredentials(
        self, operation: str, channel: TenantChannel, credentials: KeySecret | BearerToken | None
    ) -> Allowed | Deferred[Allowed]:
        """
        :meth:`authorizeCredentials` for the REST hot path: :class:`Allowed` now when
        the key is cached, a Deferred only on a cache miss; raises :class:`AuthRefused`
        when the answer is no and known now.
        """
        if not needsAuth(operation, channel):
            return Allowed()
        return self._decide(operation, channel, credentials)

    def authorizeCredentials(
        self, operation: str, channel: TenantChannel, credentials: KeySecret | BearerToken | None
    ) -> Deferred[Allowed]:
        try:
            decision = self.decideCredentials(operation, channel, credentials)
        except Exception:
            return defer.fail()
        return decision if isinstance(decision, Deferred) else defer.succeed(decision)
