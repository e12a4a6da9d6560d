"""JWT handling and the cred checkers: hostile tokens refused, the contract's order kept."""

from __future__ import annotations

import base64
import json
import warnings
from typing import Any

import jwt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import IRealm
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from pandapush.auth import bearer
from pandapush.auth.bearer import readToken, verifyToken
from pandapush.auth.checkers import (
    AuthRefused,
    BearerTokenChecker,
    ChannelAuthority,
    ChannelRealm,
    KeySecretChecker,
)
from pandapush.auth.credentials import BearerToken, IBearerToken, IKeySecret, KeySecret
from pandapush.auth.keycache import KeyCache
from pandapush.auth.rules import PUBLISH, SUBSCRIBE, Allowed, Refusal
from tests.support.auth import APP, KEY, NOW, OTHER_APP, SECRET, FakeKey, FakeKeyStore, at, token


def _b64(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(signature)])


class VerifyTokenTests(SynchronousTestCase):
    claims = {"keyId": KEY, "channel": f"/{APP}/private/a", "sub": True}

    def test_good(self) -> None:
        """HS256/384/512 signed with the secret verify; ``sub: true`` is fine (not an RFC subject)."""
        for alg in ("HS256", "HS384", "HS512"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = token(self.claims, algorithm=alg)
            self.assertEqual(verifyToken(t, SECRET, NOW)["channel"], f"/{APP}/private/a")  # type: ignore[index]

    def test_algNone(self) -> None:
        """``alg: none`` reads (so the key is found) but never verifies."""
        t = forged({"alg": "none", "typ": "JWT"}, self.claims)
        self.assertEqual(readToken(t)["keyId"], KEY)  # type: ignore[index]
        self.assertIsNone(verifyToken(t, SECRET, NOW))
        t = forged({"alg": "None"}, self.claims)
        self.assertIsNone(verifyToken(t, SECRET, NOW))

    def test_wrongSecret(self) -> None:
        self.assertIsNone(verifyToken(token(self.claims, secret="x" * 40), SECRET, NOW))

    def test_publicKeyAlgorithms(self) -> None:
        """RS/ES/PS tokens are refused whatever their signature."""
        for alg in ("RS256", "ES256", "PS256", "EdDSA"):
            self.assertIsNone(verifyToken(forged({"alg": alg}, self.claims, b"sig"), SECRET, NOW), alg)

    def test_garbage(self) -> None:
        """Nonsense never raises: it simply is not a token."""
        for bad in ["", "garbage", "a.b.c", "...", "e30.e30.", forged({"alg": "HS256"}, [1, 2]), "x" * 9000]:  # type: ignore[arg-type]
            self.assertIsNone(readToken(bad), bad[:20])
            self.assertIsNone(verifyToken(bad, SECRET, NOW), bad[:20])

    def test_missingKeyId(self) -> None:
        """No ``keyId`` (or not a string): unreadable as a pandapush token."""
        self.assertIsNone(readToken(jwt.encode({"channel": "/a/private/b"}, SECRET)))
        self.assertIsNone(readToken(jwt.encode({"keyId": 5}, SECRET)))

    def test_huge(self) -> None:
        """A token past the cap is refused before decoding."""
        t = token({**self.claims, "pad": "x" * 20_000})
        self.assertIsNone(readToken(t))

    def test_times(self) -> None:
        """``exp`` and ``nbf`` are enforced with a small leeway; non-numbers refused."""
        self.assertIsNotNone(verifyToken(token({**self.claims, "exp": NOW - 10}), SECRET, NOW))
        self.assertIsNone(verifyToken(token({**self.claims, "exp": NOW - 60}), SECRET, NOW))
        self.assertIsNotNone(verifyToken(token({**self.claims, "nbf": NOW + 10}), SECRET, NOW))
        self.assertIsNone(verifyToken(token({**self.claims, "nbf": NOW + 60}), SECRET, NOW))
        self.assertIsNone(verifyToken(token({**self.claims, "exp": "tomorrow"}), SECRET, NOW))
        self.assertIsNone(verifyToken(token({**self.claims, "exp": True}), SECRET, NOW))


class Harness:
    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = FakeKeyStore()
        self.store.add(FakeKey(KEY, APP, SECRET))
        self.keys = KeyCache(self.store, self.clock)
        self.authority = ChannelAuthority(self.keys, self.clock)

    def outcome(self, operation: str, channel: Any, auth: Any) -> Allowed | Refusal:
        results: list[Any] = []
        self.authority.authorize(operation, channel, auth).addBoth(results.append)
        (result,) = results
        if isinstance(result, Allowed):
            return result
        result.trap(AuthRefused)
        return result.value.refusal  # type: ignore[no-any-return]


class CheckerTests(SynchronousTestCase):
    def test_interfaces(self) -> None:
        """Every cred piece provides its interface."""
        h = Harness()
        verifyObject(ICredentialsChecker, KeySecretChecker(h.keys, h.clock))
        verifyObject(ICredentialsChecker, BearerTokenChecker(h.keys, h.clock))
        verifyObject(IRealm, ChannelRealm())
        verifyObject(IKeySecret, KeySecret(APP, KEY, SECRET))
        verifyObject(IBearerToken, BearerToken(APP, "t"))
        self.assertNotIn(SECRET, repr(KeySecret(APP, KEY, SECRET)))

    def test_everyErrorInOrder(self) -> None:
        """Each contract error text, produced by the first thing wrong with a request."""
        h = Harness()
        h.store.add(FakeKey("PSIDexpired000000000", APP, SECRET, expires=at(NOW - 1)))
        h.store.add(FakeKey("PSIDrevoked000000000", APP, SECRET, revoked_at=at(NOW - 1)))
        h.store.add(FakeKey("PSIDother0000000000", OTHER_APP, SECRET))
        priv = f"/{APP}/private/a"
        pres = f"/{APP}/presence/room"
        cases: list[tuple[str, Any, Any, Refusal]] = [
            (SUBSCRIBE, f"/{APP}/**", {"key": KEY, "secret": SECRET}, Refusal.INVALID_CHANNEL),
            (SUBSCRIBE, "/foo", None, Refusal.INVALID_CHANNEL),
            (SUBSCRIBE, priv, None, Refusal.NO_AUTH),
            (SUBSCRIBE, priv, {"token": "garbage"}, Refusal.INVALID_TOKEN),
            (SUBSCRIBE, priv, {"nothing": 1}, Refusal.NO_TOKEN_OR_KEY),
            (SUBSCRIBE, priv, {"key": "PSIDnope", "secret": SECRET}, Refusal.KEY_NOT_FOUND),
            (SUBSCRIBE, priv, {"key": "PSIDother0000000000", "secret": SECRET}, Refusal.KEY_NOT_FOUND),
            (SUBSCRIBE, priv, {"key": KEY, "secret": "wrong"}, Refusal.INVALID_SECRET),
            (SUBSCRIBE, priv, {"key": "PSIDexpired000000000", "secret": SECRET}, Refusal.EXPIRED_KEY),
            (SUBSCRIBE, priv, {"key": "PSIDrevoked000000000", "secret": SECRET}, Refusal.REVOKED_KEY),
            (SUBSCRIBE, priv, {"token": token({"channel": priv, "sub": True}, secret="w" * 40)},
             Refusal.INVALID_TOKEN_PROVIDED),
            (SUBSCRIBE, priv, {"token": token({"channel": f"/{APP}/private/b", "sub": True})},
             Refusal.TOKEN_CHANNEL_MISMATCH),
            (SUBSCRIBE, priv, {"token": token({"channel": priv, "pub": True})}, Refusal.TOKEN_NO_SUBSCRIBE),
            (PUBLISH, priv, {"token": token({"channel": priv, "sub": True})}, Refusal.TOKEN_NO_PUBLISH),
            (SUBSCRIBE, pres, {"token": token({"channel": pres, "sub": True})}, Refusal.NO_PRESENCE_ID),
        ]  # fmt: skip
        for operation, channel, auth, expected in cases:
            self.assertIs(h.outcome(operation, channel, auth), expected, (operation, channel, auth))

    def test_tokenOfAnotherApp(self) -> None:
        """A token signed by another application's key is ``Could not find key`` here."""
        h = Harness()
        h.store.add(FakeKey("PSIDother0000000000", OTHER_APP, SECRET))
        t = jwt.encode({"keyId": "PSIDother0000000000", "channel": f"/{APP}/private/a", "sub": True}, SECRET)
        self.assertIs(h.outcome(SUBSCRIBE, f"/{APP}/private/a", {"token": t}), Refusal.KEY_NOT_FOUND)

    def test_expiredToken(self) -> None:
        """An expired token is ``Invalid token provided``."""
        h = Harness()
        t = token({"channel": f"/{APP}/private/a", "sub": True, "exp": NOW - 3600})
        self.assertIs(h.outcome(SUBSCRIBE, f"/{APP}/private/a", {"token": t}), Refusal.INVALID_TOKEN_PROVIDED)

    def test_hostileTokens(self) -> None:
        """alg none, RS/ES, forged signatures: ``Invalid token provided`` once the key is found."""
        h = Harness()
        claims = {"keyId": KEY, "channel": f"/{APP}/private/a", "sub": True}
        for header in ({"alg": "none"}, {"alg": "RS256"}, {"alg": "ES256"}, {"alg": "HS256"}):
            t = forged(header, claims, b"forged")
            self.assertIs(
                h.outcome(SUBSCRIBE, f"/{APP}/private/a", {"token": t}),
                Refusal.INVALID_TOKEN_PROVIDED,
                header,
            )
        self.assertIs(h.outcome(SUBSCRIBE, f"/{APP}/private/a", {"token": "x" * 9000}), Refusal.INVALID_TOKEN)

    def test_allowed(self) -> None:
        """Good credentials pass, and name the key that vouched."""
        h = Harness()
        priv = f"/{APP}/private/a"
        self.assertEqual(h.outcome(PUBLISH, priv, {"key": KEY, "secret": SECRET}), Allowed(KEY))
        self.assertEqual(h.outcome(SUBSCRIBE, f"/{APP}/public/x", None), Allowed())
        self.assertEqual(h.outcome(SUBSCRIBE, f"/{APP}/public/x", {"token": "garbage"}), Allowed())
        presence = {"id": "user1", "name": "Joe"}
        t = token({"channel": f"/{APP}/presence/room", "sub": True, "presence": presence})
        self.assertEqual(h.outcome(SUBSCRIBE, f"/{APP}/presence/room", {"token": t}), Allowed(KEY, presence))
        t = token({"channel": f"/{APP}/meta/**", "sub": True})
        self.assertEqual(h.outcome(SUBSCRIBE, f"/{APP}/meta/clients", {"token": t}), Allowed(KEY))

    def test_metaNeverPublished(self) -> None:
        """Even key+secret cannot publish to a meta channel."""
        h = Harness()
        self.assertIs(
            h.outcome(PUBLISH, f"/{APP}/meta/clients", {"key": KEY, "secret": SECRET}),
            Refusal.INVALID_CHANNEL,
        )

    def test_usageCounted(self) -> None:
        """Each successful use of a key is counted for the next flush."""
        h = Harness()
        h.outcome(PUBLISH, f"/{APP}/private/a", {"key": KEY, "secret": SECRET})
        h.outcome(
            SUBSCRIBE, f"/{APP}/private/a", {"token": token({"channel": f"/{APP}/private/a", "sub": True})}
        )
        h.outcome(PUBLISH, f"/{APP}/private/a", {"key": KEY, "secret": "wrong"})
        self.assertEqual(h.keys.pendingUsage()[KEY].count, 2)


class VerifiedTokenMemoTests(SynchronousTestCase):
    """Remembered tokens skip the HMAC, never the key or time checks."""

    def setUp(self) -> None:
        self.h = Harness()
        self.channel = f"/{APP}/private/a"
        self.calls = 0
        original = bearer.verifySignature

        def counting(token: str, secret: str) -> Any:
            self.calls += 1
            return original(token, secret)

        self.patch(bearer, "verifySignature", counting)

    def test_remembered(self) -> None:
        t = token({"channel": self.channel, "sub": True})
        for _ in range(3):
            self.assertEqual(self.h.outcome(SUBSCRIBE, self.channel, {"token": t}), Allowed(KEY))
        self.assertEqual(self.calls, 1)

    def test_expiresAnyway(self) -> None:
        """A remembered token still expires (its subscribe carries the exp, to end the subscription)."""
        t = token({"channel": self.channel, "sub": True, "exp": NOW + 60})
        self.assertEqual(
            self.h.outcome(SUBSCRIBE, self.channel, {"token": t}), Allowed(KEY, expires=NOW + 60)
        )
        self.h.clock.advance(120)
        self.assertIs(self.h.outcome(SUBSCRIBE, self.channel, {"token": t}), Refusal.INVALID_TOKEN_PROVIDED)

    def test_revokedAnyway(self) -> None:
        """A remembered token of a key revoked since is refused at once."""
        t = token({"channel": self.channel, "sub": True})
        self.h.outcome(SUBSCRIBE, self.channel, {"token": t})
        self.h.store.keys[KEY].revoked_at = at(NOW)
        self.h.keys.invalidate(KEY)
        self.assertIs(self.h.outcome(SUBSCRIBE, self.channel, {"token": t}), Refusal.REVOKED_KEY)

    def test_newSecret(self) -> None:
        """A key re-created with another secret does not inherit remembered tokens."""
        t = token({"channel": self.channel, "sub": True})
        self.h.outcome(SUBSCRIBE, self.channel, {"token": t})
        self.h.store.add(FakeKey(KEY, APP, "n" * 40))
        self.h.keys.invalidate(KEY)
        self.assertIs(self.h.outcome(SUBSCRIBE, self.channel, {"token": t}), Refusal.INVALID_TOKEN_PROVIDED)

    def test_bounded(self) -> None:
        checker = BearerTokenChecker(self.h.keys, self.h.clock, memoSize=2)
        for i in range(5):
            t = token({"channel": self.channel, "sub": True, "n": i})
            self.successResultOf(checker.requestAvatarId(BearerToken(APP, t)))
        self.assertEqual(len(checker._verified), 2)


class TokenKeyStateTests(SynchronousTestCase):
    def test_expiredAndRevokedKeysBeforeSignature(self) -> None:
        """
        For tokens too, the key's state is reported before the signature (the
        contract's order): a token of an expired or revoked key says so, even forged.
        """
        h = Harness()
        h.store.add(FakeKey("PSIDexpired000000000", APP, SECRET, expires=at(NOW - 1)))
        h.store.add(FakeKey("PSIDrevoked000000000", APP, SECRET, revoked_at=at(NOW - 1)))
        channel = f"/{APP}/private/a"
        for keyId, text in [("PSIDexpired000000000", "Expired key"), ("PSIDrevoked000000000", "Revoked key")]:
            for secret in (SECRET, "f" * 40):
                t = jwt.encode({"keyId": keyId, "channel": channel, "sub": True}, secret)
                self.assertEqual(h.outcome(SUBSCRIBE, channel, {"token": t}).text, text)  # type: ignore[union-attr]
