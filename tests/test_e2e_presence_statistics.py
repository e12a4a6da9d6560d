"""
Presence, meta channels, statistics and metrics end to end: a real server, real sockets, real tokens.

(And the REST publish size limit on that server.) The same at the router, with the memory
engine and a stand-in for tenancy: ``tests/test_presence_statistics_metrics.py``.
"""

from __future__ import annotations

from typing import Any

import treq
from prometheus_client.parser import text_string_to_metric_families

from pandapush.tokens import mintToken
from tests.support.inprocess import KEY, SECRET, channel
from tests.support.servercase import ServerCase
from tests.support.waiting import eventually

ROOM = channel("lobby", "presence")


def presenceToken(member: dict[str, Any], room: str = ROOM) -> str:
    return mintToken(KEY, SECRET, room, sub=True, presence=member)


class EndToEndCase(ServerCase):
    serverArgs = ("--stats-interval", "0.5")

    async def join(self, client: Any, member: dict[str, Any]) -> dict[str, Any]:
        reply = await client.call(
            {
                "channel": "/meta/subscribe",
                "subscription": ROOM,
                "ext": {"auth": {"token": presenceToken(member)}},
            }
        )
        self.assertTrue(reply["successful"], reply)
        return reply


class PresenceEndToEndTests(EndToEndCase):
    async def test_arriveAndLeave(self) -> None:
        """Two users see each other arrive and leave; each reply lists everyone, itself included."""
        joe, ann = await self.ws(), await self.ws()
        reply = await self.join(joe, {"id": "joe", "name": "Joe"})
        self.assertEqual(reply["ext"]["presence"], {"subscribe": {"joe": {"id": "joe", "name": "Joe"}}})
        reply = await self.join(ann, {"id": "ann"})
        self.assertEqual(set(reply["ext"]["presence"]["subscribe"]), {"joe", "ann"})
        self.assertTrue(
            await eventually(
                lambda: {"channel": ROOM, "data": {"subscribe": {"ann": {"id": "ann"}}}} in joe.messages
            )
        )
        await ann.call({"channel": "/meta/unsubscribe", "subscription": ROOM})
        self.assertTrue(
            await eventually(
                lambda: {"channel": ROOM, "data": {"unsubscribe": {"ann": None}}} in joe.messages
            )
        )
        self.assertEqual(ann.messages, [])

    async def test_twoTabs(self) -> None:
        """Two connections of one user: announced once, gone only when the second leaves."""
        watcher, tab1, tab2 = await self.ws(), await self.ws(), await self.lp()
        await self.join(watcher, {"id": "w"})
        await self.join(tab1, {"id": "u"})
        await self.join(tab2, {"id": "u"})
        await tab1.call({"channel": "/meta/disconnect"})
        await eventually(lambda: False, timeout=0.3)
        self.assertEqual([m["data"] for m in watcher.messages], [{"subscribe": {"u": {"id": "u"}}}])
        await tab2.call({"channel": "/meta/disconnect"})
        self.assertTrue(await eventually(lambda: len(watcher.messages) == 2))
        self.assertEqual(watcher.messages[1]["data"], {"unsubscribe": {"u": None}})

    async def test_killedWebsocket(self) -> None:
        """A websocket killed without a disconnect is reported gone within a second."""
        watcher, victim = await self.ws(), await self.ws()
        await self.join(watcher, {"id": "w"})
        await self.join(victim, {"id": "v"})
        victim.kill()
        gone = {"channel": ROOM, "data": {"unsubscribe": {"v": None}}}
        self.assertTrue(await eventually(lambda: gone in watcher.messages, timeout=1.0))

    async def test_vanishedLongPoller(self) -> None:
        """A long-poll client that stops polling is reported gone within the timeout."""
        watcher, ghost = await self.ws(), await self.lp()
        await self.join(watcher, {"id": "w"})
        await self.join(ghost, {"id": "g"})
        ghost.vanish()
        gone = {"channel": ROOM, "data": {"unsubscribe": {"g": None}}}
        # Held connects last --timeout (2 s); then --client-expiry (1 s) and a sweep.
        self.assertTrue(await eventually(lambda: gone in watcher.messages, timeout=4.5))

    async def test_presenceFromTokenOnly(self) -> None:
        """A client cannot claim a presence id in ext: it comes from the token, and is required."""
        client = await self.ws()
        token = mintToken(KEY, SECRET, ROOM, sub=True)
        reply = await client.call(
            {
                "channel": "/meta/subscribe",
                "subscription": ROOM,
                "ext": {"auth": {"token": token}, "presence": {"id": "x"}},
            }
        )
        self.assertFalse(reply["successful"])
        self.assertIn("No presence id specified in presence subscription", reply["error"])


class MetaEndToEndTests(EndToEndCase):
    async def test_channelsAndStatistics(self) -> None:
        """/<app>/meta/channels follows occupancy and members; statistics count a scripted load."""
        monitor = await self.ws()
        for meta in ("channels", "statistics"):
            token = mintToken(KEY, SECRET, channel(meta, "meta"), sub=True)
            reply = await monitor.call(
                {
                    "channel": "/meta/subscribe",
                    "subscription": channel(meta, "meta"),
                    "ext": {"auth": {"token": token}},
                }
            )
            self.assertTrue(reply["successful"], reply)
        subscribers = [await self.ws() for _ in range(3)]
        for client in subscribers:
            await client.call({"channel": "/meta/subscribe", "subscription": channel("news")})
        await self.join(subscribers[0], {"id": "s0"})
        for i in range(20):
            response = await treq.post(
                f"{self.server.url}/channel{channel('news')}",
                json={"i": i},
                auth=(KEY, SECRET),
                persistent=False,
            )
            self.assertEqual(response.code, 200)
            await response.content()
        self.assertTrue(await eventually(lambda: all(len(c.messages) >= 20 for c in subscribers[1:])))
        events = [m["data"] for m in monitor.messages if m["channel"] == channel("channels", "meta")]
        self.assertIn({"event": "channel_occupied", "channel": channel("news")}, events)
        self.assertIn(
            {"event": "member_added", "channel": ROOM, "member": "s0", "data": {"id": "s0"}}, events
        )

        def latest() -> dict[str, Any] | None:
            reports = [m["data"] for m in monitor.messages if m["channel"] == channel("statistics", "meta")]
            return reports[-1] if reports else None

        self.assertTrue(
            await eventually(lambda: (latest() or {}).get("delivered", 0) >= 60, timeout=3), latest()
        )
        report = latest()
        assert report is not None
        self.assertEqual(report["published"], 21, "20 REST publishes and one presence announcement")
        self.assertEqual(report["delivered"], 60)
        self.assertEqual(report["connections"], 4)  # the monitor and three subscribers
        self.assertEqual(report["subscriptions"], 6)

        for client in subscribers:
            await client.call({"channel": "/meta/disconnect"})
        self.assertTrue(
            await eventually(
                lambda: (
                    {"event": "channel_vacated", "channel": channel("news")}
                    in [m["data"] for m in monitor.messages]
                )
            )
        )

    async def test_metaIsReadOnly(self) -> None:
        """Nobody publishes on meta channels, not even with the key."""
        client = await self.ws()
        reply = await client.call(
            {
                "channel": channel("statistics", "meta"),
                "data": {"fake": 1},
                "ext": {"auth": {"key": KEY, "secret": SECRET}},
            }
        )
        self.assertFalse(reply["successful"])

    async def test_metricsScrape(self) -> None:
        """/metrics over HTTP parses, and counts what happened."""
        client = await self.ws()
        await client.call({"channel": "/meta/subscribe", "subscription": channel("m")})
        await client.call(
            {"channel": channel("m"), "data": 1, "ext": {"auth": {"key": KEY, "secret": SECRET}}}
        )
        response = await treq.get(self.server.url + "/metrics", persistent=False)
        text = (await response.content()).decode()
        samples = {
            s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels
        }
        self.assertGreaterEqual(samples["pandapush_messages_published_total"], 1)
        self.assertGreaterEqual(samples["pandapush_clients"], 1)


class RestLimitTests(EndToEndCase):
    async def test_restMessageSize(self) -> None:
        """A REST publish over --max-message-size is refused with 413 naming the limit, and counted."""
        self.server.router.limits.maxMessageSize = 100
        response = await treq.post(
            f"{self.server.url}/channel{channel('big')}",
            json={"pad": "x" * 200},
            auth=(KEY, SECRET),
            persistent=False,
        )
        body = await response.json()
        self.assertEqual(response.code, 413)
        self.assertEqual(body["message"], "Message larger than 100 bytes")
        text = (await (await treq.get(self.server.url + "/metrics", persistent=False)).content()).decode()
        self.assertIn('pandapush_limit_refusals_total{limit="message_size"} 1.0', text)
