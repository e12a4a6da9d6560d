"""The tenancy extension on plain message dicts: refusals, stripping, presence hand-off."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from pandapush.auth.checkers import ChannelAuthority
from pandapush.auth.keycache import KeyCache
from pandapush.auth.tenancy import TenancyExtension
from pandapush.bayeux.context import MessageContext
from pandapush.interfaces import IExtension
from tests.support.auth import APP, KEY, NOW, SECRET, FakeKey, FakeKeyStore, token

PRIVATE = f"/{APP}/private/a"
PRESENCE = f"/{APP}/presence/room"
KEYAUTH = {"key": KEY, "secret": SECRET}


class TenancyExtensionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = FakeKeyStore()
        self.store.add(FakeKey(KEY, APP, SECRET))
        self.keys = KeyCache(self.store, self.clock)
        self.extension = TenancyExtension(ChannelAuthority(self.keys, self.clock))

    def check(self, message: dict[str, Any], context: MessageContext | None = None) -> Any:
        context = context or MessageContext("long-polling")
        out = self.extension.incoming(message, context)
        if isinstance(out, Deferred):
            out = self.successResultOf(out)
        return out

    def subscribe(self, channel: Any, auth: Any = None, context: MessageContext | None = None) -> Any:
        message: dict[str, Any] = {"channel": "/meta/subscribe", "clientId": "c1", "subscription": channel}
        if auth is not None:
            message["ext"] = {"auth": auth}
        return self.check(message, context)

    def test_interface(self) -> None:
        verifyObject(IExtension, self.extension)

    def test_publicSubscribe(self) -> None:
        """Anyone subscribes to a public channel."""
        self.assertNotIn("error", self.subscribe(f"/{APP}/public/x"))

    def test_privateSubscribeRefused(self) -> None:
        """No auth: ``401::No auth supplied`` as the message's error."""
        self.assertEqual(self.subscribe(PRIVATE)["error"], "401::No auth supplied")

    def test_invalidChannel(self) -> None:
        """A channel not of the tenancy shape is ``405::Invalid channel name``, even with a key."""
        self.assertEqual(self.subscribe("/foo", KEYAUTH)["error"], "405::Invalid channel name")
        self.assertEqual(self.subscribe(f"/{APP}/**", KEYAUTH)["error"], "405::Invalid channel name")
        publish = self.check({"channel": "/foo", "data": {}, "ext": {"auth": KEYAUTH}})
        self.assertEqual(publish["error"], "405::Invalid channel name")

    def test_tokenSubscribe(self) -> None:
        """A good sub token subscribes, and ``ext.auth`` is gone afterwards."""
        message = self.subscribe(PRIVATE, {"token": token({"channel": PRIVATE, "sub": True})})
        self.assertNotIn("error", message)
        self.assertNotIn("ext", message)

    def test_subscribeManyFirstRefusalWins(self) -> None:
        """Several channels are checked in order; the first refusal refuses the message."""
        t = token({"channel": f"/{APP}/private/**", "sub": True})
        ok = self.subscribe([f"/{APP}/public/x", PRIVATE, f"/{APP}/private/b/c"], {"token": t})
        self.assertNotIn("error", ok)
        refused = self.subscribe([PRIVATE, "/bad", f"/{APP}/presence/x"], {"token": t})
        self.assertEqual(refused["error"], "405::Invalid channel name")

    def test_presenceHandedOver(self) -> None:
        """The token's presence goes to the context for the presence extension, not the message."""
        presence = {"id": "user1", "name": "Joe"}
        context = MessageContext("websocket")
        message = self.subscribe(
            PRESENCE,
            {"token": token({"channel": PRESENCE, "sub": True, "presence": presence})},
            context,
        )
        self.assertNotIn("error", message)
        self.assertEqual(context.attributes["presence"], presence)
        self.assertEqual(context.attributes["keyId"], KEY)

    def test_presenceCannotBeSpoofed(self) -> None:
        """``ext.presence`` from the client is ignored; without the token's it is refused."""
        context = MessageContext("websocket")
        message = {
            "channel": "/meta/subscribe",
            "clientId": "c1",
            "subscription": PRESENCE,
            "ext": {"auth": {"token": token({"channel": PRESENCE, "sub": True})}, "presence": {"id": "x"}},
        }
        self.assertEqual(
            self.check(message, context)["error"], "403::No presence id specified in presence subscription"
        )
        self.assertNotIn("presence", context.attributes)

    def test_publishWithKey(self) -> None:
        """Key+secret publishes; the credentials never reach the delivery."""
        message = self.check({"channel": PRIVATE, "data": {"x": 1}, "ext": {"auth": KEYAUTH, "other": 2}})
        self.assertNotIn("error", message)
        self.assertEqual(message["ext"], {"other": 2})

    def test_publishWithDataAuth(self) -> None:
        """Upstream's ``data.__auth`` works for publishing and is stripped from the data."""
        message = self.check({"channel": PRIVATE, "data": {"x": 1, "__auth": KEYAUTH}})
        self.assertNotIn("error", message)
        self.assertEqual(message["data"], {"x": 1})

    def test_publishStripsEvenWhenRefused(self) -> None:
        """A refused publish loses its credentials too, and a wrong secret says so."""
        message = self.check({"channel": PRIVATE, "data": {"__auth": {"key": KEY, "secret": "no"}}})
        self.assertEqual(message["error"], "401::Invalid secret")
        self.assertEqual(message["data"], {})

    def test_publishTokenWithoutPub(self) -> None:
        t = token({"channel": PRIVATE, "sub": True})
        message = self.check({"channel": PRIVATE, "data": {}, "ext": {"auth": {"token": t}}})
        self.assertEqual(message["error"], "403::Token does not allow publishing")

    def test_publishPublicNeedsAuth(self) -> None:
        """Publishing always needs auth, public channels included."""
        message = self.check({"channel": f"/{APP}/public/x", "data": {}})
        self.assertEqual(message["error"], "401::No auth supplied")

    def test_metaPublishRefused(self) -> None:
        message = self.check({"channel": f"/{APP}/meta/x", "data": {}, "ext": {"auth": KEYAUTH}})
        self.assertEqual(message["error"], "405::Invalid channel name")

    def test_serviceChannelsRefused(self) -> None:
        """Bayeux ``/service/...`` publishes are not tenancy channels either."""
        message = self.check({"channel": "/service/x", "data": {}, "ext": {"auth": KEYAUTH}})
        self.assertEqual(message["error"], "405::Invalid channel name")

    def test_otherMetaPass(self) -> None:
        """Handshake, connect, unsubscribe, disconnect are not tenancy's business."""
        for channel in ("/meta/handshake", "/meta/connect", "/meta/unsubscribe", "/meta/disconnect"):
            message = {"channel": channel, "clientId": "c"}
            self.assertEqual(self.check(dict(message)), message)

    def test_trusted(self) -> None:
        """Server-generated messages pass without auth."""
        message = {"channel": PRIVATE, "data": {}}
        self.assertNotIn("error", self.check(message, MessageContext("internal", trusted=True)))

    def test_oddMessagesLeftToRouter(self) -> None:
        """A missing channel or subscription is the router's to answer, not a crash here."""
        self.assertEqual(self.check({"clientId": "c"}), {"clientId": "c"})
        self.assertNotIn("error", self.check({"channel": "/meta/subscribe", "clientId": "c"}))
        self.assertNotIn("error", self.check({"channel": "/meta/subscribe", "subscription": 5}))

    def test_syncOnCacheHit(self) -> None:
        """With the key cached, the extension answers without a Deferred (hot path)."""
        self.check({"channel": PRIVATE, "data": {}, "ext": {"auth": KEYAUTH}})
        out = self.extension.incoming(
            {"channel": PRIVATE, "data": {}, "ext": {"auth": KEYAUTH}}, MessageContext("websocket")
        )
        self.assertIsInstance(out, dict)

    def test_asyncLookup(self) -> None:
        """A slow key lookup answers later with the same result."""
        self.store.hold = Deferred()
        out = self.extension.incoming(
            {"channel": PRIVATE, "data": {}, "ext": {"auth": KEYAUTH}}, MessageContext("websocket")
        )
        assert isinstance(out, Deferred)
        self.assertNoResult(out)
        self.store.hold.callback(None)
        self.assertNotIn("error", self.successResultOf(out))

    def test_subscribeManyAtOnce(self) -> None:
        """A list subscription with cached keys is answered without a Deferred, every channel granted."""
        t = token({"channel": f"/{APP}/private/**", "sub": True})
        context = MessageContext("websocket")
        message = {
            "channel": "/meta/subscribe",
            "clientId": "c1",
            "subscription": [f"/{APP}/public/x", PRIVATE],
            "ext": {"auth": {"token": t}},
        }
        out = self.extension.incoming(message, context)
        self.assertIsInstance(out, dict)
        self.assertNotIn("error", out)
        self.assertEqual(context.attributes["keyId"], KEY)

    def test_subscribeManyLookup(self) -> None:
        """
        A list subscription whose key is fetched: the channels after it are checked once it
        is, in order, and a refusal among them still refuses the message.
        """
        for subscription, error in [
            ([f"/{APP}/public/x", PRIVATE, f"/{APP}/private/b"], None),
            ([PRIVATE, "/bad", f"/{APP}/private/b"], "405::Invalid channel name"),
        ]:
            self.keys = KeyCache(self.store, self.clock)
            self.extension = TenancyExtension(ChannelAuthority(self.keys, self.clock))
            self.store.hold = Deferred()
            context = MessageContext("websocket")
            message = {
                "channel": "/meta/subscribe",
                "clientId": "c1",
                "subscription": subscription,
                "ext": {"auth": KEYAUTH},
            }
            out = self.extension.incoming(message, context)
            assert isinstance(out, Deferred)
            self.assertNoResult(out)
            self.store.hold.callback(None)
            answered = self.successResultOf(out)
            assert answered is not None
            self.assertEqual(answered.get("error"), error)
            self.assertEqual(context.attributes.get("keyId"), KEY)

    def test_subscribeManyStorageFailure(self) -> None:
        """A key that cannot be fetched for a list subscription: a server error, logged."""
        self.store.getKey = lambda keyId: defer.fail(RuntimeError("db down"))  # type: ignore[method-assign]
        message = self.subscribe([f"/{APP}/public/x", PRIVATE], KEYAUTH)
        self.assertEqual(message["error"], "500::Internal server error")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_storageFailure(self) -> None:
        """A storage error is a server error, logged, not ``Could not find key``."""
        self.store.getKey = lambda keyId: defer.fail(RuntimeError("db down"))  # type: ignore[method-assign]
        message = self.check({"channel": PRIVATE, "data": {}, "ext": {"auth": KEYAUTH}})
        self.assertEqual(message["error"], "500::Internal server error")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
