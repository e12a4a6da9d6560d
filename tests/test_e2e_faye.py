"""
End to end: the real ``faye`` npm client (1.4.x) against a real ``twistd pandapush``.

The server runs with in-memory storage and a development application and key
(upstream's ``DEV_*`` variables): the scenarios use ``/<app>/public/...`` channels, which
anyone may subscribe to, and publish with the key and secret in ``ext.auth``, which the
server must strip before delivering.

Each test starts pandapush in a child process on a free port, plays a scenario from
``tests/node/scenarios.js`` with Faye's Node client or with Faye's browser client inside
headless Chromium, and asserts on what the client observed: which messages arrived, each
exactly once, over which transport. A failure message holds everything the client saw
and sent plus the server's log.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.trial.unittest import TestCase

from tests.support.node import NodeResult, NodeScript, requireBrowser, requireNode
from tests.support.process import PandapushProcess

Event = dict[str, Any]

APP = "e2eFayeTestApp000001"
KEY = "PSIDe2eFayeTestKey01"
SECRET = "e2e-faye-test-secret-0123456789abcdef"
SERVER_ENV = {
    "DATABASE": "memory",
    "DEV_APPLICATION_ID": APP,
    "DEV_KEY_ID": KEY,
    "DEV_KEY_SECRET": SECRET,
    # No generated admin password written anywhere: the admin UI is not under test.
    "AUTH_METHOD": "none",
}
# Where the scenarios put their channels, and the credentials their publishes carry.
TENANCY_ARGS = (f"--prefix=/{APP}/public", f"--auth={KEY}:{SECRET}")

# What the roundtrip scenario publishes (see scenarios.js).
ONE = {"n": 1, "from": "A", "text": "hello from A"}
TWO = {"n": 2, "from": "B", "text": "h\u00e9llo \u2028 from B"}
THREE = {"n": 3, "from": "B", "text": "only B hears this"}


def deliveries(events: list[Event], client: str) -> list[Any]:
    """The data of every message the server delivered to ``client``, as it came off the wire."""
    return [
        e["message"].get("data")
        for e in events
        if e.get("event") == "received"
        and e.get("client") == client
        and "data" in e["message"]
        and "successful" not in e["message"]
        and not e["message"].get("channel", "").startswith("/meta/")
    ]


def callbacks(events: list[Event], client: str) -> list[tuple[str, str, Any]]:
    """(subscription, channel, data) for every subscription callback Faye ran for ``client``."""
    return [
        (e["subscription"], e["channel"], e["data"])
        for e in events
        if e.get("event") == "message" and e.get("client") == client
    ]


def sent(events: list[Event], client: str, channel: str) -> list[dict[str, Any]]:
    return [
        e["message"]
        for e in events
        if e.get("event") == "sent" and e.get("client") == client and e["message"].get("channel") == channel
    ]


def replies(events: list[Event], client: str, channel: str) -> list[dict[str, Any]]:
    return [
        e["message"]
        for e in events
        if e.get("event") == "received"
        and e.get("client") == client
        and e["message"].get("channel") == channel
        and "successful" in e["message"]
    ]


def unsuccessful(events: list[Event]) -> list[Event]:
    return [e for e in events if e.get("event") == "received" and e["message"].get("successful") is False]


def leakedSecrets(events: list[Event]) -> list[Event]:
    """Received messages that carry the publisher's secret (tenancy must strip ext.auth)."""
    return [e for e in events if e.get("event") == "received" and SECRET in json.dumps(e["message"])]


def one(events: list[Event], name: str) -> Event:
    matching = [e for e in events if e.get("event") == name]
    assert len(matching) == 1, f"expected one {name!r} event, got {len(matching)}"
    return matching[0]


class FayeTestCase(TestCase):
    timeout = 120
    serverArgs: tuple[str, ...] = ("--timeout", "2")

    async def setUp(self) -> None:  # type: ignore[override]
        self.requirements()
        self.server = await PandapushProcess.started(self, *self.serverArgs, env=SERVER_ENV)

    def requirements(self) -> None:
        requireNode()

    def explain(self, result: NodeResult) -> str:
        return f"{result.describe()}\n--- server ---\n{self.server.log()}"

    async def play(self, script: str, scenario: str, *args: str) -> NodeResult:
        node = NodeScript(script, scenario, self.server.push, *args, *TENANCY_ARGS)
        self.addCleanup(node.stop)
        result = await node.run()
        self.checkFinished(result)
        return result

    def checkFinished(self, result: NodeResult) -> None:
        if result.code != 0 or not any(e.get("event") == "done" for e in result.events):
            self.fail(f"the Faye client did not finish its scenario\n{self.explain(result)}")

    def assertRoundtrip(self, result: NodeResult, connectionType: str) -> None:
        """What the roundtrip scenario must observe, whichever the transport."""
        events = result.events
        context = self.explain(result)
        self.assertEqual(unsuccessful(events), [], context)
        self.assertEqual(leakedSecrets(events), [], context)

        # Each client receives each message once, in order; A unsubscribed before n=3.
        self.assertEqual(deliveries(events, "A"), [ONE, TWO], context)
        self.assertEqual(deliveries(events, "B"), [ONE, TWO, THREE], context)
        channel = one(events, "done")["result"]["channel"]
        self.assertEqual(callbacks(events, "A"), [(channel, channel, ONE), (channel, channel, TWO)], context)
        self.assertEqual(
            callbacks(events, "B"),
            [(channel, channel, ONE), (channel, channel, TWO), (channel, channel, THREE)],
            context,
        )

        for client in "AB":
            (handshake,) = replies(events, client, "/meta/handshake")
            self.assertEqual(handshake["version"], "1.0", context)
            self.assertIn(connectionType, handshake["supportedConnectionTypes"], context)
            clientId = handshake["clientId"]
            connects = sent(events, client, "/meta/connect")
            self.assertTrue(connects, context)
            self.assertConnectionTypes([c["connectionType"] for c in connects], connectionType, context)
            self.assertEqual({c["clientId"] for c in connects}, {clientId}, context)
            for meta in ("/meta/subscribe", "/meta/disconnect"):
                (reply,) = replies(events, client, meta)
                self.assertTrue(reply["successful"], context)
                self.assertEqual(reply["clientId"], clientId, context)
            # Replies echo the request's id, and every request got exactly one reply.
            ids = Counter(
                e["message"]["id"] for e in events if e.get("event") == "sent" and e.get("client") == client
            )
            answered = Counter(
                e["message"]["id"]
                for e in events
                if e.get("event") == "received" and e.get("client") == client and "successful" in e["message"]
            )
            unanswered = {
                i for i in ids if i not in answered and i not in self.mayBeUnanswered(events, client)
            }
            self.assertEqual(unanswered, set(), context)
            self.assertEqual([i for i, n in answered.items() if n > 1], [], context)
        (unsubscribe,) = replies(events, "A", "/meta/unsubscribe")
        self.assertTrue(unsubscribe["successful"], context)
        self.assertEqual(unsubscribe["subscription"], channel, context)
        self.assertNotEqual(replies(events, "A", "/meta/handshake"), replies(events, "B", "/meta/handshake"))

    def assertConnectionTypes(self, types: list[str], expected: str, context: str) -> None:
        """
        Every connect uses ``expected``, except that Faye may send its first connects over
        the type it handshook with while the chosen transport is still opening (an
        EventSource or a websocket connects asynchronously): never after it.
        """
        self.assertIn(expected, types, context)
        first = types.index(expected)
        self.assertEqual(set(types[first:]), {expected}, context)
        self.assertLessEqual(set(types[:first]), {"long-polling", "callback-polling"}, context)

    def mayBeUnanswered(self, events: list[Event], client: str) -> set[str]:
        # The connect held when the client disconnects may be answered or dropped with the
        # connection (a websocket closed with 1000, a long-poll the client stops reading).
        connects = sent(events, client, "/meta/connect")
        return {connects[-1]["id"]} if connects else set()


class FayeNodeClientTests(FayeTestCase):
    """Faye's Node client: websocket (its default) and long-polling."""

    async def test_websocketRoundtrip(self) -> None:
        """
        Over websocket two clients handshake, subscribe, each receive what either
        publishes exactly once, an unsubscribed client receives nothing more, and both
        disconnect.
        """
        result = await self.play("faye-client.js", "roundtrip", "--transport=websocket")
        self.assertRoundtrip(result, "websocket")

    async def test_longPollingRoundtrip(self) -> None:
        """The same round trip with the websocket transport disabled: long-polling."""
        result = await self.play("faye-client.js", "roundtrip", "--transport=long-polling")
        self.assertRoundtrip(result, "long-polling")

    async def assertWildcards(self, transport: str) -> None:
        result = await self.play("faye-client.js", "wildcards", f"--transport={transport}")
        events = result.events
        context = self.explain(result)
        self.assertEqual(unsuccessful(events), [], context)
        self.assertEqual(leakedSecrets(events), [], context)
        base = one(events, "done")["result"]["base"]

        def n(data: list[Any]) -> list[int]:
            return sorted(d["n"] for d in data)

        # A holds base/*, base/** and base/x: one delivery per message however many match.
        self.assertEqual(n(deliveries(events, "A")), [1, 2, 3], context)
        # B holds base/*: one segment below base, nothing deeper, nothing by string prefix.
        self.assertEqual(n(deliveries(events, "B")), [1, 2], context)
        for data in deliveries(events, "A") + deliveries(events, "B"):
            self.assertIn(data["n"], (1, 2, 3), context)
        # Faye runs every matching subscription's callback for that one delivery.
        self.assertEqual(
            sorted(
                (s.removeprefix(base), c.removeprefix(base), d["n"]) for s, c, d in callbacks(events, "A")
            ),
            sorted(
                [
                    ("/*", "/x", 1),
                    ("/**", "/x", 1),
                    ("/x", "/x", 1),
                    ("/*", "/y", 2),
                    ("/**", "/y", 2),
                    ("/**", "/x/deep", 3),
                ]
            ),
            context,
        )
        # Every publish succeeded, including those nobody hears.
        publishes = [
            e["message"]
            for e in events
            if e.get("event") == "received"
            and e.get("client") == "B"
            and not e["message"]["channel"].startswith("/meta/")
            and "successful" in e["message"]
        ]
        self.assertEqual(len(publishes), 5, context)
        self.assertTrue(all(p["successful"] for p in publishes), context)

    async def test_wildcardsWebsocket(self) -> None:
        """
        ``/x/*`` matches one segment below, ``/x/**`` any depth, neither matches ``/x``
        itself or ``/xsuffix/..``, and a client subscribed to several matching patterns
        receives one copy.
        """
        await self.assertWildcards("websocket")

    async def test_wildcardsLongPolling(self) -> None:
        """The same wildcard matching and single delivery over long-polling."""
        await self.assertWildcards("long-polling")

    async def assertSurvivesRestart(self, transport: str, sig: int = signal.SIGTERM) -> None:
        script = NodeScript(
            "faye-client.js", "restart", self.server.push, f"--transport={transport}", *TENANCY_ARGS
        ).start()
        self.addCleanup(script.stop)
        await script.waitForEvent("ready", name="restart")
        await self.server.restart(sig)
        script.send("restart")
        result = await script.whenFinished()
        self.checkFinished(result)
        events = result.events
        context = self.explain(result)

        before = next(e for e in events if e.get("name") == "before-restart")
        after = one(events, "done")["result"]
        handshakes = [r for r in replies(events, "A", "/meta/handshake") if r["successful"]]
        # At least one new handshake; more when the stopping server, still answering on a
        # kept-alive connection, took one in before it went (its id then dies with it).
        self.assertGreaterEqual(len(handshakes), 2, context)
        self.assertEqual(handshakes[0]["clientId"], before["A"], context)
        final = handshakes[-1]["clientId"]
        self.assertNotIn(final, {h["clientId"] for h in handshakes[:-1]}, context)
        # Faye resubscribed on its own, under its new id, and it was accepted.
        resubscribes = [r for r in replies(events, "A", "/meta/subscribe") if r["clientId"] == final]
        self.assertEqual([r["successful"] for r in resubscribes], [True], context)
        # One message before, and exactly one of the accepted publishes after.
        self.assertEqual(
            deliveries(events, "A"),
            [{"n": 1, "phase": "before"}, {"n": 2, "phase": "after", "attempt": after["accepted"]}],
            context,
        )
        # Old ids were refused by the new server the way Faye expects: 401, and on the
        # connect the advice to handshake again. A handshake reaching the draining server
        # is turned away (500, handshake again) rather than given a session that dies.
        refused = [e["message"] for e in unsuccessful(events)]
        for reply in refused:
            if reply["channel"] == "/meta/handshake":
                self.assertEqual(reply["error"], "500::Server shutting down", context)
                self.assertEqual(reply["advice"]["reconnect"], "handshake", context)
                continue
            self.assertTrue(reply["error"].startswith("401:"), context)
            if reply["channel"] == "/meta/connect":
                self.assertEqual(reply["advice"]["reconnect"], "handshake", context)
        if sig == signal.SIGKILL:
            # A killed server said nothing: the new one must have refused the old ids.
            self.assertTrue(refused, context)
        # Back on the same transport under the new id.
        connects = [c for c in sent(events, "A", "/meta/connect") if c["clientId"] == final]
        self.assertConnectionTypes([c["connectionType"] for c in connects], transport, context)
        self.assertEqual(self.server.runs, 2)

    async def test_restartWebsocket(self) -> None:
        """
        The server is stopped and a new one started on the same port: a websocket
        client re-handshakes, resubscribes by itself and receives messages again.
        """
        await self.assertSurvivesRestart("websocket")

    async def test_restartLongPolling(self) -> None:
        """The same recovery for a long-polling client."""
        await self.assertSurvivesRestart("long-polling")

    async def test_crashWebsocket(self) -> None:
        """A server killed outright (SIGKILL, no goodbyes) and started again: the same recovery."""
        await self.assertSurvivesRestart("websocket", signal.SIGKILL)

    async def test_crashLongPolling(self) -> None:
        """A killed server and a long-polling client: the same recovery."""
        await self.assertSurvivesRestart("long-polling", signal.SIGKILL)


class FayeBrowserClientTests(FayeTestCase):
    """Faye's browser client in Debian's Chromium, forced onto each of the five transports."""

    timeout = 180

    def requirements(self) -> None:
        requireBrowser()

    async def browse(self, transport: str) -> NodeResult:
        result = await self.play("browser-client.js", "roundtrip", f"--transport={transport}")
        browser = one(result.events, "browser")
        self.assertEqual(browser["transport"], transport)
        errors = [e for e in result.events if e.get("event") == "pageerror"]
        self.assertEqual(errors, [], self.explain(result))
        self.assertRoundtrip(result, transport)
        return result

    def network(self, result: NodeResult, phase: str = "response") -> list[Event]:
        return [e for e in result.events if e.get("event") == "http" and e.get("phase") == phase]

    def clientIds(self, result: NodeResult) -> set[str]:
        return {r["clientId"] for c in "AB" for r in replies(result.events, c, "/meta/handshake")}

    async def test_websocket(self) -> None:
        """The browser's websocket transport, on a page of the server's origin."""
        result = await self.browse("websocket")
        sockets = [e for e in result.events if e.get("event") == "websocket"]
        self.assertTrue(sockets, self.explain(result))
        self.assertEqual({urlsplit(s["url"]).path for s in sockets}, {"/push"})

    async def test_longPolling(self) -> None:
        """The browser's same-origin XHR long-polling transport."""
        result = await self.browse("long-polling")
        responses = self.network(result)
        self.assertEqual(
            {(r["method"], r["resourceType"]) for r in responses}, {("POST", "xhr")}, self.explain(result)
        )
        self.assertEqual([e for e in result.events if e.get("event") == "websocket"], [])

    async def test_crossOriginLongPolling(self) -> None:
        """
        cross-origin-long-polling from a page of another origin: Faye handshakes by
        JSONP, then every connect, subscribe and publish is a CORS XHR POST that the server
        answers with the page's origin allowed.
        """
        result = await self.browse("cross-origin-long-polling")
        context = self.explain(result)
        browser = one(result.events, "browser")
        self.assertNotEqual(browser["pageOrigin"], browser["endpointOrigin"])
        posts = [r for r in self.network(result) if r["method"] == "POST"]
        self.assertTrue(posts, context)
        for post in posts:
            self.assertEqual(post["resourceType"], "xhr", context)
            self.assertEqual(post["status"], 200, context)
            self.assertEqual(post["origin"], browser["pageOrigin"], context)
            self.assertEqual(post["allowOrigin"], browser["pageOrigin"], context)
        # Only the handshakes travel by JSONP (Faye's mandatory cross-origin type).
        for get in [r for r in self.network(result) if r["method"] == "GET"]:
            (message,) = parse_qs(urlsplit(get["url"]).query)["message"]
            self.assertEqual({m["channel"] for m in json.loads(message)}, {"/meta/handshake"}, context)

    async def test_callbackPolling(self) -> None:
        """callback-polling (JSONP): every message is a script GET with a callback name."""
        result = await self.browse("callback-polling")
        context = self.explain(result)
        responses = self.network(result)
        self.assertTrue(responses, context)
        channels = set()
        for response in responses:
            self.assertEqual((response["method"], response["resourceType"]), ("GET", "script"), context)
            self.assertEqual(response["status"], 200, context)
            self.assertTrue(response["contentType"].startswith("text/javascript"), context)
            query = parse_qs(urlsplit(response["url"]).query)
            self.assertIn("jsonp", query, context)
            channels |= {m["channel"] for m in json.loads(query["message"][0])}
        self.assertTrue({"/meta/handshake", "/meta/connect", "/meta/subscribe"} <= channels, context)

    async def test_eventsource(self) -> None:
        """
        eventsource: each client holds a ``text/event-stream`` GET on ``/push/<clientId>``
        and receives its deliveries on it; its own messages go by XHR.
        """
        result = await self.browse("eventsource")
        context = self.explain(result)
        streams = [r for r in self.network(result) if r["resourceType"] == "eventsource"]
        self.assertTrue(streams, context)
        for stream in streams:
            self.assertEqual(stream["method"], "GET", context)
            self.assertEqual(stream["status"], 200, context)
            self.assertTrue(stream["contentType"].startswith("text/event-stream"), context)
        self.assertEqual(
            {urlsplit(s["url"]).path for s in streams},
            {f"/push/{i}" for i in self.clientIds(result)},
            context,
        )
        # Deliveries did not come back in connect replies: the connects were answered empty.
        for client in "AB":
            for reply in replies(result.events, client, "/meta/connect"):
                self.assertTrue(reply["successful"], context)
