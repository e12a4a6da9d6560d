"""A subscription whose token expires while connected is ended, and the client told why."""

from __future__ import annotations

import json
import os
import time
import warnings
from typing import Any

import jwt
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pandapush.auth import TenancyConfig
from pandapush.bayeux.context import MessageContext
from pandapush.engines.memory import MemoryEngine
from pandapush.extensions.expiry import SubscriptionExpiry, expiryNotice
from pandapush.extensions.presence import PresenceExtension
from pandapush.router import BayeuxRouter
from pandapush.storage.memory import MemoryStorage
from tests.support.bayeux import WSClient
from tests.support.inprocess import APP, AUTH, KEY, SECRET, InProcessServer, channel
from tests.support.node import NodeScript, requireNode
from tests.support.tenancy import makeTenancy
from tests.support.waiting import eventually

HANDSHAKE = {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}
T0 = 1_800_000_000.0


class _WiredRouter(TestCase):
    """The router, tenancy, presence and expiry as the server wires them, on a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        # Connects held for longer than the tokens live, clients that do not expire meanwhile.
        self.engine = MemoryEngine(self.clock, timeout=120, expiry=100_000)
        self.router = BayeuxRouter(self.engine, self.clock, timeout=120)
        self.storage = MemoryStorage()
        config = TenancyConfig(
            adminUsername="admin", adminPassword="pw", dataDir=os.path.abspath(self.mktemp()), tokenLeeway=5
        )
        self.tenancy = makeTenancy(self.storage, config, self.router.publish, self.clock)
        self.router.addExtension(self.tenancy.extension)
        self.router.addExtension(PresenceExtension(self.router))
        self.expiry = SubscriptionExpiry(self.router, self.clock, leeway=5, keys=self.tenancy.keys)
        self.router.addExtension(self.expiry)
        self.app = self.successResultOf(self.storage.createApplication("testapp", "admin", admins=["admin"]))
        self.key = self.successResultOf(self.storage.createKey(self.app.id, "admin"))
        self.private = f"/{self.app.id}/private/room"

    def token(self, channelName: str, exp: float | None, **claims: Any) -> str:
        body: dict[str, Any] = {"keyId": self.key.id, "channel": channelName, "sub": True, **claims}
        if exp is not None:
            body["exp"] = exp
        return jwt.encode(body, self.key.secret)

    def send(self, message: dict[str, Any]) -> dict[str, Any]:
        replies: list[Any] = self.successResultOf(
            self.router.process([message], MessageContext("long-polling"))
        )
        return replies[0]  # type: ignore[no-any-return]

    def client(self) -> str:
        clientId: str = self.send(dict(HANDSHAKE))["clientId"]
        self.send({"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"})
        return clientId

    def subscribe(self, clientId: str, channelName: str, auth: Any) -> dict[str, Any]:
        message: dict[str, Any] = {
            "channel": "/meta/subscribe",
            "clientId": clientId,
            "subscription": channelName,
        }
        if auth is not None:
            message["ext"] = {"auth": auth}
        return self.send(message)

    def connect(self, clientId: str) -> defer.Deferred[list[Any]]:
        message = {"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"}
        return self.router.process([message], MessageContext("long-polling"))

    def payloads(self, replies: list[Any]) -> list[Any]:
        return [json.loads(r.payload) for r in replies if hasattr(r, "payload")]


class ExpiryRouterTests(_WiredRouter):
    """Token-granted subscriptions end at the token's ``exp``."""

    def test_endsAtExpiryPlusLeeway(self) -> None:
        """The subscription stays until exp + leeway, then ends; a held connect carries the notice."""
        clientId = self.client()
        self.assertTrue(
            self.subscribe(clientId, self.private, {"token": self.token(self.private, T0 + 60)})["successful"]
        )
        self.assertEqual(len(self.expiry), 1)
        held = self.connect(clientId)
        self.clock.advance(64.9)
        self.assertNoResult(held)
        self.assertEqual(self.successResultOf(self.engine.subscriptions(clientId)), {self.private})
        self.clock.advance(0.2)
        self.assertEqual(self.successResultOf(self.engine.subscriptions(clientId)), set())
        self.assertEqual(self.payloads(self.successResultOf(held)), [expiryNotice(clientId, self.private)])
        self.assertEqual(expiryNotice(clientId, self.private)["error"], f"401:{self.private}:Token expired")
        self.assertEqual((len(self.expiry), self.expiry.expired), (0, 1))

    def test_noticeWaitsForTheNextConnect(self) -> None:
        """A long-poller between connects gets the notice with its next one."""
        clientId = self.client()
        self.subscribe(clientId, self.private, {"token": self.token(self.private, T0 + 10)})
        self.clock.advance(16)
        replies = self.successResultOf(self.connect(clientId))
        self.assertEqual(self.payloads(replies), [expiryNotice(clientId, self.private)])

    def test_refreshMovesTheDeadline(self) -> None:
        """Subscribing again with a newer token keeps the subscription until that one expires."""
        clientId = self.client()
        self.subscribe(clientId, self.private, {"token": self.token(self.private, T0 + 10)})
        self.clock.advance(8)
        self.subscribe(clientId, self.private, {"token": self.token(self.private, T0 + 100)})
        self.clock.advance(50)
        self.assertEqual(self.successResultOf(self.engine.subscriptions(clientId)), {self.private})
        self.clock.advance(50)
        self.assertEqual(self.successResultOf(self.engine.subscriptions(clientId)), set())

    def test_whatNeverExpires(self) -> None:
        """Key+secret, tokens without exp and public channels set no deadline; key+secret lifts one."""
        clientId = self.client()
        public = f"/{self.app.id}/public/news"
        self.subscribe(clientId, public, {"token": self.token(public, T0 + 10)})
        self.subscribe(
            clientId, f"/{self.app.id}/private/a", {"token": self.token(f"/{self.app.id}/private/a", None)}
        )
        self.assertEqual(len(self.expiry), 0)
        self.subscribe(clientId, self.private, {"token": self.token(self.private, T0 + 10)})
        self.subscribe(clientId, self.private, {"key": self.key.id, "secret": self.key.secret})
        self.assertEqual(len(self.expiry), 0)
        self.clock.advance(1000)
        self.assertEqual(len(self.successResultOf(self.engine.subscriptions(clientId))), 3)

    def test_goneBeforehand(self) -> None:
        """Unsubscribing or disconnecting first forgets the deadline: nothing is sent later."""
        first, second = self.client(), self.client()
        for clientId in (first, second):
            self.subscribe(clientId, self.private, {"token": self.token(self.private, T0 + 10)})
        self.send({"channel": "/meta/unsubscribe", "clientId": first, "subscription": self.private})
        self.send({"channel": "/meta/disconnect", "clientId": second})
        self.assertEqual(len(self.expiry), 0)
        self.clock.advance(100)
        self.assertEqual(self.expiry.expired, 0)

    def test_presenceMemberLeaves(self) -> None:
        """An expired presence subscription leaves the channel: the others hear the member go."""
        presence = f"/{self.app.id}/presence/room"
        watcher, member = self.client(), self.client()
        self.subscribe(watcher, presence, {"token": self.token(presence, T0 + 1000, presence={"id": "w"})})
        self.subscribe(member, presence, {"token": self.token(presence, T0 + 10, presence={"id": "m"})})
        held = self.connect(watcher)
        self.clock.advance(0)
        self.successResultOf(held)
        held = self.connect(watcher)
        self.clock.advance(16)
        self.assertIn(
            {"channel": presence, "data": {"unsubscribe": {"m": None}}},
            self.payloads(self.successResultOf(held)),
        )

    def test_stopCancelsTheTimer(self) -> None:
        """Stopping (the server going away) leaves no timer behind; so does the last deadline going."""
        clientId = self.client()
        self.subscribe(clientId, self.private, {"token": self.token(self.private, T0 + 10)})
        timers = lambda: [c for c in self.clock.calls if c.func == self.expiry._fire]  # noqa: E731
        self.assertEqual(len(timers()), 1)
        self.send({"channel": "/meta/unsubscribe", "clientId": clientId, "subscription": self.private})
        self.assertEqual(timers(), [])
        self.subscribe(clientId, self.private, {"token": self.token(self.private, T0 + 10)})
        self.expiry.startService()
        self.expiry.stopService()
        self.assertEqual(timers(), [])

    def test_oneTimerForAll(self) -> None:
        """Many subscriptions share one timer, armed for the earliest deadline."""
        clients = [self.client() for _ in range(20)]
        for n, clientId in enumerate(clients):
            self.subscribe(clientId, self.private, {"token": self.token(self.private, T0 + 100 - n)})
        timers = [c for c in self.clock.calls if c.func == self.expiry._fire]
        self.assertEqual([c.getTime() for c in timers], [T0 + 100 - 19 + 5])
        self.clock.advance(100 - 19 + 5)
        self.assertEqual(self.expiry.expired, 1)
        self.clock.advance(20)
        self.assertEqual(self.expiry.expired, 20)
        self.assertEqual([c for c in self.clock.calls if c.func == self.expiry._fire], [])


class KeyChangeTests(_WiredRouter):
    """Subscriptions end with the key that granted them: revoked, deleted, or at its expiry date."""

    def notices(self, clientId: str) -> list[Any]:
        """The notices waiting for ``clientId``'s next connect (which they answer)."""
        return [
            p
            for p in self.payloads(self.successResultOf(self.connect(clientId)))
            if p["channel"] == "/meta/unsubscribe"
        ]

    def revoke(self, keyId: str) -> None:
        """What the admin API does (and, on other nodes, key sync)."""
        self.successResultOf(self.storage.revokeKey(keyId))
        self.tenancy.keys.invalidate(keyId)

    def test_revokedKeyEndsItsSubscriptions(self) -> None:
        """
        Revoking a key ends the subscriptions made with it and with tokens it signed, a
        token without ``exp`` included (it used to go on for good), each with a notice;
        public subscriptions and another key's stay.
        """
        clientId = self.client()
        other = self.successResultOf(self.storage.createKey(self.app.id, "admin"))
        b = f"/{self.app.id}/private/b"
        c = f"/{self.app.id}/private/c"
        public = f"/{self.app.id}/public/news"
        self.assertTrue(
            self.subscribe(clientId, self.private, {"token": self.token(self.private, None)})["successful"]
        )
        self.assertTrue(
            self.subscribe(clientId, b, {"key": self.key.id, "secret": self.key.secret})["successful"]
        )
        self.assertTrue(self.subscribe(clientId, c, {"key": other.id, "secret": other.secret})["successful"])
        self.assertTrue(self.subscribe(clientId, public, {"token": self.token(public, None)})["successful"])
        self.assertEqual((self.expiry.granted, len(self.expiry)), (3, 0))
        self.revoke(self.key.id)
        self.assertEqual(self.successResultOf(self.engine.subscriptions(clientId)), {c, public})
        self.assertEqual(
            sorted(n["error"] for n in self.notices(clientId)),
            [f"401:{b}:Revoked key", f"401:{self.private}:Revoked key"],
        )
        self.assertEqual((self.expiry.granted, self.expiry.expired), (1, 2))

    def test_deletedKeyOrApplication(self) -> None:
        """A deleted key's subscriptions end (``Could not find key``); so do a deleted application's."""
        first, second = self.client(), self.client()
        other = self.successResultOf(self.storage.createKey(self.app.id, "admin"))
        self.subscribe(first, self.private, {"token": self.token(self.private, None)})
        self.subscribe(second, self.private, {"key": other.id, "secret": other.secret})
        self.successResultOf(self.storage.deleteKey(self.key.id))
        self.tenancy.keys.invalidate(self.key.id)
        self.assertEqual(
            [n["error"] for n in self.notices(first)], [f"401:{self.private}:Could not find key"]
        )
        self.assertEqual(self.successResultOf(self.engine.subscriptions(second)), {self.private})
        self.successResultOf(self.storage.deleteApplication(self.app.id))
        self.tenancy.keys.invalidateApp(self.app.id)
        self.assertEqual(
            [n["error"] for n in self.notices(second)], [f"401:{self.private}:Could not find key"]
        )

    def test_unchangedKeyKeepsThem(self) -> None:
        """An invalidation that changed nothing the key's grants depend on ends nothing."""
        clientId = self.client()
        self.subscribe(clientId, self.private, {"token": self.token(self.private, None)})
        self.tenancy.keys.invalidate(self.key.id)
        self.tenancy.keys.invalidateApp(self.app.id)
        self.tenancy.keys.clear()
        self.assertEqual(self.successResultOf(self.engine.subscriptions(clientId)), {self.private})
        self.assertEqual(self.expiry.expired, 0)

    def test_unannouncedChangeFoundWithinTheCacheTTL(self) -> None:
        """
        A revocation nobody announced (made in the database, or by the command without
        Redis) is found when the keys are read again, every key cache TTL: within two of them.
        """
        clientId = self.client()
        self.subscribe(clientId, self.private, {"token": self.token(self.private, None)})
        self.expiry.startService()
        self.addCleanup(self.expiry.stopService)
        self.successResultOf(self.storage.revokeKey(self.key.id))
        self.clock.advance(self.tenancy.keys.ttl - 1)
        self.assertEqual(self.successResultOf(self.engine.subscriptions(clientId)), {self.private})
        self.clock.advance(self.tenancy.keys.ttl + 1)
        self.assertEqual([n["error"] for n in self.notices(clientId)], [f"401:{self.private}:Revoked key"])

    def test_keyExpiryDate(self) -> None:
        """
        A key with an expiry date ends its subscriptions then, before a later token ``exp``
        (``Expired key``); an earlier token ``exp`` comes first (``Token expired``).
        """
        import datetime

        expiring = self.successResultOf(
            self.storage.createKey(
                self.app.id, "admin", expires=datetime.datetime.fromtimestamp(T0 + 100, datetime.UTC)
            )
        )
        first, second = self.client(), self.client()

        def token(exp: float | None) -> str:
            body: dict[str, Any] = {"keyId": expiring.id, "channel": self.private, "sub": True}
            if exp is not None:
                body["exp"] = exp
            return jwt.encode(body, expiring.secret)

        self.subscribe(first, self.private, {"token": token(T0 + 1000)})
        self.subscribe(second, self.private, {"token": token(T0 + 50)})
        self.assertEqual(len(self.expiry), 2)
        self.clock.advance(60)
        self.assertEqual([n["error"] for n in self.notices(second)], [f"401:{self.private}:Token expired"])
        self.clock.advance(39.9)
        self.assertEqual(self.successResultOf(self.engine.subscriptions(first)), {self.private})
        held = self.connect(first)
        self.clock.advance(0.2)
        self.assertEqual(
            [p["error"] for p in self.payloads(self.successResultOf(held))],
            [f"401:{self.private}:Expired key"],
        )


def _serverToken(channelName: str, lifetime: float) -> str:
    claims = {"keyId": KEY, "channel": channelName, "sub": True, "exp": int(time.time() + lifetime)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)  # the test key's short secret
        return jwt.encode(claims, SECRET)


class InProcessExpiryTests(TestCase):
    """A real server (leeway 0) and real websockets, with a token living a second or two."""

    async def setUp(self) -> None:  # type: ignore[override]
        self.server = InProcessServer(environ={"PANDAPUSH_TOKEN_LEEWAY": "0"})
        await self.server.start()
        self.addCleanup(self.server.stop)

    async def test_websocket(self) -> None:
        """Over websocket: the notice arrives at exp, and publishes no longer reach the client."""
        private = channel("expiring", "private")
        client = await WSClient(self.server.url).start()
        self.addCleanup(client.close)
        publisher = await WSClient(self.server.url).start()
        self.addCleanup(publisher.close)
        reply = await client.call(
            {
                "channel": "/meta/subscribe",
                "subscription": private,
                "ext": {"auth": {"token": _serverToken(private, 2)}},
            }
        )
        self.assertTrue(reply["successful"], reply)
        await publisher.call({"channel": private, "data": {"n": 1}, "ext": {"auth": AUTH}})
        self.assertTrue(await eventually(lambda: len(client.messages) == 1))
        notice = {
            "channel": "/meta/unsubscribe",
            "clientId": client.clientId,
            "subscription": private,
            "successful": False,
            "error": f"401:{private}:Token expired",
        }
        self.assertTrue(await eventually(lambda: notice in client.replies, timeout=5))
        await publisher.call({"channel": private, "data": {"n": 2}, "ext": {"auth": AUTH}})
        # Subscribing again with the same token is refused now.
        again = await client.call(
            {
                "channel": "/meta/subscribe",
                "subscription": private,
                "ext": {"auth": {"token": _serverToken(private, -1)}},
            }
        )
        self.assertEqual(again["error"], "401::Invalid token provided")
        self.assertEqual([m["data"] for m in client.messages], [{"n": 1}])


class FayeExpiryTests(TestCase):
    """Faye's own Node client sees the notice in its incoming extension and gets nothing more."""

    async def test_fayeNodeClient(self) -> None:
        requireNode()
        server = InProcessServer(environ={"PANDAPUSH_TOKEN_LEEWAY": "0"})
        await server.start()
        self.addCleanup(server.stop)
        private = channel("faye-expiring", "private")
        script = NodeScript(
            "token-expiry.js", server.url + "/push", private, _serverToken(private, 2), timeout=30
        )
        script.start()
        await script.waitFor(lambda e: e.get("event") == "subscribed")
        publisher = await WSClient(server.url).start()
        self.addCleanup(publisher.close)
        await publisher.call({"channel": private, "data": {"n": 1}, "ext": {"auth": AUTH}})
        await script.waitFor(lambda e: e.get("event") == "expired")
        await publisher.call({"channel": private, "data": {"n": 2}, "ext": {"auth": AUTH}})
        script.send("finish")
        result = await script.whenFinished()
        self.assertEqual(result.code, 0, result.describe())
        (expired,) = [e for e in result.events if e.get("event") == "expired"]
        self.assertEqual(expired["message"]["error"], f"401:{private}:Token expired")
        self.assertEqual(expired["message"]["subscription"], private)
        received = [e["data"] for e in result.events if e.get("event") == "message"]
        self.assertEqual(received, [{"n": 1}], result.describe())
        self.assertIn(APP, private)
