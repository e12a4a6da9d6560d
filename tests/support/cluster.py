"""
Several real pandapush processes on one Redis, serving as one service: :class:`ClusterCase`.

Each test's nodes are ``twistd pandapush`` children (:class:`PandapushProcess`) with
``--redis-hosts`` and a namespace of their own (``pp-test-<uuid>``, whose keys are deleted
afterwards), sharing one SQLite file, so that keys created or revoked through one node's
admin API exist on all of them. They are seeded with the application ``APP`` and the key
``KEY``/``SECRET``, with Basic admin auth for ``ADMIN``, ``--timeout 2`` and
``--client-expiry 1``. Clients talk to them over real sockets (:mod:`tests.support.failover`).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from typing import Any

import treq
from twisted.internet import defer
from twisted.trial.unittest import TestCase

from pandapush.redis import RedisAddress
from pandapush.tokens import mintToken
from tests.support.bayeux import LPClient
from tests.support.failover import FailoverWS
from tests.support.process import PandapushProcess, seededEnvironment
from tests.support.redis import deleteNamespace, requireRedis
from tests.support.waiting import sleep

__all__ = ["ADMIN", "APP", "KEY", "ROOM", "SECRET", "ClusterCase", "adminCall", "channel", "createKey"]

APP = "mnapp000000000000001"
KEY = "PSIDmultinode0000001"
SECRET = "multinode-test-secret-of-32-bytes-or-more"
ADMIN = ("admin", "multinode-admin-password")


def channel(path: str, kind: str = "public") -> str:
    """``/<APP>/<kind>/<path>``: a channel of the seeded application."""
    return f"/{APP}/{kind}/{path}"


#: The presence channel the cluster tests join.
ROOM = channel("room", "presence")


class ClusterCase(TestCase):
    """Starts nodes sharing a namespace and an SQLite file; stops them and deletes the namespace's keys."""

    timeout = 60

    async def setUp(self) -> None:  # type: ignore[override]
        self.mainRedis = requireRedis()
        self.namespace = f"pp-test-{uuid.uuid4().hex}"
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.databasePath = os.path.join(directory, "db.sqlite")
        self.clients: list[Any] = []

    def redisEnvironment(self, redis: RedisAddress | Sequence[RedisAddress]) -> dict[str, str]:
        """How the nodes (and a ``pandapush`` command run beside them) find Redis and the database."""
        shards = [redis] if isinstance(redis, RedisAddress) else list(redis)
        return {
            "REDIS_HOSTS": ",".join(f"{r.host}:{r.port}" for r in shards),
            "REDIS_NAMESPACE": self.namespace,
            "DATABASE": "sqlite",
            "DATABASE_PATH": self.databasePath,
        }

    async def startNodes(
        self,
        count: int,
        redis: RedisAddress | Sequence[RedisAddress] | None = None,
        extra: Sequence[str] = (),
        redisArgs: Sequence[str] = (),
    ) -> list[PandapushProcess]:
        """
        ``count`` nodes on ``redis`` (the machine's by default: one address, or several
        shards), with the options ``extra`` too; or, given ``redisArgs``
        (``--redis-sentinels ...``), on what they name (a Redis of the test's own,
        whose keys die with it).
        """
        if not redisArgs:
            redis = redis if redis is not None else self.mainRedis
            shards = [redis] if isinstance(redis, RedisAddress) else list(redis)
            self.addCleanup(deleteNamespace, shards, self.namespace)
            redisArgs = ("--redis-hosts", self.redisEnvironment(shards)["REDIS_HOSTS"])
        args = (
            "--timeout",
            "2",
            "--client-expiry",
            "1",
            *redisArgs,
            "--redis-namespace",
            self.namespace,
            "--database",
            "sqlite",
            "--database-path",
            self.databasePath,
            *extra,
        )
        env = seededEnvironment(APP, KEY, SECRET, admin=ADMIN)
        nodes = [PandapushProcess(*args, env=env) for _ in range(count)]
        for node in nodes:
            self.addCleanup(node.removeScratch)
            self.addCleanup(node.stop)
        # The first migrates the SQLite file and seeds the key; the others find them there.
        await nodes[0].start()
        await defer.gatherResults([defer.ensureDeferred(n.start()) for n in nodes[1:]])
        self.addCleanup(self._stopClients)
        return nodes

    async def _stopClients(self) -> None:
        for client in self.clients:
            if isinstance(client, FailoverWS):
                client.stop()
            else:
                await client.stop()

    async def ws(self, *urls: str, name: str = "") -> FailoverWS:
        """A websocket client of the nodes ``urls`` (the first one first), stopped at cleanup."""
        client = await FailoverWS(list(urls), name).start()
        self.clients.append(client)
        return client

    async def lp(self, url: str) -> LPClient:
        """A long-poll client of one node, stopped at cleanup."""
        client = await LPClient(url).start()
        self.clients.append(client)
        return client

    async def restPublish(
        self, node: PandapushProcess, path: str, data: Any, auth: tuple[str, str] = (KEY, SECRET)
    ) -> tuple[int, bytes]:
        """A REST publish to ``channel(path)`` through ``node``: its status and body."""
        response = await treq.post(
            f"{node.url}/channel{channel(path)}", json=data, auth=auth, persistent=False, timeout=15
        )
        return response.code, await response.content()

    async def refusedWithin(
        self, node: PandapushProcess, path: str, credentials: tuple[str, str], appId: str = APP
    ) -> tuple[int, bytes, float]:
        """Publish on ``node`` until refused (3 s at most); the refusal and the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < 3:
            response = await treq.post(
                f"{node.url}/channel/{appId}/public/{path}",
                json={"probe": True},
                auth=credentials,
                persistent=False,
                timeout=15,
            )
            body = await response.content()
            if response.code != 200:
                return response.code, body, time.monotonic() - started
            await sleep(0.05)
        self.fail(f"{node.url} still accepted the key 3 s after it was revoked or deleted elsewhere")

    async def join(self, client: Any, member: str, room: str = ROOM) -> dict[str, Any]:
        """``client`` joins the presence channel ``room`` as ``member`` (with a token of the seeded key)."""
        token = mintToken(KEY, SECRET, room, sub=True, presence={"id": member})
        ext = {"auth": {"token": token}}
        if isinstance(client, FailoverWS):
            reply = await client.subscribe(room, ext)
        else:
            reply = await client.call({"channel": "/meta/subscribe", "subscription": room, "ext": ext})
        self.assertTrue(reply["successful"], reply)
        return reply


async def adminCall(node: PandapushProcess, method: str, path: str, body: Any) -> Any:
    """One admin API call as the configured admin; the decoded answer (text if not JSON)."""
    response = await treq.request(
        method,
        f"{node.url}/admin/api{path}",
        json=body,
        auth=ADMIN,
        persistent=False,
        timeout=15,
    )
    content = await response.content()
    assert response.code in (200, 201), (response.code, content)
    try:
        return json.loads(content)
    except ValueError:
        return content.decode()


async def createKey(node: PandapushProcess, appId: str) -> dict[str, Any]:
    """A new key of ``appId`` created through ``node``'s admin API (with its secret)."""
    return await adminCall(node, "POST", f"/application/{appId}/keys", {"purpose": "multinode"})  # type: ignore[no-any-return]
