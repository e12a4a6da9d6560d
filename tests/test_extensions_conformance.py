"""The extension contract (tests/extension_suite.py) on each of the router's extensions.

Tenancy, allowed origins, tenant limits, presence, token expiry, CometD's acknowledgements
and the metrics' error counter, each wired as the server wires it: memory storage and engine, the real router.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pandapush.auth import TenancyConfig
from pandapush.auth.keycache import KeyCache
from pandapush.bayeux.context import MessageContext
from pandapush.engines.memory import MemoryEngine
from pandapush.extensions.acknowledge import Acknowledgements
from pandapush.extensions.expiry import SubscriptionExpiry
from pandapush.extensions.limits import AppConnectionLimiter, LimitsExtension, PublishRateLimiter
from pandapush.extensions.metrics import Metrics
from pandapush.extensions.presence import PresenceExtension
from pandapush.extensions.users import UserConnections
from pandapush.router import BayeuxRouter
from pandapush.storage.memory import MemoryStorage
from pandapush.tokens import mintToken
from pandapush.transports.resource import BayeuxResource
from pandapush.webhooks import WebhookConfig, makeWebhooks
from tests.extension_suite import ExtensionTestsMixin, Message
from tests.support.tenancy import makeTenancy

GOOD = "https://good.example"
EVIL = "https://evil.example"


class _Wired(SynchronousTestCase):
    """An application with a key, on a router over the memory engine, with tenancy."""

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
        self.app = self.successResultOf(self.storage.createApplication("app", "admin", admins=["admin"]))
        self.appId = self.app.id
        self.key = self.successResultOf(self.storage.createKey(self.app.id, "admin"))

    def channel(self, path: str, kind: str = "public") -> str:
        return f"/{self.app.id}/{kind}/{path}"

    def client(self) -> str:
        return self.successResultOf(self.engine.createClient())  # type: ignore[no-any-return]


class TenancyExtensionTests(ExtensionTestsMixin, _Wired):
    """``TenancyExtension``: the contract's channel rules and error texts."""

    def makeExtension(self) -> Any:
        return self.tenancy.extension

    def refusals(self) -> list[tuple[Message, MessageContext, str]]:
        private = self.channel("room", "private")
        wrongSecret = {"key": self.key.id, "secret": "not-the-secret"}
        otherChannel = mintToken(self.key.id, self.key.secret, self.channel("other", "private"), sub=True)
        subscribe: dict[str, Any] = {"channel": "/meta/subscribe", "clientId": "c1"}
        return [
            ({**subscribe, "subscription": private}, MessageContext("websocket"), "401::No auth supplied"),
            (
                {"channel": f"/{self.app.id}/nope/room", "data": 1, "ext": {"auth": wrongSecret}},
                MessageContext("websocket"),
                "405::Invalid channel name",
            ),
            (
                {**subscribe, "subscription": private, "ext": {"auth": {"user": "me"}}},
                MessageContext("long-polling"),
                "401::Auth information does not include token or key",
            ),
            (
                {**subscribe, "subscription": private, "ext": {"auth": {"key": "PSIDnope", "secret": "x"}}},
                MessageContext("long-polling"),
                "401::Could not find key",
            ),
            (
                {"channel": self.channel("room"), "data": 1, "ext": {"auth": wrongSecret}},
                MessageContext("long-polling"),
                "401::Invalid secret",
            ),
            (
                {**subscribe, "subscription": private, "ext": {"auth": {"token": otherChannel}}},
                MessageContext("long-polling"),
                "403::Token does not match channel",
            ),
        ]


class OriginExtensionTests(ExtensionTestsMixin, _Wired):
    """``OriginExtension``: each application's allowed browser origins."""

    def makeExtension(self) -> Any:
        self.successResultOf(self.storage.updateApplication(self.app.id, allowedOrigins=[GOOD]))
        return self.tenancy.originExtension

    def ignoredMessages(self) -> list[Message]:
        # Not from a browser page: no origin to check.
        return self.clientMessages()

    def refusals(self) -> list[tuple[Message, MessageContext, str]]:
        room = self.channel("room")
        evil = MessageContext("websocket", {"origin": EVIL})
        return [
            (
                {"channel": "/meta/subscribe", "clientId": "c1", "subscription": room},
                evil,
                f"403:{room}:Origin not allowed",
            ),
            (
                {"channel": room, "data": 1},
                MessageContext("cross-origin-long-polling", {"origin": EVIL}),
                f"403:{room}:Origin not allowed",
            ),
        ]


class LimitsExtensionTests(ExtensionTestsMixin, _Wired):
    """``LimitsExtension``: clients per application, publishes per second per key."""

    def makeExtension(self) -> Any:
        self.connections = AppConnectionLimiter(self.engine, self.clock, maxPerApp=1)
        self.publishes = PublishRateLimiter(self.clock, rate=1, burst=1)
        return LimitsExtension(self.engine, self.connections, self.publishes)

    def keyed(self) -> MessageContext:
        """A context as tenancy leaves it for a message with the application's key."""
        context = MessageContext("websocket")
        context.attributes["keyId"] = self.key.id
        context.attributes["authenticated"] = {self.app.id}
        return context

    def refusals(self) -> list[tuple[Message, MessageContext, str]]:
        room = self.channel("room")
        first, second, third, fourth = self.client(), self.client(), self.client(), self.client()
        # The application's one place, its one anonymous place, and the key's one publish
        # of this second, taken.
        self.incoming({"channel": room, "clientId": first, "data": 0}, self.keyed())
        self.incoming({"channel": "/meta/subscribe", "clientId": third, "subscription": room})
        return [
            (
                {"channel": "/meta/subscribe", "clientId": second, "subscription": room},
                self.keyed(),
                f"403:{room}:Too many connections (limit 1 per application)",
            ),
            (
                {"channel": "/meta/subscribe", "clientId": fourth, "subscription": room},
                MessageContext("websocket"),
                f"403:{room}:Too many anonymous connections (limit 1 per application)",
            ),
            (
                {"channel": room, "clientId": first, "data": 1},
                self.keyed(),
                f"429:{room}:Too many publishes for key {self.key.id} (limit 1/s)",
            ),
        ]


class PresenceExtensionTests(ExtensionTestsMixin, _Wired):
    """``PresenceExtension``: who is on a presence channel."""

    def makeExtension(self) -> Any:
        return PresenceExtension(self.router, maxMembers=1, maxDataSize=64)

    def ignoredMessages(self) -> list[Message]:
        room = self.channel("room", "presence")
        return [
            {"channel": "/meta/subscribe", "clientId": "c1", "subscription": self.channel("room")},
            {"channel": room, "clientId": "c1", "data": {"text": "not a subscribe"}},
        ]

    def refusals(self) -> list[tuple[Message, MessageContext, str]]:
        room = self.channel("room", "presence")
        self.successResultOf(self.engine.presenceJoin(self.client(), room, "first", {"id": "first"}))
        tooBig = MessageContext("websocket")
        tooBig.attributes["presence"] = {"id": "second", "bio": "x" * 100}
        second = MessageContext("websocket")
        second.attributes["presence"] = {"id": "second"}
        subscribe = {"channel": "/meta/subscribe", "clientId": self.client(), "subscription": room}
        return [
            (dict(subscribe), tooBig, "403::Presence data larger than 64 bytes"),
            (dict(subscribe), second, f"403:{room}:Presence channel is full (1 members)"),
        ]


class SubscriptionExpiryTests(ExtensionTestsMixin, _Wired):
    """``SubscriptionExpiry``: ends token-granted subscriptions; refuses nothing."""

    def makeExtension(self) -> Any:
        return SubscriptionExpiry(self.router, self.clock)

    def ignoredMessages(self) -> list[Message]:
        return self.clientMessages()

    def refusals(self) -> list[tuple[Message, MessageContext, str]]:
        return []


class AcknowledgementsTests(ExtensionTestsMixin, _Wired):
    """CometD's acknowledgements: a connect's batch number that is not one is refused."""

    def makeExtension(self) -> Any:
        return Acknowledgements(self.router, self.clock)

    def ignoredMessages(self) -> list[Message]:
        return self.clientMessages()

    def refusals(self) -> list[tuple[Message, MessageContext, str]]:
        connect: dict[str, Any] = {"channel": "/meta/connect", "clientId": self.client()}
        return [
            (
                {**connect, "connectionType": "websocket", "ext": {"ack": value}},
                MessageContext("websocket"),
                "400::ext.ack must be the number of a batch received",
            )
            for value in ("7", -1, False, 2.5)
        ]


class UserConnectionsTests(ExtensionTestsMixin, _Wired):
    """``UserConnections``: indexes subscribers by user; refuses nothing."""

    def makeExtension(self) -> Any:
        return UserConnections(self.router, self.clock)

    def ignoredMessages(self) -> list[Message]:
        return self.clientMessages()

    def refusals(self) -> list[tuple[Message, MessageContext, str]]:
        return []


class WebhookEventsTests(ExtensionTestsMixin, _Wired):
    """Webhooks' client events: noted from granted token publishes; refuses nothing."""

    def makeExtension(self) -> Any:
        keys = KeyCache(self.storage, self.clock)
        events = makeWebhooks(WebhookConfig(), self.storage, keys, self.clock).events
        assert events is not None
        return events

    def ignoredMessages(self) -> list[Message]:
        return self.clientMessages()

    def refusals(self) -> list[tuple[Message, MessageContext, str]]:
        return []


class _RecordingRouter(BayeuxRouter):
    """A router that keeps a hand on the extensions added to it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extensions: list[Any] = []

    def addExtension(self, extension: Any) -> None:
        self.extensions.append(extension)
        super().addExtension(extension)


class ErrorCounterTests(ExtensionTestsMixin, SynchronousTestCase):
    """The extension ``Metrics`` adds to count error replies; refuses nothing."""

    def makeExtension(self) -> Any:
        clock = Clock()
        router = _RecordingRouter(MemoryEngine(clock, timeout=30, expiry=10), clock)
        self.metrics = Metrics(router, BayeuxResource(router, clock))
        router.addExtension(self.metrics.errorCounter)
        (extension,) = router.extensions
        return extension

    def ignoredMessages(self) -> list[Message]:
        return self.clientMessages()

    def refusals(self) -> list[tuple[Message, MessageContext, str]]:
        return []

    def test_errorRepliesCounted(self) -> None:
        """It counts the error replies that went through it unchanged, by code."""
        for reply in [
            {"channel": "/a", "successful": False, "error": "405::Invalid channel name"},
            {"channel": "/a", "successful": True},
        ]:
            self.outgoing(reply)
        self.assertEqual(
            self.metrics.registry.get_sample_value("pandapush_bayeux_errors_total", {"code": "405"}), 1.0
        )
