"""The client against a throwaway local HTTP server: request shape, errors, retries, secrets."""

from __future__ import annotations

import base64
import io
import logging
import pickle
import socket
import traceback
import unittest
from typing import Any

from fakeserver import Answer, FakeServer

from pandapush_client import (
    AuthenticationError,
    AuthError,
    BadRequestError,
    Client,
    ForbiddenError,
    NetworkError,
    NotFoundError,
    PandapushError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    UnavailableError,
)

APP = "exampleApp0000000001"
KEY = "PSIDexampleKey000001"
SECRET = "example-secret-0123456789"
ROOM = f"/{APP}/public/room"


def refusal(status: int, message: str, **headers: str) -> Answer:
    return Answer(status, {"code": status, "params": [], "message": message}, headers=dict(headers))


class ServerTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.server = FakeServer().__enter__()
        self.addCleanup(self.server.__exit__)
        self.sleeps: list[float] = []
        self.client = self.makeClient()

    def makeClient(self, url: str | None = None, **options: Any) -> Client:
        client = Client(url or self.server.url, KEY, SECRET, **options)
        client._sleep = self.sleeps.append
        self.addCleanup(client.close)
        return client

    def assertNoSecret(self, *texts: str) -> None:
        for text in texts:
            self.assertNotIn(SECRET, text)
            self.assertNotIn(base64.b64encode(f"{KEY}:{SECRET}".encode()).decode(), text)

    def assertRaisesSafely(self, kind: type[PandapushError], call: Any, *args: Any, **kwargs: Any) -> Any:
        """``call`` raises ``kind``, and nothing the error can print holds the secret."""
        with self.assertRaises(kind) as caught:
            call(*args, **kwargs)
        error = caught.exception
        printed = traceback.format_exception(type(error), error, error.__traceback__)
        self.assertNoSecret(str(error), repr(error), "".join(printed))
        return error


class RequestShapeTests(ServerTestCase):
    def test_publish(self) -> None:
        """A publish is a JSON POST to /channel/<channel> with Basic key:secret and an idempotency key."""
        self.client.publish(ROOM, {"text": "hé", "n": [1, 2]})
        [request] = self.server.requests
        self.assertEqual((request.method, request.path), ("POST", f"/channel/{APP}/public/room"))
        self.assertEqual(request.json(), {"text": "hé", "n": [1, 2]})
        self.assertEqual(request.headers["content-type"], "application/json; charset=utf-8")
        self.assertEqual(
            request.headers["authorization"], "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
        )
        self.assertRegex(request.headers["idempotency-key"], "^[0-9a-f]{32}$")
        self.assertTrue(request.headers["user-agent"].startswith("pandapush-client-python/"))

    def test_idempotencyKeyGivenOrNone(self) -> None:
        """The caller's key is sent as given; without retries and without one, none is sent."""
        self.client.publish(ROOM, 1, idempotency_key="order-42")
        self.makeClient(max_retries=0).publish(ROOM, 2)
        self.assertEqual(self.server.requests[0].headers["idempotency-key"], "order-42")
        self.assertNotIn("idempotency-key", self.server.requests[1].headers)
        for bad in ("", "x" * 201, "caf\u00e9", "a\nb"):
            with self.assertRaises(ValueError):
                self.client.publish(ROOM, 1, idempotency_key=bad)
        self.assertEqual(len(self.server.requests), 2)

    def test_basePathAndKeepAlive(self) -> None:
        """A base URL with a path prefixes every request; one connection serves a thread's calls."""
        client = self.makeClient(self.server.url + "/pandapush/")
        client.publish(ROOM, 1)
        client.publish(f"/{APP}/private/users/42", 2)
        first, second = self.server.requests
        self.assertEqual(first.path, f"/pandapush/channel/{APP}/public/room")
        self.assertEqual(second.path, f"/pandapush/channel/{APP}/private/users/42")
        self.assertEqual(first.connection, second.connection)

    def test_publishMany(self) -> None:
        """One message to several channels of one application: POST /apps/<app>/events."""
        self.server.script(Answer(200, {"ok": True}))
        channels = [ROOM, f"/{APP}/private/a"]
        self.assertEqual(self.client.publish_many(channels, {"x": 1}), {"ok": True})
        [request] = self.server.requests
        self.assertEqual((request.method, request.path), ("POST", f"/apps/{APP}/events"))
        self.assertEqual(request.json(), {"channels": channels, "data": {"x": 1}})
        self.assertIn("idempotency-key", request.headers)
        with self.assertRaises(ValueError):
            self.client.publish_many([ROOM, "/otherApp/public/room"], 1)
        with self.assertRaises(ValueError):
            self.client.publish_many(ROOM, 1)  # a string is not a list of channels
        self.assertEqual(len(self.server.requests), 1)

    def test_publishBatch(self) -> None:
        """Several messages in order: POST /apps/<app>/batch_events {"batch": [...]}."""
        self.client.publish_batch([{"channel": ROOM, "data": 1}, (f"/{APP}/public/b", {"y": 2})])
        [request] = self.server.requests
        self.assertEqual(request.path, f"/apps/{APP}/batch_events")
        self.assertEqual(
            request.json(),
            {"batch": [{"channel": ROOM, "data": 1}, {"channel": f"/{APP}/public/b", "data": {"y": 2}}]},
        )
        for bad in ([], [{"channel": ROOM}], [(ROOM, 1), ("/other/public/x", 2)]):
            with self.assertRaises(ValueError):
                self.client.publish_batch(bad)

    def test_queries(self) -> None:
        """channel, channels, members and history are GETs under /apps/<app>/ answering JSON."""
        occupied = {"occupied": True, "subscription_count": 2, "user_count": 1}
        self.server.script(
            Answer(200, occupied),
            Answer(200, {"channels": {}}),
            Answer(200, {"channels": {}}),
            Answer(200, {"members": {"u1": {"id": "u1"}}}),
            Answer(200, {"epoch": "e", "offset": 3, "messages": []}),
        )
        presence = f"/{APP}/presence/room"
        self.assertEqual(self.client.channel(presence), occupied)
        self.client.channels(f"/{APP}/presence/")
        self.client.channels(app_id=APP)
        self.assertEqual(self.client.members(presence), {"members": {"u1": {"id": "u1"}}})
        self.assertEqual(self.client.history(ROOM, since=2, limit=10)["offset"], 3)
        got = [(r.method, r.path, r.query) for r in self.server.requests]
        self.assertEqual(
            got,
            [
                ("GET", f"/apps/{APP}/channel", {"name": [presence]}),
                ("GET", f"/apps/{APP}/channels", {"prefix": [f"/{APP}/presence/"]}),
                ("GET", f"/apps/{APP}/channels", {}),
                ("GET", f"/apps/{APP}/members", {"channel": [presence]}),
                ("GET", f"/apps/{APP}/history", {"channel": [ROOM], "since": ["2"], "limit": ["10"]}),
            ],
        )
        self.assertTrue(all("idempotency-key" not in r.headers for r in self.server.requests))
        with self.assertRaises(ValueError):
            self.client.channels()  # no prefix and no application

    def test_terminateUserConnections(self) -> None:
        """POST /apps/<app>/users/<userId>/terminate_connections, the user id escaped."""
        self.makeClient(app_id=APP).terminate_user_connections("user/1")
        self.client.terminate_user_connections("u2", app_id="other")
        first, second = self.server.requests
        self.assertEqual(
            (first.method, first.path), ("POST", f"/apps/{APP}/users/user%2F1/terminate_connections")
        )
        self.assertEqual(second.path, "/apps/other/users/u2/terminate_connections")
        with self.assertRaises(ValueError):
            self.client.terminate_user_connections("u3")

    def test_badArguments(self) -> None:
        """Wrong channels and constructor arguments fail before anything is sent."""
        for channel in ("room", "", "//public/x"):
            with self.assertRaises(ValueError):
                self.client.publish(channel, 1)
        with self.assertRaises(TypeError):
            self.client.publish(ROOM, object())
        for url in ("ftp://host", "localhost:3000", "http://key:secret@host"):
            with self.assertRaises(ValueError):
                Client(url, KEY, SECRET)
        with self.assertRaises(ValueError):
            Client(self.server.url, KEY, "")
        self.assertEqual(self.server.requests, [])


class ErrorTests(ServerTestCase):
    def test_forbidden(self) -> None:
        """A 403 is a ForbiddenError (an AuthError) with the server's code and message."""
        self.server.script(refusal(403, "Invalid secret"))
        error = self.assertRaisesSafely(ForbiddenError, self.client.publish, ROOM, 1)
        self.assertIsInstance(error, AuthError)
        self.assertEqual((error.status, error.code, error.message), (403, 403, "Invalid secret"))
        self.assertEqual((error.method, error.path), ("POST", f"/channel/{APP}/public/room"))
        self.assertIn("Invalid secret", str(error))
        self.assertEqual(len(self.server.requests), 1)

    def test_eachStatus(self) -> None:
        """Each refusal maps to its class, and none but 502/503/504 is sent again."""
        cases: list[tuple[Answer, type[PandapushError]]] = [
            (refusal(401, "No authentication provided"), AuthenticationError),
            (refusal(404, "Unknown channel type"), NotFoundError),
            (refusal(400, "Body is not valid JSON"), BadRequestError),
            (refusal(413, "Body larger than 1048576 bytes"), BadRequestError),
            (Answer(500, "Internal trouble"), ServerError),
        ]
        for answer, kind in cases:
            self.server.requests.clear()
            self.server.script(answer)
            error = self.assertRaisesSafely(kind, self.client.publish, ROOM, 1)
            self.assertEqual(error.status, answer.status)
            self.assertEqual(len(self.server.requests), 1, kind)
        self.assertEqual(error.message, "Internal trouble")  # a body that is not JSON: its text
        self.assertEqual(self.sleeps, [])

    def test_rateLimited(self) -> None:
        """A 429 is raised at once with the Retry-After it carried: the caller decides when to come back."""
        self.server.script(refusal(429, "Publish rate limit exceeded", **{"Retry-After": "7"}))
        error = self.assertRaisesSafely(RateLimitedError, self.client.publish, ROOM, 1)
        self.assertEqual(error.retry_after, 7.0)
        self.assertEqual((len(self.server.requests), self.sleeps), (1, []))


class RetryTests(ServerTestCase):
    def test_unavailableThenOK(self) -> None:
        """503s are retried after their Retry-After, with the same idempotency key each time."""
        self.server.script(
            refusal(503, "Storage unavailable", **{"Retry-After": "2"}), Answer(502, "Bad gateway"), Answer()
        )
        self.client.publish(ROOM, {"n": 1})
        self.assertEqual(len(self.server.requests), 3)
        keys = {r.headers["idempotency-key"] for r in self.server.requests}
        self.assertEqual(len(keys), 1)
        self.assertEqual(self.sleeps[0], 2.0)
        self.assertTrue(0.5 <= self.sleeps[1] <= 1.0, self.sleeps)  # back-off: retry_delay * 2, jittered

    def test_retriesAreBounded(self) -> None:
        """After max_retries the UnavailableError is raised, with the server's message."""
        self.server.script(*[refusal(503, "Failed to publish") for _ in range(5)])
        error = self.assertRaisesSafely(UnavailableError, self.client.publish, ROOM, 1)
        self.assertEqual(error.message, "Failed to publish")
        self.assertEqual(len(self.server.requests), 3)
        self.assertEqual(len(self.sleeps), 2)

    def test_retryAfterTooLong(self) -> None:
        """A Retry-After beyond max_retry_delay is not waited for: raised at once, carrying it."""
        self.server.script(refusal(503, "Draining", **{"Retry-After": "60"}))
        error = self.assertRaisesSafely(UnavailableError, self.client.publish, ROOM, 1)
        self.assertEqual((error.retry_after, len(self.server.requests), self.sleeps), (60.0, 1, []))

    def test_connectionRefused(self) -> None:
        """Nobody listening: a NetworkError after 1 + max_retries attempts."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        client = self.makeClient(f"http://127.0.0.1:{port}", max_retries=3)
        error = self.assertRaisesSafely(NetworkError, client.publish, ROOM, 1)
        self.assertIsNone(error.status)
        self.assertIn("ConnectionRefusedError", str(error))
        self.assertEqual(len(self.sleeps), 3)

    def test_timeoutThenOK(self) -> None:
        """A server slower than the timeout: RequestTimeoutError, retried with the same key."""
        self.server.script(Answer(delay=1.0), Answer())
        client = self.makeClient(timeout=0.3, max_retries=1)
        client.publish(ROOM, 1)
        self.assertEqual(len(self.server.requests), 2)
        self.assertEqual(len({r.headers["idempotency-key"] for r in self.server.requests}), 1)
        self.server.script(Answer(delay=1.0), Answer(delay=1.0))
        error = self.assertRaisesSafely(RequestTimeoutError, client.publish, ROOM, 1)
        self.assertIsInstance(error, NetworkError)
        self.assertIn("0.3s", str(error))

    def test_droppedConnection(self) -> None:
        """A connection closed without an answer is a NetworkError, retried."""
        self.server.script(Answer(drop=True), Answer())
        self.client.publish(ROOM, 1)
        self.assertEqual((len(self.server.requests), len(self.sleeps)), (2, 1))
        # The first drop happens on the kept-alive connection, which looks like an idle one the
        # server closed: it is replaced at once, uncounted; three more exhaust the retries.
        self.server.script(*[Answer(drop=True) for _ in range(4)])
        self.assertRaisesSafely(NetworkError, self.client.publish, ROOM, 1)
        self.assertEqual(len(self.server.requests), 6)

    def test_staleKeepAlive(self) -> None:
        """A keep-alive connection the server closed while idle is replaced at once, uncounted."""
        self.server.script(Answer(closeAfter=True), Answer())
        client = self.makeClient(max_retries=0)
        client.publish(ROOM, 1)
        client.publish(ROOM, 2)
        self.assertEqual([r.json() for r in self.server.requests], [1, 2])
        self.assertEqual(self.sleeps, [])


class SecretTests(ServerTestCase):
    def test_reprAndPickle(self) -> None:
        """The secret is in no repr or str, and a client cannot be pickled."""
        self.assertNoSecret(repr(self.client), str(self.client))
        self.assertEqual(repr(self.client), f"Client({self.server.url!r}, key_id={KEY!r})")
        with self.assertRaises(TypeError):
            pickle.dumps(self.client)

    def test_logs(self) -> None:
        """Retries are logged (method, path, delay, error), never with the secret."""
        self.server.script(refusal(503, "Failed to publish"), refusal(403, "Invalid secret"))
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        logger = logging.getLogger("pandapush_client")
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        self.addCleanup(logger.removeHandler, handler)
        self.assertRaisesSafely(ForbiddenError, self.client.publish, ROOM, 1)
        output = stream.getvalue()
        self.assertIn(f"retrying POST /channel/{APP}/public/room", output)
        self.assertIn("Failed to publish", output)
        self.assertNoSecret(output)


if __name__ == "__main__":
    unittest.main()
