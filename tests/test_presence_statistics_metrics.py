"""Presence, meta channel events, statistics and metrics, over the router with the memory engine.

Tenancy is stood in for by an extension that hands the presence object over the
way the tenancy extension does (``context.attributes["presence"]``). The same over a
real server, real sockets and real tokens: ``tests/test_e2e_presence_statistics.py``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer

from pandapush.bayeux import json
from pandapush.bayeux.context import MessageContext
from pandapush.engines.memory import MemoryEngine
from pandapush.extensions import statistics
from pandapush.extensions.metrics import Metrics
from pandapush.extensions.presence import PresenceExtension, isPresenceChannel
from pandapush.extensions.statistics import Statistics, appOf
from pandapush.interfaces import IExtension
from pandapush.router import BayeuxRouter
from pandapush.transports.resource import BayeuxResource

HANDSHAKE = {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}
ROOM = "/app1/presence/room"


@implementer(IExtension)
class TokenStandIn:
    """Takes ext.presence as if it came from a verified token."""

    def incoming(self, message: dict[str, Any], context: MessageContext) -> dict[str, Any]:
        ext = message.get("ext")
        if isinstance(ext, dict) and "presence" in ext:
            context.attributes["presence"] = ext.pop("presence")
        return message

    def outgoing(self, reply: dict[str, Any], context: MessageContext) -> dict[str, Any]:
        return reply


class Harness(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.engine = MemoryEngine(self.clock, timeout=30, expiry=10)
        self.router = BayeuxRouter(self.engine, self.clock, timeout=30)
        self.router.addExtension(TokenStandIn())
        self.presence = PresenceExtension(self.router, maxMembers=3, maxDataSize=200)
        self.router.addExtension(self.presence)
        self.stats = Statistics(self.router, self.clock, interval=5)

    def send(self, message: dict[str, Any]) -> dict[str, Any]:
        replies: list[Any] = self.successResultOf(
            self.router.process([message], MessageContext("long-polling"))
        )
        return replies[0]  # type: ignore[no-any-return]

    def client(self) -> str:
        clientId = self.send(dict(HANDSHAKE))["clientId"]
        self.send({"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"})
        return clientId  # type: ignore[no-any-return]

    def join(self, clientId: str, member: dict[str, Any] | None, channel: str = ROOM) -> dict[str, Any]:
        ext = {"presence": member} if member is not None else {}
        return self.send(
            {"channel": "/meta/subscribe", "clientId": clientId, "subscription": channel, "ext": ext}
        )

    def received(self, clientId: str) -> list[Any]:
        """Everything queued for a client, decoded (a connect asking not to be held)."""
        d = self.router.process(
            [
                {
                    "channel": "/meta/connect",
                    "clientId": clientId,
                    "connectionType": "long-polling",
                    "advice": {"timeout": 0},
                }
            ],
            MessageContext("long-polling"),
        )
        replies: list[Any] = self.successResultOf(d)
        return [json.loads(r.payload) for r in replies[1:]]


class PresenceTests(Harness):
    def test_channels(self) -> None:
        self.assertTrue(isPresenceChannel("/a/presence/x"))
        self.assertFalse(isPresenceChannel("/a/presence/*"))
        self.assertFalse(isPresenceChannel("/a/private/x"))

    def test_joinAndLeave(self) -> None:
        """The joiner's reply lists everyone with itself; others hear the join, then the leave."""
        joe, ann = self.client(), self.client()
        reply = self.join(joe, {"id": "joe", "name": "Joe"})
        self.assertEqual(reply["ext"]["presence"], {"subscribe": {"joe": {"id": "joe", "name": "Joe"}}})
        reply = self.join(ann, {"id": "ann"})
        self.assertEqual(
            reply["ext"]["presence"],
            {"subscribe": {"joe": {"id": "joe", "name": "Joe"}, "ann": {"id": "ann"}}},
        )
        self.assertEqual(
            self.received(joe), [{"channel": ROOM, "data": {"subscribe": {"ann": {"id": "ann"}}}}]
        )
        self.assertEqual(self.received(ann), [])  # its own arrival is in its reply only
        self.send({"channel": "/meta/disconnect", "clientId": ann})
        self.assertEqual(self.received(joe), [{"channel": ROOM, "data": {"unsubscribe": {"ann": None}}}])

    def test_tabs(self) -> None:
        """Two connections of one user are one member, gone only when both are."""
        watcher, tab1, tab2 = self.client(), self.client(), self.client()
        self.join(watcher, {"id": "w"})
        self.join(tab1, {"id": "u"})
        self.join(tab2, {"id": "u"})
        self.assertEqual(len(self.received(watcher)), 1)
        self.send({"channel": "/meta/unsubscribe", "clientId": tab1, "subscription": ROOM})
        self.assertEqual(self.received(watcher), [])
        self.send({"channel": "/meta/disconnect", "clientId": tab2})
        self.assertEqual(self.received(watcher), [{"channel": ROOM, "data": {"unsubscribe": {"u": None}}}])

    def test_vanishedClientLeaves(self) -> None:
        """A client that stops polling is announced gone once it expires."""
        watcher, ghost = self.client(), self.client()
        self.join(watcher, {"id": "w"})
        self.join(ghost, {"id": "g"})
        d = self.router.process(
            [{"channel": "/meta/connect", "clientId": watcher, "connectionType": "long-polling"}],
            MessageContext("long-polling"),
        )
        self.successResultOf(d)  # the join announcement answers it at once
        d = self.router.process(
            [{"channel": "/meta/connect", "clientId": watcher, "connectionType": "long-polling"}],
            MessageContext("long-polling"),
        )
        self.clock.pump([1] * 11)
        replies: list[Any] = self.successResultOf(d)
        self.assertEqual(json.loads(replies[1].payload)["data"], {"unsubscribe": {"g": None}})

    def test_limits(self) -> None:
        """Full channels and oversized presence data are refused with clear errors."""
        for name in ["a", "b", "c"]:
            self.assertTrue(self.join(self.client(), {"id": name})["successful"])
        reply = self.join(self.client(), {"id": "d"})
        self.assertEqual(reply["error"], f"403:{ROOM}:Presence channel is full (3 members)")
        reply = self.join(self.client(), {"id": "a"})  # a known member may add a tab
        self.assertTrue(reply["successful"])
        reply = self.join(self.client(), {"id": "e", "bio": "x" * 300}, "/app1/presence/other")
        self.assertEqual(reply["error"], "403::Presence data larger than 200 bytes")

    def test_notPresence(self) -> None:
        """Subscriptions elsewhere get no presence, whatever they carry."""
        reply = self.join(self.client(), {"id": "x"}, "/app1/public/room")
        self.assertNotIn("presence", reply.get("ext", {}))


class MetaChannelTests(Harness):
    def test_occupancyEvents(self) -> None:
        """/<app>/meta/channels hears channels occupied and vacated, and members added and removed."""
        monitor = self.client()
        self.send({"channel": "/meta/subscribe", "clientId": monitor, "subscription": "/app1/meta/channels"})
        user = self.client()
        self.send({"channel": "/meta/subscribe", "clientId": user, "subscription": "/app1/public/news"})
        self.join(user, {"id": "u"})
        self.send({"channel": "/meta/disconnect", "clientId": user})
        events = [m["data"] for m in self.received(monitor)]
        self.assertEqual(
            events,
            [
                {"event": "channel_occupied", "channel": "/app1/public/news"},
                {"event": "channel_occupied", "channel": ROOM},
                {"event": "member_added", "channel": ROOM, "member": "u", "data": {"id": "u"}},
                {"event": "member_removed", "channel": ROOM, "member": "u"},
                {"event": "channel_vacated", "channel": ROOM},
                {"event": "channel_vacated", "channel": "/app1/public/news"},
            ],
        )

    def test_statistics(self) -> None:
        """Every interval, /<app>/meta/statistics gets the app's figures with rates."""
        monitor = self.client()
        self.send(
            {"channel": "/meta/subscribe", "clientId": monitor, "subscription": "/app1/meta/statistics"}
        )
        subscribers = [self.client() for _ in range(3)]
        for clientId in subscribers:
            self.send(
                {"channel": "/meta/subscribe", "clientId": clientId, "subscription": "/app1/public/feed"}
            )
        for i in range(10):
            self.send({"channel": "/app1/public/feed", "data": i})
        self.send({"channel": "/app2/public/feed", "data": "other app"})
        self.clock.advance(5)
        self.stats.publishStatistics()
        (report,) = [m["data"] for m in self.received(monitor)]
        self.assertEqual(report["connections"], 4)
        self.assertEqual(report["subscriptions"], 4)
        self.assertEqual(report["channels"], 2)
        self.assertEqual(report["published"], 10)
        self.assertEqual(report["delivered"], 30)
        self.assertEqual(report["published_per_second"], 2.0)
        self.assertEqual(report["delivered_per_second"], 6.0)

    def test_clusterFigures(self) -> None:
        """
        The console's figures add up every node heard from lately (another node's broadcast
        here) to this node's own, count channels through the engine, and forget a node that
        has gone quiet for three intervals.
        """
        subscriber = self.client()
        self.send({"channel": "/meta/subscribe", "clientId": subscriber, "subscription": "/app1/public/feed"})
        self.send({"channel": "/app1/public/feed", "data": 1})
        self.clock.advance(1)
        other = {"connections": 5, "subscriptions": 7, "published": 3, "delivered": 9}
        rates = {"published_per_second": 0.5, "delivered_per_second": 1.5}
        self.engine.broadcast(
            "statistics", {"id": "elsewhere", "node": "elsewhere:1", "apps": {"app1": {**other, **rates}}}
        )
        figures = self.successResultOf(self.stats.cluster("app1"))
        self.assertEqual(
            {
                k: figures[k]
                for k in ("connections", "subscriptions", "published", "delivered", "channels", "nodes")
            },
            {
                "connections": 6,
                "subscriptions": 8,
                "published": 4,
                "delivered": 10,
                "channels": 1,
                "nodes": 2,
            },
        )
        self.assertEqual(figures["delivered_per_second"], 1 + 1.5)
        self.clock.advance(15.5)
        figures = self.successResultOf(self.stats.cluster("app1"))
        own = self.stats.snapshot("app1")
        self.assertEqual((figures["connections"], figures["nodes"]), (own["connections"], 1))

    def test_sharesItsFigures(self) -> None:
        """Each interval the node broadcasts its applications' figures for the other nodes."""
        heard: list[Any] = []
        self.engine.onBroadcast("statistics", heard.append)
        subscriber = self.client()
        self.send({"channel": "/meta/subscribe", "clientId": subscriber, "subscription": "/app1/public/feed"})
        self.stats.publishStatistics()
        (report,) = heard
        self.assertEqual(report["node"], self.stats.node)
        self.assertEqual(report["apps"]["app1"]["connections"], 1)

    def test_publishesCountedByRememberedApps(self) -> None:
        """
        Publishes count for their channel's application, remembered per channel: still
        counted once the application's figures were forgotten (idle at an interval),
        never for meta or non-tenancy channels, and the same past the bound.
        """
        self.patch(statistics, "MAX_CHANNELS", 2)
        for _ in range(2):
            for channel in ("/app1/public/a", "/app1/meta/x", "/plain", "/app2/private/b", "/app1/public/c"):
                self.send({"channel": channel, "data": 1})
            self.assertLessEqual(len(self.stats._channelApps), 2)
        self.assertEqual((self.stats.apps["app1"].published, self.stats.apps["app2"].published), (4, 2))
        self.clock.advance(5)
        self.stats.publishStatistics()
        self.clock.advance(5)
        self.stats.publishStatistics()
        self.assertNotIn("app1", self.stats.apps)
        self.send({"channel": "/app1/public/a", "data": 1})
        self.assertEqual(self.stats.apps["app1"].published, 1)

    def test_appOf(self) -> None:
        self.assertEqual(appOf("/abc/public/x"), "abc")
        self.assertIsNone(appOf("/abc/other/x"))
        self.assertIsNone(appOf("/abc"))


class MetricsTests(Harness):
    def test_scrape(self) -> None:
        """/metrics parses as Prometheus text with the counters and gauges that matter."""
        resource = BayeuxResource(self.router, self.clock)
        metrics = Metrics(self.router, resource)
        self.router.addExtension(metrics.errorCounter)
        clientId = self.client()
        self.send({"channel": "/meta/subscribe", "clientId": clientId, "subscription": "/a"})
        self.send({"channel": "/a", "data": 1})
        self.send({"channel": "/a/*", "data": 1})
        self.send({"channel": "/meta/connect", "clientId": "nope", "connectionType": "long-polling"})
        from types import SimpleNamespace

        from twisted.web.test.requesthelper import DummyRequest

        for code in (200, 200, 404):
            metrics.requestDone(SimpleNamespace(code=code))  # what Site.log hands over
        body = metrics.resource.render_GET(DummyRequest([b"metrics"]))
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }
        self.assertEqual(samples[("pandapush_messages_published_total", ())], 1)
        self.assertEqual(samples[("pandapush_messages_delivered_total", ())], 1)
        self.assertEqual(samples[("pandapush_http_requests_total", (("status", "200"),))], 2)
        self.assertEqual(samples[("pandapush_http_requests_total", (("status", "404"),))], 1)
        self.assertEqual(samples[("pandapush_bayeux_errors_total", (("code", "405"),))], 1)
        self.assertEqual(samples[("pandapush_bayeux_errors_total", (("code", "401"),))], 1)
        self.assertEqual(samples[("pandapush_clients", ())], 1)
        self.assertEqual(samples[("pandapush_subscriptions", ())], 1)
        self.assertEqual(samples[("pandapush_connections", (("transport", "websocket"),))], 0)

    def test_errorCodesBounded(self) -> None:
        """Errors a client wrote into its own messages count as code "other", not one label each."""
        metrics = Metrics(self.router, BayeuxResource(self.router, self.clock))
        self.router.addExtension(metrics.errorCounter)
        for text in ["nonsense", "12345:x:y", "x" * 1000, "४०१::digits of another script"]:
            self.send({"channel": "/a", "data": 1, "error": text})
        body = metrics.resource.render_GET(DummyRequest([b"metrics"]))
        codes = {
            s.labels["code"]
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
            if s.name == "pandapush_bayeux_errors_total"
        }
        self.assertEqual(codes, {"other"})
