"""The tenancy layer wired as the server wires it: real router, memory engine and storage."""

from __future__ import annotations

import base64
import os
from typing import Any

import jwt
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pandapush.auth import TenancyConfig
from pandapush.bayeux import json
from pandapush.bayeux.context import MessageContext
from pandapush.engines.memory import MemoryEngine
from pandapush.extensions.presence import PresenceExtension
from pandapush.router import BayeuxRouter
from pandapush.storage.memory import MemoryStorage
from tests.support.http import stubTreq
from tests.support.tenancy import makeTenancy

HANDSHAKE = {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}


class WiredTenancyTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.engine = MemoryEngine(self.clock, timeout=30, expiry=10)
        self.router = BayeuxRouter(self.engine, self.clock, timeout=30)
        self.storage = MemoryStorage()
        config = TenancyConfig(
            adminUsername="admin", adminPassword="pw", dataDir=os.path.abspath(self.mktemp())
        )
        self.tenancy = makeTenancy(self.storage, config, self.router.publish, self.clock)
        self.router.addExtension(self.tenancy.extension)
        self.router.addExtension(PresenceExtension(self.router))
        self.app = self.successResultOf(self.storage.createApplication("testapp", "admin", admins=["admin"]))
        self.key = self.successResultOf(self.storage.createKey(self.app.id, "admin"))
        self.auth = {"key": self.key.id, "secret": self.key.secret}

    def send(self, message: dict[str, Any], context: MessageContext | None = None) -> dict[str, Any]:
        replies: list[Any] = self.successResultOf(
            self.router.process([message], context or MessageContext("long-polling"))
        )
        return replies[0]  # type: ignore[no-any-return]

    def client(self) -> str:
        clientId: str = self.send(dict(HANDSHAKE))["clientId"]
        self.send({"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"})
        return clientId

    def waitForDelivery(self, clientId: str) -> defer.Deferred[list[Any]]:
        message = {"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"}
        return self.router.process([message], MessageContext("long-polling"))

    def test_subscribeRefusedWithText(self) -> None:
        """A Faye client subscribing without a token reads ``No auth supplied``."""
        clientId = self.client()
        reply = self.send(
            {"channel": "/meta/subscribe", "clientId": clientId, "subscription": f"/{self.app.id}/private/a"}
        )
        self.assertEqual((reply["successful"], reply["error"]), (False, "401::No auth supplied"))

    def test_publishDeliveredWithoutAuth(self) -> None:
        """A key+secret publish reaches a public subscriber, carrying no credentials."""
        channel = f"/{self.app.id}/public/messages"
        clientId = self.client()
        self.assertTrue(
            self.send({"channel": "/meta/subscribe", "clientId": clientId, "subscription": channel})[
                "successful"
            ]
        )
        pending = self.waitForDelivery(clientId)
        reply = self.send(
            {
                "channel": channel,
                "clientId": clientId,
                "data": {"x": 1, "__auth": self.auth},
                "ext": {"auth": self.auth},
            }
        )
        self.assertTrue(reply["successful"], reply)
        self.clock.advance(0)
        _, delivery = self.successResultOf(pending)
        delivered = json.loads(delivery.payload)
        self.assertEqual(delivered.pop("ext"), {"position": {"offset": 1, "epoch": delivery.epoch}})
        self.assertEqual(delivered, {"channel": channel, "data": {"x": 1}})
        self.assertNotIn(self.key.secret.encode(), delivery.payload)

    def test_presenceFromToken(self) -> None:
        """A presence subscribe with a token gets the member list in its reply."""
        channel = f"/{self.app.id}/presence/room"
        minted = jwt.encode(
            {
                "keyId": self.key.id,
                "channel": channel,
                "sub": True,
                "presence": {"id": "user1", "name": "Joe"},
            },
            self.key.secret,
        )
        clientId = self.client()
        reply = self.send(
            {
                "channel": "/meta/subscribe",
                "clientId": clientId,
                "subscription": channel,
                "ext": {"auth": {"token": minted}},
            }
        )
        self.assertTrue(reply["successful"], reply)
        self.assertEqual(reply["ext"]["presence"], {"subscribe": {"user1": {"id": "user1", "name": "Joe"}}})

    def test_restPublish(self) -> None:
        """The REST app publishes through the router after checking the key."""
        channel = f"/{self.app.id}/public/messages"
        clientId = self.client()
        self.send({"channel": "/meta/subscribe", "clientId": clientId, "subscription": channel})
        pending = self.waitForDelivery(clientId)
        treq = stubTreq(self.tenancy.publishApp.resource())
        auth = base64.b64encode(f"{self.key.id}:{self.key.secret}".encode())
        d = treq.post(
            f"http://localhost/channel/{self.app.id}/public/messages",
            data={"foo": "bar"},
            headers={b"Authorization": [b"Basic " + auth]},
        )
        treq.flush()
        self.assertEqual(self.successResultOf(d).code, 200)
        self.clock.advance(0)
        _, delivery = self.successResultOf(pending)
        self.assertEqual(json.loads(delivery.payload)["data"], {"foo": "bar"})

    def test_usageFlushed(self) -> None:
        """The tenancy service writes key usage to storage on its timer."""
        self.tenancy.service.startService()
        self.addCleanup(self.tenancy.service.stopService)
        self.send({"channel": f"/{self.app.id}/private/a", "data": 1, "ext": {"auth": self.auth}})
        self.send({"channel": f"/{self.app.id}/private/a", "data": 2, "ext": {"auth": self.auth}})
        self.clock.advance(self.tenancy.config.usageFlushInterval)
        key = self.successResultOf(self.storage.getKey(self.key.id))
        assert key is not None
        self.assertEqual(key.use_count, 2)
        self.assertIsNotNone(key.last_used)

    def test_banner(self) -> None:
        """Configured credentials: the banner names the URL, not the password."""
        banner = self.tenancy.loginBanner("http://localhost:3000")
        assert banner is not None
        self.assertIn("http://localhost:3000/admin", banner)
        self.assertNotIn("pw", banner.replace("password", ""))
