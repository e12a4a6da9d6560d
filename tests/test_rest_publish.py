"""``POST /channel/...`` through ``treq.testing.StubTreq``: every status of the contract."""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pandapush.auth.checkers import ChannelAuthority
from pandapush.auth.keycache import KeyCache
from pandapush.web.publish import PublishApp, parseBody
from tests.support.auth import APP, KEY, NOW, SECRET, FakeKey, FakeKeyStore, at, token
from tests.support.http import stubTreq

URL = f"http://localhost/channel/{APP}/public/messages"
CHANNEL = f"/{APP}/public/messages"


def basic(user: str, password: str) -> dict[bytes, list[bytes]]:
    return {b"Authorization": [b"Basic " + base64.b64encode(f"{user}:{password}".encode())]}


class ParseBodyTests(SynchronousTestCase):
    def test_json(self) -> None:
        self.assertEqual(parseBody(b'{"text": "hello"}', "application/json"), {"text": "hello"})
        self.assertEqual(parseBody(b"[1, 2]", None), [1, 2])

    def test_readmeCurlExample(self) -> None:
        """The README's ``-d '{text:"hello"}'`` (a JS literal, not JSON) arrives as ``{"text": "hello"}``."""
        self.assertEqual(parseBody(b'{text:"hello"}', "application/json"), {"text": "hello"})
        self.assertEqual(
            parseBody(b'{a:1, b:{c:"x:y, d:z"}}', "application/json"), {"a": 1, "b": {"c": "x:y, d:z"}}
        )

    def test_form(self) -> None:
        """A urlencoded form is an object of strings (upstream delivered ``{}``)."""
        self.assertEqual(parseBody(b"foo=bar", "application/x-www-form-urlencoded"), {"foo": "bar"})
        self.assertEqual(
            parseBody(b"a=1&a=2&b=", "application/x-www-form-urlencoded; charset=utf-8"),
            {"a": ["1", "2"], "b": ""},
        )
        self.assertEqual(parseBody(b"foo=bar", None), {"foo": "bar"})

    def test_errorsSayWhy(self) -> None:
        from pandapush.web.publish import BodyError

        for body, ctype, words in [
            (b"", "application/json", "empty"),
            (b"invalid json", "application/json", "not valid JSON"),
            (b"{text: hello}", "application/json", "not valid JSON"),
            (b"\xff\xfe", "application/json", "not valid JSON"),
            (b"a=\xff", "application/x-www-form-urlencoded", "UTF-8"),
            (b"--x", "multipart/form-data; boundary=x", "Unsupported"),
        ]:
            with self.assertRaises(BodyError) as caught:
                parseBody(body, ctype)
            self.assertIn(words, str(caught.exception))


class PublishAppTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = FakeKeyStore()
        self.store.add(FakeKey(KEY, APP, SECRET))
        self.store.add(FakeKey("PSIDexpired000000000", APP, SECRET, expires=at(NOW - 5)))
        self.published: list[tuple[str, Any]] = []
        self.publishResult: Deferred[int] | None = None
        self.app = PublishApp(
            ChannelAuthority(KeyCache(self.store, self.clock), self.clock),
            self.publish,
            self.clock,
            maxBodySize=1000,
        )
        self.treq = stubTreq(self.app.resource())

    def publish(self, channel: str, data: Any) -> Deferred[int]:
        self.published.append((channel, data))
        if self.publishResult is not None:
            return self.publishResult
        return defer.succeed(1)

    def post(self, url: str = URL, **kwargs: Any) -> tuple[int, Any, Any]:
        d = self.treq.post(url, **kwargs)
        self.treq.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(response.content())
        return response.code, response.headers, body

    def test_basicJSON(self) -> None:
        """Key+secret with a JSON body: 200 OK and the data published as sent."""
        code, _, body = self.post(
            data=b'{"text":"hello"}', headers={**basic(KEY, SECRET), b"Content-Type": [b"application/json"]}
        )
        self.assertEqual((code, body), (200, b"OK"))
        self.assertEqual(self.published, [(CHANNEL, {"text": "hello"})])

    def test_readmeCurl(self) -> None:
        """The README's curl command, exactly: ``-d '{text:"hello"}'`` with a JSON content type."""
        code, _, _ = self.post(
            f"http://localhost/channel/{APP}/private/users/123/messages",
            data=b'{text:"hello"}',
            headers={**basic(KEY, SECRET), b"Content-Type": [b"application/json"]},
        )
        self.assertEqual(code, 200)
        self.assertEqual(self.published, [(f"/{APP}/private/users/123/messages", {"text": "hello"})])

    def test_rubyForm(self) -> None:
        """The README's HTTParty example: a form body, ``foo=bar`` arrives as ``{"foo": "bar"}``."""
        code, _, _ = self.post(data={"foo": "bar"}, headers=basic(KEY, SECRET))
        self.assertEqual(code, 200)
        self.assertEqual(self.published, [(CHANNEL, {"foo": "bar"})])

    def test_tokens(self) -> None:
        """``Token``, ``Bearer`` and ``?token=`` all work with a pub token."""
        t = token({"channel": CHANNEL, "pub": True})
        for kwargs in (
            {"headers": {b"Authorization": [f"Token {t}".encode()]}},
            {"headers": {b"Authorization": [f"Bearer {t}".encode()]}},
            {"params": {"token": t}},
        ):
            code, _, _ = self.post(data=b"{}", **kwargs)
            self.assertEqual(code, 200, kwargs)
        self.assertEqual(len(self.published), 3)

    def test_noCredentials(self) -> None:
        """No credentials: 401 with a challenge, nothing published."""
        code, headers, body = self.post(data=b"{}")
        self.assertEqual(code, 401)
        self.assertIn(b"Basic", headers.getRawHeaders(b"WWW-Authenticate")[0])
        self.assertIn(b"No auth supplied", body)
        self.assertEqual(self.published, [])

    def test_refusals(self) -> None:
        """Refusals are 403 with the contract's text in a Faye-shaped error object."""
        from pandapush.bayeux import json

        other = token({"channel": f"/{APP}/public/other", "pub": True})
        cases = [
            (basic(KEY, "wrong"), "Invalid secret"),
            (basic("PSIDnope", SECRET), "Could not find key"),
            (basic("PSIDexpired000000000", SECRET), "Expired key"),
            ({b"Authorization": [b"Token garbage"]}, "Invalid token"),
            ({b"Authorization": [f"Token {token({'channel': CHANNEL, 'sub': True})}".encode()]},
             "Token does not allow publishing"),
            ({b"Authorization": [f"Token {other}".encode()]},
             "Token does not match channel"),
        ]  # fmt: skip
        for headers, text in cases:
            code, _, body = self.post(data=b"{}", headers=headers)
            self.assertEqual(code, 403, text)
            self.assertEqual(json.loads(body), {"code": 403, "params": [], "message": text})
        self.assertEqual(self.published, [])

    def test_badBodyIs400(self) -> None:
        code, _, body = self.post(
            data=b"invalid json", headers={**basic(KEY, SECRET), b"Content-Type": [b"application/json"]}
        )
        self.assertEqual(code, 400)
        self.assertIn(b"not valid JSON", body)

    def test_tooLarge(self) -> None:
        code, _, _ = self.post(data=b"[" + b"1," * 1000 + b"1]", headers=basic(KEY, SECRET))
        self.assertEqual(code, 413)
        self.assertEqual(self.published, [])

    def test_unknownType(self) -> None:
        """meta or made-up types: 404 (nobody publishes to meta)."""
        for kind in ("meta", "secret"):
            code, _, _ = self.post(
                f"http://localhost/channel/{APP}/{kind}/x", data=b"{}", headers=basic(KEY, SECRET)
            )
            self.assertEqual(code, 404, kind)
        code, _, _ = self.post("http://localhost/channel/invalidchannel", data=b"{}")
        self.assertEqual(code, 404)

    def test_invalidName(self) -> None:
        code, _, body = self.post(
            f"http://localhost/channel/{APP}/public/a/*", data=b"{}", headers=basic(KEY, SECRET)
        )
        self.assertEqual(code, 404)
        self.assertIn(b"Invalid channel name", body)

    def test_authStripped(self) -> None:
        """A ``__auth`` in the body is never delivered."""
        self.post(data=b'{"__auth":{"key":"x"},"a":1}', headers=basic(KEY, SECRET))
        self.assertEqual(self.published, [(CHANNEL, {"a": 1})])

    def test_getNotAllowed(self) -> None:
        d = self.treq.get(URL)
        self.treq.flush()
        self.assertEqual(self.successResultOf(d).code, 405)

    def test_publishFails(self) -> None:
        """An engine failure is a 503, logged, not a crash."""
        self.publishResult = defer.fail(RuntimeError("engine down"))
        code, _, _ = self.post(data=b"{}", headers=basic(KEY, SECRET))
        self.assertEqual(code, 503)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_neverHangs(self) -> None:
        """A publish that never completes is answered 503 after the deadline."""
        self.publishResult = Deferred()
        d = self.treq.post(URL, data=b"{}", headers=basic(KEY, SECRET))
        self.treq.flush()
        self.assertNoResult(d)
        self.clock.advance(11)
        self.treq.flush()
        self.assertEqual(self.successResultOf(d).code, 503)

    def test_formTokenIsData(self) -> None:
        """A form field named ``token`` is data, never credentials (only the query string's is)."""
        t = token({"channel": CHANNEL, "pub": True})
        code, _, _ = self.post(data={"token": t})
        self.assertEqual(code, 401)
        code, _, _ = self.post(data={"token": "x", "a": "b"}, headers=basic(KEY, SECRET))
        self.assertEqual(code, 200)
        self.assertEqual(self.published, [(CHANNEL, {"token": "x", "a": "b"})])

    def test_routeAnswers(self) -> None:
        """
        Paths outside ``/channel/<app>/<type>/<path>`` are 404 whatever the method (as
        the Klein route was); a matching path with another method is 405 naming POST.
        """
        for url in (
            "http://localhost/channel",
            f"http://localhost/channel/{APP}",
            f"http://localhost/channel/{APP}/public",
            f"http://localhost/channel/{APP}/public/",
            "http://localhost/channel//public/x",
            f"http://localhost/other/{APP}/public/x",
        ):
            for method in (self.treq.post, self.treq.get):
                d = method(url, data=b"{}", headers=basic(KEY, SECRET))
                self.treq.flush()
                response = self.successResultOf(d)
                self.assertEqual(response.code, 404, url)
                self.assertIn(b"Not found", self.successResultOf(response.content()))
        d = self.treq.put(URL, data=b"{}", headers=basic(KEY, SECRET))
        self.treq.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders(b"Allow"), [b"POST"])
        self.assertEqual(self.published, [])

    def test_keyLookupWaitedFor(self) -> None:
        """A key not cached yet is looked up before answering; refusals and successes alike."""
        self.store.hold = Deferred()
        d = self.treq.post(URL, data=b'{"a":1}', headers=basic(KEY, SECRET))
        refused = self.treq.post(URL, data=b"{}", headers=basic(KEY, "wrong"))
        self.treq.flush()
        self.assertNoResult(d)
        self.store.hold.callback(None)
        self.treq.flush()
        self.assertEqual(self.successResultOf(d).code, 200)
        self.assertEqual(self.successResultOf(refused).code, 403)
        self.assertEqual(self.published, [(CHANNEL, {"a": 1})])

    def test_slowPublishAnswered(self) -> None:
        """A publish that completes later is answered when it does, with its outcome."""
        self.publishResult = Deferred()
        d = self.treq.post(URL, data=b"{}", headers=basic(KEY, SECRET))
        self.treq.flush()
        self.assertNoResult(d)
        self.publishResult.callback(3)
        self.treq.flush()
        response = self.successResultOf(d)
        self.assertEqual((response.code, self.successResultOf(response.content())), (200, b"OK"))
