"""
``/live``, ``/ready`` and ``/health_check.json``: liveness says the process runs; readiness
says 503 while the node drains or cannot reach Redis; the health check reports each
dependency with its status and stays 200.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pandapush.bayeux import json
from pandapush.config import Configuration, ConfigurationError
from pandapush.storage.memory import MemoryStorage
from pandapush.web.health import HealthApp
from tests.support import REPO_ROOT
from tests.support.http import stubTreq
from tests.support.inprocess import InProcessServer
from tests.support.process import PandapushProcess
from tests.support.redis import RedisProcess, requireRedisServer
from tests.support.waiting import sleep

HEALTHCHECK = REPO_ROOT / "deploy" / "docker" / "healthcheck.py"

DOWN = {
    "status": "unavailable",
    "redis": "unavailable",
    "error": "Connection refused",
    "shards": {"127.0.0.1:1": {"status": "unavailable", "error": "Connection refused", "seconds": 2.0}},
}


class _Engine:
    def __init__(self) -> None:
        self.answer: dict[str, Any] = {"status": "ok", "redis": "ok", "shards": {}}

    def health(self) -> dict[str, Any]:
        return self.answer


class HealthAppTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.engine = _Engine()
        self.draining = False
        app = HealthApp(storage=MemoryStorage(), engine=self.engine, draining=lambda: self.draining)
        self.treq = stubTreq(app.app.resource())

    def get(self, path: str) -> tuple[int, Any]:
        response = self.successResultOf(self.treq.get("http://localhost" + path))
        self.assertEqual(response.headers.getRawHeaders(b"Cache-Control"), [b"no-cache"])
        return response.code, json.loads(self.successResultOf(response.content()))

    def test_allWell(self) -> None:
        """Everything reachable: live, ready, and the health check lists storage and Redis as ok."""
        self.assertEqual(self.get("/live"), (200, {"live": True}))
        self.assertEqual(self.get("/ready"), (200, {"ready": True}))
        code, health = self.get("/health_check.json")
        self.assertEqual(code, 200)
        self.assertEqual(
            (health["ready"], health["storage"], health["redis"]["status"]), (True, {"status": "ok"}, "ok")
        )
        self.assertNotIn("reasons", health)

    def test_redisDown(self) -> None:
        """Redis unreachable: /ready 503 with the cause, /live 200, the health check 200 with redis down."""
        self.engine.answer = DOWN
        self.assertEqual(
            self.get("/ready"), (503, {"ready": False, "reasons": ["redis unavailable: Connection refused"]})
        )
        self.assertEqual(self.get("/live"), (200, {"live": True}))
        code, health = self.get("/health_check.json")
        self.assertEqual(code, 200)
        self.assertFalse(health["ready"])
        self.assertEqual(health["redis"]["status"], "unavailable")
        self.assertEqual(health["redis"]["shards"]["127.0.0.1:1"]["error"], "Connection refused")
        self.assertEqual(health["storage"], {"status": "ok"})

    def test_draining(self) -> None:
        """While draining: /ready 503 saying so; /live still 200."""
        self.draining = True
        code, body = self.get("/ready")
        self.assertEqual((code, body["reasons"]), (503, ["draining: this node is shutting down"]))
        self.assertEqual(self.get("/live")[0], 200)

    def test_memoryEngineHasNoRedis(self) -> None:
        """An engine without Redis (memory) adds no redis entry and never makes the node unready."""
        self.engine.answer = {"status": "ok"}
        self.assertEqual(self.get("/ready"), (200, {"ready": True}))
        self.assertNotIn("redis", self.get("/health_check.json")[1])


class DrainingServerTests(TestCase):
    async def test_readyUntilDraining(self) -> None:
        """A real server is ready until it starts draining, and live throughout."""
        server = await InProcessServer.started(self)
        response = await treq.get(server.url + "/ready", persistent=False)
        self.assertEqual((response.code, json.loads(await response.content())), (200, {"ready": True}))
        server.service.router.drain("retry")
        response = await treq.get(server.url + "/ready", persistent=False)
        body = json.loads(await response.content())
        self.assertEqual((response.code, body["ready"]), (503, False))
        response = await treq.get(server.url + "/live", persistent=False)
        await response.content()
        self.assertEqual(response.code, 200)


class RedisOutageTests(TestCase):
    async def get(self, server: PandapushProcess, path: str) -> tuple[int, Any]:
        response = await treq.get(server.url + path, persistent=False, timeout=5)
        return response.code, json.loads(await response.content())

    async def until(self, server: PandapushProcess, code: int, timeout: float) -> bool:
        """Whether /ready answers ``code`` within ``timeout`` seconds."""
        deadline = reactor.seconds() + timeout
        while reactor.seconds() < deadline:
            if (await self.get(server, "/ready"))[0] == code:
                return True
            await sleep(0.1)
        return False

    async def test_redisStoppedAndBack(self) -> None:
        """
        A real node on a Redis of its own: ready; Redis stopped: /ready 503 and the
        health check shows redis unavailable while /live stays 200; Redis back: ready.
        """
        requireRedisServer()
        redis = RedisProcess()
        await redis.start()
        self.addCleanup(redis.stop)
        env = {
            "AUTH_METHOD": "none",
            "DATABASE": "memory",
            "REDIS_HOSTS": f"127.0.0.1:{redis.port}",
        }
        server = await PandapushProcess.started(self, env=env)
        self.assertEqual(await self.get(server, "/ready"), (200, {"ready": True}))
        code, health = await self.get(server, "/health_check.json")
        self.assertEqual((code, health["redis"]["status"]), (200, "ok"), health)

        await redis.stop()

        self.assertTrue(await self.until(server, 503, timeout=15), server.log())
        # The image's HEALTHCHECK: liveness passes, readiness (docker-compose.yml's) fails.
        self.assertEqual(await healthcheck(server), 0)
        self.assertEqual(await healthcheck(server, "ready"), 1)
        code, body = await self.get(server, "/ready")
        self.assertIn("redis unavailable", body["reasons"][0])
        self.assertEqual(await self.get(server, "/live"), (200, {"live": True}))
        code, health = await self.get(server, "/health_check.json")
        self.assertEqual(code, 200)
        self.assertEqual(health["redis"]["status"], "unavailable")
        self.assertFalse(health["ready"])

        await redis.start()

        self.assertTrue(await self.until(server, 200, timeout=20), server.log())
        self.assertEqual(await healthcheck(server, "ready"), 0)
        code, health = await self.get(server, "/health_check.json")
        self.assertEqual((health["redis"]["status"], health["ready"]), ("ok", True))


async def healthcheck(server: PandapushProcess, *args: str) -> int:
    """The exit status of the image's ``pandapush-healthcheck`` (deploy/docker/healthcheck.py)."""
    env = {**os.environ, "PORT": str(server.port)}
    env.pop("PANDAPUSH_HEALTHCHECK_URL", None)
    _, _, code = await getProcessOutputAndValue(sys.executable, [str(HEALTHCHECK), *args], env=env)
    return int(code)


class UnreadyGraceSettingTests(SynchronousTestCase):
    def test_parsed(self) -> None:
        """PANDAPUSH_UNREADY_GRACE is seconds, 0 by default; anything else is a usage error before start."""
        self.assertEqual(Configuration.fromOptions({}, {}).unreadyGrace, 0.0)
        self.assertEqual(Configuration.fromOptions({}, {"PANDAPUSH_UNREADY_GRACE": "2.5"}).unreadyGrace, 2.5)
        for bad in ("soon", "-1", "inf", "nan"):
            with self.assertRaises(ConfigurationError):
                Configuration.fromOptions({}, {"PANDAPUSH_UNREADY_GRACE": bad})


class UnreadyGraceTests(TestCase):
    async def test_unreadyBeforeClosing(self) -> None:
        """
        PANDAPUSH_UNREADY_GRACE=2: from SIGTERM on /ready answers 503 while the node
        still accepts connections and serves (/live 200); it closes and exits ~2 s later.
        """
        server = await PandapushProcess.started(
            self, env={"AUTH_METHOD": "none", "DATABASE": "memory", "PANDAPUSH_UNREADY_GRACE": "2"}
        )
        response = await treq.get(server.url + "/ready", persistent=False, timeout=5)
        self.assertEqual((response.code, json.loads(await response.content())), (200, {"ready": True}))
        signalled = reactor.seconds()
        server.sendSignal()
        unready = None
        while reactor.seconds() - signalled < 1.5:
            response = await treq.get(server.url + "/ready", persistent=False, timeout=5)
            body = json.loads(await response.content())
            if response.code == 503:
                unready = reactor.seconds() - signalled
                break
            await sleep(0.05)
        self.assertIsNotNone(unready, server.log())
        self.assertIn("draining: this node is shutting down", body["reasons"])
        response = await treq.get(server.url + "/live", persistent=False, timeout=5)
        await response.content()
        self.assertEqual(response.code, 200)
        code = await server.exited()
        took = reactor.seconds() - signalled
        # Ended by the signal it stopped for, as twist and twistd do.
        self.assertEqual(code, -signal.SIGTERM, server.log())
        self.assertGreaterEqual(took, 2.0, server.log())
        self.assertIn("unready: closing in 2s", server.log())
