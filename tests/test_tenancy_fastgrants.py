"""
The hot path of a key+secret publish: ``ChannelAuthority.keyGrant`` and the tenancy
extension's use of it.

A remembered grant is used without parsing the channel, with the key cache's entry
compared by identity, the expiry and the secret checked on every use, and the uses
counted on the grant and handed to the key cache whenever its usage is read. These
tests pin that its answers are the full decision's, for every kind of credentials and
channel, and that the counts read are exact.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pandapush.auth import checkers
from pandapush.auth.checkers import AuthRefused, ChannelAuthority
from pandapush.auth.keycache import KeyCache
from pandapush.auth.rules import PUBLISH, SUBSCRIBE, Allowed
from pandapush.auth.tenancy import TenancyExtension
from pandapush.bayeux.context import MessageContext
from tests.support.auth import APP, KEY, NOW, OTHER_APP, SECRET, FakeKey, FakeKeyStore, at, token

CHANNEL = f"/{APP}/private/room"
CHANNELS = [
    CHANNEL,
    f"/{APP}/public/room",
    f"/{APP}/presence/room",
    f"/{APP}/meta/clients",
    f"/{APP}/private/a/*",
    f"/{APP}/private/**",
    f"/{OTHER_APP}/private/room",
    f"/{APP}/nope/room",
    "/service/x",
    f"/{APP}/private",
    "",
]
UNICODE_KEY = "PSIDunicodekeyxxxxxx"
UNICODE_SECRET = "sécret-ünïcode-of-some-length-ÿ"


def auths() -> list[Any]:
    """Every shape of ``ext.auth`` the fast path must tell from a good key+secret."""
    return [
        {"key": KEY, "secret": SECRET},
        {"key": KEY, "secret": "".join(list(SECRET))},  # equal value, another object
        {"key": KEY, "secret": "wrong"},
        {"key": KEY, "secret": SECRET + "x"},
        {"key": KEY, "secret": SECRET[:-1]},
        {"key": KEY, "secret": ""},
        {"key": KEY, "secret": "sécret"},
        {"key": KEY, "secret": None},
        {"key": KEY, "secret": 5},
        {"key": KEY, "secret": [SECRET]},
        {"key": KEY},
        {"key": KEY, "secret": SECRET, "token": token({"channel": CHANNEL, "pub": True})},
        {"key": KEY, "secret": SECRET, "token": ""},
        {"key": [KEY], "secret": SECRET},
        {"key": "PSIDnosuchkeyxxxxxxx", "secret": SECRET},
        {"key": UNICODE_KEY, "secret": UNICODE_SECRET},
        {"key": UNICODE_KEY, "secret": "".join(list(UNICODE_SECRET))},
        {"key": UNICODE_KEY, "secret": UNICODE_SECRET[:-1] + "y"},
        {"key": UNICODE_KEY, "secret": SECRET},
        {"token": token({"channel": CHANNEL, "pub": True, "sub": True})},
        {},
        None,
        "key",
        [KEY, SECRET],
    ]


class Harness:
    """A key cache, an authority and a tenancy extension over one fake store and clock."""

    def __init__(self, test: SynchronousTestCase, clock: Clock, store: FakeKeyStore) -> None:
        self.test = test
        self.keys = KeyCache(store, clock, ttl=60.0)
        self.authority = ChannelAuthority(self.keys, clock)
        self.extension = TenancyExtension(self.authority)

    def decide(self, op: str, channel: Any, auth: Any) -> Any:
        """The decision (waited for if the key had to be read), or the refusal's text."""
        try:
            decision = self.authority.decide(op, channel, auth)
        except AuthRefused as refused:
            return refused.refusal.text
        if isinstance(decision, Deferred):
            result = self.test.successResultOf(decision.addErrback(lambda f: f.trap(AuthRefused) and f.value))
            return result.refusal.text if isinstance(result, AuthRefused) else result
        return decision

    def publish(self, auth: Any, channel: str = CHANNEL) -> tuple[dict[str, Any], dict[str, Any]]:
        """The message and the context's attributes after the extension."""
        message = {"channel": channel, "data": {}, "ext": {"auth": auth}}
        context = MessageContext("websocket")
        out = self.extension.incoming(message, context)
        if isinstance(out, Deferred):
            out = self.test.successResultOf(out)
        assert isinstance(out, dict)
        return out, context.attributes


class FastGrantTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = FakeKeyStore()
        self.key = self.store.add(FakeKey(KEY, APP, SECRET, expires=at(NOW + 3600)))
        self.store.add(FakeKey(UNICODE_KEY, APP, UNICODE_SECRET))
        self.warm = Harness(self, self.clock, self.store)

    def warmUp(self, harness: Harness | None = None) -> None:
        """Grants remembered for both keys, on every channel a grant covers."""
        harness = harness or self.warm
        for keyId, secret in ((KEY, SECRET), (UNICODE_KEY, UNICODE_SECRET)):
            for op in (PUBLISH, SUBSCRIBE):
                for channel in CHANNELS:
                    for _ in range(2):
                        harness.decide(op, channel, {"key": keyId, "secret": secret})

    def test_sameAsFullDecision(self) -> None:
        """
        For every credentials and channel, a warm authority (grants remembered) answers
        what one deciding in full answers; the hot path answers only when that is a grant,
        and then with the same Allowed.
        """
        self.warmUp()
        for op in (PUBLISH, SUBSCRIBE):
            for channel in [*CHANNELS, None, 5, ["x"]]:
                for auth in auths():
                    cold = Harness(self, self.clock, self.store).decide(op, channel, auth)
                    fast = self.warm.authority.keyGrant(op, channel, auth)
                    warm = self.warm.decide(op, channel, auth)
                    self.assertEqual(warm, cold, (op, channel, auth))
                    if fast is not None:
                        self.assertIsInstance(cold, Allowed, (op, channel, auth))
                        self.assertEqual(fast.allowed, cold)

    def test_hotPathTaken(self) -> None:
        """A good key+secret on a channel seen before is granted on the hot path, equal secrets alike."""
        self.warmUp()
        for auth in ({"key": KEY, "secret": SECRET}, {"key": KEY, "secret": "".join(list(SECRET))}):
            grant = self.warm.authority.keyGrant(PUBLISH, CHANNEL, auth)
            assert grant is not None
            self.assertEqual(grant.allowed, Allowed(KEY, keyExpires=NOW + 3600))
        grant = self.warm.authority.keyGrant(PUBLISH, CHANNEL, {"key": UNICODE_KEY, "secret": UNICODE_SECRET})
        self.assertIsNotNone(grant)

    def test_contextSameAsFullPath(self) -> None:
        """A publish granted on the hot path leaves what the full path leaves in the context."""
        cold, coldAttributes = self.warm.publish({"key": KEY, "secret": SECRET})
        self.assertIsNone(self.warm.authority.keyGrant(PUBLISH, f"/{APP}/public/x", {"key": KEY}))
        hot, hotAttributes = self.warm.publish({"key": KEY, "secret": SECRET})
        self.assertIsNotNone(self.warm.authority.keyGrant(PUBLISH, CHANNEL, {"key": KEY, "secret": SECRET}))
        self.assertEqual(hot, cold)
        self.assertEqual(hotAttributes, coldAttributes)
        self.assertEqual(hotAttributes, {"keyId": KEY, "authenticated": {APP}, "keyExpires": NOW + 3600})

    def test_wrongSecretAfterRightOne(self) -> None:
        """A wrong secret after right ones is refused with the full decision's text, every time."""
        for _ in range(3):
            self.assertNotIn("error", self.warm.publish({"key": KEY, "secret": SECRET})[0])
        for wrong in ("wrong", SECRET[:-1], SECRET + " ", "", "sécret"):
            self.assertEqual(
                self.warm.publish({"key": KEY, "secret": wrong})[0]["error"], "401::Invalid secret"
            )
        self.assertNotIn("error", self.warm.publish({"key": KEY, "secret": SECRET})[0])

    def test_expiresWhileRemembered(self) -> None:
        """A key that expires while its grant is remembered is refused from its expiry on."""
        self.warmUp()
        self.key.expires = at(NOW + 10)
        self.warm.keys.invalidate(KEY)
        self.warmUp()
        self.clock.advance(9.9)
        self.assertNotIn("error", self.warm.publish({"key": KEY, "secret": SECRET})[0])
        self.clock.advance(0.1)
        self.assertIsNone(self.warm.authority.keyGrant(PUBLISH, CHANNEL, {"key": KEY, "secret": SECRET}))
        self.assertEqual(self.warm.publish({"key": KEY, "secret": SECRET})[0]["error"], "401::Expired key")

    def test_invalidations(self) -> None:
        """A revoke, a delete, an application changed: refused (or read again) at the next publish."""
        self.warmUp()
        self.key.revoked_at = at(NOW)
        self.warm.keys.invalidate(KEY, propagate=False)
        self.assertEqual(self.warm.publish({"key": KEY, "secret": SECRET})[0]["error"], "401::Revoked key")
        self.key.revoked_at = None
        self.warm.keys.invalidate(KEY)
        self.warmUp()
        self.key.application_id = OTHER_APP
        self.warm.keys.invalidateApp(APP)
        self.assertEqual(
            self.warm.publish({"key": KEY, "secret": SECRET})[0]["error"], "401::Could not find key"
        )
        del self.store.keys[KEY]
        self.warm.keys.clear()
        self.assertEqual(
            self.warm.publish({"key": KEY, "secret": SECRET})[0]["error"], "401::Could not find key"
        )

    def test_staleAfterTTL(self) -> None:
        """A change nobody announced takes effect with the key cache's TTL, as in the full decision."""
        self.warmUp()
        self.key.revoked_at = at(NOW)
        self.assertNotIn("error", self.warm.publish({"key": KEY, "secret": SECRET})[0])
        self.clock.advance(60)
        self.assertIsNone(self.warm.authority.keyGrant(PUBLISH, CHANNEL, {"key": KEY, "secret": SECRET}))
        self.assertEqual(self.warm.publish({"key": KEY, "secret": SECRET})[0]["error"], "401::Revoked key")

    def test_entryKeptPastOutage(self) -> None:
        """An entry kept past a failed lookup is a new entry: decided in full once, then remembered again."""
        self.warmUp()
        self.clock.advance(60)
        self.store.getKey = lambda keyId: defer.fail(RuntimeError("down"))  # type: ignore[method-assign]
        self.assertNotIn("error", self.warm.publish({"key": KEY, "secret": SECRET})[0])
        self.assertNotIn("error", self.warm.publish({"key": KEY, "secret": SECRET})[0])
        self.assertIsNotNone(self.warm.authority.keyGrant(PUBLISH, CHANNEL, {"key": KEY, "secret": SECRET}))


class FastGrantUsageTests(SynchronousTestCase):
    """Uses counted on the hot path are exact wherever usage is read or written."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = FakeKeyStore()
        self.key = self.store.add(FakeKey(KEY, APP, SECRET))
        self.harness = Harness(self, self.clock, self.store)
        self.keys = self.harness.keys

    def publishes(self, count: int, keyId: str = KEY) -> None:
        for _ in range(count):
            self.assertNotIn("error", self.harness.publish({"key": keyId, "secret": SECRET})[0])
            self.clock.advance(1)

    def test_pendingExact(self) -> None:
        """Every publish counts one use, with the time of the last, hot path or not."""
        self.publishes(5)
        usage = self.keys.pendingUsage()[KEY]
        self.assertEqual((usage.count, usage.lastUsed), (5, NOW + 4))
        self.publishes(2)
        self.assertEqual(self.keys.pendingUsage()[KEY].count, 7)

    def test_flushedExact(self) -> None:
        """A flush writes every use so far, then counting starts again from nothing."""
        self.publishes(4)
        self.keys.flushUsage()
        self.assertEqual(self.store.usage, [{KEY: (4, at(NOW + 3))}])
        self.publishes(3)
        self.keys.flushUsage()
        self.assertEqual(self.store.usage[1], {KEY: (3, at(NOW + 6))})
        self.assertEqual(self.keys.pendingUsage(), {})

    def test_failedFlushKept(self) -> None:
        """Uses whose write failed go out with the next flush, with those counted meanwhile."""
        self.publishes(2)
        self.store.failUsage = True
        self.keys.flushUsage()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.publishes(3)
        self.store.failUsage = False
        self.keys.flushUsage()
        self.assertEqual(self.store.usage, [{KEY: (5, at(NOW + 4))}])

    def test_handedOverWhenDropped(self) -> None:
        """A grant dropped (invalidated, its application changed, read again, evicted) hands its uses over."""
        self.publishes(3)
        self.keys.invalidate(KEY)
        self.publishes(3)
        self.keys.invalidateApp(APP)
        self.publishes(3)
        self.clock.advance(60)  # the entry goes stale: the grant is replaced
        self.publishes(3)
        self.harness.authority.maxKeyGrants = 1
        other = "PSIDotherkeyxxxxxxxx"
        self.store.add(FakeKey(other, APP, SECRET))
        self.publishes(2, other)  # evicts KEY's grant
        self.assertNotIn(KEY, self.harness.authority._keyGrants)
        usage = self.keys.pendingUsage()
        self.assertEqual(usage[KEY].count, 12)
        self.assertEqual(usage[other].count, 2)
        self.keys.flushUsage()
        self.assertEqual(sum(written[KEY][0] for written in self.store.usage), 12)


class GrantableBoundsTests(SynchronousTestCase):
    """The channels remembered as covered by any key+secret grant are bounded."""

    def test_bounded(self) -> None:
        """A full table is emptied before the next channel goes in; the grants stay right."""
        self.patch(checkers, "_MAX_GRANTABLE", 3)
        clock = Clock()
        clock.advance(NOW)
        store = FakeKeyStore()
        store.add(FakeKey(KEY, APP, SECRET))
        harness = Harness(self, clock, store)
        for index in range(5):
            for _ in range(2):
                self.assertIsInstance(
                    harness.decide(PUBLISH, f"/{APP}/private/c{index}", {"key": KEY, "secret": SECRET}),
                    Allowed,
                )
            self.assertLessEqual(len(harness.authority._grantable[PUBLISH]), 3)
        # c0 was decided in full (its key read, then remembered); c1 to c3 filled the table.
        self.assertEqual(list(harness.authority._grantable[PUBLISH]), [f"/{APP}/private/c4"])
        # A channel seen again after that is parsed and noted again, and granted at once.
        grant = harness.authority.keyGrant(PUBLISH, f"/{APP}/private/c1", {"key": KEY, "secret": SECRET})
        self.assertIsNotNone(grant)
        self.assertEqual(
            list(harness.authority._grantable[PUBLISH]), [f"/{APP}/private/c4", f"/{APP}/private/c1"]
        )
