"""Hostile clients against a real server on a real port (issue 18).

Each test here failed before the change it pins: a REST channel of any length, expanded
with the square of its depth; clients created without bound over one keep-alive HTTP
connection; a multi-channel subscribe left half done; a body announced larger than the
limit read to its end before the 413; a traceback logged per undecodable URL.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet import reactor
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers

from tests.support import servercase
from tests.support.bayeux import HANDSHAKE
from tests.support.inprocess import channel
from tests.support.rawclient import connectRaw
from tests.support.waiting import eventually


class ServerCase(servercase.ServerCase):
    async def rest(self, path: str, data: Any) -> tuple[int, Any]:
        """A REST publish with the seeded key: its status, and its body (parsed, if an error)."""
        response = await self.publish(path, data)
        body = await response.content()
        return response.code, body if response.code == 200 else json.loads(body)


class RestChannelLimitTests(ServerCase):
    async def test_longAndDeepChannelsRefused(self) -> None:
        """
        A REST publish to a channel over ``--max-channel-length`` (7,000 segments: once
        0.34 s of CPU and 45 MB per request) or over 32 segments is a 400 naming the
        limit, and reaches nobody; one within both is published.
        """
        listener = await self.ws()
        reply = await listener.call({"channel": "/meta/subscribe", "subscription": channel("**")})
        self.assertTrue(reply["successful"], reply)
        long = channel("/".join(["a"] * 7000))
        code, body = await self.rest(long, {"n": 1})
        self.assertEqual((code, body["message"]), (400, "Channel name longer than 200 characters"))
        deep = channel("/".join(["a"] * 31))
        code, body = await self.rest(deep, {"n": 2})
        self.assertEqual((code, body["message"]), (400, "Channel name deeper than 32 segments"))
        self.assertEqual(await self.rest(channel("/".join(["a"] * 30)), {"n": 3}), (200, b"OK"))
        self.assertTrue(await eventually(lambda: len(listener.messages) == 1))
        self.assertEqual(listener.messages[0]["data"], {"n": 3})


class SubscribeAllOrNothingTests(ServerCase):
    async def test_tenThousandChannelsRefusedWhole(self) -> None:
        """
        A subscribe to 10,000 channels is refused as a whole, naming the limit: none of
        its channels is subscribed (the first 128 used to be), so nothing published to
        them arrives; the same client subscribes to a few afterwards.
        """
        client = await self.ws()
        many = [channel(f"room{n}") for n in range(10_000)]
        reply = await client.call({"channel": "/meta/subscribe", "subscription": many})
        self.assertEqual(reply["error"], f"403:{many[128]}:Too many subscriptions (limit 128 per client)")
        engine = self.server.engine
        self.assertEqual(await engine.subscriptions(client.clientId), set())
        self.assertEqual(await self.rest(many[0], {"n": 1}), (200, b"OK"))
        reply = await client.call({"channel": "/meta/subscribe", "subscription": many[:3]})
        self.assertTrue(reply["successful"], reply)
        self.assertEqual(await self.rest(many[0], {"n": 2}), (200, b"OK"))
        self.assertTrue(await eventually(lambda: len(client.messages) == 1))
        self.assertEqual(client.messages[0]["data"], {"n": 2})


class ClientsPerConnectionTests(ServerCase):
    async def keepAlive(self) -> HTTPConnectionPool:
        """A pool that keeps one connection and reuses it for every sequential request."""
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 1
        self.addCleanup(pool.closeCachedConnections)
        return pool

    async def handshake(self, pool: HTTPConnectionPool) -> dict[str, Any]:
        response = await treq.post(
            self.server.url + "/push",
            data=json.dumps([HANDSHAKE]).encode(),
            headers=Headers({"Content-Type": ["application/json"]}),
            pool=pool,
        )
        (reply,) = json.loads(await response.content())
        return reply  # type: ignore[no-any-return]

    async def test_keepAliveConnectionCounted(self) -> None:
        """
        Handshakes in separate requests of one keep-alive HTTP connection count together
        towards ``--max-clients-per-connection`` (one connection made 1,000 clients in
        0.1 s when each request was counted alone); another connection has its own count.
        """
        pool = await self.keepAlive()
        replies = [await self.handshake(pool) for _ in range(6)]
        self.assertEqual([r["successful"] for r in replies], [True] * 4 + [False] * 2)
        self.assertEqual(replies[4]["error"], "403::Too many clients (limit 4 per connection)")
        self.assertEqual(self.server.engine.clientCount(), 4)
        other = await self.keepAlive()
        self.assertTrue((await self.handshake(other))["successful"])


class ProxyConnectionsTests(ClientsPerConnectionTests):
    serverArgs = ("--trusted-proxies", "127.0.0.1")

    async def test_keepAliveConnectionCounted(self) -> None:
        """
        A trusted proxy's connection carries the requests of many clients (nginx keeps
        its upstream connections open): its handshakes are not counted together.
        """
        pool = await self.keepAlive()
        replies = [await self.handshake(pool) for _ in range(6)]
        self.assertEqual([r["successful"] for r in replies], [True] * 6)


class UndecodablePathTests(ServerCase):
    async def test_cleanBadRequest(self) -> None:
        """A path that is not UTF-8 is a 400 wherever it points, and logs no traceback (one was, each)."""
        for path in ["/%ff%fe", "/admin/api/%ff", "/client.js%ff", "/metrics/%ff%fe", "/channel/%ff"]:
            response = await treq.get(self.server.url + path, persistent=False)
            await response.content()
            self.assertEqual(response.code, 400, path)
        self.assertEqual(self.flushLoggedErrors(), [])


class BadHostTests(ServerCase):
    async def test_cleanBadRequest(self) -> None:
        """
        A ``Host`` that is not a host name (not UTF-8; an empty label; a label over 63
        characters) is a 400 wherever a Klein app answers, and logs no traceback: Klein
        logged one, and werkzeug's ``BadHost`` made it a 500 (found by test_http_fuzz).
        The Bayeux endpoint and REST publishes, which do not read the host, are unchanged.
        """
        port = self.server.port.getHost().port  # type: ignore[union-attr]
        for host in [b"\xff\xfe", b"a..b", b"x" * 64 + b".example", b"caf\xc3\xa9..x:80"]:
            for path in [b"/health_check.json", b"/admin/api/apps", b"/metrics", b"/nothing-here", b"/"]:
                client = await connectRaw(port)
                client.send(b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host))
                self.assertTrue(await eventually(lambda: client.gone), (host, path))  # noqa: B023
                self.assertTrue(
                    client.received.startswith(b"HTTP/1.1 400 "), (host, path, client.received[:80])
                )
                self.assertIn(b"the Host header is not a host name", client.received)
        client = await connectRaw(port)
        client.send(
            b"GET /health_check.json HTTP/1.1\r\nHost: caf\xc3\xa9.example:80\r\nConnection: close\r\n\r\n"
        )
        self.assertTrue(await eventually(lambda: client.gone))
        self.assertTrue(client.received.startswith(b"HTTP/1.1 200 "), client.received[:80])
        self.assertEqual(self.flushLoggedErrors(), [])
