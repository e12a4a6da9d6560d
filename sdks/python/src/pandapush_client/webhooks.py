"""Checking that a webhook request came from pandapush.

pandapush signs each webhook body with one of the application's keys: ``X-Pandapush-Key``
names the key, ``X-Pandapush-Signature`` is the hex HMAC-SHA256 of the raw body under that
key's secret. The comparison takes the same time whatever the signature, so an attacker
cannot learn it a byte at a time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from pandapush_client.errors import InvalidWebhookError

__all__ = ["KEY_HEADER", "SIGNATURE_HEADER", "parse_webhook", "sign_webhook", "verify_webhook"]

SIGNATURE_HEADER = "X-Pandapush-Signature"
KEY_HEADER = "X-Pandapush-Key"


def _bytes(body: bytes | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def sign_webhook(secret: str, body: bytes | str) -> str:
    """The signature pandapush sends with ``body``: hex HMAC-SHA256 under ``secret``."""
    return hmac.new(secret.encode("utf-8"), _bytes(body), hashlib.sha256).hexdigest()


def verify_webhook(
    key_id: str, secret: str, body: bytes | str, signature: str | None, signed_by: str | None = None
) -> bool:
    """
    True if ``signature`` is the signature of the raw ``body`` under ``secret`` (and, when
    ``signed_by`` (the ``X-Pandapush-Key`` header) is given, it names ``key_id``). Verify
    the bytes as received: a body parsed and encoded again may differ by a space.
    """
    if signed_by is not None and not hmac.compare_digest(_bytes(signed_by), _bytes(key_id)):
        return False
    if not isinstance(signature, str) or not signature:
        return False
    expected = sign_webhook(secret, body).encode("ascii")
    # Both sides as bytes: compare_digest refuses str with non-ASCII characters.
    return hmac.compare_digest(expected, signature.strip().lower().encode("utf-8", "replace"))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered or key.upper() == "HTTP_" + name.upper().replace("-", "_"):
            return value
    return None


def parse_webhook(key_id: str, secret: str, body: bytes | str, headers: Mapping[str, str]) -> Any:
    """
    The webhook's JSON payload (``{"time_ms", "events": [...]}``) once its signature is checked
    with the headers as received (any case; WSGI ``HTTP_X_PANDAPUSH_...`` names work too);
    :class:`InvalidWebhookError` if it is not signed by this key or is not JSON.
    """
    if not verify_webhook(
        key_id, secret, body, _header(headers, SIGNATURE_HEADER), _header(headers, KEY_HEADER)
    ):
        raise InvalidWebhookError("Webhook signature or key does not match")
    try:
        return json.loads(_bytes(body))
    except ValueError:
        raise InvalidWebhookError("Webhook body is not JSON") from None
