"""Idempotency keys of publishes: what a publisher may send, and the key an engine checks.

A publish may carry an idempotency key (REST ``Idempotency-Key``, Bayeux
``ext.idempotencyKey``): a second publish with the same key in the same application
within five minutes is acknowledged like the first and not delivered again (the engines
do it: :mod:`pandapush.engines.idempotency`, and the Redis publish script).
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_IDEMPOTENCY_KEY", "idempotencyKeyError", "scopedKey"]

#: The longest idempotency key a publisher may send (REST ``Idempotency-Key``, Bayeux
#: ``ext.idempotencyKey``): a UUID is 36, a hash in hex 64.
MAX_IDEMPOTENCY_KEY = 200


def idempotencyKeyError(key: Any) -> str | None:
    """Why ``key`` cannot be an idempotency key, or None if it can."""
    if not isinstance(key, str) or not key:
        return "Invalid idempotency key: a non-empty string"
    if len(key) > MAX_IDEMPOTENCY_KEY:
        return f"Idempotency key too long (at most {MAX_IDEMPOTENCY_KEY} characters)"
    return None


def scopedKey(channel: str, key: str) -> str:
    """``key`` within the application of ``channel`` (its first segment)."""
    cut = channel.find("/", 1)
    return f"{channel[1:cut] if cut > 0 else channel[1:]}:{key}"
