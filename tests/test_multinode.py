"""Several real pandapush processes on one Redis, serving as one service (issue 5).

Every test runs two or three ``twistd pandapush`` children (``tests/support/server.py``)
with ``--redis-hosts`` and a namespace of their own (``pp-test-<uuid>``, whose keys are
deleted afterwards), sharing one SQLite file, so that keys created or revoked through
one node's admin API exist on all of them. Clients talk to them over real sockets.

The clients here are fuller than ``tests/bayeux_clients.py``'s: a websocket client that
keeps connecting (as Faye's does), fails over to the next node when its socket drops and
handshakes again when told to; a long-poll client that sends each request to the next
node in turn, and one whose every request goes where the test says (``HoppingPoller``).
The Redis restart test runs a redis-server of its own on a free port (the machine's
Redis on 6379 is never stopped).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.http_headers import Headers

from pandapush.redis import RedisAddress, RedisShard
from pandapush.tokens import mintToken
from tests.bayeux_clients import HANDSHAKE, LPClient, eventually
from tests.support.server import REPO_ROOT, PandapushProcess, freePort, sleep

APP = "mnapp000000000000001"
KEY = "PSIDmultinode0000001"
SECRET = "multinode-test-secret-of-32-bytes-or-more"
ADMIN = ("admin", "multinode-admin-password")
MAIN_REDIS = RedisAddress("127.0.0.1", 6379)


def channel(path: str, kind: str = "public") -> str:
    return f"/{APP}/{kind}/{path}"


ROOM = channel("room", "presence")


def _reachable(address: RedisAddress) -> bool:
    try:
        with socket.create_connection((address.host, address.port), timeout=0.5):
            return True
    except OSError:
        return False


def _requireRedis() -> None:
    if _reachable(MAIN_REDIS):
        return
    if os.environ.get("CI"):
        raise AssertionError("Redis is not running on 127.0.0.1:6379 and CI is set")
    raise SkipTest("Redis is not running on 127.0.0.1:6379 (start one to run the multi-node tests)")


# clients


class _WSProtocol(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.owner._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.owner._batch(self, json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.owner._closed(self)


class FailoverWS:
    """
    A websocket Bayeux client that behaves like a real one where it matters here: it
    sends the next ``/meta/connect`` when one is answered, handshakes again (and
    subscribes again) when advised to, and when its socket drops it opens one to the
    next node of ``urls`` and carries on with the same clientId (the session lives in
    Redis). ``messages`` collects deliveries, ``failovers``/``handshakes`` count events.
    """

    # The autobahn protocol each socket is opened with (a subclass may note more of the handshake).
    protocolClass: type[WebSocketClientProtocol] = _WSProtocol

    def __init__(self, urls: list[str], name: str = "") -> None:
        self.urls = list(urls)
        self.name = name
        self.index = 0
        self.clientId: str | None = None
        self.messages: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.subscriptions: list[dict[str, Any]] = []
        self.protocol: Any = None
        self.stopped = False
        self.failovers = 0
        self.handshakes = 0
        self._nextId = 0
        self._opening: defer.Deferred[Any] | None = None
        self._recovering = False

    @property
    def url(self) -> str:
        return self.urls[self.index]

    async def _open(self) -> None:
        host, port = self.url.split("//")[1].split(":")
        factory = WebSocketClientFactory(f"ws://{host}:{port}/push")
        factory.protocol = self.protocolClass
        factory.owner = self  # type: ignore[attr-defined]
        self._opening = defer.Deferred()
        self._opening.addTimeout(3, reactor)
        await TCP4ClientEndpoint(reactor, host, int(port), timeout=2).connect(factory)
        await self._opening

    def _opened(self, protocol: Any) -> None:
        self.protocol = protocol
        if self._opening is not None and not self._opening.called:
            self._opening.callback(protocol)

    def _send(self, messages: list[dict[str, Any]]) -> None:
        if self.protocol is not None:
            self.protocol.sendMessage(json.dumps(messages).encode())

    def _connect(self) -> None:
        if not self.stopped and self.clientId is not None:
            self._send(
                [{"channel": "/meta/connect", "clientId": self.clientId, "connectionType": "websocket"}]
            )

    def _batch(self, protocol: Any, batch: list[dict[str, Any]]) -> None:
        for message in batch:
            if message.get("channel") == "/meta/connect" and "id" not in message:
                if protocol is not self.protocol or self.stopped:
                    continue
                if message.get("successful"):
                    self._connect()
                elif (message.get("advice") or {}).get("reconnect") == "handshake":
                    self._recover()
                else:
                    reactor.callLater(0.2, self._connect)
            elif "successful" in message:
                self.replies.append(message)
            else:
                self.messages.append(message)

    async def start(self) -> FailoverWS:
        await self._open()
        await self._handshake()
        return self

    async def _handshake(self) -> None:
        while not self.stopped:
            self.clientId = None
            try:
                reply = await self.call(HANDSHAKE, timeout=3)
            except AssertionError:
                reply = {}
            if reply.get("successful"):
                break
            await sleep(0.2)
        else:
            return
        self.clientId = reply["clientId"]
        self.handshakes += 1
        self._connect()
        for subscription in self.subscriptions:
            await self.call(subscription)

    def _recover(self) -> None:
        if self._recovering:
            return
        self._recovering = True

        def done(_: Any) -> None:
            self._recovering = False

        defer.ensureDeferred(self._handshake()).addBoth(done)

    async def call(self, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        self._nextId += 1
        message = {**message, "id": f"{self.name}-{self._nextId}"}
        if self.clientId is not None:
            message["clientId"] = self.clientId
        self._send([message])
        assert await eventually(lambda: any(r.get("id") == message["id"] for r in self.replies), timeout), (
            f"{self.name}: no reply to {message['channel']} from {self.url}"
        )
        return next(r for r in self.replies if r.get("id") == message["id"])

    async def subscribe(self, subscription: str, ext: dict[str, Any] | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"channel": "/meta/subscribe", "subscription": subscription}
        if ext is not None:
            message["ext"] = ext
        reply = await self.call(message)
        if reply.get("successful"):
            self.subscriptions.append(message)
        return reply

    def _closed(self, protocol: Any) -> None:
        if protocol is not self.protocol:
            return
        self.protocol = None
        if not self.stopped:
            defer.ensureDeferred(self._failover())

    async def _failover(self) -> None:
        while not self.stopped:
            self.index = (self.index + 1) % len(self.urls)
            try:
                await self._open()
            except Exception:
                await sleep(0.1)
                continue
            self.failovers += 1
            # Same session on the new node; an unknown clientId gets handshake advice.
            self._connect()
            return

    async def disconnect(self) -> dict[str, Any]:
        """``/meta/disconnect``: the session ends here (no handshake again, no failover)."""
        self.stopped = True
        return await self.call({"channel": "/meta/disconnect"})

    @property
    def connected(self) -> bool:
        return self.protocol is not None

    def stop(self) -> None:
        self.stopped = True
        if self.protocol is not None:
            self.protocol.transport.abortConnection()


class AlternatingPoller:
    """A long-poll client whose every request goes to the next node of ``urls`` in turn."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = list(urls)
        self.requests = 0
        self.messages: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.nodesUsed: list[str] = []
        self.clientId: str | None = None
        self.polling = False
        self._loop: defer.Deferred[None] | None = None

    def _nextUrl(self) -> str:
        url = self.urls[self.requests % len(self.urls)]
        self.requests += 1
        self.nodesUsed.append(url)
        return url

    async def post(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = await treq.post(
            self._nextUrl() + "/push",
            data=json.dumps(messages).encode(),
            headers=Headers({b"Content-Type": [b"application/json"]}),
            persistent=False,
            timeout=15,
        )
        return json.loads(await response.content())  # type: ignore[no-any-return]

    async def start(self, subscription: str) -> AlternatingPoller:
        (reply,) = await self.post([HANDSHAKE])
        self.clientId = reply["clientId"]
        (reply,) = await self.post(
            [{"channel": "/meta/subscribe", "clientId": self.clientId, "subscription": subscription}]
        )
        assert reply["successful"], reply
        self.polling = True
        self._loop = defer.ensureDeferred(self._poll())
        return self

    async def _poll(self) -> None:
        while self.polling:
            replies = await self.post(
                [{"channel": "/meta/connect", "clientId": self.clientId, "connectionType": "long-polling"}]
            )
            for reply in replies:
                if "successful" not in reply:
                    self.messages.append(reply)
                elif not reply["successful"]:
                    self.failures.append(reply)

    async def stop(self) -> None:
        self.polling = False
        if self._loop is not None:
            await self._loop


# processes


class _RedisProtocol(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.output: list[bytes] = []

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.output.append(data)

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class RedisProcess:
    """A throwaway redis-server on a free port (no persistence), restartable on that port."""

    def __init__(self) -> None:
        self.port = freePort()
        self.protocol: _RedisProtocol | None = None
        self.transport: Any = None

    async def start(self) -> None:
        executable = shutil.which("redis-server")
        assert executable is not None
        self.protocol = _RedisProtocol()
        argv = [
            executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        argv += ["--daemonize", "no"]
        self.transport = reactor.spawnProcess(self.protocol, executable, argv, env=dict(os.environ))
        assert await eventually(lambda: _reachable(RedisAddress("127.0.0.1", self.port)), timeout=10), (
            b"".join(self.protocol.output).decode()
        )

    async def stop(self, sig: str = "TERM") -> None:
        if self.protocol is None or self.protocol.ended.called:
            return
        try:
            self.transport.signalProcess(sig)
        except Exception:
            pass
        await self.protocol.ended


class ClusterCase(TestCase):
    """Starts nodes sharing a namespace and an SQLite file; stops them and deletes the namespace's keys."""

    timeout = 60

    async def setUp(self) -> None:  # type: ignore[override]
        _requireRedis()
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
        self, count: int, redis: RedisAddress | Sequence[RedisAddress] = MAIN_REDIS
    ) -> list[PandapushProcess]:
        shards = [redis] if isinstance(redis, RedisAddress) else list(redis)
        for shard in shards:
            self.addCleanup(self._dropKeys, shard)
        args = (
            "--timeout",
            "2",
            "--client-expiry",
            "1",
            "--redis-hosts",
            self.redisEnvironment(shards)["REDIS_HOSTS"],
            "--redis-namespace",
            self.namespace,
            "--database",
            "sqlite",
            "--database-path",
            self.databasePath,
        )
        env = {
            "DEV_APPLICATION_ID": APP,
            "DEV_KEY_ID": KEY,
            "DEV_KEY_SECRET": SECRET,
            "AUTH_METHOD": "basic",
            "ADMIN_USERNAME": ADMIN[0],
            "ADMIN_PASSWORD": ADMIN[1],
        }
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

    async def _dropKeys(self, redis: RedisAddress) -> None:
        if not _reachable(redis):
            return
        shard = RedisShard(reactor, redis)
        try:
            cursor = "0"
            while True:
                cursor, keys = await shard.execute(
                    "SCAN", cursor, "MATCH", f"{self.namespace}:*", "COUNT", 1000
                )
                if keys:
                    await shard.execute("DEL", *keys)
                if str(cursor) == "0":
                    break
        finally:
            await shard.close()

    async def ws(self, *urls: str, name: str = "") -> FailoverWS:
        client = await FailoverWS(list(urls), name).start()
        self.clients.append(client)
        return client

    async def lp(self, url: str) -> LPClient:
        client = await LPClient(url).start()
        self.clients.append(client)
        return client

    async def restPublish(
        self, node: PandapushProcess, path: str, data: Any, auth: tuple[str, str] = (KEY, SECRET)
    ) -> tuple[int, bytes]:
        response = await treq.post(
            f"{node.url}/channel{channel(path)}", json=data, auth=auth, persistent=False, timeout=15
        )
        return response.code, await response.content()

    async def _refusedWithin(
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

    async def join(self, client: Any, member: str) -> dict[str, Any]:
        token = mintToken(KEY, SECRET, ROOM, sub=True, presence={"id": member})
        ext = {"auth": {"token": token}}
        if isinstance(client, FailoverWS):
            reply = await client.subscribe(ROOM, ext)
        else:
            reply = await client.call({"channel": "/meta/subscribe", "subscription": ROOM, "ext": ext})
        self.assertTrue(reply["successful"], reply)
        return reply


def _data(client: Any, on: str) -> list[Any]:
    return [m["data"] for m in client.messages if m.get("channel") == on]


class FanOutTests(ClusterCase):
    async def test_publishReachesEveryNodeOnce(self) -> None:
        """REST and Bayeux publishes on A reach websocket and long-poll subscribers on B and C, once each."""
        a, b, c = await self.startNodes(3)
        news = channel("news")
        subscribers: list[Any] = []
        for node in (b, c):
            ws = await self.ws(node.url, name=f"ws-{node.port}")
            self.assertTrue((await ws.subscribe(news))["successful"])
            poller = await self.lp(node.url)
            self.assertTrue(
                (await poller.call({"channel": "/meta/subscribe", "subscription": news}))["successful"]
            )
            subscribers += [ws, poller]
        publisher = await self.ws(a.url, name="publisher")
        expected: list[Any] = []
        for i in range(5):
            code, body = await self.restPublish(a, "news", {"rest": i})
            self.assertEqual(code, 200, body)
            expected.append({"rest": i})
            reply = await publisher.call(
                {"channel": news, "data": {"bayeux": i}, "ext": {"auth": {"key": KEY, "secret": SECRET}}}
            )
            self.assertTrue(reply["successful"], reply)
            expected.append({"bayeux": i})
        self.assertTrue(
            await eventually(
                lambda: all(len(_data(s, news)) >= len(expected) for s in subscribers), timeout=10
            ),
            [_data(s, news) for s in subscribers],
        )
        await sleep(0.5)  # anything extra (a duplicate) would have arrived by now
        for subscriber in subscribers:
            self.assertEqual(_data(subscriber, news), expected)
        for message in (m for s in subscribers for m in s.messages):
            self.assertNotIn(SECRET, json.dumps(message))

    async def test_longPollerAlternatingNodes(self) -> None:
        """A long-poll client whose requests alternate between A and B sees every message, in order, once."""
        a, b, c = await self.startNodes(3)
        poller = AlternatingPoller([a.url, b.url])
        self.clients.append(poller)
        await poller.start(channel("feed"))
        sent = []
        for i in range(30):
            code, body = await self.restPublish(c, "feed", {"n": i})
            self.assertEqual(code, 200, body)
            sent.append({"n": i})
            await sleep(0.05)
        self.assertTrue(
            await eventually(lambda: len(_data(poller, channel("feed"))) >= len(sent), timeout=10),
            _data(poller, channel("feed")),
        )
        await sleep(0.5)
        self.assertEqual(_data(poller, channel("feed")), sent)
        self.assertEqual(poller.failures, [])
        self.assertIn(a.url, poller.nodesUsed)
        self.assertIn(b.url, poller.nodesUsed)
        self.assertGreater(poller.requests, 6, "the poller did move between nodes several times")


class PresenceTests(ClusterCase):
    async def test_joinsAndLeavesSeenIdentically(self) -> None:
        """Watchers on A, B and C see the same presence events in the same order; replies agree."""
        a, b, c = await self.startNodes(3)
        watchers = [await self.ws(n.url, name=f"watch-{i}") for i, n in enumerate((a, b, c))]
        for i, watcher in enumerate(watchers):
            await self.join(watcher, f"w{i}")
        # Everyone has seen every watcher arrive before the observed part starts.
        self.assertTrue(
            await eventually(
                lambda: all(len(_data(w, ROOM)) >= 2 - i for i, w in enumerate(watchers)), timeout=5
            )
        )
        await sleep(0.3)
        marks = [len(w.messages) for w in watchers]

        poller = await self.lp(b.url)
        reply = await self.join(poller, "lp-member")
        self.assertEqual(set(reply["ext"]["presence"]["subscribe"]), {"w0", "w1", "w2", "lp-member"})
        wsMember = await self.ws(c.url, name="ws-member")
        reply = await self.join(wsMember, "ws-member")
        self.assertEqual(
            set(reply["ext"]["presence"]["subscribe"]), {"w0", "w1", "w2", "lp-member", "ws-member"}
        )
        await poller.call({"channel": "/meta/unsubscribe", "subscription": ROOM})
        await wsMember.disconnect()

        expected = [
            {"subscribe": {"lp-member": {"id": "lp-member"}}},
            {"subscribe": {"ws-member": {"id": "ws-member"}}},
            {"unsubscribe": {"lp-member": None}},
            {"unsubscribe": {"ws-member": None}},
        ]

        def seen(i: int) -> list[Any]:
            return [m["data"] for m in watchers[i].messages[marks[i] :] if m.get("channel") == ROOM]

        self.assertTrue(await eventually(lambda: all(len(seen(i)) >= 4 for i in range(3)), timeout=10))
        await sleep(0.3)
        for i in range(3):
            self.assertEqual(seen(i), expected, f"watcher on node {i}")


class KeyRevocationTests(ClusterCase):
    async def test_revokedOnARefusedOnB(self) -> None:
        """A key revoked through A's admin API is refused by B (REST) and C (Bayeux) within a second."""
        a, b, c = await self.startNodes(3)
        key = await createKey(a, APP)
        credentials = (key["id"], key["secret"])
        # B and C answer with it, so their caches hold it (for a minute by default).
        code, body = await self.restPublish(b, "k", {"before": True}, auth=credentials)
        self.assertEqual(code, 200, body)
        bayeux = await self.ws(c.url, name="bayeux-publisher")
        auth = {"auth": {"key": key["id"], "secret": key["secret"]}}
        reply = await bayeux.call({"channel": channel("k"), "data": 1, "ext": auth})
        self.assertTrue(reply["successful"], reply)

        await adminCall(a, "POST", f"/application/{APP}/keys/{key['id']}/revoke", {})
        revoked = time.monotonic()
        code, body, elapsed = await self._refusedWithin(b, "k", credentials)
        self.assertEqual(code, 403, body)
        self.assertEqual(json.loads(body)["message"], "Revoked key")
        self.assertLess(elapsed, 1.0)
        # C hears of the revocation on its own connection to Redis, not through B: that
        # B refuses says nothing about C at that instant. C is asked until it refuses
        # too, and must within a second of the revocation as well.
        while True:
            reply = await bayeux.call({"channel": channel("k"), "data": 2, "ext": auth})
            if not reply["successful"] or time.monotonic() - revoked > 3:
                break
            await sleep(0.05)
        self.assertFalse(reply["successful"], f"C still accepted the key 3 s after it was revoked: {reply}")
        self.assertIn("Revoked key", reply["error"])
        self.assertLess(time.monotonic() - revoked, 1.0)
        # The seeded key still works on B: only the revoked one was dropped.
        code, body = await self.restPublish(b, "k", {"other": True})
        self.assertEqual(code, 200, body)

    async def test_deletedApplicationRefusedOnB(self) -> None:
        """Deleting an application through A stops its keys on B within a second."""
        a, b = await self.startNodes(2)
        application = await adminCall(a, "POST", "/applications", {"name": "short-lived"})
        key = await createKey(a, application["id"])
        credentials = (key["id"], key["secret"])
        response = await treq.post(
            f"{b.url}/channel/{application['id']}/public/x",
            json={"before": True},
            auth=credentials,
            persistent=False,
        )
        self.assertEqual(response.code, 200, await response.content())
        await adminCall(a, "DELETE", f"/application/{application['id']}", None)
        code, body, elapsed = await self._refusedWithin(b, "x", credentials, application["id"])
        self.assertEqual(code, 403, body)
        self.assertLess(elapsed, 1.0)


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


class CommandLineKeyChangeTests(ClusterCase):
    """The ``pandapush`` command, run beside the nodes with their REDIS_HOSTS, reaches them at once."""

    async def pandapush(self, *argv: str) -> str:
        """Run ``python -m pandapush.cli argv...`` with the nodes' Redis and database; its stdout."""
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
            **self.redisEnvironment(MAIN_REDIS),
        }
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "pandapush.cli", *argv], env=env, path=str(REPO_ROOT)
        )
        self.assertEqual(code, 0, f"pandapush {' '.join(argv)}: {err.decode()}")
        self.assertNotIn(b"warning", err)
        return out.decode()

    async def test_revokedAndDeletedFromCommandLine(self) -> None:
        """`pandapush key revoke` and `app delete` in another process: both nodes refuse within a second."""
        a, b = await self.startNodes(2)
        key = json.loads(await self.pandapush("key", "create", APP, "--json"))
        other = json.loads(await self.pandapush("app", "create", "short-lived", "--json"))
        otherKey = json.loads(await self.pandapush("key", "create", other["id"], "--json"))
        for node in (a, b):
            # Each node caches both keys (for a minute): only a broadcast makes them let go early.
            code, body = await self.restPublish(
                node, "cli", {"before": True}, auth=(key["id"], key["secret"])
            )
            self.assertEqual(code, 200, body)
            response = await treq.post(
                f"{node.url}/channel/{other['id']}/public/x",
                json={"before": True},
                auth=(otherKey["id"], otherKey["secret"]),
                persistent=False,
            )
            self.assertEqual(response.code, 200, await response.content())

        await self.pandapush("key", "revoke", key["id"])
        for node in (a, b):
            code, body, elapsed = await self._refusedWithin(node, "cli", (key["id"], key["secret"]))
            self.assertEqual(code, 403, body)
            self.assertEqual(json.loads(body)["message"], "Revoked key")
            self.assertLess(elapsed, 1.0)
        code, body = await self.restPublish(a, "cli", {"seeded": True})
        self.assertEqual(code, 200, body)

        await self.pandapush("app", "delete", other["id"])
        for node in (a, b):
            code, body, elapsed = await self._refusedWithin(
                node, "x", (otherKey["id"], otherKey["secret"]), other["id"]
            )
            self.assertIn(code, (401, 403), body)
            self.assertEqual(json.loads(body)["message"], "Could not find key")
            self.assertLess(elapsed, 1.0)


class FailureTests(ClusterCase):
    async def test_nodeKilled(self) -> None:
        """SIGKILL on C: its websocket client carries on through another node, its presence member leaves."""
        a, b, c = await self.startNodes(3)
        watcher = await self.ws(a.url, name="watcher")
        await self.join(watcher, "watcher")
        ghost = await self.ws(c.url, name="ghost")
        ghost.urls = [c.url]  # does not come back: its member must be announced gone
        await self.join(ghost, "ghost")
        mover = await self.ws(c.url, b.url, name="mover")
        self.assertTrue((await mover.subscribe(channel("news")))["successful"])
        self.assertTrue(
            await eventually(lambda: {"subscribe": {"ghost": {"id": "ghost"}}} in _data(watcher, ROOM))
        )
        ghost.stopped = True  # no failover for the ghost

        killedAt = time.monotonic()
        await c.stop(signal.SIGKILL)
        gone = {"unsubscribe": {"ghost": None}}
        # Leases are 2 x --client-expiry (2 s), collected by a sweep every second.
        self.assertTrue(
            await eventually(lambda: gone in _data(watcher, ROOM), timeout=8), _data(watcher, ROOM)
        )
        self.assertLess(time.monotonic() - killedAt, 6)

        self.assertTrue(await eventually(lambda: mover.failovers == 1 and mover.connected, timeout=5))
        self.assertEqual(mover.url, b.url)
        self.assertEqual(mover.handshakes, 1, "the mover kept its session (it lives in Redis)")
        # Publishes made while the mover was between nodes may be lost (at-most-once);
        # once it is served again, everything arrives.
        marker = 0
        deadline = time.monotonic() + 10
        while not _data(mover, channel("news")) and time.monotonic() < deadline:
            marker += 1
            await self.restPublish(a, "news", {"probe": marker})
            await sleep(0.2)
        self.assertTrue(_data(mover, channel("news")), "the mover never received anything after failing over")
        await sleep(0.5)
        before = len(_data(mover, channel("news")))
        for i in range(5):
            code, body = await self.restPublish(a, "news", {"after": i})
            self.assertEqual(code, 200, body)
        self.assertTrue(await eventually(lambda: len(_data(mover, channel("news"))) >= before + 5, timeout=5))
        await sleep(0.3)
        self.assertEqual(_data(mover, channel("news"))[before:], [{"after": i} for i in range(5)])

    async def test_redisRestarted(self) -> None:
        """Redis goes away mid-traffic and comes back empty: the nodes recover without a restart."""
        if shutil.which("redis-server") is None:
            if os.environ.get("CI"):
                self.fail("redis-server is not installed and CI is set")
            raise SkipTest("redis-server is not installed: cannot run a Redis of our own to restart")
        redis = RedisProcess()
        self.addCleanup(redis.stop, "KILL")
        await redis.start()
        address = RedisAddress("127.0.0.1", redis.port)
        a, b = await self.startNodes(2, redis=address)
        subscriber = await self.ws(b.url, a.url, name="subscriber")
        self.assertTrue((await subscriber.subscribe(channel("live")))["successful"])
        code, body = await self.restPublish(a, "live", {"warmup": True})
        self.assertEqual(code, 200, body)
        self.assertTrue(await eventually(lambda: _data(subscriber, channel("live")) == [{"warmup": True}]))

        await redis.stop("KILL")
        # While Redis is down a publish is answered (with an error), never left hanging.
        started = time.monotonic()
        code, body = await self.restPublish(a, "live", {"down": True})
        self.assertLess(time.monotonic() - started, 12)
        self.assertNotEqual(code, 200, body)
        await sleep(1)
        await redis.start()

        # Everything was lost with Redis; the nodes put their clients back (see
        # test_redisRestartedSessionsKept) and messages flow; they were never restarted.
        deadline = time.monotonic() + 20
        marker = 0
        while time.monotonic() < deadline:
            marker += 1
            code, _ = await self.restPublish(a, "live", {"probe": marker})
            if code == 200 and any("probe" in d for d in _data(subscriber, channel("live"))):
                break
            await sleep(0.25)
        self.assertTrue(any("probe" in d for d in _data(subscriber, channel("live"))), b.log())
        self.assertTrue(a.running and b.running)
        await sleep(0.5)
        before = len(_data(subscriber, channel("live")))
        for i in range(5):
            code, body = await self.restPublish(a, "live", {"after": i})
            self.assertEqual(code, 200, body)
        self.assertTrue(
            await eventually(lambda: len(_data(subscriber, channel("live"))) >= before + 5, timeout=5)
        )
        await sleep(0.3)
        self.assertEqual(_data(subscriber, channel("live"))[before:], [{"after": i} for i in range(5)])

        # Key sync came back too: it cleared each node's key cache on reconnecting
        # (invalidations may have been missed), and a revocation on A reaches B again.
        for node in (a, b):
            self.assertTrue(
                await eventually(lambda node=node: "key cache cleared" in node.log(), timeout=5), node.log()
            )
        key = await createKey(a, APP)
        credentials = (key["id"], key["secret"])
        code, body = await self.restPublish(b, "live", {"keyed": True}, auth=credentials)
        self.assertEqual(code, 200, body)
        await adminCall(a, "POST", f"/application/{APP}/keys/{key['id']}/revoke", {})
        started = time.monotonic()
        while code == 200 and time.monotonic() - started < 3:
            await sleep(0.05)
            code, body = await self.restPublish(b, "live", {"keyed": True}, auth=credentials)
        self.assertEqual(code, 403, body)
        self.assertLess(time.monotonic() - started, 1.0)

    async def test_redisRestartedSessionsKept(self) -> None:
        """
        Redis restarts empty: each node writes back the clients it holds (registry entry,
        owner and epoch, subscriptions, subscriber sets), so a websocket client and a
        long-poller (between polls while Redis was down) keep their clientIds without a
        handshake, and messages published once Redis is back reach them.
        """
        if shutil.which("redis-server") is None:
            if os.environ.get("CI"):
                self.fail("redis-server is not installed and CI is set")
            raise SkipTest("redis-server is not installed: cannot run a Redis of our own to restart")
        redis = RedisProcess()
        self.addCleanup(redis.stop, "KILL")
        await redis.start()
        address = RedisAddress("127.0.0.1", redis.port)
        a, b = await self.startNodes(2, redis=address)
        live = channel("live")
        ws = await self.ws(b.url, name="ws")
        self.assertTrue((await ws.subscribe(live))["successful"])
        poller = SteadyPoller([a.url])
        self.clients.append(poller)
        await poller.start(live)
        wsId, pollerId = ws.clientId, poller.clientId
        code, body = await self.restPublish(b, "live", {"warmup": True})
        self.assertEqual(code, 200, body)
        for client in (ws, poller):
            self.assertTrue(await eventually(lambda client=client: _data(client, live) == [{"warmup": True}]))

        await redis.stop("KILL")
        await sleep(1)
        await redis.start()

        # The registry is written back by the nodes themselves (nobody handshook again).
        shard = RedisShard(reactor, address)
        self.addCleanup(shard.close)

        async def registered() -> bool:
            try:
                scores = [
                    await shard.execute("ZSCORE", f"{self.namespace}:clients", c) for c in (wsId, pollerId)
                ]
            except Exception:
                return False
            return all(score is not None for score in scores)

        deadline = time.monotonic() + 15
        while not await registered() and time.monotonic() < deadline:
            await sleep(0.1)
        self.assertTrue(await registered(), a.log() + b.log())

        # Probes until both receive again (publishes acknowledged before a node's
        # SUBSCRIBE connection is back may be lost: pub/sub is at-most-once).
        marker = 0
        deadline = time.monotonic() + 15

        def probed(client: Any) -> bool:
            return any("probe" in d for d in _data(client, live))

        while not (probed(ws) and probed(poller)) and time.monotonic() < deadline:
            marker += 1
            await self.restPublish(a, "live", {"probe": marker})
            await sleep(0.2)
        self.assertTrue(probed(ws) and probed(poller), a.log() + b.log())
        # A websocket learns that its session is gone at its next /meta/connect (every
        # --timeout, 2 s): give it that long to find out.
        await sleep(2.5)
        before = {id(c): len(_data(c, live)) for c in (ws, poller)}
        for i in range(5):
            for _ in range(50):
                code, body = await self.restPublish(a if i % 2 else b, "live", {"after": i})
                if code == 200:
                    break
                await sleep(0.1)
            self.assertEqual(code, 200, body)
        for client in (ws, poller):
            self.assertTrue(
                await eventually(
                    lambda client=client: len(_data(client, live)) >= before[id(client)] + 5, timeout=5
                ),
                _data(client, live),
            )
        await sleep(0.3)
        for client in (ws, poller):
            self.assertEqual(_data(client, live)[before[id(client)] :], [{"after": i} for i in range(5)])
        self.assertEqual((ws.clientId, ws.handshakes), (wsId, 1), "the websocket client handshook again")
        self.assertEqual(poller.clientId, pollerId)
        unknown = [f for f in poller.failures if str(f.get("error", "")).startswith("401")]
        self.assertEqual(unknown, [], "the long-poller was told its session was gone")
        self.assertTrue(a.running and b.running)


class SteadyPoller(AlternatingPoller):
    """
    A long-poll client that never handshakes again: it keeps connecting with its
    clientId, pausing a little after a failed request (Redis down), and records refusals.
    """

    async def _poll(self) -> None:
        while self.polling:
            try:
                replies = await self.post(
                    [
                        {
                            "channel": "/meta/connect",
                            "clientId": self.clientId,
                            "connectionType": "long-polling",
                        }
                    ]
                )
            except Exception:
                await sleep(0.1)
                continue
            failed = False
            for reply in replies:
                if "successful" not in reply:
                    self.messages.append(reply)
                elif not reply["successful"]:
                    self.failures.append(reply)
                    failed = True
            if failed:
                await sleep(0.1)


class HoppingPoller:
    """
    A long-poll client that picks the node of each request itself (``post(url, ...)``),
    collecting deliveries and refusals: for tests that steer its requests between nodes.
    """

    def __init__(self) -> None:
        self.clientId: str | None = None
        self.messages: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []

    async def post(self, url: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = await treq.post(
            url + "/push",
            data=json.dumps(messages).encode(),
            headers=Headers({b"Content-Type": [b"application/json"]}),
            persistent=False,
            timeout=15,
        )
        replies: list[dict[str, Any]] = json.loads(await response.content())
        for reply in replies:
            if "successful" not in reply:
                self.messages.append(reply)
            elif not reply["successful"]:
                self.failures.append(reply)
        return replies

    async def connect(self, url: str, hold: bool = True) -> list[dict[str, Any]]:
        message: dict[str, Any] = {
            "channel": "/meta/connect",
            "clientId": self.clientId,
            "connectionType": "long-polling",
        }
        if not hold:
            # Answered at once (Bayeux lets a client ask for a shorter hold).
            message["advice"] = {"timeout": 0}
        return await self.post(url, [message])


class HoppingPollerTests(ClusterCase):
    """A long-poller whose requests hop between nodes keeps its session, with a 1 s client expiry."""

    async def test_backOnANodeBeforeItHandedOver(self) -> None:
        """
        Round after round, a connect answered at once on A (A claims the client from
        B) and a held connect on B sent 0-6 ms later, before A's answer is in (as a
        client retrying, or just quick, would): B sees its connect just before or just
        after A's claim, and before A's request to hand the client over. Before the fix
        the hand-over cut B's connect off (never answered, its lease not renewed) and
        the client expired within a few rounds ("Unknown client"). Now the connect on B
        is answered promptly (by the message published meanwhile, or empty when the
        client had moved on to A), the client never expires (--client-expiry 1), and
        every message arrives once, in order.
        """
        a, b = await self.startNodes(2)
        feed = channel("hop")
        poller = HoppingPoller()
        (reply,) = await poller.post(a.url, [HANDSHAKE])
        poller.clientId = reply["clientId"]
        (reply,) = await poller.post(
            a.url, [{"channel": "/meta/subscribe", "clientId": poller.clientId, "subscription": feed}]
        )
        self.assertTrue(reply["successful"], reply)
        await poller.connect(a.url, hold=False)  # the first connect after a handshake is answered at once

        sent: list[Any] = []
        slow: list[tuple[int, float]] = []
        for i in range(40):
            quick = defer.ensureDeferred(poller.connect(a.url, hold=False))
            await sleep(0.002 * (i % 4))
            held = defer.ensureDeferred(poller.connect(b.url))
            await quick
            await sleep(0.05)
            code, body = await self.restPublish(a if i % 2 else b, "hop", {"n": i})
            self.assertEqual(code, 200, body)
            sent.append({"n": i})
            started = time.monotonic()
            await held
            elapsed = time.monotonic() - started
            if elapsed > 1.0:
                slow.append((i, round(elapsed, 2)))
            self.assertEqual(poller.failures, [], f"round {i}\n{a.log()}\n{b.log()}")
            if len(slow) >= 2:
                break
        self.assertEqual(slow, [], "held connects on B that were not answered by the message published")
        # A connect answered empty on B (the client had moved) leaves the message for the next one.
        deadline = time.monotonic() + 5
        while len(_data(poller, feed)) < len(sent) and time.monotonic() < deadline:
            await poller.connect(a.url, hold=False)
            await sleep(0.05)
        await poller.connect(b.url, hold=False)
        self.assertEqual(_data(poller, feed), sent)
        self.assertEqual(poller.failures, [])

    async def test_randomNodeEachRequest(self) -> None:
        """
        The reported case: every request of a long-poller goes to a node picked at
        random, 20 publishes 50 ms apart, --client-expiry 1: no "Unknown client",
        every message once, in order.
        """
        nodes = await self.startNodes(2)
        urls = [n.url for n in nodes]
        feed = channel("random")
        poller = HoppingPoller()
        used: list[int] = []

        def pick() -> str:
            used.append(random.randrange(len(urls)))
            return urls[used[-1]]

        (reply,) = await poller.post(pick(), [HANDSHAKE])
        poller.clientId = reply["clientId"]
        (reply,) = await poller.post(
            pick(), [{"channel": "/meta/subscribe", "clientId": poller.clientId, "subscription": feed}]
        )
        self.assertTrue(reply["successful"], reply)
        polling = True

        async def poll() -> None:
            while polling and not poller.failures:
                await poller.connect(pick())

        loop = defer.ensureDeferred(poll())
        sent = []
        for i in range(20):
            code, body = await self.restPublish(random.choice(nodes), "random", {"n": i})
            self.assertEqual(code, 200, body)
            sent.append({"n": i})
            await sleep(0.05)
        arrived = await eventually(lambda: len(_data(poller, feed)) >= len(sent) or bool(poller.failures), 5)
        polling = False
        await loop
        self.assertEqual(poller.failures, [], f"nodes used: {used}")
        self.assertTrue(arrived, f"{_data(poller, feed)} nodes used: {used}")
        self.assertEqual(_data(poller, feed), sent, f"nodes used: {used}")
