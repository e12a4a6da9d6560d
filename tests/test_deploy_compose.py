"""
``docker-compose.yml``: two pandapush nodes behind nginx, Redis, PostgreSQL, and a
one-shot ``pandapush migrate`` the nodes wait for.

No container engine runs here, so Compose never starts it. What is tested instead:
its structure (what starts after what, health checks, what is published, that the
nodes, nginx and the databases agree on names, ports and credentials, that no
password ships in it), that every variable it gives pandapush is one pandapush
reads, and that its commands and environment work: ``pandapush migrate`` and two
nodes, each with exactly the environment Compose would give it (only the addresses
of PostgreSQL and Redis changed to this machine's), run against a PostgreSQL and the
Redis of this machine and serve one publish across nodes.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
import uuid
from typing import Any

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.support import REPO_ROOT
from tests.support.compose import COMPOSE_PATH, InterpolationError, interpolate, loadYaml
from tests.support.container import missing
from tests.support.deploy import (
    basicAuth,
    createAppAndKey,
    dropRedisNamespace,
    environmentNamesRead,
    publishReachesSubscriber,
    redisRunning,
    serverOptions,
)
from tests.support.nginx import CONFIG_PATH as NGINX_CONFIG
from tests.support.nginx import parseConfig
from tests.support.postgres import OwnPostgres
from tests.support.process import PandapushProcess, ServerFailedError

#: What a .env file gives Compose in this test.
DOTENV = {"POSTGRES_PASSWORD": "pg-secret-for-test", "ADMIN_PASSWORD": "admin-secret-for-test"}
NODES = ("pandapush-1", "pandapush-2")


def _duration(value: str) -> float:
    return float(value[:-1]) * {"s": 1, "m": 60}[value[-1]] if value[-1] in "sm" else float(value)


class ComposeFileTests(TestCase):
    def setUp(self) -> None:
        self.raw = loadYaml(COMPOSE_PATH)
        self.compose = interpolate(self.raw, DOTENV)
        self.services: dict[str, Any] = self.compose["services"]

    def test_services(self) -> None:
        """Two nodes, nginx, Redis, PostgreSQL, and the migration, from the same image."""
        self.assertEqual(set(self.services), {*NODES, "migrate", "nginx", "redis", "postgres"})
        images = {name: self.services[name]["image"] for name in (*NODES, "migrate")}
        self.assertEqual(len(set(images.values())), 1, images)
        for name in (*NODES, "migrate"):
            self.assertEqual(self.services[name]["build"], ".", name)
        self.assertTrue((REPO_ROOT / "Dockerfile").exists())

    def test_startOrder(self) -> None:
        """
        The migration runs once PostgreSQL is healthy and must succeed before any node
        starts; nodes wait for healthy Redis and PostgreSQL; nginx for healthy nodes.
        """
        migrate = self.services["migrate"]
        self.assertEqual(migrate["command"], ["pandapush", "migrate"])
        self.assertEqual(migrate["restart"], "no")
        self.assertEqual(migrate["depends_on"], {"postgres": {"condition": "service_healthy"}})
        for name in NODES:
            node = self.services[name]
            self.assertEqual(
                node["depends_on"],
                {
                    "migrate": {"condition": "service_completed_successfully"},
                    "redis": {"condition": "service_healthy"},
                    "postgres": {"condition": "service_healthy"},
                },
                name,
            )
            self.assertNotIn("command", node, "the nodes run the image's own command")
            self.assertEqual(node["restart"], "unless-stopped")
        self.assertEqual(
            self.services["nginx"]["depends_on"], {n: {"condition": "service_healthy"} for n in NODES}
        )

    def test_healthChecks(self) -> None:
        """Whatever another service waits on as healthy has a health check; the nodes use the image's."""
        waitedOn = {
            dependency
            for service in self.services.values()
            for dependency, condition in (service.get("depends_on") or {}).items()
            if condition["condition"] == "service_healthy"
        }
        self.assertEqual(waitedOn, {*NODES, "redis", "postgres"})
        for name in waitedOn:
            self.assertTrue(self.services[name]["healthcheck"]["test"], name)
        for name in NODES:
            self.assertEqual(
                self.services[name]["healthcheck"]["test"], ["CMD", "pandapush-healthcheck", "ready"]
            )
        self.assertIn("/opt/pandapush/bin/pandapush-healthcheck", (REPO_ROOT / "Dockerfile").read_text())

    def test_onlyNginxIsPublished(self) -> None:
        """Clients reach the nodes through nginx only, which routes to both by their service names."""
        published = {name for name, service in self.services.items() if service.get("ports")}
        self.assertEqual(published, {"nginx"})
        nginx = self.services["nginx"]
        mounted = {v.split(":")[0]: v.split(":")[1] for v in nginx["volumes"]}
        self.assertEqual(mounted, {"./deploy/nginx/pandapush.conf": "/etc/nginx/conf.d/default.conf"})
        upstream = parseConfig(NGINX_CONFIG.read_text()).one("upstream", "pandapush")
        # The image listens on $PORT, 3000.
        self.assertEqual([s.args[0] for s in upstream.find("server")], [f"{n}:3000" for n in NODES])

    def test_nodesAgreeWithTheirServices(self) -> None:
        """Both nodes: the same settings, naming the PostgreSQL and Redis services as they are set up."""
        environments = [self.services[name]["environment"] for name in NODES]
        self.assertEqual(environments[0], environments[1])
        self.assertEqual(self.services["migrate"]["environment"], environments[0])
        env = environments[0]
        postgres = self.services["postgres"]["environment"]
        self.assertEqual(env["DATABASE"], "postgres")
        self.assertEqual(env["DATABASE_ADDRESS"], "postgres")
        self.assertEqual(env["DATABASE_USERNAME"], postgres["POSTGRES_USER"])
        self.assertEqual(env["DATABASE_PASSWORD"], postgres["POSTGRES_PASSWORD"])
        self.assertEqual(env["DATABASE_NAME"], postgres["POSTGRES_DB"])
        self.assertEqual(env["REDIS_HOSTS"], "redis:6379")
        self.assertEqual(env["AUTH_METHOD"], "basic")
        # The proxies believed are the network nginx connects from.
        subnet = self.compose["networks"]["default"]["ipam"]["config"][0]["subnet"]
        self.assertEqual(ipaddress.ip_network(env["PANDAPUSH_TRUSTED_PROXIES"]), ipaddress.ip_network(subnet))
        for name in NODES:
            node = self.services[name]
            grace = serverOptions([])["shutdown-grace"]
            self.assertGreater(_duration(node["stop_grace_period"]), grace + 10, name)
            self.assertGreaterEqual(node["ulimits"]["nofile"]["hard"], 65536)

    def test_everyVariableIsPandapushs(self) -> None:
        """Each variable given to pandapush is one its code reads (no typos, no other program's)."""
        known = environmentNamesRead()
        for name in (*NODES, "migrate"):
            unknown = sorted(set(self.services[name]["environment"]) - known)
            self.assertEqual(unknown, [], name)

    def test_noPasswordShips(self) -> None:
        """Without a .env, Compose refuses to start rather than use a default password."""
        for missingName in ("POSTGRES_PASSWORD", "ADMIN_PASSWORD"):
            env = {k: v for k, v in DOTENV.items() if k != missingName}
            with self.assertRaises(InterpolationError) as raised:
                interpolate(self.raw, env)
            self.assertIn(missingName, str(raised.exception))
        self.assertNotRegex(COMPOSE_PATH.read_text(), r"PASSWORD:\s*[\"']?[A-Za-z0-9]")


class ComposeCommandsTests(TestCase):
    """The migration's and the nodes' commands with Compose's environment, on real PostgreSQL and Redis."""

    timeout = 180

    async def test_migrateThenTwoNodesServe(self) -> None:
        """
        Before ``pandapush migrate`` a node refuses to serve the empty database; the
        migration (run twice: Compose runs it on every ``up``) succeeds; then both
        nodes serve, a key made on one works on the other, and a REST publish on one
        reaches a websocket subscriber on the other.
        """
        if not redisRunning():
            missing("Redis is not running on 127.0.0.1:6379")
        compose = interpolate(loadYaml(COMPOSE_PATH), DOTENV)
        postgres = await OwnPostgres.started(self)
        # The database and owner the postgres image makes from POSTGRES_USER/_DB/_PASSWORD.
        setup = compose["services"]["postgres"]["environment"]
        await postgres._run(
            "psql",
            "-h",
            str(postgres.directory),
            "-p",
            str(postgres.port),
            "-U",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f"CREATE ROLE {setup['POSTGRES_USER']} LOGIN PASSWORD '{setup['POSTGRES_PASSWORD']}'",
            "-c",
            f"CREATE DATABASE {setup['POSTGRES_DB']} OWNER {setup['POSTGRES_USER']}",
        )
        namespace = f"pp-test-compose-{uuid.uuid4().hex}"
        self.addCleanup(dropRedisNamespace, namespace)

        def environment(service: str) -> dict[str, str]:
            env = {k: str(v) for k, v in compose["services"][service]["environment"].items()}
            # This machine's PostgreSQL and Redis in place of the services' names.
            self.assertEqual((env["DATABASE_ADDRESS"], env["REDIS_HOSTS"]), ("postgres", "redis:6379"))
            env.update(
                DATABASE_ADDRESS="127.0.0.1",
                DATABASE_PORT=str(postgres.port),
                REDIS_HOSTS="127.0.0.1:6379",
                REDIS_NAMESPACE=namespace,  # the machine's Redis is shared
            )
            return env

        early = PandapushProcess(env=environment(NODES[0]))
        self.addCleanup(early.removeScratch)
        with self.assertRaises(ServerFailedError):
            await early.start()
        self.assertIn("migrate", early.log())

        # The image's `pandapush` console script is pandapush.cli:main.
        command = compose["services"]["migrate"]["command"]
        self.assertEqual(command[0], "pandapush")
        migrateEnv = {**os.environ, **environment("migrate"), "PYTHONPATH": str(REPO_ROOT)}
        elsewhere = self.mktemp()
        os.makedirs(elsewhere)
        for _ in range(2):
            code, output = await _run(
                [sys.executable, "-c", "from pandapush.cli import main; main()", *command[1:]],
                migrateEnv,
                elsewhere,
            )
            self.assertEqual(code, 0, output)

        nodes = [PandapushProcess(env=environment(name)) for name in NODES]
        for node in nodes:
            self.addCleanup(node.removeScratch)
            self.addCleanup(node.stop)
            await node.start()
        admin = basicAuth(
            compose["services"][NODES[0]]["environment"]["ADMIN_USERNAME"], DOTENV["ADMIN_PASSWORD"]
        )
        appId, key = await createAppAndKey(nodes[0].url, admin)
        delivered, details = await publishReachesSubscriber(nodes[1].url, nodes[0].url, appId, key)
        self.assertTrue(delivered, f"{details}\n{nodes[0].log()}\n{nodes[1].log()}")
        self.assertIsNone(re.search(r"Traceback", nodes[0].log() + nodes[1].log()))


async def _run(argv: list[str], env: dict[str, str], cwd: str) -> tuple[int | None, str]:
    out, err, code = await getProcessOutputAndValue(argv[0], argv[1:], env=env, path=cwd)
    return code, (out + err).decode("utf-8", "replace")
