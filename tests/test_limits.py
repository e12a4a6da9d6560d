"""Publishes per second per key, connections per application, clients per connection.

Unit tests drive the limiters with a :class:`~twisted.internet.task.Clock`; the end-to-end
tests run a real server on a real port, with real websockets and HTTP requests.
"""

from __future__ import annotations

import json
from base64 import b64encode
from typing import Any

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase

from pandapush.bayeux.context import MessageContext
from pandapush.engines.memory import MemoryEngine
from pandapush.extensions.limitconfig import LimitSettings
from pandapush.extensions.limits import AppConnectionLimiter, LimitsExtension, PublishRateLimiter
from pandapush.tokens import mintToken
from tests.support.bayeux import HANDSHAKE, LPClient
from tests.support.inprocess import AUTH, KEY, SECRET, channel
from tests.support.servercase import ServerCase
from tests.support.waiting import eventually


class PublishRateLimiterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.refused: list[str] = []
        self.limiter = PublishRateLimiter(self.clock, rate=10, burst=5, onRefused=self.refused.append)

    def take(self, times: int, key: str = "PSIDa") -> list[float]:
        return [self.limiter.acquire(key) for _ in range(times)]

    def test_burstThenRefused(self) -> None:
        """A full bucket allows ``burst`` publishes at once; the next is refused, saying how long to wait."""
        self.assertEqual(self.take(5), [0.0] * 5)
        wait = self.limiter.acquire("PSIDa")
        self.assertAlmostEqual(wait, 0.1)
        self.assertEqual(self.refused, ["publish_rate"])

    def test_refillsAtTheRate(self) -> None:
        """Tokens come back at ``rate`` per second, never beyond ``burst``."""
        self.take(5)
        self.clock.advance(0.25)  # 2.5 tokens
        self.assertEqual([w == 0 for w in self.take(3)], [True, True, False])
        self.clock.advance(100)
        self.assertEqual([w == 0 for w in self.take(6)], [True] * 5 + [False])

    def test_keysAreIndependent(self) -> None:
        """One key's exhausted bucket does not refuse another key."""
        self.take(6, "PSIDa")
        self.assertEqual(self.limiter.acquire("PSIDb"), 0.0)

    def test_sustainedRateHeld(self) -> None:
        """Over ten seconds at 50 attempts a second, about rate x time + burst get through."""
        allowed = 0
        for _ in range(500):
            allowed += self.limiter.acquire("PSIDa") == 0.0
            self.clock.advance(0.02)
        self.assertIn(allowed, range(100, 106))

    def test_idleBucketsEvicted(self) -> None:
        """A bucket idle long enough to be full again is dropped: memory follows the active keys only."""
        for n in range(1000):
            self.limiter.acquire(f"PSID{n}")
            self.clock.advance(0.01)
        # burst / rate = 0.5 s: only the keys of the last half second are kept.
        self.assertLessEqual(len(self.limiter), 51)
        self.clock.advance(1)
        self.limiter.acquire("PSIDlast")
        self.assertEqual(len(self.limiter), 1)

    def test_evictedBucketStartsFull(self) -> None:
        """Eviction changes nothing a client can see: a key back after idling has its full burst."""
        self.take(5)
        self.clock.advance(0.5)
        self.limiter.acquire("PSIDother")
        self.assertEqual(len(self.limiter), 1)  # PSIDa evicted
        waits = self.take(6)
        self.assertEqual(waits[:5], [0.0] * 5)
        self.assertGreater(waits[5], 0)

    def test_zeroIsUnlimited(self) -> None:
        """Rate 0 refuses nothing and keeps nothing."""
        limiter = PublishRateLimiter(self.clock, rate=0)
        self.assertEqual({limiter.acquire("PSIDa") for _ in range(10000)}, {0.0})
        self.assertEqual(len(limiter), 0)

    def test_defaultBurstIsTwiceTheRate(self) -> None:
        limiter = PublishRateLimiter(self.clock, rate=3)
        self.assertEqual(limiter.burst, 6)
        self.assertEqual(limiter.refusal("PSIDx"), "Too many publishes for key PSIDx (limit 3/s)")


class _GoneEngine(MemoryEngine):
    """A shared engine's view: clients destroyed through another node, whose listeners heard of it."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock, expiry=3600)  # nothing expires during a test
        self.gone: set[str] = set()

    def clientExists(self, clientId: str) -> defer.Deferred[bool]:
        return defer.succeed(clientId not in self.gone)


class AppConnectionLimiterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.engine = _GoneEngine(self.clock)
        self.refused: list[str] = []
        self.limiter = AppConnectionLimiter(
            self.engine, self.clock, maxPerApp=2, onRefused=self.refused.append
        )

    def client(self) -> str:
        return self.successResultOf(self.engine.createClient())

    def test_fullApplicationRefuses(self) -> None:
        """Two clients fit; a third is refused and counted; another application is not affected."""
        a, b, c = self.client(), self.client(), self.client()
        self.assertTrue(self.limiter.admit(a, "app1"))
        self.assertTrue(self.limiter.admit(b, "app1"))
        self.assertTrue(self.limiter.admit(a, "app1"))  # already counted: not twice
        self.assertFalse(self.limiter.admit(c, "app1"))
        self.assertTrue(self.limiter.admit(c, "app2"))
        self.assertEqual(self.refused, ["connections_per_app"])
        self.assertEqual(self.limiter.connections("app1"), 2)

    def test_destroyedClientFreesItsPlace(self) -> None:
        """The engine destroying a client (disconnect, expiry, closed socket) gives its place back."""
        a, b, c = self.client(), self.client(), self.client()
        self.limiter.admit(a, "app1")
        self.limiter.admit(b, "app1")
        self.successResultOf(self.engine.destroyClient(a, "disconnect"))
        self.assertEqual(self.limiter.connections("app1"), 1)
        self.assertTrue(self.limiter.admit(c, "app1"))

    def test_clientsGoneElsewhereSwept(self) -> None:
        """
        Clients destroyed where this node did not hear it are found when the
        application is full, at most once per sweep interval.
        """
        a, b, c = self.client(), self.client(), self.client()
        self.limiter.admit(a, "app1")
        self.limiter.admit(b, "app1")
        self.engine.gone.add(a)
        self.assertFalse(self.limiter.admit(c, "app1"))  # refused, and a sweep finds a gone
        self.assertTrue(self.limiter.admit(c, "app1"))
        self.engine.gone.add(b)
        self.assertFalse(self.limiter.admit(self.client(), "app1"))  # no sweep yet: too soon
        self.assertEqual(self.limiter.connections("app1"), 2)
        self.clock.advance(31)
        self.assertFalse(self.limiter.admit(self.client(), "app1"))
        self.assertEqual(self.limiter.connections("app1"), 1)

    def test_strangersHaveTheirOwnBudget(self) -> None:
        """
        Clients without the application's credentials fill the anonymous places only:
        authenticated clients still get theirs, and each budget refuses with its own label.
        """
        strangers = [self.client() for _ in range(3)]
        self.assertEqual(
            [self.limiter.admit(c, "app1", authenticated=False) for c in strangers], [True, True, False]
        )
        own = [self.client() for _ in range(3)]
        self.assertEqual(
            [self.limiter.admit(c, "app1", authenticated=True) for c in own], [True, True, False]
        )
        self.assertEqual(self.refused, ["anonymous_connections_per_app", "connections_per_app"])
        self.assertEqual(
            (self.limiter.connections("app1", True), self.limiter.connections("app1", False)), (2, 2)
        )
        self.assertEqual(
            self.limiter.refusal(False), "Too many anonymous connections (limit 2 per application)"
        )

    def test_anonymousClientMovesUp(self) -> None:
        """A client counted anonymous that authenticates moves to an authenticated place."""
        a, b, c = self.client(), self.client(), self.client()
        self.limiter.admit(a, "app1", authenticated=False)
        self.limiter.admit(b, "app1", authenticated=False)
        self.assertTrue(self.limiter.admitted(a, "app1", authenticated=False))
        self.assertFalse(self.limiter.admitted(a, "app1", authenticated=True))
        self.assertTrue(self.limiter.admit(a, "app1", authenticated=True))
        self.assertTrue(
            self.limiter.admitted(a, "app1", authenticated=False)
        )  # an authenticated place serves both
        self.assertTrue(self.limiter.admit(c, "app1", authenticated=False))
        self.assertEqual(
            (self.limiter.connections("app1", True), self.limiter.connections("app1", False)), (1, 2)
        )
        self.successResultOf(self.engine.destroyClient(a, "disconnect"))
        self.assertEqual(self.limiter.connections("app1"), 2)

    def test_smallerAnonymousBudget(self) -> None:
        limiter = AppConnectionLimiter(self.engine, self.clock, maxPerApp=3, maxAnonymousPerApp=1)
        a, b = self.client(), self.client()
        self.assertTrue(limiter.admit(a, "app1", authenticated=False))
        self.assertFalse(limiter.admit(b, "app1", authenticated=False))
        self.assertTrue(limiter.admit(b, "app1", authenticated=True))

    def test_unlimitedTracksNothing(self) -> None:
        limiter = AppConnectionLimiter(self.engine, self.clock, maxPerApp=0)
        for _ in range(100):
            self.assertTrue(limiter.admit(self.client(), "app1"))
        self.assertEqual(limiter.connections("app1"), 0)


class _LateLimiter(AppConnectionLimiter):
    """Reserves as a cluster-wide limiter does: the answer comes later (from Redis)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending: list[defer.Deferred[Any]] = []

    def reserve(self, clientId: str, appId: str, authenticated: bool = True) -> defer.Deferred[bool]:
        answer = self.admit(clientId, appId, authenticated)
        late: defer.Deferred[Any] = defer.Deferred()
        self.pending.append(late)
        return late.addCallback(lambda _: answer)

    def release(self) -> None:
        while self.pending:
            self.pending.pop(0).callback(None)


class LimitsExtensionTests(SynchronousTestCase):
    """
    A client's first subscribe to an application's channels counts it there: at once (no
    coroutine) while the engine and the limiter answer at once, the same once they answer later.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.engine = MemoryEngine(self.clock, expiry=3600)

    def extension(self, limiter: AppConnectionLimiter) -> LimitsExtension:
        return LimitsExtension(self.engine, limiter, PublishRateLimiter(self.clock, 0))

    def subscribe(self, extension: LimitsExtension, clientId: str, *channels: str) -> Any:
        message = {"channel": "/meta/subscribe", "clientId": clientId, "subscription": list(channels)}
        return extension.incoming(message, MessageContext("websocket"))

    def test_atOnce(self) -> None:
        """A first subscribe counts the client and answers with the message; a full application refuses."""
        limiter = AppConnectionLimiter(self.engine, self.clock, maxPerApp=1)
        extension = self.extension(limiter)
        a, b = (self.successResultOf(self.engine.createClient()) for _ in range(2))
        first = self.subscribe(extension, a, "/app1/public/x")
        self.assertEqual(
            first, {"channel": "/meta/subscribe", "clientId": a, "subscription": ["/app1/public/x"]}
        )
        self.assertEqual(limiter.connections("app1"), 1)
        refused = self.subscribe(extension, b, "/app2/public/y", "/app1/public/x")
        self.assertEqual(
            refused["error"], "403:/app1/public/x:Too many anonymous connections (limit 1 per application)"
        )
        # Counted in the first application before the second refused it, as before.
        self.assertEqual((limiter.connections("app1"), limiter.connections("app2")), (1, 1))

    def test_unknownClientNotCounted(self) -> None:
        """A made-up clientId takes no place (the router answers it 401)."""
        limiter = AppConnectionLimiter(self.engine, self.clock, maxPerApp=1)
        message = self.subscribe(self.extension(limiter), "nobody", "/app1/public/x")
        self.assertNotIn("error", message)
        self.assertEqual(limiter.connections("app1"), 0)

    def test_lateLimiter(self) -> None:
        """A limiter answering later (cluster-wide): the same outcome, once it has answered."""
        limiter = _LateLimiter(self.engine, self.clock, maxPerApp=1)
        extension = self.extension(limiter)
        a, b = (self.successResultOf(self.engine.createClient()) for _ in range(2))
        first = self.subscribe(extension, a, "/app1/public/x")
        self.assertIsInstance(first, defer.Deferred)
        self.assertNoResult(first)
        limiter.release()
        self.assertNotIn("error", self.successResultOf(first))
        refused = self.subscribe(extension, b, "/app2/public/y", "/app1/public/x")
        limiter.release()
        limiter.release()
        self.assertEqual(
            self.successResultOf(refused)["error"],
            "403:/app1/public/x:Too many anonymous connections (limit 1 per application)",
        )

    def test_lateEngine(self) -> None:
        """An engine answering ``clientExists`` later: counted once it has."""
        limiter = AppConnectionLimiter(self.engine, self.clock, maxPerApp=1)
        clientId = self.successResultOf(self.engine.createClient())
        exists: defer.Deferred[bool] = defer.Deferred()
        self.engine.clientExists = lambda clientId: exists  # type: ignore[method-assign]
        message = self.subscribe(self.extension(limiter), clientId, "/app1/public/x")
        self.assertNoResult(message)
        self.assertEqual(limiter.connections("app1"), 0)
        exists.callback(True)
        self.assertNotIn("error", self.successResultOf(message))
        self.assertEqual(limiter.connections("app1"), 1)


class LimitSettingsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """Defaults: 1000 publishes/s per key (burst 2000), 10000 clients per app, 4 per connection."""
        settings = LimitSettings.fromOptions({}, {})
        self.assertEqual(
            (settings.maxPublishRate, settings.maxPublishBurst, settings.maxConnectionsPerApp),
            (1000.0, None, 10_000),
        )
        self.assertEqual(settings.maxClientsPerConnection, 4)

    def test_environmentThenOptions(self) -> None:
        """``PANDAPUSH_*`` variables set what no option gives; an option wins over the variable."""
        env = {
            "PANDAPUSH_MAX_PUBLISH_RATE": "5",
            "PANDAPUSH_MAX_PUBLISH_BURST": "7",
            "PANDAPUSH_MAX_CONNECTIONS_PER_APP": "0",
            "PANDAPUSH_MAX_CLIENTS_PER_CONNECTION": "2",
        }
        settings = LimitSettings.fromOptions({"max-clients-per-connection": 9}, env)
        self.assertEqual(
            (
                settings.maxPublishRate,
                settings.maxPublishBurst,
                settings.maxConnectionsPerApp,
                settings.maxClientsPerConnection,
            ),
            (5.0, 7.0, 0, 9),
        )

    def test_badEnvironmentSaysWhich(self) -> None:
        error = self.assertRaises(
            ValueError, LimitSettings.fromOptions, {}, {"PANDAPUSH_MAX_PUBLISH_RATE": "lots"}
        )
        self.assertIn("PANDAPUSH_MAX_PUBLISH_RATE", str(error))


def _json(headers: dict[Any, Any] | None = None) -> dict[bytes | str, bytes | str]:
    return {"Content-Type": "application/json", **(headers or {})}


class EndToEndCase(ServerCase):
    async def rest(self, path: str, data: Any, headers: dict[str, str] | None = None) -> Any:
        return await self.publish(path, data, headers)

    async def refusals(self) -> dict[str, float]:
        """``pandapush_limit_refusals_total`` by limit, and the gauges, from ``/metrics``."""
        response = await treq.get(f"{self.server.url}/metrics", persistent=False)
        text = (await response.content()).decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "pandapush_limit_refusals_total":
                    out[sample.labels["limit"]] = sample.value
                elif sample.name in ("pandapush_app_connections_max", "pandapush_connected_apps"):
                    out[sample.name] = sample.value
        return out


class PublishRateEndToEndTests(EndToEndCase):
    serverArgs = ("--max-publish-rate", "4", "--max-publish-burst", "2")

    async def test_restRefusedWith429(self) -> None:
        """
        Past the key's burst a REST publish is 429 with ``Retry-After`` and a JSON error naming
        the limit, nothing is delivered; once tokens come back, publishing works again.
        """
        listener = await self.ws()
        await listener.call({"channel": "/meta/subscribe", "subscription": channel("news")})
        path = channel("news")
        statuses = [(await self.rest(path, {"n": n})).code for n in range(2)]
        self.assertEqual(statuses, [200, 200])
        refused = await self.rest(path, {"n": 2})
        self.assertEqual(refused.code, 429)
        self.assertEqual(refused.headers.getRawHeaders("Retry-After"), ["1"])
        self.assertEqual(
            json.loads(await refused.content()),
            {"code": 429, "params": [], "message": f"Too many publishes for key {KEY} (limit 4/s)"},
        )
        self.assertTrue(await eventually(lambda: len(listener.messages) == 2))
        await deferLater(reactor, 0.3, lambda: None)
        self.assertEqual((await self.rest(path, {"n": 3})).code, 200)
        self.assertTrue(await eventually(lambda: [m["data"]["n"] for m in listener.messages] == [0, 1, 3]))
        self.assertEqual((await self.refusals())["publish_rate"], 1)

    async def test_bayeuxRefusedNamingTheLimit(self) -> None:
        """
        Bayeux publishes with the key, or with a token it signed, draw on the same bucket
        as REST: the refused one gets ``429:<channel>:...`` and is not delivered.
        """
        listener = await self.ws()
        news = channel("news")
        await listener.call({"channel": "/meta/subscribe", "subscription": news})
        self.assertEqual((await self.rest(news, {"n": 0})).code, 200)
        publisher = await self.ws()
        token = mintToken(KEY, SECRET, news, pub=True)
        ok = await publisher.call({"channel": news, "data": {"n": 1}, "ext": {"auth": {"token": token}}})
        self.assertTrue(ok["successful"], ok)
        refused = await publisher.call({"channel": news, "data": {"n": 2}, "ext": {"auth": AUTH}})
        self.assertFalse(refused["successful"])
        self.assertEqual(refused["error"], f"429:{news}:Too many publishes for key {KEY} (limit 4/s)")
        self.assertTrue(await eventually(lambda: len(listener.messages) == 2))
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual([m["data"]["n"] for m in listener.messages], [0, 1])
        self.assertEqual((await self.refusals())["publish_rate"], 1)

    async def test_refusedCredentialsDoNotDrainTheBucket(self) -> None:
        """A publish with a wrong secret is refused for that, and takes nothing from the key's bucket."""
        wrong = {"Authorization": "Basic " + b64encode(f"{KEY}:nope".encode()).decode()}
        for _ in range(5):
            self.assertEqual((await self.rest(channel("news"), {}, wrong)).code, 403)
        self.assertEqual((await self.rest(channel("news"), {})).code, 200)


class ConnectionsPerAppEndToEndTests(EndToEndCase):
    serverArgs = ("--max-connections-per-app", "2")

    async def test_fullApplicationThenRecovery(self) -> None:
        """
        Two clients subscribe; the third's subscribe is refused with an error naming the
        limit (its handshake was fine); once one of the two goes, the third gets in.
        """
        news = channel("news")
        first, second, third = await self.ws(), await self.ws(), await self.ws()
        for client in (first, second):
            reply = await client.call({"channel": "/meta/subscribe", "subscription": news})
            self.assertTrue(reply["successful"], reply)
        refused = await third.call({"channel": "/meta/subscribe", "subscription": news})
        self.assertFalse(refused["successful"])
        self.assertEqual(
            refused["error"], f"403:{news}:Too many anonymous connections (limit 2 per application)"
        )
        self.assertNotIn("advice", refused)
        # Already counted clients carry on, including publishing with the key.
        ok = await second.call({"channel": news, "data": {}, "ext": {"auth": AUTH}})
        self.assertTrue(ok["successful"], ok)
        metrics = await self.refusals()
        self.assertEqual(metrics["anonymous_connections_per_app"], 1)
        self.assertEqual(metrics["pandapush_app_connections_max"], 2)

        first.kill()  # a closed websocket ends its client at once
        self.assertTrue(await eventually(lambda: self.server.service.router.openSockets() == 2))
        # (second, publishing with the key, went from the anonymous places to the others.)
        reply = await third.call({"channel": "/meta/subscribe", "subscription": news})
        self.assertTrue(reply["successful"], reply)
        self.assertEqual((await self.refusals())["pandapush_app_connections_max"], 2)

    async def test_strangersCannotLockOutTheApplication(self) -> None:
        """
        Anonymous clients filling the public channels (they used to take every place of
        ``--max-connections-per-app``) leave the application's own clients in: a token
        holder subscribing to a private or a public channel, and a publisher with the key.
        """
        news = channel("news")
        strangers = [await self.ws() for _ in range(3)]
        replies = [await c.call({"channel": "/meta/subscribe", "subscription": news}) for c in strangers]
        self.assertEqual([r["successful"] for r in replies], [True, True, False])
        private = channel("room", "private")
        subscriber = await self.ws()
        token = mintToken(KEY, SECRET, private, sub=True)
        reply = await subscriber.call(
            {"channel": "/meta/subscribe", "subscription": private, "ext": {"auth": {"token": token}}}
        )
        self.assertTrue(reply["successful"], reply)
        reader = await self.ws()
        publicToken = mintToken(KEY, SECRET, news, sub=True)
        reply = await reader.call(
            {"channel": "/meta/subscribe", "subscription": news, "ext": {"auth": {"token": publicToken}}}
        )
        self.assertTrue(reply["successful"], reply)
        publisher = await self.ws()
        reply = await publisher.call({"channel": news, "data": {"n": 1}, "ext": {"auth": AUTH}})
        self.assertEqual(reply["error"], f"403:{news}:Too many connections (limit 2 per application)")
        # A REST publish makes no Bayeux client: never refused for this.
        self.assertEqual((await self.rest(news, {"n": 2})).code, 200)
        self.assertTrue(await eventually(lambda: [m["data"] for m in reader.messages] == [{"n": 2}]))
        metrics = await self.refusals()
        self.assertEqual((metrics["anonymous_connections_per_app"], metrics["connections_per_app"]), (1, 1))

    async def test_vanishedLongPollerFreesItsPlace(self) -> None:
        """A long-poll client that stops polling gives its place back once it expires."""
        news = channel("news")
        poller = await LPClient(self.server.url).start()
        self.addCleanup(poller.stop)
        reply = await poller.call({"channel": "/meta/subscribe", "subscription": news})
        self.assertTrue(reply["successful"], reply)
        await (await self.ws()).call({"channel": "/meta/subscribe", "subscription": news})
        late = await self.ws()
        refused = await late.call({"channel": "/meta/subscribe", "subscription": news})
        self.assertFalse(refused["successful"])
        poller.vanish()
        # Held connect timeout (2 s) + client expiry (1 s), then the engine destroys it.
        self.assertTrue(await eventually(lambda: not self.server.engine.hasClient(poller.clientId), 10))
        reply = await late.call({"channel": "/meta/subscribe", "subscription": news})
        self.assertTrue(reply["successful"], reply)

    async def test_publishCountsToo(self) -> None:
        """A client that only publishes uses the application as well: the third publisher is refused."""
        news = channel("news")
        clients = [await self.ws() for _ in range(3)]
        replies = [await c.call({"channel": news, "data": {}, "ext": {"auth": AUTH}}) for c in clients]
        self.assertEqual([r["successful"] for r in replies], [True, True, False])
        self.assertEqual(replies[2]["error"], f"403:{news}:Too many connections (limit 2 per application)")

    async def test_unknownClientsDoNotFillTheApplication(self) -> None:
        """Subscribes naming made-up clients are 401 and take no place."""
        for n in range(5):
            (reply,) = await self.post(
                [{"channel": "/meta/subscribe", "clientId": f"fake{n}", "subscription": channel("news")}]
            )
            self.assertTrue(reply["error"].startswith("401:"), reply)
        reply = await (await self.ws()).call({"channel": "/meta/subscribe", "subscription": channel("news")})
        self.assertTrue(reply["successful"], reply)

    async def post(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = await treq.post(
            f"{self.server.url}/push",
            data=json.dumps(messages).encode(),
            headers=_json(),
            persistent=False,
        )
        return json.loads(await response.content())  # type: ignore[no-any-return]


class ClientsPerConnectionEndToEndTests(EndToEndCase):
    serverArgs = ("--max-clients-per-connection", "2")

    async def test_websocketBindsFewClients(self) -> None:
        """
        One websocket may handshake a couple of live clients; beyond, the handshake is refused
        naming the limit, with advice to handshake again later, not at once.
        """
        ws = await self.ws()  # one client
        second = await ws.call(HANDSHAKE)
        self.assertTrue(second["successful"], second)
        third = await ws.call(HANDSHAKE)
        self.assertFalse(third["successful"])
        self.assertEqual(third["error"], "403::Too many clients (limit 2 per connection)")
        self.assertEqual(third["advice"], {"reconnect": "handshake", "interval": 10_000})
        # The refused handshake created nobody.
        self.assertEqual(self.server.engine.statistics()["clients"], 2)
        self.assertEqual((await self.refusals())["clients_per_connection"], 1)

    async def test_destroyedClientsFreeTheConnection(self) -> None:
        """Once a client the socket made is gone (here: disconnected), the socket may make another."""
        ws = await self.ws()
        second = await ws.call(HANDSHAKE)
        await self.server.engine.destroyClient(second["clientId"], "disconnect")
        again = await ws.call(HANDSHAKE)
        self.assertTrue(again["successful"], again)

    async def test_httpBatchOfHandshakes(self) -> None:
        """An HTTP batch of handshakes gets the first two; the rest are refused, in place."""
        response = await treq.post(
            f"{self.server.url}/push",
            data=json.dumps([{**HANDSHAKE, "id": str(n)} for n in range(4)]).encode(),
            headers=_json(),
            persistent=False,
        )
        replies = json.loads(await response.content())
        self.assertEqual([r["id"] for r in replies], ["0", "1", "2", "3"])
        self.assertEqual([r["successful"] for r in replies], [True, True, False, False])
        self.assertEqual(replies[3]["error"], "403::Too many clients (limit 2 per connection)")
        self.assertEqual(self.server.engine.statistics()["clients"], 2)
