"""The credentials of a REST publish (:func:`pandapush.web.http.channelCredentials`), kept per header."""

from __future__ import annotations

import base64
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from pandapush.auth import credentials
from pandapush.auth.credentials import BearerToken, KeySecret
from pandapush.web import http


def request(authorization: bytes | None = None, uri: bytes = b"/channel/app/private/x") -> Any:
    r = DummyRequest([])
    r.uri = uri
    if authorization is not None:
        r.requestHeaders.setRawHeaders(b"Authorization", [authorization])
    return r


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


class ChannelCredentialsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.patch(http, "_CREDENTIALS", {})

    def test_sameAsParsed(self) -> None:
        """Kept or not, every header gives what the parser gives: the app, the key, the secret."""
        for value in [
            basic("PSIDkey", "secret"),
            basic("PSIDkey", "other"),
            b"Basic !!!",
            b"Bearer abc.def.ghi",
            b"Token " + b"t" * 300,
            b"Digest x",
            b"",
        ]:
            for appId in ("app", "other"):
                for _ in range(2):
                    found = http.channelCredentials(request(value), appId)
                    expected = credentials.channelCredentials(appId, value.decode("latin-1"))
                    self.assertEqual(type(found), type(expected), value)
                    if isinstance(expected, KeySecret):
                        assert isinstance(found, KeySecret)
                        self.assertEqual((found.appId, found.keyId), (expected.appId, expected.keyId))
                        self.assertTrue(found.checkSecret(expected._secret))
                        self.assertFalse(found.checkSecret(expected._secret + "x"))
                    elif isinstance(expected, BearerToken):
                        assert isinstance(found, BearerToken)
                        self.assertEqual((found.appId, found.token), (expected.appId, expected.token))
        self.assertIsNone(http.channelCredentials(request(), "app"))

    def test_kept(self) -> None:
        """The same header for the same application: the same credentials, parsed once."""
        first = http.channelCredentials(request(basic("PSIDkey", "secret")), "app")
        self.assertIs(http.channelCredentials(request(basic("PSIDkey", "secret")), "app"), first)
        self.assertIsNot(http.channelCredentials(request(basic("PSIDkey", "secret")), "other"), first)
        self.assertEqual(len(http._CREDENTIALS), 2)

    def test_tokenInQueryWins(self) -> None:
        """``?token=`` still comes first, and is not kept."""
        found = http.channelCredentials(
            request(basic("PSIDkey", "secret"), uri=b"/channel/app/private/x?token=abc"), "app"
        )
        assert isinstance(found, BearerToken)
        self.assertEqual(found.token, "abc")
        self.assertEqual(http._CREDENTIALS, {})

    def test_bounded(self) -> None:
        """Long values are not kept; past ``_CREDENTIALS_KEPT`` the kept ones are forgotten."""
        http.channelCredentials(request(b"Bearer " + b"t" * http._CREDENTIALS_LONGEST), "app")
        self.assertEqual(http._CREDENTIALS, {})
        self.patch(http, "_CREDENTIALS_KEPT", 3)
        for i in range(5):
            http.channelCredentials(request(basic("PSIDkey", str(i))), "app")
        self.assertLessEqual(len(http._CREDENTIALS), 3)
        self.assertIn(("app", basic("PSIDkey", "4").decode()), http._CREDENTIALS)
