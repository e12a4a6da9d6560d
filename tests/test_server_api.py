"""The server API (``/apps/<appId>/...``) end to end: a real server, real HTTP, real subscribers.

On the memory engine: publishing to many channels and in batches (what subscribers
receive, in which order, and that a refusal publishes nothing), the channel queries with
real websocket and long-polling subscribers and presence tokens, and every kind of bad
input. On Redis: two nodes in one namespace, each counting the other's subscribers, and a
query answered 503 within its deadline while Redis does not answer.
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import treq
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from pandapush.tokens import mintToken
from tests.support.bayeux import LPClient, RecordingPoller, WSClient, holdConnect
from tests.support.inprocess import APP, KEY, SECRET, InProcessServer, channel
from tests.support.proxy import StallingProxy
from tests.support.redis import deleteNamespace, requireRedis
from tests.support.requirements import requireExecutable
from tests.support.sdks import runProcess
from tests.support.waiting import eventually

BASIC = "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
ROOM = channel("room", "presence")


class APICase(TestCase):
    serverArgs: tuple[str, ...] = ("--timeout", "2", "--client-expiry", "1")

    async def setUp(self) -> None:  # type: ignore[override]
        self.server = await self.startServer(*self.serverArgs)
        self.clients: list[Any] = []
        self.addCleanup(self._stopClients)

    async def startServer(self, *args: str, environ: dict[str, str] | None = None) -> InProcessServer:
        server = InProcessServer(*args, environ=environ)
        await server.start()
        self.addCleanup(server.stop)
        return server

    async def _stopClients(self) -> None:
        for client in self.clients:
            if isinstance(client, LPClient):
                await client.stop()
            else:
                await client.close()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        auth: str | None = BASIC,
        query: dict[str, str] | None = None,
        raw: bytes | None = None,
        server: InProcessServer | None = None,
    ) -> tuple[int, Any, Any]:
        headers: dict[Any, Any] = {"Content-Type": "application/json"}
        if auth is not None:
            headers["Authorization"] = auth
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        response = await treq.request(
            method,
            (server or self.server).url + path,
            data=data,
            headers=headers,
            params=query,
            persistent=False,
        )
        content = await response.content()
        decoded = (
            json.loads(content)
            if content and b"json" in (response.headers.getRawHeaders(b"content-type") or [b""])[0]
            else content
        )
        return response.code, response.headers, decoded

    async def ws(self, server: InProcessServer | None = None) -> WSClient:
        client = await WSClient((server or self.server).url).start()
        self.clients.append(client)
        return client

    async def subscribe(self, client: Any, name: str, auth: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"channel": "/meta/subscribe", "subscription": name}
        if auth is not None:
            message["ext"] = {"auth": auth}
        reply = await client.call(message)
        self.assertTrue(reply["successful"], reply)


class PublishTests(APICase):
    async def test_eventsReachEveryChannel(self) -> None:
        """One message to three channels (public, private, presence): each subscriber gets it once."""
        names = [channel("a"), channel("b", "private"), channel("c", "presence")]
        subscribers = []
        for name in names:
            client = await self.ws()
            auth = None if "public" in name else {"key": KEY, "secret": SECRET}
            if "presence" in name:
                auth = {"token": mintToken(KEY, SECRET, name, sub=True, presence={"id": "u1"})}
            await self.subscribe(client, name, auth)
            subscribers.append(client)
        code, _, answer = await self.call(
            "POST", f"/apps/{APP}/events", {"channels": names, "data": {"n": 1}}
        )
        self.assertEqual((code, answer), (200, {}))
        pairs = list(zip(subscribers, names, strict=True))
        self.assertTrue(
            await eventually(lambda: all(any(m["channel"] == n for m in c.messages) for c, n in pairs))
        )
        for client, name in pairs:
            self.assertEqual([m["data"] for m in client.messages if m["channel"] == name], [{"n": 1}])

    async def test_oneRefusedChannelRefusesAll(self) -> None:
        """A channel of another application, or not granted by the token, refuses all: none is published."""
        listener = await self.ws()
        await self.subscribe(listener, channel("a"))
        code, _, answer = await self.call(
            "POST", f"/apps/{APP}/events", {"channels": [channel("a"), "/otherApp/public/a"], "data": 1}
        )
        self.assertEqual(code, 403, answer)
        self.assertEqual(answer["message"], f"/otherApp/public/a is not a channel of application {APP}")
        token = mintToken(KEY, SECRET, channel("a"), pub=True)
        code, _, answer = await self.call(
            "POST",
            f"/apps/{APP}/events",
            {"channels": [channel("a"), channel("b")], "data": 2},
            auth=f"Bearer {token}",
        )
        self.assertEqual((code, answer["message"]), (403, "Token does not match channel"))
        code, _, _ = await self.call(
            "POST", f"/apps/{APP}/events", {"channels": [channel("a")], "data": 3}, auth=f"Token {token}"
        )
        self.assertEqual(code, 200)
        self.assertTrue(await eventually(lambda: len(listener.messages) == 1))
        await self.call("POST", f"/apps/{APP}/events", {"channels": [channel("a")], "data": 4})
        self.assertTrue(await eventually(lambda: len(listener.messages) == 2))
        self.assertEqual([m["data"] for m in listener.messages], [3, 4])

    async def test_batchInOrder(self) -> None:
        """Five messages over two channels arrive in the order given; one bad message publishes none."""
        one, two = await self.ws(), await self.ws()
        await self.subscribe(one, channel("one"))
        await self.subscribe(two, channel("**"))
        batch = [{"channel": channel("one" if i % 2 else "two"), "data": i} for i in range(5)]
        code, _, answer = await self.call("POST", f"/apps/{APP}/batch_events", {"batch": batch})
        self.assertEqual((code, answer), (200, {"batch": [{}] * 5}))
        self.assertTrue(await eventually(lambda: len(two.messages) == 5))
        self.assertEqual([m["data"] for m in two.messages], [0, 1, 2, 3, 4])
        self.assertEqual([m["data"] for m in one.messages], [1, 3])
        big = "x" * (64 * 1024)
        code, _, answer = await self.call(
            "POST",
            f"/apps/{APP}/batch_events",
            {
                "batch": [
                    {"channel": channel("one"), "data": "first"},
                    {"channel": channel("two"), "data": big},
                ]
            },
        )
        self.assertEqual(code, 413, answer)
        self.assertIn("Message larger than", answer["message"])
        await self.call("POST", f"/apps/{APP}/events", {"channels": [channel("one")], "data": "marker"})
        self.assertTrue(await eventually(lambda: len(two.messages) == 6))
        self.assertEqual(two.messages[-1]["data"], "marker")

    async def test_limits(self) -> None:
        """More than 100 channels or messages is 413 naming the limit; duplicates are published once."""
        names = [channel(f"c{i}") for i in range(101)]
        code, _, answer = await self.call("POST", f"/apps/{APP}/events", {"channels": names, "data": 1})
        self.assertEqual(
            (code, answer["message"], answer["params"]),
            (413, "At most 100 channels in one request, not 101", [100]),
        )
        batch = [{"channel": channel("x"), "data": i} for i in range(101)]
        code, _, answer = await self.call("POST", f"/apps/{APP}/batch_events", {"batch": batch})
        self.assertEqual((code, answer["message"]), (413, "At most 100 messages in one request, not 101"))
        listener = await self.ws()
        await self.subscribe(listener, channel("x"))
        code, _, _ = await self.call(
            "POST", f"/apps/{APP}/events", {"channels": [channel("x")] * 3, "data": 1}
        )
        self.assertEqual(code, 200)
        await self.call("POST", f"/apps/{APP}/events", {"channels": [channel("x")], "data": 2})
        self.assertTrue(await eventually(lambda: len(listener.messages) == 2))
        self.assertEqual([m["data"] for m in listener.messages], [1, 2])

    async def test_badInput(self) -> None:
        """Unknown application 404, malformed JSON 400 saying why, no auth 401, bad secret 403, bad routes."""
        cases = [
            (
                (
                    "POST",
                    "/apps/noSuchApp0000001/events",
                    {"channels": ["/noSuchApp0000001/public/a"], "data": 1},
                ),
                404,
                "Unknown application noSuchApp0000001",
            ),
            (("POST", f"/apps/{APP}/events", None, BASIC, None, b"{nope"), 400, "Body is not valid JSON"),
            (("POST", f"/apps/{APP}/events", [1, 2]), 400, "Body must be a JSON object"),
            (
                ("POST", f"/apps/{APP}/events", {"channels": "x", "data": 1}),
                400,
                "channels must be a non-empty list",
            ),
            (("POST", f"/apps/{APP}/events", {"channels": [channel("a")]}), 400, "data is required"),
            (
                ("POST", f"/apps/{APP}/events", {"channels": ["/nope"], "data": 1}),
                400,
                "Invalid channel name: /nope",
            ),
            (
                ("POST", f"/apps/{APP}/events", {"channels": [channel("*")], "data": 1}),
                400,
                "Invalid channel name",
            ),
            (
                ("POST", f"/apps/{APP}/batch_events", {"batch": [{"channel": channel("a")}]}),
                400,
                'batch[0] must be an object with "channel" and "data"',
            ),
            (
                ("POST", f"/apps/{APP}/events", {"channels": [channel("a")], "data": 1}, None),
                401,
                "No auth supplied",
            ),
            (
                (
                    "POST",
                    f"/apps/{APP}/events",
                    {"channels": [channel("a")], "data": 1},
                    "Basic " + base64.b64encode(f"{KEY}:wrong".encode()).decode(),
                ),
                403,
                "Invalid secret",
            ),
            (("GET", f"/apps/{APP}/events"), 405, "Use POST"),
            (("GET", f"/apps/{APP}/nothing"), 404, "Not found"),
        ]
        for args, status, words in cases:
            code, headers, answer = await self.call(*args)  # type: ignore[arg-type]
            self.assertEqual(code, status, (args, answer))
            self.assertIn(words, answer["message"], args)
            self.assertEqual(answer["code"], status)
            if status == 401:
                self.assertTrue(headers.getRawHeaders(b"www-authenticate"))
            if status == 405:
                self.assertEqual(headers.getRawHeaders(b"allow"), [b"POST"])

    async def test_rateCountsEveryMessage(self) -> None:
        """A batch takes one publish per message from the key's rate: past it, 429 with Retry-After."""
        server = await self.startServer("--max-publish-rate", "5", "--max-publish-burst", "5")
        batch = [{"channel": channel("r"), "data": i} for i in range(4)]
        code, _, _ = await self.call("POST", f"/apps/{APP}/batch_events", {"batch": batch}, server=server)
        self.assertEqual(code, 200)
        code, headers, answer = await self.call(
            "POST", f"/apps/{APP}/batch_events", {"batch": batch}, server=server
        )
        self.assertEqual(code, 429, answer)
        self.assertEqual(headers.getRawHeaders(b"retry-after"), [b"1"])


class QueryTests(APICase):
    async def test_countsAndMembers(self) -> None:
        """Real subscribers (one member on a websocket and a long-poll), then after they leave."""
        member = {"id": "u1", "name": "Zo\u00eb"}
        token = mintToken(KEY, SECRET, ROOM, sub=True, presence=member)
        first = await self.ws()
        second = await LPClient(self.server.url).start()
        self.clients.append(second)
        await self.subscribe(first, ROOM, {"token": token})
        self.assertTrue(
            (
                await second.call(
                    {"channel": "/meta/subscribe", "subscription": ROOM, "ext": {"auth": {"token": token}}}
                )
            )["successful"]
        )
        other = await self.ws()
        await self.subscribe(
            other, ROOM, {"token": mintToken(KEY, SECRET, ROOM, sub=True, presence={"id": "u2"})}
        )
        await self.subscribe(other, channel("news"))
        await self.subscribe(other, channel("*"))
        code, _, answer = await self.call("GET", f"/apps/{APP}/channel", query={"name": ROOM})
        self.assertEqual((code, answer), (200, {"occupied": True, "subscription_count": 3, "user_count": 2}))
        code, _, answer = await self.call("GET", f"/apps/{APP}/channels")
        self.assertEqual(
            answer,
            {
                "channels": {
                    ROOM: {"subscription_count": 3, "user_count": 2},
                    channel("news"): {"subscription_count": 1},
                }
            },
        )
        code, _, answer = await self.call(
            "GET", f"/apps/{APP}/channels", query={"prefix": f"/{APP}/presence/"}
        )
        self.assertEqual(list(answer["channels"]), [ROOM])
        code, _, answer = await self.call("GET", f"/apps/{APP}/members", query={"channel": ROOM})
        self.assertEqual((code, answer), (200, {"members": {"u1": member, "u2": {"id": "u2"}}}))
        # A subscriber's own token may ask about its channel.
        code, _, answer = await self.call(
            "GET", f"/apps/{APP}/members", query={"channel": ROOM, "token": token}, auth=None
        )
        self.assertEqual(code, 200, answer)
        await other.call({"channel": "/meta/disconnect"})
        await second.stop()
        await second.call({"channel": "/meta/disconnect"})
        first.kill()

        async def empty() -> bool:
            _, _, answer = await self.call("GET", f"/apps/{APP}/channels")
            return answer == {"channels": {}}

        for _ in range(100):
            if await empty():
                break
            await eventually(lambda: False, timeout=0.05)
        self.assertTrue(await empty())
        code, _, answer = await self.call("GET", f"/apps/{APP}/channel", query={"name": ROOM})
        self.assertEqual(answer, {"occupied": False, "subscription_count": 0, "user_count": 0})

    async def test_badQueries(self) -> None:
        """Missing parameters, foreign prefixes and channels, non-presence members, tokens for keys."""
        token = mintToken(KEY, SECRET, channel("a"), sub=True)
        cases = [
            (("GET", f"/apps/{APP}/channel"), 400, "The query parameter name is required"),
            (
                ("GET", f"/apps/{APP}/channel", None, BASIC, {"name": "/otherApp/public/a"}),
                403,
                "is not a channel of application",
            ),
            (
                ("GET", f"/apps/{APP}/channel", None, BASIC, {"name": channel("**")}),
                400,
                "Invalid channel name",
            ),
            (
                ("GET", f"/apps/{APP}/channels", None, BASIC, {"prefix": "/otherApp/"}),
                400,
                "prefix must be a channel prefix of this application",
            ),
            (
                ("GET", f"/apps/{APP}/members", None, BASIC, {"channel": channel("a")}),
                400,
                "is not a presence channel",
            ),
            (
                ("GET", f"/apps/{APP}/channels", None, f"Bearer {token}"),
                403,
                "Listing channels needs the application's key and secret",
            ),
            (
                ("GET", f"/apps/{APP}/channel", None, f"Bearer {token}", {"name": channel("b")}),
                403,
                "Token does not match channel",
            ),
            (
                (
                    "GET",
                    f"/apps/{APP}/channel",
                    None,
                    f"Bearer {mintToken(KEY, SECRET, channel('a'), pub=True)}",
                    {"name": channel("a")},
                ),
                403,
                "Token does not allow subscribing",
            ),
            (("GET", "/apps/noSuchApp0000001/channels"), 404, "Unknown application"),
        ]
        for args, status, words in cases:
            code, _, answer = await self.call(*args)  # type: ignore[arg-type]
            self.assertEqual(code, status, (args, answer))
            self.assertIn(words, answer["message"], args)
        code, _, answer = await self.call(
            "GET", f"/apps/{APP}/channel", auth=f"Bearer {token}", query={"name": channel("a")}
        )
        self.assertEqual((code, answer), (200, {"occupied": False, "subscription_count": 0}))


class RedisCase(APICase):
    """Two nodes on one Redis namespace (``self.server`` and ``self.other``)."""

    async def setUp(self) -> None:  # type: ignore[override]
        address = requireRedis()
        self.namespace = f"pp-test-{uuid.uuid4().hex}"
        self.addCleanup(deleteNamespace, [address], self.namespace)
        self.redisArgs = ("--redis-hosts", address.name.split("/")[0], "--redis-namespace", self.namespace)
        self.serverArgs = (*APICase.serverArgs, *self.redisArgs)
        await super().setUp()
        self.other = await self.startServer(*self.serverArgs)


class RedisQueryTests(RedisCase):
    """Counts are the cluster's; a query while Redis is stalled is 503."""

    async def test_clusterCounts(self) -> None:
        """Subscribers on node B are counted by node A, and leave the counts when they go."""
        token = mintToken(KEY, SECRET, ROOM, sub=True, presence={"id": "u1"})
        onB = [await self.ws(self.other) for _ in range(2)]
        for client in onB:
            await self.subscribe(client, ROOM, {"token": token})
            await self.subscribe(client, channel("news"))
        onA = await self.ws()
        await self.subscribe(onA, channel("news"))
        expected = {
            ROOM: {"subscription_count": 2, "user_count": 1},
            channel("news"): {"subscription_count": 3},
        }
        code, _, answer = await self.call("GET", f"/apps/{APP}/channels")
        self.assertEqual((code, answer), (200, {"channels": expected}))
        _, _, answer = await self.call("GET", f"/apps/{APP}/channels", server=self.other)
        self.assertEqual(answer, {"channels": expected})
        _, _, answer = await self.call("GET", f"/apps/{APP}/members", query={"channel": ROOM})
        self.assertEqual(answer, {"members": {"u1": {"id": "u1"}}})
        for client in onB:
            await client.call({"channel": "/meta/disconnect"})

        async def counts() -> Any:
            return (await self.call("GET", f"/apps/{APP}/channels"))[2]

        for _ in range(100):
            if await counts() == {"channels": {channel("news"): {"subscription_count": 1}}}:
                break
            await eventually(lambda: False, timeout=0.05)
        self.assertEqual(await counts(), {"channels": {channel("news"): {"subscription_count": 1}}})

    async def test_slowRedisIs503(self) -> None:
        """While Redis does not answer, queries are 503 with Retry-After at the deadline, then work again."""
        address = requireRedis()
        proxy = await StallingProxy.start(address.host, address.port)
        self.addCleanup(proxy.stop)
        server = await self.startServer(
            *APICase.serverArgs,
            "--redis-hosts",
            f"127.0.0.1:{proxy.port}",
            "--redis-namespace",
            self.namespace,
        )
        client = await self.ws()
        await self.subscribe(client, channel("news"))
        proxy.stall()
        started = reactor.seconds()
        code, headers, answer = await self.call(
            "GET", f"/apps/{APP}/channel", query={"name": channel("news")}, server=server
        )
        elapsed = reactor.seconds() - started
        self.assertEqual(code, 503, answer)
        self.assertEqual(headers.getRawHeaders(b"retry-after"), [b"1"])
        self.assertLess(elapsed, 3.5)
        proxy.resume()
        await defer.succeed(None)
        for _ in range(60):
            code, _, answer = await self.call(
                "GET", f"/apps/{APP}/channel", query={"name": channel("news")}, server=server
            )
            if code == 200:
                break
            await eventually(lambda: False, timeout=0.1)
        self.assertEqual((code, answer), (200, {"occupied": True, "subscription_count": 1}))

    async def test_consoleStatisticsAreTheCluster(self) -> None:
        """The console's figures on node A count node B's connections, and say how many nodes they sum."""
        admin = {"AUTH_METHOD": "basic", "ADMIN_USERNAME": "admin", "ADMIN_PASSWORD": "stats-admin-password"}
        args = (*APICase.serverArgs, *self.redisArgs, "--stats-interval", "0.2")
        a = await self.startServer(*args, environ=admin)
        b = await self.startServer(*args, environ=admin)
        for server in (b, b, a):
            await self.subscribe(await self.ws(server), channel("news"))
        auth = "Basic " + base64.b64encode(b"admin:stats-admin-password").decode()

        async def figures() -> Any:
            return (await self.call("GET", f"/admin/api/application/{APP}/stats", auth=auth, server=a))[2]

        for _ in range(50):
            if (await figures())["connections"] == 3:
                break
            await eventually(lambda: False, timeout=0.1)
        answer = await figures()
        self.assertEqual((answer["connections"], answer["channels"]), (3, 1), answer)
        self.assertGreaterEqual(answer["nodes"], 2)


def presence(member: str, room: str = ROOM) -> dict[str, Any]:
    return {"token": mintToken(KEY, SECRET, room, sub=True, presence={"id": member})}


def toldToStop(replies: list[dict[str, Any]]) -> bool:
    return any(
        r.get("channel") == "/meta/connect" and r.get("advice", {}).get("reconnect") == "none"
        for r in replies
    )


class TerminateTests(APICase):
    async def test_terminateUser(self) -> None:
        """
        u1 on a websocket (presence), a long-poller (presence) and a websocket subscribed with a
        ``user`` claim is told to stop and destroyed within a second; u2 is not; u2 hears u1 leave.
        """
        start = reactor.seconds
        ws = await self.ws()
        await self.subscribe(ws, ROOM, presence("u1"))
        poller = RecordingPoller(self.server.url)
        await poller.start()
        self.clients.append(poller)
        reply = await poller.call(
            {"channel": "/meta/subscribe", "subscription": ROOM, "ext": {"auth": presence("u1")}}
        )
        self.assertTrue(reply["successful"], reply)
        claimed = await self.ws()
        token = mintToken(KEY, SECRET, channel("feed", "private"), sub=True, user="u1")
        await self.subscribe(claimed, channel("feed", "private"), {"token": token})
        other = await self.ws()
        await self.subscribe(other, ROOM, presence("u2"))
        for client in (ws, claimed, other):
            holdConnect(client)
        await eventually(lambda: self.server.router.heldConnects() == 4)
        engine = self.server.engine
        before = start()
        code, _, answer = await self.call("POST", f"/apps/{APP}/users/u1/terminate_connections")
        self.assertEqual((code, answer), (200, {}))
        self.assertTrue(
            await eventually(lambda: ws.closed and claimed.closed and not poller.polling, timeout=1)
        )
        self.assertLess(start() - before, 1.0)
        self.assertTrue(toldToStop(ws.replies) and toldToStop(claimed.replies), ws.replies)
        self.assertTrue(toldToStop(poller.connectReplies), poller.connectReplies)
        for ended in (ws.clientId, claimed.clientId, poller.clientId):
            self.assertFalse(engine.hasClient(ended))
        self.assertTrue(engine.hasClient(other.clientId) and not other.closed)
        self.assertTrue(
            await eventually(
                lambda: {"channel": ROOM, "data": {"unsubscribe": {"u1": None}}} in other.messages
            )
        )
        # Its next connect, wherever it comes from, is told the same.
        (reply,) = await poller.post(
            [{"channel": "/meta/connect", "clientId": poller.clientId, "connectionType": "long-polling"}]
        )
        self.assertEqual((reply["successful"], reply["advice"]), (False, {"reconnect": "none"}))
        _, _, answer = await self.call("GET", f"/apps/{APP}/members", query={"channel": ROOM})
        self.assertEqual(answer, {"members": {"u2": {"id": "u2"}}})

    async def test_badTerminate(self) -> None:
        """A token cannot terminate; an unknown application is 404; an unknown user is no error."""
        token = mintToken(KEY, SECRET, ROOM, sub=True, pub=True)
        code, _, answer = await self.call(
            "POST", f"/apps/{APP}/users/u1/terminate_connections", auth=f"Bearer {token}"
        )
        self.assertEqual(
            (code, answer["message"]),
            (403, "Terminating connections needs the application's key and secret, not a token"),
        )
        code, _, _ = await self.call("POST", "/apps/noSuchApp0000001/users/u1/terminate_connections")
        self.assertEqual(code, 404)
        code, _, answer = await self.call("POST", f"/apps/{APP}/users/nobody/terminate_connections")
        self.assertEqual((code, answer), (200, {}))
        code, _, answer = await self.call("POST", f"/apps/{APP}/users/{'x' * 201}/terminate_connections")
        self.assertEqual(code, 400)


class RedisTerminateTests(RedisCase):
    async def test_terminateOnEveryNode(self) -> None:
        """
        u1's clients on both nodes, and a long-poller that subscribed through node A and waits
        on node B, are told to stop within a second of one call to node A.
        """
        start = reactor.seconds
        onB = await self.ws(self.other)
        await self.subscribe(onB, ROOM, presence("u1"))
        onA = await self.ws()
        await self.subscribe(onA, ROOM, presence("u1"))
        hopper = RecordingPoller(self.server.url)
        await hopper.start()
        self.clients.append(hopper)
        reply = await hopper.call(
            {"channel": "/meta/subscribe", "subscription": ROOM, "ext": {"auth": presence("u1")}}
        )
        self.assertTrue(reply["successful"], reply)
        hopper.hops = [self.other.url]  # its connects now go to node B
        stays = await self.ws(self.other)
        await self.subscribe(stays, ROOM, presence("u2"))
        # The hopper's connect held on node A ends at its timeout (2 s); hold the websockets'
        # connects only once it waits on node B, so that none of theirs times out before the
        # terminate: a socket closed with no connect held is never told to stop.
        self.assertTrue(await eventually(lambda: self.other.router.heldConnects() == 1))
        for client in (onA, onB, stays):
            holdConnect(client)
        self.assertTrue(
            await eventually(
                lambda: self.server.router.heldConnects() == 1 and self.other.router.heldConnects() == 3
            )
        )
        before = start()
        code, _, _ = await self.call("POST", f"/apps/{APP}/users/u1/terminate_connections")
        self.assertEqual(code, 200)
        self.assertTrue(
            await eventually(lambda: onA.closed and onB.closed and not hopper.polling, timeout=1.5)
        )
        self.assertLess(start() - before, 1.0)
        self.assertTrue(toldToStop(onA.replies), onA.replies)
        self.assertTrue(toldToStop(onB.replies), onB.replies)
        self.assertTrue(toldToStop(hopper.connectReplies), hopper.connectReplies)
        self.assertFalse(stays.closed)
        _, _, answer = await self.call(
            "GET", f"/apps/{APP}/members", query={"channel": ROOM}, server=self.other
        )
        self.assertEqual(answer, {"members": {"u2": {"id": "u2"}}})


class FayeTerminateTests(APICase):
    """Faye's own Node client, told to stop, stops: no handshake again, no more connects."""

    async def playTerminated(self, transport: str) -> dict[str, Any]:
        node = requireExecutable("node", "apt-get install nodejs")
        script = Path(__file__).resolve().parent / "node" / "terminated.js"
        token = presence("u9")["token"]
        running = defer.ensureDeferred(
            runProcess(
                [
                    node,
                    str(script),
                    self.server.url + "/push",
                    ROOM,
                    token,
                    f"--transport={transport}",
                    "--duration=3000",
                ],
                cwd=script.parent,
                timeout=30,
            )
        )
        engine = self.server.engine
        self.assertTrue(await eventually(lambda: "u9" in engine._members(ROOM), timeout=10))
        await eventually(lambda: self.server.router.heldConnects() == 1, timeout=5)
        code, _, _ = await self.call("POST", f"/apps/{APP}/users/u9/terminate_connections")
        self.assertEqual(code, 200)
        result = await running
        self.assertEqual(result.code, 0, result.describe())
        report = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertFalse(engine._members(ROOM))
        return report  # type: ignore[no-any-return]

    async def check(self, transport: str) -> None:
        report = await self.playTerminated(transport)
        self.assertIn("none", report["advice"], report)
        sent = [event["channel"] for event in report["after"]]
        self.assertNotIn("/meta/handshake", sent, report)
        # The connect it had waiting when the server ended it, at most one more on its way then.
        self.assertLessEqual(sent.count("/meta/connect"), 2, report)

    async def test_websocket(self) -> None:
        await self.check("websocket")

    async def test_longPolling(self) -> None:
        await self.check("long-polling")
