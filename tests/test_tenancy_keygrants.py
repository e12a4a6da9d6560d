"""
``ChannelAuthority``'s remembered key+secret grants.

A key+secret publish (or subscribe) granted once is granted again from a memo tied to
the key cache's facts for the key, its secret and expiry checked on every use. These
tests pin that everything that refuses a key today still refuses it, as soon as it does
today: a revoke or delete (an invalidation, here or from another node), the key's
expiry, a wrong secret, another application's channel, a presence subscribe, an
application changed; and that the usage is still counted.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pandapush.auth.checkers import AuthRefused, ChannelAuthority
from pandapush.auth.credentials import KeySecret
from pandapush.auth.keycache import KeyCache
from pandapush.auth.rules import PUBLISH, SUBSCRIBE, Allowed, parseChannel
from pandapush.auth.tenancy import TenancyExtension
from pandapush.bayeux.context import MessageContext
from tests.support.auth import APP, KEY, NOW, OTHER_APP, SECRET, FakeKey, FakeKeyStore, at

CHANNEL = f"/{APP}/private/room"
OTHER_KEY = "PSIDotherkeyxxxxxxxx"


class KeyGrantTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = FakeKeyStore()
        self.key = self.store.add(FakeKey(KEY, APP, SECRET))
        self.store.add(FakeKey(OTHER_KEY, OTHER_APP, SECRET))
        self.keys = KeyCache(self.store, self.clock, ttl=60.0)
        self.authority = ChannelAuthority(self.keys, self.clock)
        self.extension = TenancyExtension(self.authority)

    def decide(self, channel: str = CHANNEL, secret: str = SECRET, key: str = KEY, op: str = PUBLISH) -> Any:
        """The decision, waited for if the key had to be read; a refusal's text."""
        try:
            decision = self.authority.decide(op, channel, {"key": key, "secret": secret})
        except AuthRefused as refused:
            return refused.refusal.text
        if isinstance(decision, Deferred):
            result = self.successResultOf(decision.addErrback(lambda f: f.trap(AuthRefused) and f.value))
            return result.refusal.text if isinstance(result, AuthRefused) else result
        return decision

    def publish(self, secret: str = SECRET) -> dict[str, Any]:
        message = {"channel": CHANNEL, "data": {}, "ext": {"auth": {"key": KEY, "secret": secret}}}
        out = self.extension.incoming(message, MessageContext("websocket"))
        if isinstance(out, Deferred):
            out = self.successResultOf(out)
        assert isinstance(out, dict)
        return out

    def granted(self) -> Allowed:
        """The second of two grants: the first one read the key and made the memo."""
        first = self.decide()
        second = self.decide()
        self.assertIsInstance(second, Allowed)
        self.assertEqual(second, first)
        return second  # type: ignore[no-any-return]

    def test_sameAllowed(self) -> None:
        """A remembered grant is the grant: same key, expiry, no presence, user or token expiry."""
        allowed = self.granted()
        self.assertEqual(allowed, Allowed(KEY, None, None, None, None))
        self.assertIs(self.decide(f"/{APP}/public/other", op=PUBLISH), allowed)
        self.assertIs(self.decide(f"/{APP}/private/x", op=SUBSCRIBE), allowed)
        self.assertEqual(self.store.lookups, [KEY])

    def test_contextAsBefore(self) -> None:
        """Publishes granted from the memo leave the same facts in the context, and no credentials."""
        first, second = self.publish(), self.publish()
        self.assertEqual(first, second)
        self.assertNotIn("ext", second)
        context = MessageContext("websocket")
        message = {"channel": CHANNEL, "data": {}, "ext": {"auth": {"key": KEY, "secret": SECRET}}}
        self.extension.incoming(message, context)
        self.assertEqual(context.attributes, {"keyId": KEY, "authenticated": {APP}})

    def test_wrongSecret(self) -> None:
        """A wrong secret after good ones is refused (``Invalid secret``), every time."""
        self.granted()
        self.assertEqual(self.decide(secret="wrong"), "Invalid secret")
        self.assertEqual(self.decide(secret=SECRET + "x"), "Invalid secret")
        self.assertEqual(self.decide(secret=""), "Invalid secret")
        self.assertEqual(self.publish("wrong")["error"], "401::Invalid secret")
        self.assertIsInstance(self.decide(), Allowed)

    def test_revokedAtOnce(self) -> None:
        """A key revoked and invalidated (the admin API, or key sync) is refused at the next message."""
        self.granted()
        self.key.revoked_at = at(NOW)
        self.keys.invalidate(KEY, propagate=False)
        self.assertEqual(self.decide(), "Revoked key")
        self.assertEqual(self.decide(), "Revoked key")

    def test_deletedAtOnce(self) -> None:
        """A key deleted and invalidated is refused at the next message."""
        self.granted()
        del self.store.keys[KEY]
        self.keys.invalidate(KEY)
        self.assertEqual(self.decide(), "Could not find key")

    def test_applicationInvalidated(self) -> None:
        """An application invalidated (changed or deleted) is decided again in full."""
        self.granted()
        del self.store.keys[KEY]
        self.keys.invalidateApp(APP)
        self.assertEqual(self.authority._keyGrants, {})
        self.assertEqual(self.decide(), "Could not find key")

    def test_revokedUninvalidatedAfterTTL(self) -> None:
        """A change nobody told this node about takes effect with the key cache's TTL, as before."""
        self.granted()
        self.key.revoked_at = at(NOW)
        self.assertIsInstance(self.decide(), Allowed)
        self.clock.advance(61)
        self.assertEqual(self.decide(), "Revoked key")

    def test_reloadedKeyStillGranted(self) -> None:
        """A key read again after its TTL is granted again (with the facts read now)."""
        self.granted()
        self.clock.advance(61)
        self.assertIsInstance(self.decide(), Allowed)
        self.assertIsInstance(self.decide(), Allowed)
        self.assertEqual(self.store.lookups, [KEY, KEY])

    def test_expiresWhileCached(self) -> None:
        """A key that expires while its facts are cached is refused from its expiry on."""
        self.key.expires = at(NOW + 10)
        allowed = self.granted()
        self.assertEqual(allowed.keyExpires, NOW + 10)
        self.clock.advance(9.5)
        self.assertIs(self.decide(), allowed)
        self.clock.advance(0.5)
        self.assertEqual(self.decide(), "Expired key")

    def test_otherApplication(self) -> None:
        """A remembered key on another application's channel: ``Could not find key``."""
        self.granted()
        self.assertEqual(self.decide(f"/{OTHER_APP}/private/room"), "Could not find key")

    def test_presenceSubscribe(self) -> None:
        """A presence subscribe with a remembered key is refused: presence comes from a token."""
        self.granted()
        refusal = self.decide(f"/{APP}/presence/room", op=SUBSCRIBE)
        self.assertEqual(refusal, "No presence id specified in presence subscription")

    def test_usageCounted(self) -> None:
        """Every grant, remembered or not, counts one use of the key."""
        for _ in range(5):
            self.decide()
        self.assertEqual(self.keys.pendingUsage()[KEY].count, 5)

    def test_bounded(self) -> None:
        """At most ``maxKeyGrants`` keys are remembered, the oldest forgotten first."""
        self.authority.maxKeyGrants = 2
        for index in range(3):
            keyId = f"PSIDkey{index:013d}"
            self.store.add(FakeKey(keyId, APP, SECRET))
            self.assertIsInstance(self.decide(key=keyId), Allowed)  # read, then remembered
            self.assertIsInstance(self.decide(key=keyId), Allowed)
        self.assertEqual(list(self.authority._keyGrants), ["PSIDkey0000000000001", "PSIDkey0000000000002"])
        self.assertIsInstance(self.decide(key="PSIDkey0000000000000"), Allowed)

    def test_restCredentials(self) -> None:
        """The REST publish's credentials use the same memo and the same checks."""
        channel = parseChannel(CHANNEL, PUBLISH)
        assert channel is not None

        def rest(secret: str) -> Any:
            try:
                return self.authority.decideCredentials(PUBLISH, channel, KeySecret(APP, KEY, secret))
            except AuthRefused as refused:
                return refused.refusal.text

        allowed = self.granted()
        self.assertIs(rest(SECRET), allowed)
        self.assertEqual(rest("wrong"), "Invalid secret")
        self.key.expires = at(NOW - 1)
        self.keys.invalidate(KEY)
        later = self.authority.authorizeCredentials(PUBLISH, channel, KeySecret(APP, KEY, SECRET))
        refused = self.failureResultOf(later, AuthRefused)
        self.assertEqual(refused.value.refusal.text, "Expired key")
