"""Tokens (HS256 JWTs) and webhook signatures, against vectors made by other implementations."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import time
import unittest
from typing import Any

from pandapush_client import Client, InvalidWebhookError, mint_token, sign_webhook

APP = "exampleApp0000000001"
KEY = "PSIDexampleKey000001"
SECRET = "example-secret-0123456789"

# Made by PyJWT (jwt.encode(claims, SECRET, algorithm="HS256")); the Ruby and Node libraries
# check the same vector.
PYJWT_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJrZXlJZCI6IlBTSURleGFtcGxlS2V5MDAwMDAxIiwiY2hhbm5lbCI6Ii9leGF"
    "tcGxlQXBwMDAwMDAwMDAwMS9wcmVzZW5jZS9yb29tIiwicHViIjp0cnVlLCJzdWIiOnRydWUsInByZXNlbmNlIjp7ImlkIjoidTEi"
    "LCJuYW1lIjoiQW5uIn0sImV4cCI6MTkwMDAwMDAwMH0.JkLutPpig7XsFGPSUKAIx18r5s2Z0AaVWnfFg1wlrUs"
)
WEBHOOK_BODY = (
    '{"time_ms":1700000000000,"events":[{"id":"e1","name":"channel_occupied",'
    '"channel":"/exampleApp0000000001/public/room"}]}'
)
WEBHOOK_SIGNATURE = "af696d007152bbbe69d019ab777fc84a7d845a3873e4ecc9678d68efeafbcc6b"


def decode(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a JWT whose HS256 signature under SECRET holds."""
    signing, _, signature = token.rpartition(".")
    expected = hmac.new(SECRET.encode(), signing.encode(), hashlib.sha256).digest()
    padded = signature + "=" * (-len(signature) % 4)
    assert hmac.compare_digest(base64.urlsafe_b64decode(padded), expected), "bad signature"
    header, claims = (
        json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))) for part in signing.split(".")
    )
    return header, claims


class TokenTests(unittest.TestCase):
    def setUp(self) -> None:
        self.client = Client("http://127.0.0.1:1", KEY, SECRET)

    def test_sameAsPyJWT(self) -> None:
        """The same claims give PyJWT's token, byte for byte."""
        token = mint_token(
            KEY,
            SECRET,
            f"/{APP}/presence/room",
            pub=True,
            sub=True,
            presence={"id": "u1", "name": "Ann"},
            expires_in=100,
            now=1_899_999_900,
        )
        self.assertEqual(token, PYJWT_TOKEN)

    def test_claims(self) -> None:
        """keyId, channel, pub and sub always; presence and exp when asked; no padding anywhere."""
        before = int(time.time())
        token = self.client.token(f"/{APP}/private/users/42", sub=True, expires_in=60)
        self.assertNotIn("=", token)
        header, claims = decode(token)
        self.assertEqual(header, {"alg": "HS256", "typ": "JWT"})
        exp = claims.pop("exp")
        self.assertEqual(
            claims, {"keyId": KEY, "channel": f"/{APP}/private/users/42", "pub": False, "sub": True}
        )
        self.assertTrue(before + 60 <= exp <= int(time.time()) + 60)
        _, claims = decode(self.client.token(f"/{APP}/public/x", pub=True))
        self.assertNotIn("exp", claims)
        _, claims = decode(
            self.client.token(
                f"/{APP}/presence/r",
                presence={"id": "z", "name": "Zo\u00eb"},
                expires_in=datetime.timedelta(hours=1),
            )
        )
        self.assertEqual(claims["presence"], {"id": "z", "name": "Zo\u00eb"})
        self.assertNotIn("user", decode(self.client.token(f"/{APP}/public/x", sub=True))[1])
        _, claims = decode(self.client.token(f"/{APP}/private/inbox", sub=True, user="u-7"))
        self.assertEqual(claims["user"], "u-7")
        self.assertEqual(decode(self.client.token(f"/{APP}/private/inbox", user=42))[1]["user"], "42")

    def test_badArguments(self) -> None:
        """A channel without '/', presence without id, a non-positive or non-numeric lifetime: refused."""
        with self.assertRaises(ValueError):
            self.client.token("room")
        for presence in ({}, {"id": ""}, ["u1"]):
            with self.assertRaises(ValueError):
                self.client.token(f"/{APP}/presence/r", presence=presence)  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            self.client.token(f"/{APP}/public/x", expires_in=0)
        with self.assertRaises(TypeError):
            self.client.token(f"/{APP}/public/x", expires_in="60")  # type: ignore[arg-type]
        for user in ("", 1.5, True, {"id": "u1"}):
            with self.assertRaises(ValueError):
                self.client.token(f"/{APP}/private/x", user=user)  # type: ignore[arg-type]


class WebhookTests(unittest.TestCase):
    def setUp(self) -> None:
        self.client = Client("http://127.0.0.1:1", KEY, SECRET)

    def test_vector(self) -> None:
        """The hex HMAC-SHA256 of the raw body under the key's secret."""
        self.assertEqual(sign_webhook(SECRET, WEBHOOK_BODY), WEBHOOK_SIGNATURE)
        self.assertTrue(self.client.verify_webhook(WEBHOOK_BODY.encode(), WEBHOOK_SIGNATURE))
        self.assertTrue(self.client.verify_webhook(WEBHOOK_BODY, WEBHOOK_SIGNATURE.upper(), key_id=KEY))

    def test_refused(self) -> None:
        """Another body, signature, key or secret, or no signature at all: False, never an exception."""
        wrong = [
            (WEBHOOK_BODY + " ", WEBHOOK_SIGNATURE, None),
            (WEBHOOK_BODY, WEBHOOK_SIGNATURE[:-1] + "0", None),
            (WEBHOOK_BODY, WEBHOOK_SIGNATURE[:10], None),
            (WEBHOOK_BODY, "", None),
            (WEBHOOK_BODY, None, None),
            (WEBHOOK_BODY, "\u00e9" * 64, None),
            (WEBHOOK_BODY, WEBHOOK_SIGNATURE, "PSIDanotherKey"),
        ]
        for body, signature, keyId in wrong:
            self.assertFalse(
                self.client.verify_webhook(body, signature, key_id=keyId), (body, signature, keyId)
            )
        other = Client("http://127.0.0.1:1", KEY, SECRET + "x")
        self.assertFalse(other.verify_webhook(WEBHOOK_BODY, WEBHOOK_SIGNATURE))

    def test_parse(self) -> None:
        """parse_webhook reads the headers in any case (or WSGI's) and returns the payload."""
        for headers in (
            {"X-Pandapush-Signature": WEBHOOK_SIGNATURE, "X-Pandapush-Key": KEY},
            {"x-pandapush-signature": WEBHOOK_SIGNATURE},
            {"HTTP_X_PANDAPUSH_SIGNATURE": WEBHOOK_SIGNATURE, "HTTP_X_PANDAPUSH_KEY": KEY},
        ):
            payload = self.client.parse_webhook(WEBHOOK_BODY.encode(), headers)
            self.assertEqual(payload["events"][0]["name"], "channel_occupied")
        with self.assertRaises(InvalidWebhookError):
            self.client.parse_webhook(WEBHOOK_BODY, {"X-Pandapush-Signature": "00" * 32})
        with self.assertRaises(InvalidWebhookError):
            self.client.parse_webhook("not json", {"X-Pandapush-Signature": sign_webhook(SECRET, "not json")})


if __name__ == "__main__":
    unittest.main()
