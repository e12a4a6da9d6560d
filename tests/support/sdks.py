"""
End-to-end checks shared by the server libraries' tests (``tests/test_sdk_{python,ruby,node}.py``).

Each language's test module subclasses :class:`SDKEndToEnd` and says how to run its library:
``operate(op)`` performs one operation with the library (``publish``, ``token``) and reports
the outcome as a dict, ``{"ok": True, "result": ...}`` or ``{"ok": False, "error": {...}}`` with
the typed error's class name, status, code, server message and every text it can print
(message, inspect/repr, full traceback), so one set of assertions serves the three libraries.

The server is a real ``twistd pandapush`` (:class:`PandapushProcess`) seeded with a development
application and key, with no token leeway (``PANDAPUSH_TOKEN_LEEWAY=0``) so a token that lives
two seconds is refused two seconds later; subscribers are real Bayeux websocket clients.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import treq
from twisted.internet import defer, error
from twisted.internet import reactor as _reactor
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from pandapush.auth.bearer import verifyToken
from tests.support import REPO_ROOT
from tests.support.bayeux import RecordingPoller, WSClient, holdConnect
from tests.support.process import PandapushProcess
from tests.support.waiting import eventually

__all__ = [
    "APP",
    "KEY",
    "SDKS",
    "SECRET",
    "SERVER_ENV",
    "ProcessResult",
    "SDKEndToEnd",
    "runProcess",
]

SDKS = REPO_ROOT / "sdks"
APP = "sdkTestApp0000000001"
KEY = "PSIDsdkTestKey000001"
SECRET = "sdk-test-secret-0123456789abcdef"
SERVER_ENV = {
    "DATABASE": "memory",
    "DEV_APPLICATION_ID": APP,
    "DEV_KEY_ID": KEY,
    "DEV_KEY_SECRET": SECRET,
    "AUTH_METHOD": "none",
    # A token is refused the second it expires: the expiry test waits 2 s, not 32.
    "PANDAPUSH_TOKEN_LEEWAY": "0",
}
# Data that must come through unchanged: non-ASCII, U+2028 (a line break to some parsers), nesting.
PAYLOAD = {
    "text": "h\u00e9llo \u2603 \u2028 from the library",
    "n": [1, 2.5, None, True],
    "nested": {"a": {}},
}


@dataclass
class ProcessResult:
    code: int | None
    stdout: str
    stderr: str
    command: list[str]

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.command)}\nexit code: {self.code}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


class _Collect(ProcessProtocol):
    def __init__(self, done: defer.Deferred[tuple[int | None, bytes, bytes]]) -> None:
        self.done = done
        self.out = b""
        self.err = b""

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        code: int | None = 0
        if isinstance(reason.value, error.ProcessTerminated):
            code = reason.value.exitCode if reason.value.exitCode is not None else -(reason.value.signal or 0)
        self.done.callback((code, self.out, self.err))


async def runProcess(
    command: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    reactor: Any = None,
) -> ProcessResult:
    """Run ``command`` to its end (killed after ``timeout`` seconds) without blocking the reactor."""
    reactor = reactor or _reactor
    done: defer.Deferred[tuple[int | None, bytes, bytes]] = defer.Deferred()
    childEnv = dict(os.environ)
    childEnv.update(env or {})
    transport = IReactorProcess(reactor).spawnProcess(
        _Collect(done), command[0], command, env=childEnv, path=str(cwd)
    )

    def tooLong() -> None:
        try:
            transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass

    timer = reactor.callLater(timeout, tooLong)
    code, out, err = await done
    if timer.active():
        timer.cancel()
    return ProcessResult(code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), command)


# A mixin, not a TestCase: trial would otherwise run it (with no library) in every module importing it.
if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object


class SDKEndToEnd(_Base):
    """
    One language's library against a real pandapush: ``class RubyTests(SDKEndToEnd, TestCase)``
    sets ``language`` and implements :meth:`operate` and :meth:`unitTests`.
    """

    timeout = 120
    language = "?"

    async def operate(self, op: dict[str, Any], secret: str = SECRET) -> dict[str, Any]:
        """Do ``op`` with the library (a client built with the server's url, KEY and ``secret``)."""
        raise NotImplementedError

    async def unitTests(self) -> ProcessResult:
        """Run the library's own unit tests with its language's tooling."""
        raise NotImplementedError

    async def runDriver(
        self, command: list[str], cwd: Path, op: dict[str, Any], secret: str
    ) -> dict[str, Any]:
        """
        Run a driver script of another language's library: it reads ``op`` and the client's
        settings from the environment and prints the outcome as JSON on its last line.
        """
        env = {
            # ASCII JSON (\\u escapes): ARGV/ENV encodings follow the locale, JSON escapes do not.
            "PANDAPUSH_OP": json.dumps(op),
            "PANDAPUSH_URL": self.pandapush.url,
            "PANDAPUSH_KEY_ID": KEY,
            "PANDAPUSH_SECRET": secret,
            "PANDAPUSH_APP_ID": APP,
        }
        result = await runProcess(command, cwd=cwd, env=env, timeout=30)
        self.assertEqual(result.code, 0, result.describe())
        return json.loads(result.stdout.strip().split("\n")[-1])  # type: ignore[no-any-return]

    async def server(self, *args: str, env: dict[str, str] | None = None) -> PandapushProcess:
        self.pandapush = await PandapushProcess.started(self, *args, env={**SERVER_ENV, **(env or {})})
        return self.pandapush

    async def websocket(self) -> WSClient:
        """A Bayeux websocket client of the server, closed at cleanup."""
        client = await WSClient(self.pandapush.url).start()
        self.addCleanup(client.close)
        return client

    async def subscriber(
        self, channel: str, auth: dict[str, Any] | None = None
    ) -> tuple[WSClient, dict[str, Any]]:
        client = await self.websocket()
        message: dict[str, Any] = {"channel": "/meta/subscribe", "subscription": channel}
        if auth is not None:
            message["ext"] = {"auth": auth}
        return client, await client.call(message)

    def assertSecretAbsent(self, failure: dict[str, Any], secret: str) -> None:
        for text in (failure["message"], failure["inspect"], failure["full"]):
            self.assertNotIn(secret, text)

    # --- the tests every library passes -------------------------------------------------------

    async def test_unitTests(self) -> None:
        """The library's own unit tests pass (run by its language's standard tooling)."""
        result = await self.unitTests()
        self.assertEqual(result.code, 0, result.describe())

    async def test_publishReachesSubscriber(self) -> None:
        """publish(channel, data) with key and secret: a websocket subscriber gets it once, unchanged."""
        await self.server()
        channel = f"/{APP}/public/{self.language}-news"
        private = f"/{APP}/private/{self.language}-inbox"
        subscriber, reply = await self.subscriber(channel)
        self.assertTrue(reply["successful"], reply)
        inbox, reply = await self.subscriber(private, {"key": KEY, "secret": SECRET})
        self.assertTrue(reply["successful"], reply)
        outcome = await self.operate({"op": "publish", "channel": channel, "data": PAYLOAD})
        self.assertEqual(outcome, {"ok": True, "result": None})
        outcome = await self.operate({"op": "publish", "channel": private, "data": {"to": "inbox"}})
        self.assertTrue(outcome["ok"], outcome)
        self.assertTrue(await eventually(lambda: len(subscriber.messages) >= 1 and len(inbox.messages) >= 1))
        await self.operate({"op": "publish", "channel": channel, "data": "second"})
        self.assertTrue(await eventually(lambda: len(subscriber.messages) >= 2))
        self.assertEqual([m["data"] for m in subscriber.messages], [PAYLOAD, "second"])
        self.assertEqual([m["channel"] for m in subscriber.messages], [channel, channel])
        self.assertEqual([m["data"] for m in inbox.messages], [{"to": "inbox"}])

    async def test_tokenAcceptedThenRefusedAfterExpiry(self) -> None:
        """A minted sub token subscribes to its private channel; at exp the server ends it and refuses it."""
        await self.server()
        private = f"/{APP}/private/{self.language}-expiring"
        outcome = await self.operate({"op": "token", "channel": private, "sub": True, "expiresIn": 2})
        self.assertTrue(outcome["ok"], outcome)
        token = outcome["result"]
        claims = verifyToken(token, SECRET, time.time(), leeway=0)  # the server's own check
        assert claims is not None, token
        self.assertEqual(
            {k: claims[k] for k in ("keyId", "channel", "pub", "sub")},
            {"keyId": KEY, "channel": private, "pub": False, "sub": True},
        )
        self.assertTrue(time.time() < claims["exp"] <= time.time() + 2)
        subscriber, reply = await self.subscriber(private, {"token": token})
        self.assertTrue(reply["successful"], reply)
        await self.operate({"op": "publish", "channel": private, "data": {"n": 1}})
        self.assertTrue(await eventually(lambda: len(subscriber.messages) == 1))
        notice = f"401:{private}:Token expired"
        self.assertTrue(
            await eventually(lambda: any(r.get("error") == notice for r in subscriber.replies), timeout=6),
            subscriber.replies,
        )
        _, reply = await self.subscriber(private, {"token": token})
        self.assertFalse(reply["successful"], reply)
        self.assertEqual(reply["error"], "401::Invalid token provided")
        await self.operate({"op": "publish", "channel": private, "data": {"n": 2}})
        self.assertEqual([m["data"] for m in subscriber.messages], [{"n": 1}])

    async def test_presenceAndPublishTokens(self) -> None:
        """A presence token names its member; a pub token lets a browser-side client publish."""
        await self.server()
        presence = f"/{APP}/presence/{self.language}-room"
        member = {"id": "u1", "name": "Zo\u00eb"}
        outcome = await self.operate({"op": "token", "channel": presence, "sub": True, "presence": member})
        self.assertTrue(outcome["ok"], outcome)
        _, reply = await self.subscriber(presence, {"token": outcome["result"]})
        self.assertTrue(reply["successful"], reply)
        self.assertEqual(reply["ext"]["presence"], {"subscribe": {"u1": member}})
        public = f"/{APP}/public/{self.language}-chat"
        listener, _ = await self.subscriber(public)
        outcome = await self.operate({"op": "token", "channel": public, "pub": True, "expiresIn": 60})
        publisher = await self.websocket()
        reply = await publisher.call(
            {"channel": public, "data": "via token", "ext": {"auth": {"token": outcome["result"]}}}
        )
        self.assertTrue(reply["successful"], reply)
        self.assertTrue(await eventually(lambda: [m["data"] for m in listener.messages] == ["via token"]))

    async def test_badSecretRaisesTypedError(self) -> None:
        """A wrong secret raises ForbiddenError with the server's code and message, and no secret in sight."""
        await self.server()
        wrong = "not-the-secret-5e1f0c"
        outcome = await self.operate(
            {"op": "publish", "channel": f"/{APP}/public/x", "data": 1}, secret=wrong
        )
        self.assertFalse(outcome["ok"], outcome)
        failure = outcome["error"]
        self.assertEqual(
            (failure["class"], failure["status"], failure["code"], failure["serverMessage"]),
            ("ForbiddenError", 403, 403, "Invalid secret"),
        )
        self.assertTrue(failure["isAuthError"], failure)
        self.assertSecretAbsent(failure, wrong)
        outcome = await self.operate({"op": "publish", "channel": f"/{APP}/nosuchtype/x", "data": 1})
        self.assertEqual(
            (outcome["error"]["class"], outcome["error"]["status"]), ("NotFoundError", 404), outcome
        )
        outcome = await self.operate(
            {"op": "publish", "channel": "/otherApp000000000001/public/x", "data": 1}
        )
        self.assertEqual(
            (outcome["error"]["class"], outcome["error"]["serverMessage"]),
            ("ForbiddenError", "Could not find key"),
            outcome,
        )

    async def test_rateLimited(self) -> None:
        """Past the key's publish rate the server's 429 is a RateLimitedError carrying Retry-After."""
        await self.server("--max-publish-rate", "1", "--max-publish-burst", "1")
        outcome = await self.operate({"op": "publish", "channel": f"/{APP}/public/x", "data": 1, "times": 3})
        self.assertFalse(outcome["ok"], outcome)
        failure = outcome["error"]
        self.assertEqual((failure["class"], failure["status"]), ("RateLimitedError", 429), failure)
        self.assertGreaterEqual(failure["retryAfter"], 1)
        self.assertSecretAbsent(failure, SECRET)

    # --- the server API (issue 16) ------------------------------------------------------------

    def assertError(self, outcome: dict[str, Any], cls: str, status: int, words: str) -> None:
        self.assertFalse(outcome["ok"], outcome)
        failure = outcome["error"]
        self.assertEqual((failure["class"], failure["status"]), (cls, status), failure)
        self.assertIn(words, failure["serverMessage"])

    async def test_publishMany(self) -> None:
        """publish_many reaches each channel's subscriber; one foreign channel refuses all; 101 is 413."""
        admin = ("admin", "sdk-admin-password-0123456789")
        await self.server(
            env={"AUTH_METHOD": "basic", "ADMIN_USERNAME": admin[0], "ADMIN_PASSWORD": admin[1]}
        )
        names = [f"/{APP}/public/{self.language}-many-{i}" for i in range(3)]
        subscribers = [(await self.subscriber(name))[0] for name in names]
        outcome = await self.operate({"op": "publishMany", "channels": names, "data": PAYLOAD})
        self.assertEqual(outcome, {"ok": True, "result": {}})
        self.assertTrue(await eventually(lambda: all(len(c.messages) == 1 for c in subscribers)))
        for client in subscribers:
            self.assertEqual(client.messages[0]["data"], PAYLOAD)
        # Another application of the same server: its channels are refused to this key. (The
        # libraries refuse a list mixing two applications before sending anything.)
        created = await treq.post(
            self.pandapush.url + "/admin/api/applications",
            json={"name": "other"},
            auth=admin,
            persistent=False,
        )
        other = (await created.json())["id"]
        outcome = await self.operate({"op": "publishMany", "channels": [f"/{other}/public/x"], "data": 1})
        self.assertError(outcome, "ForbiddenError", 403, "Could not find key")
        outcome = await self.operate(
            {"op": "publishMany", "channels": [f"/{APP}/public/x{i}" for i in range(101)], "data": 1}
        )
        self.assertError(outcome, "BadRequestError", 413, "At most 100 channels")
        await self.operate({"op": "publish", "channel": names[0], "data": "after"})
        self.assertTrue(await eventually(lambda: len(subscribers[0].messages) == 2))
        self.assertEqual([len(c.messages) for c in subscribers], [2, 1, 1])

    async def test_publishBatch(self) -> None:
        """publish_batch: five messages over two channels arrive in the order given; 101 messages is 413."""
        await self.server()
        one, two = f"/{APP}/public/{self.language}-b1", f"/{APP}/public/{self.language}-b2"
        listener, _ = await self.subscriber(f"/{APP}/public/**")
        messages = [{"channel": one if i % 2 else two, "data": i} for i in range(5)]
        outcome = await self.operate({"op": "publishBatch", "messages": messages})
        self.assertEqual(outcome, {"ok": True, "result": {"batch": [{}] * 5}})
        self.assertTrue(await eventually(lambda: len(listener.messages) == 5))
        self.assertEqual(
            [(m["channel"], m["data"]) for m in listener.messages],
            [(m["channel"], m["data"]) for m in messages],
        )
        outcome = await self.operate(
            {"op": "publishBatch", "messages": [{"channel": one, "data": i} for i in range(101)]}
        )
        self.assertError(outcome, "BadRequestError", 413, "At most 100 messages")

    async def test_channelQueries(self) -> None:
        """channel, channels and members with two real subscribers of one member, then after they leave."""
        await self.server()
        room = f"/{APP}/presence/{self.language}-room"
        member = {"id": "u1", "name": "Zo\u00eb"}
        token = await self.operate({"op": "token", "channel": room, "sub": True, "presence": member})
        tabs = [(await self.subscriber(room, {"token": token["result"]}))[0] for _ in range(2)]
        outcome = await self.operate({"op": "channel", "name": room})
        self.assertEqual(outcome["result"], {"occupied": True, "subscription_count": 2, "user_count": 1})
        outcome = await self.operate({"op": "channels", "prefix": f"/{APP}/presence/"})
        self.assertEqual(outcome["result"], {"channels": {room: {"subscription_count": 2, "user_count": 1}}})
        outcome = await self.operate({"op": "channels"})
        self.assertEqual(list(outcome["result"]["channels"]), [room])
        outcome = await self.operate({"op": "members", "channel": room})
        self.assertEqual(outcome["result"], {"members": {"u1": member}})
        for tab in tabs:
            await tab.call({"channel": "/meta/disconnect"})
        outcome = await self.operate({"op": "channel", "name": room})
        self.assertEqual(outcome["result"], {"occupied": False, "subscription_count": 0, "user_count": 0})
        outcome = await self.operate({"op": "channel", "name": "/noSuchApp00000000001/public/x"})
        self.assertError(outcome, "NotFoundError", 404, "Unknown application")
        outcome = await self.operate({"op": "members", "channel": f"/{APP}/public/x"})
        self.assertError(outcome, "BadRequestError", 400, "is not a presence channel")

    async def test_unavailableAfterRetries(self) -> None:
        """
        A query while Redis does not answer: the server says 503 with Retry-After after its
        deadline; the library waits as told, retries, and raises UnavailableError.
        """
        from tests.support.proxy import StallingProxy
        from tests.support.redis import deleteNamespace, requireRedis

        address = requireRedis()
        namespace = f"pp-sdk-{os.urandom(8).hex()}"
        self.addCleanup(deleteNamespace, [address], namespace)
        proxy = await StallingProxy.start(address.host, address.port)
        self.addCleanup(proxy.stop)
        await self.server("--redis-hosts", f"127.0.0.1:{proxy.port}", "--redis-namespace", namespace)
        outcome = await self.operate({"op": "channel", "name": f"/{APP}/public/x"})
        self.assertEqual(outcome["result"], {"occupied": False, "subscription_count": 0})
        proxy.stall()
        started = time.monotonic()
        outcome = await self.operate({"op": "channel", "name": f"/{APP}/public/x", "retries": 2})
        elapsed = time.monotonic() - started
        self.assertError(outcome, "UnavailableError", 503, "try again")
        self.assertEqual(outcome["error"]["retryAfter"], 1)
        # Three attempts, the first answered at the 2 s deadline (the next may fail sooner,
        # on a connection already known broken), and the two waits of a second between them.
        self.assertGreaterEqual(elapsed, 2 + 2 * 1 - 0.2)
        proxy.resume()

    async def test_terminateUserConnections(self) -> None:
        """
        terminate_user_connections("u1"): u1's websocket and long-polling clients are told to
        stop and disconnected within a second; u2 is not. The answer is ``{}``.
        """
        await self.server()
        room = f"/{APP}/presence/{self.language}-terminate"

        async def token(member: str) -> str:
            outcome = await self.operate(
                {"op": "token", "channel": room, "sub": True, "presence": {"id": member}}
            )
            return str(outcome["result"])

        u1 = await token("u1")
        ws, _ = await self.subscriber(room, {"token": u1})
        poller = RecordingPoller(self.pandapush.url)
        await poller.start()
        reply = await poller.call(
            {"channel": "/meta/subscribe", "subscription": room, "ext": {"auth": {"token": u1}}}
        )
        self.assertTrue(reply["successful"], reply)
        u2, _ = await self.subscriber(room, {"token": await token("u2")})
        for client in (ws, u2):
            holdConnect(client)
        started = time.monotonic()
        outcome = await self.operate({"op": "terminate", "userId": "u1"})
        self.assertEqual(outcome, {"ok": True, "result": {}})
        self.assertTrue(await eventually(lambda: ws.closed and not poller.polling, timeout=1.5))
        self.assertLess(time.monotonic() - started, 1.0 + 1.0)  # the library's process start included
        stop = [
            r.get("advice") for r in ws.replies + poller.connectReplies if r.get("channel") == "/meta/connect"
        ]
        self.assertIn({"reconnect": "none"}, stop)
        self.assertFalse(u2.closed)
        outcome = await self.operate({"op": "members", "channel": room})
        self.assertEqual(outcome["result"], {"members": {"u2": {"id": "u2"}}})
        await poller.stop()

    async def test_userTokenTerminated(self) -> None:
        """
        A token minted with ``user`` names its subscriber: terminate_user_connections(user)
        (``POST /apps/<app>/users/<user>/terminate_connections``) ends the websocket and the
        long-poller that subscribed with it to a private channel, not presence, and no other
        user's client.
        """
        await self.server()
        inbox = f"/{APP}/private/{self.language}-inbox"

        async def token(user: str) -> str:
            outcome = await self.operate({"op": "token", "channel": inbox, "sub": True, "user": user})
            self.assertTrue(outcome["ok"], outcome)
            return str(outcome["result"])

        mine = await token("u-7")
        claims = verifyToken(mine, SECRET, time.time(), leeway=0)
        assert claims is not None, mine
        self.assertEqual(claims["user"], "u-7")
        ws, reply = await self.subscriber(inbox, {"token": mine})
        self.assertTrue(reply["successful"], reply)
        poller = RecordingPoller(self.pandapush.url)
        await poller.start()
        reply = await poller.call(
            {"channel": "/meta/subscribe", "subscription": inbox, "ext": {"auth": {"token": mine}}}
        )
        self.assertTrue(reply["successful"], reply)
        other, reply = await self.subscriber(inbox, {"token": await token("u-8")})
        self.assertTrue(reply["successful"], reply)
        for client in (ws, other):
            holdConnect(client)
        outcome = await self.operate({"op": "terminate", "userId": "u-7"})
        self.assertEqual(outcome, {"ok": True, "result": {}})
        self.assertTrue(await eventually(lambda: ws.closed and not poller.polling, timeout=3))
        stop = [
            r.get("advice") for r in ws.replies + poller.connectReplies if r.get("channel") == "/meta/connect"
        ]
        self.assertIn({"reconnect": "none"}, stop)
        self.assertFalse(other.closed)
        await self.operate({"op": "publish", "channel": inbox, "data": "after"})
        self.assertTrue(await eventually(lambda: [m["data"] for m in other.messages] == ["after"]))
        self.assertEqual(ws.messages, [])
        await poller.stop()

    async def test_webhooksVerified(self) -> None:
        """
        A real pandapush sends channel_occupied to a real receiver; the library's parse_webhook
        accepts the request as received, and refuses it with one byte changed or another secret.
        """
        from tests.support.receiver import WebhookReceiver

        admin = ("admin", "sdk-admin-password-0123456789")
        await self.server(
            env={"AUTH_METHOD": "basic", "ADMIN_USERNAME": admin[0], "ADMIN_PASSWORD": admin[1]}
        )
        receiver = await WebhookReceiver.start()
        self.addCleanup(receiver.stop)
        created = await treq.post(
            self.pandapush.url + f"/admin/api/application/{APP}/webhooks",
            json={"url": receiver.url, "events": ["channel_occupied"], "keyId": KEY},
            auth=admin,
            persistent=False,
        )
        self.assertEqual(created.code, 201, await created.text())
        name = f"/{APP}/public/{self.language}-hooked"
        await self.subscriber(name)
        self.assertTrue(await eventually(lambda: len(receiver.received) == 1, timeout=10))
        (request,) = receiver.received
        headers = {k: v for k, v in request.headers.items() if k.startswith("x-pandapush")}

        def op(body: bytes, **extra: Any) -> dict[str, Any]:
            return {
                "op": "parseWebhook",
                "body": base64.b64encode(body).decode(),
                "headers": headers,
                **extra,
            }

        outcome = await self.operate(op(request.body))
        self.assertTrue(outcome["ok"], outcome)
        self.assertEqual(
            [(e["name"], e["channel"]) for e in outcome["result"]["events"]], [("channel_occupied", name)]
        )
        tampered = bytearray(request.body)
        tampered[-3] ^= 1
        self.assertEqual((await self.operate(op(bytes(tampered))))["error"]["class"], "InvalidWebhookError")
        outcome = await self.operate(op(request.body), secret="another-key-secret-0123456789")
        self.assertEqual(outcome["error"]["class"], "InvalidWebhookError")

    # --- history and idempotent publishing (issue 15) -------------------------------------------

    async def test_history(self) -> None:
        """
        history(channel, since, limit): what the library published comes back oldest first with
        its offsets and the channel's epoch; since and limit cut the list; a limit out of range
        is a BadRequestError; a private channel's history is read with the key.
        """
        await self.server()
        channel = f"/{APP}/public/{self.language}-history"
        for n in range(3):
            self.assertTrue(
                (await self.operate({"op": "publish", "channel": channel, "data": {"n": n}}))["ok"]
            )
        outcome = await self.operate({"op": "history", "channel": channel})
        self.assertTrue(outcome["ok"], outcome)
        page = outcome["result"]
        self.assertEqual([m["data"] for m in page["messages"]], [{"n": 0}, {"n": 1}, {"n": 2}])
        self.assertEqual([m["offset"] for m in page["messages"]], [1, 2, 3])
        self.assertEqual(page["offset"], 3)
        self.assertIsInstance(page["epoch"], str)
        outcome = await self.operate({"op": "history", "channel": channel, "since": 1, "limit": 1})
        self.assertEqual([m["data"] for m in outcome["result"]["messages"]], [{"n": 1}])
        self.assertEqual(outcome["result"]["epoch"], page["epoch"])
        outcome = await self.operate({"op": "history", "channel": channel, "limit": 2})
        self.assertEqual([m["offset"] for m in outcome["result"]["messages"]], [2, 3])
        for limit in (0, 10**6):
            outcome = await self.operate({"op": "history", "channel": channel, "limit": limit})
            self.assertError(outcome, "BadRequestError", 400, "limit must be an integer")
        private = f"/{APP}/private/{self.language}-history"
        await self.operate({"op": "publish", "channel": private, "data": "for subscribers only"})
        outcome = await self.operate({"op": "history", "channel": private})
        self.assertEqual([m["data"] for m in outcome["result"]["messages"]], ["for subscribers only"])

    async def test_idempotentPublish(self) -> None:
        """
        Two publishes with the same idempotency key are delivered once; a publish whose first
        answer is lost on the way (a proxy cuts the connection as the 200 comes back) is sent
        again by the library with its automatic key, and still delivered once.
        """
        from tests.support.proxy import LosingProxy

        await self.server()
        channel = f"/{APP}/public/{self.language}-once"
        subscriber, _ = await self.subscriber(channel)
        key = f"{self.language}-order-42"
        for _ in range(2):
            outcome = await self.operate(
                {"op": "publish", "channel": channel, "data": "once", "idempotencyKey": key}
            )
            self.assertEqual(outcome, {"ok": True, "result": None})
        proxy = await LosingProxy.start(self.pandapush.port)
        self.addCleanup(proxy.stop)
        lost = proxy.loseNext(b"HTTP/1.1 200")
        outcome = await self.operate(
            {"op": "publish", "channel": channel, "data": "retried", "url": proxy.url, "retries": 2}
        )
        self.assertEqual(outcome, {"ok": True, "result": None})
        self.assertTrue(lost.called, "the proxy lost no answer")
        await self.operate({"op": "publish", "channel": channel, "data": "last"})
        self.assertTrue(await eventually(lambda: len(subscriber.messages) >= 3))
        await eventually(lambda: len(subscriber.messages) > 3, timeout=0.5)
        self.assertEqual([m["data"] for m in subscriber.messages], ["once", "retried", "last"])
