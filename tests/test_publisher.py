"""The Python publisher library and token minting."""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Generator
from typing import Any

import jwt
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from pandapush.publisher import Publisher, PublishError
from pandapush.tokens import mintToken

APP = "fRP0y2aVpYCKiW6PIFOK"
KEY = "PSIDv4ADyV6V9fQ2BgJZ"
SECRET = "aWvMCPXnV599u6hJ71YJqAKSz0t0Lihs09DM92xS"


class RecordingChannelResource(Resource):
    """Stands in for pandapush's ``/channel``: records requests, answers as told."""

    isLeaf = True

    def __init__(self, code: int = 200, body: bytes = b"OK") -> None:
        super().__init__()
        self.code = code
        self.body = body
        self.requests: list[dict[str, Any]] = []

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        self.requests.append(
            {
                "path": request.path,
                "authorization": request.getHeader(b"authorization"),
                "contentType": request.getHeader(b"content-type"),
                "body": request.content.read(),
            }
        )
        request.setResponseCode(self.code)
        return self.body


class PublisherTests(TestCase):
    """``Publisher.publish`` speaks pandapush's REST publish API."""

    def publisher(self, resource: Resource, **kwargs: Any) -> Publisher:
        self.stub = StubTreq(resource)
        kwargs.setdefault("keyId", KEY)
        kwargs.setdefault("secret", SECRET)
        return Publisher("http://pandapush.example/", client=self.stub, **kwargs)

    @inlineCallbacks
    def test_publishWithKey(self) -> Generator[Deferred[Any], Any, None]:
        """JSON goes to /channel/<channel without its leading slash> with Basic key:secret."""
        resource = RecordingChannelResource()
        publisher = self.publisher(resource)
        result = yield publisher.publish(f"/{APP}/public/messages", {"foo": "bar"})
        self.assertIsNone(result)
        [request] = resource.requests
        self.assertEqual(request["path"], f"/channel/{APP}/public/messages".encode())
        self.assertEqual(request["contentType"], b"application/json")
        self.assertEqual(json.loads(request["body"]), {"foo": "bar"})
        scheme, encoded = request["authorization"].split(b" ")
        self.assertEqual((scheme, base64.b64decode(encoded)), (b"Basic", f"{KEY}:{SECRET}".encode()))

    @inlineCallbacks
    def test_publishWithToken(self) -> Generator[Deferred[Any], Any, None]:
        """With a token, the request carries ``Authorization: Token <jwt>``."""
        resource = RecordingChannelResource()
        token = mintToken(KEY, SECRET, f"/{APP}/private/x", pub=True)
        publisher = self.publisher(resource, keyId=None, secret=None, token=token)
        yield publisher.publish(f"{APP}/private/x", [1, 2])
        self.assertEqual(resource.requests[0]["authorization"], b"Token " + token.encode())
        self.assertEqual(resource.requests[0]["path"], f"/channel/{APP}/private/x".encode())

    @inlineCallbacks
    def test_refusedWithMessage(self) -> Generator[Deferred[Any], Any, None]:
        """A refusal fails with PublishError carrying the status and the server's error text."""
        body = json.dumps({"code": 403, "params": [], "message": "Invalid secret"}).encode()
        publisher = self.publisher(RecordingChannelResource(403, body))
        error = yield self.assertFailure(publisher.publish(f"/{APP}/public/x", {}), PublishError)
        self.assertEqual((error.code, error.message), (403, "Invalid secret"))
        self.assertIn("Invalid secret", str(error))

    @inlineCallbacks
    def test_refusedPlain(self) -> Generator[Deferred[Any], Any, None]:
        """A non-JSON error body is reported as text."""
        publisher = self.publisher(RecordingChannelResource(500, b"boom"))
        error = yield self.assertFailure(publisher.publish(f"/{APP}/public/x", {}), PublishError)
        self.assertEqual((error.code, error.message), (500, "boom"))

    def test_needsCredentials(self) -> None:
        """A publisher without key+secret or token is refused at once."""
        self.assertRaises(ValueError, Publisher, "http://x", KEY)

    def test_reprHidesSecret(self) -> None:
        """A logged publisher does not show its secret."""
        self.assertNotIn(SECRET, repr(Publisher("http://x", KEY, SECRET)))

    def test_token(self) -> None:
        """A publisher mints tokens with its own key."""
        token = Publisher("http://x", KEY, SECRET).token(f"/{APP}/private/x", sub=True)
        claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_sub": False})
        self.assertEqual((claims["keyId"], claims["sub"]), (KEY, True))


class MintTokenTests(TestCase):
    """``mintToken`` makes the contract's JWTs."""

    def decode(self, token: str) -> dict[str, Any]:
        return jwt.decode(
            token,
            SECRET,
            algorithms=["HS256", "HS384", "HS512"],
            options={"verify_exp": False, "verify_sub": False},
        )

    def test_claims(self) -> None:
        """keyId, channel, pub, sub and presence; no exp unless asked."""
        token = mintToken(
            KEY, SECRET, f"/{APP}/presence/room", sub=True, presence={"id": "user1", "name": "Joe"}
        )
        self.assertEqual(jwt.get_unverified_header(token)["alg"], "HS256")
        self.assertEqual(
            self.decode(token),
            {
                "keyId": KEY,
                "channel": f"/{APP}/presence/room",
                "pub": False,
                "sub": True,
                "presence": {"id": "user1", "name": "Joe"},
            },
        )

    def test_expiresIn(self) -> None:
        """expiresIn (seconds or timedelta) sets exp from now."""
        self.assertEqual(
            self.decode(mintToken(KEY, SECRET, "/a/public/b", expiresIn=3600, now=1000))["exp"], 4600
        )
        token = mintToken(KEY, SECRET, "/a/public/b", expiresIn=datetime.timedelta(minutes=1), now=1000)
        self.assertEqual(self.decode(token)["exp"], 1060)

    def test_expiresAt(self) -> None:
        """expiresAt sets exp to that instant."""
        at = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
        self.assertEqual(
            self.decode(mintToken(KEY, SECRET, "/a/public/b", expiresAt=at))["exp"], int(at.timestamp())
        )

    def test_algorithms(self) -> None:
        """HS384/HS512 can be chosen; anything else (none, RS256) is refused."""
        longSecret = SECRET * 2  # HS512 wants 64 bytes or more
        token = mintToken(KEY, longSecret, "/a/public/b", algorithm="HS512")
        self.assertEqual(jwt.get_unverified_header(token)["alg"], "HS512")
        for bad in ("none", "RS256"):
            self.assertRaises(ValueError, mintToken, KEY, SECRET, "/a/public/b", algorithm=bad)

    def test_refusals(self) -> None:
        """Tokens that could never work are refused at minting time."""
        self.assertRaises(ValueError, mintToken, KEY, SECRET, "/a/presence/b", presence={"name": "no id"})
        self.assertRaises(ValueError, mintToken, KEY, SECRET, "a/public/b")
        self.assertRaises(ValueError, mintToken, KEY, "", "/a/public/b")
        self.assertRaises(ValueError, mintToken, KEY, SECRET, "/a/public/b", expiresIn=-5)
