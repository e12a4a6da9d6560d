"""
The nginx example, ``deploy/nginx/pandapush.conf``, in front of two pandapush nodes.

Debian's real nginx runs the example (only its listen and upstream addresses
changed: ``tests/support/nginx.py``) on a free port of 127.0.0.1, in front of two
pandapush nodes sharing Redis and an SQLite file, started with ``--trusted-proxies
127.0.0.1`` as the example tells. Through nginx: a websocket subscriber gets a REST
publish, a long-poll connect is held to its end, an event stream delivers while
open, bodies over ``--max-body-size`` stop at nginx, metrics are kept in, and the
login throttle sees each client's own address (X-Forwarded-For) and not a forged one.

The held connect lasts a few seconds (the nodes run with ``--timeout 4``), not
pandapush's default 30: that the example waits longer than the default hold is
checked on the configuration itself.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import treq
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers

from tests.support.bayeux import HANDSHAKE, LPClient
from tests.support.container import requireTools, run
from tests.support.deploy import (
    basicAuth,
    dropRedisNamespace,
    publishReachesSubscriber,
    redisRunning,
    request,
    serverOptions,
)
from tests.support.nginx import CONFIG_PATH, Block, NginxProcess, agentFrom, parseConfig
from tests.support.process import PandapushProcess
from tests.support.requirements import missing
from tests.support.waiting import eventually

APP, KEY, SECRET = "nginxtestapp", "PSIDnginxtestkey", "nginx-test-secret"
ADMIN = ("admin", "nginx-admin-password")
HOLD = 4.0  # the nodes' --timeout: how long a long-poll connect is held


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if value.endswith(unit):
            return float(value[: -len(unit)]) * units[unit]
    return float(value)


def _bytes(value: str) -> int:
    units = {"k": 1024, "m": 1024 * 1024, "g": 1024**3}
    last = value[-1].lower()
    return int(value[:-1]) * units[last] if last in units else int(value)


class ConfigTests(TestCase):
    """What the example sets, where it applies."""

    def setUp(self) -> None:
        self.config = parseConfig(CONFIG_PATH.read_text())
        self.server = self.config.one("server")
        self.push = self.server.one("location", "/push")
        self.defaults = serverOptions([])

    def proxyingLocations(self) -> list[Block]:
        return [loc for loc in self.server.find("location") if loc.find("proxy_pass")]

    def test_heldConnectsOutlastTheHold(self) -> None:
        """/push waits for upstream answers well past pandapush's default --timeout (30 s)."""
        hold = self.defaults["timeout"]
        self.assertEqual(hold, 30.0)
        for directive in ("proxy_read_timeout", "proxy_send_timeout"):
            configured = self.push.value(directive)
            self.assertIsNotNone(configured, directive)
            assert configured is not None
            self.assertGreaterEqual(_seconds(configured), hold + 30, directive)

    def test_websocketUpgrade(self) -> None:
        """HTTP/1.1 to the nodes, Upgrade passed on, Connection from the upgrade map."""
        self.assertEqual(self.push.value("proxy_http_version"), "1.1")
        headers = {h.args[0].lower(): h.args[1] for h in self.push.find("proxy_set_header")}
        self.assertEqual(headers["upgrade"], "$http_upgrade")
        variable = headers["connection"].lstrip("$")
        upgradeMap = self.config.one("map", "$http_upgrade", "$" + variable)
        self.assertEqual(upgradeMap.value("default"), "upgrade")

    def test_noBuffering(self) -> None:
        """Deliveries (event streams, held connects) pass as they come."""
        self.assertEqual(self.push.value("proxy_buffering"), "off")
        self.assertEqual(self.push.value("proxy_cache"), "off")

    def test_bodySizeMatchesTheServer(self) -> None:
        """nginx refuses exactly what pandapush would (--max-body-size)."""
        size = self.server.value("client_max_body_size")
        assert size is not None
        self.assertEqual(_bytes(size), self.defaults["max-body-size"])

    def test_everyLocationForwardsTheClientAddress(self) -> None:
        """
        A location that sets any proxy_set_header inherits none from above: each one
        that proxies sets X-Forwarded-For and Host itself.
        """
        locations = self.proxyingLocations()
        self.assertGreaterEqual(len(locations), 2)
        for location in locations:
            headers = {h.args[0].lower(): h.args[1] for h in location.find("proxy_set_header")}
            self.assertEqual(headers.get("x-forwarded-for"), "$proxy_add_x_forwarded_for", location.args)
            self.assertEqual(headers.get("host"), "$host", location.args)
            self.assertEqual(location.value("proxy_pass"), "http://pandapush", location.args)


class ThroughNginxTests(TestCase):
    timeout = 120

    async def setUp(self) -> None:  # type: ignore[override]
        tools = requireTools("nginx")
        if not redisRunning():
            missing("Redis is not running on 127.0.0.1:6379")
        namespace = f"pp-test-nginx-{uuid.uuid4().hex}"
        self.addCleanup(dropRedisNamespace, namespace)
        database = self.mktemp() + ".sqlite"
        args = (
            "--timeout",
            str(HOLD),
            "--trusted-proxies",
            "127.0.0.1",
            "--redis-hosts",
            "127.0.0.1:6379",
            "--redis-namespace",
            namespace,
            "--database",
            "sqlite",
            "--database-path",
            database,
        )
        env = {
            "AUTH_METHOD": "basic",
            "ADMIN_USERNAME": ADMIN[0],
            "ADMIN_PASSWORD": ADMIN[1],
            "DEV_APPLICATION_ID": APP,
            "DEV_KEY_ID": KEY,
            "DEV_KEY_SECRET": SECRET,
        }
        self.nodes = [PandapushProcess(*args, env=dict(env)) for _ in range(2)]
        for node in self.nodes:
            self.addCleanup(node.removeScratch)
            self.addCleanup(node.stop)
            # One at a time: the first migrates the SQLite file and seeds the key.
            await node.start()
        self.nginx = NginxProcess(tools["nginx"], [f"127.0.0.1:{n.port}" for n in self.nodes])
        self.addCleanup(self.nginx.removeScratch)
        code, output = await run(*self.nginx.testCommand(), timeout=60)
        self.assertEqual(code, 0, f"nginx -t:\n{output}")
        self.addCleanup(self.nginx.stop)
        await self.nginx.start()
        self.url = self.nginx.url

    def log(self) -> str:
        return "\n".join([self.nginx.log(), *(n.log() for n in self.nodes)])

    async def test_websocketSubscriberGetsRestPublish(self) -> None:
        """A websocket upgraded through nginx, a REST publish through nginx: delivered."""
        key = {"id": KEY, "secret": SECRET}
        for attempt in range(2):  # round robin: the two requests may meet either node
            delivered, details = await publishReachesSubscriber(self.url, self.url, APP, key, f"hi {attempt}")
            self.assertTrue(delivered, f"{details}\n{self.log()}")
        health = await request("GET", self.url + "/health_check.json")
        self.assertEqual(health.code, 200)
        self.assertIn("version", health.json())

    async def test_longPollConnectIsHeld(self) -> None:
        """/meta/connects held for the whole --timeout come back through nginx as successes."""
        poller = LPClient(self.url)
        (hello,) = await poller.post([HANDSHAKE])
        self.assertTrue(hello["successful"], hello)
        connect = {
            "channel": "/meta/connect",
            "clientId": hello["clientId"],
            "connectionType": "long-polling",
        }
        # Round robin moves the client between the nodes; a connect that arrives at a
        # node the client just moved to is answered at once. Some are held.
        held: list[float] = []
        for _ in range(3):
            started = time.monotonic()
            replies = await poller.post([connect])
            held.append(time.monotonic() - started)
            self.assertTrue(
                any(r.get("channel") == "/meta/connect" and r.get("successful") for r in replies),
                f"{replies}\n{self.log()}",
            )
        self.assertGreater(max(held), HOLD - 1, f"never held: {held}")
        self.assertLess(max(held), HOLD + 5, f"held past --timeout: {held}")

    async def test_eventStreamDeliversWhileOpen(self) -> None:
        """An event stream through nginx gets a publish while the response is still open."""
        poller = LPClient(self.url)
        (hello,) = await poller.post([HANDSHAKE])
        clientId = hello["clientId"]
        channel = f"/{APP}/public/stream"
        (subscribed,) = await poller.post(
            [{"channel": "/meta/subscribe", "clientId": clientId, "subscription": channel}]
        )
        self.assertTrue(subscribed["successful"], subscribed)
        received = bytearray()
        response = await treq.get(
            f"{self.url}/push/{clientId}",
            headers=Headers({"Accept": ["text/event-stream"]}),
            unbuffered=True,
            persistent=False,
        )
        self.assertEqual(response.code, 200)
        done = treq.collect(response, received.extend)
        # The stream only ends when the client goes: close the connection.
        original: Any = response.original  # treq's IResponse hides the HTTP client's transport
        close = original._transport.stopProducing
        self.addCleanup(lambda: None if done.called else close())
        self.assertTrue(await eventually(lambda: b"retry:" in received, 5), bytes(received))
        published = await request("POST", f"{self.url}/channel{channel}", {"n": 1}, basicAuth(KEY, SECRET))
        self.assertEqual(published.code, 200, published.body)
        self.assertTrue(await eventually(lambda: b'"n":1' in received.replace(b" ", b""), 5), bytes(received))
        self.assertFalse(done.called, "the stream ended instead of staying open")
        close()
        await done.addErrback(lambda _: None)

    async def test_bodyLimit(self) -> None:
        """Past --max-body-size nginx answers 413 itself; below it the node answers."""
        publish = f"{self.url}/channel/{APP}/public/big"
        auth = basicAuth(KEY, SECRET)
        limit = serverOptions([])["max-body-size"]
        tooBig = await request("POST", publish, data=b"[" + b"1," * (limit // 2) + b"1]", headers=auth)
        self.assertEqual(tooBig.code, 413)
        self.assertIn("nginx", (tooBig.header("Server") or "") + tooBig.body.decode("latin-1"))
        # Over the message limit (64 KiB) but under the body limit: pandapush's own answer.
        large = {"text": "x" * (100 * 1024)}
        refused = await request("POST", publish, large, auth)
        self.assertIn(refused.code, (400, 413))
        self.assertIn("application/json", refused.header("Content-Type") or "")

    async def test_metricsStayInside(self) -> None:
        """/metrics answers the machine itself, not other addresses."""
        inside = await request("GET", self.url + "/metrics", agent=agentFrom("127.0.0.1"))
        self.assertEqual(inside.code, 200)
        outside = await request("GET", self.url + "/metrics", agent=agentFrom("127.0.0.2"))
        self.assertEqual(outside.code, 403)

    async def test_throttleSeesTheClientAddress(self) -> None:
        """
        Failed admin logins from 127.0.0.2 get that address blocked (429) on both
        nodes, a forged X-Forwarded-For does not escape it, and 127.0.0.3 is not
        blocked: pandapush tells clients apart through nginx (with nginx's address
        alone, 127.0.0.3 would be blocked too).
        """
        api = self.url + "/admin/api/applications"
        attacker, bystander = agentFrom("127.0.0.2"), agentFrom("127.0.0.3")
        codes: list[int] = []
        # Each failure names a new user, so only the address can be what is blocked.
        for n in range(40):
            response = await request("GET", api, headers=basicAuth(f"guess{n}", "wrong"), agent=attacker)
            codes.append(response.code)
            if codes[-2:] == [429, 429]:  # round robin: both nodes refuse
                break
        self.assertEqual(codes[-2:], [429, 429], f"never blocked: {codes}\n{self.log()}")
        self.assertEqual(set(codes[:10]), {401}, codes)  # five free failures on each node
        forged = {**basicAuth("guess-forged", "wrong"), "X-Forwarded-For": "203.0.113.9"}
        for _ in range(2):
            response = await request("GET", api, headers=forged, agent=attacker)
            self.assertEqual(response.code, 429, "a forged X-Forwarded-For escaped the block")
        for n in range(2):
            response = await request("GET", api, headers=basicAuth(f"other{n}", "wrong"), agent=bystander)
            self.assertEqual(response.code, 401, f"127.0.0.3 blocked for 127.0.0.2's failures\n{self.log()}")
        allowed = await request("GET", api, headers=basicAuth(*ADMIN), agent=bystander)
        self.assertEqual(allowed.code, 200, allowed.body)
