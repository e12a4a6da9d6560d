"""pandapush_client: publish to pandapush, mint tokens and check webhooks, from any Python program.

Synchronous and dependency-free (the standard library only)::

    from pandapush_client import Client

    pandapush = Client("https://push.example.com", "PSID...", "secret")
    pandapush.publish("/<appId>/public/messages", {"text": "hello"})
    token = pandapush.token("/<appId>/private/users/42", sub=True, expires_in=3600)
"""

from pandapush_client.client import DEFAULT_TIMEOUT, MAX_IDEMPOTENCY_KEY_LENGTH, Client, __version__
from pandapush_client.errors import (
    AuthenticationError,
    AuthError,
    BadRequestError,
    ForbiddenError,
    InvalidWebhookError,
    NetworkError,
    NotFoundError,
    PandapushError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    UnavailableError,
)
from pandapush_client.tokens import mint_token
from pandapush_client.webhooks import KEY_HEADER, SIGNATURE_HEADER, sign_webhook, verify_webhook

__all__ = [
    "DEFAULT_TIMEOUT",
    "KEY_HEADER",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "SIGNATURE_HEADER",
    "AuthError",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ForbiddenError",
    "InvalidWebhookError",
    "NetworkError",
    "NotFoundError",
    "PandapushError",
    "RateLimitedError",
    "RequestTimeoutError",
    "ServerError",
    "UnavailableError",
    "__version__",
    "mint_token",
    "sign_webhook",
    "verify_webhook",
]
