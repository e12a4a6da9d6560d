"""Publishing to pandapush from Python, over its HTTP API (``POST /channel/...``)::

    from pandapush.publisher import Publisher

    publisher = Publisher("http://localhost:3000", "PSID...", "secret")
    d = publisher.publish("/<appId>/public/messages", {"foo": "bar"})

Deferred-based (treq) so a Twisted program publishes without blocking its reactor.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import treq
from twisted.internet.defer import inlineCallbacks

from pandapush.tokens import mintToken

__all__ = ["PublishError", "Publisher", "mintToken"]


class PublishError(Exception):
    """
    The server refused a publish. ``code`` is the HTTP status; ``message`` is the
    server's error text (e.g. ``Invalid secret``) when it sent one.
    """

    def __init__(self, code: int, message: str, body: bytes = b"") -> None:
        self.code = code
        self.message = message
        self.body = body
        super().__init__(f"publish refused: HTTP {code}: {message}")


def _errorMessage(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    try:
        decoded = json.loads(text)
    except ValueError:
        return text[:500] or "(no body)"
    if isinstance(decoded, Mapping) and isinstance(decoded.get("message"), str):
        return decoded["message"]
    return text[:500]


class Publisher:
    """
    Publishes messages with a key and secret (HTTP Basic), or with a token that
    allows publishing (``token=``). ``client`` is anything with treq's ``post`` and
    optionally ``content``: the ``treq`` module by default (its shared pool keeps
    connections alive between publishes), a ``treq.client.HTTPClient`` of your own
    (a one-shot command wants one whose pool is not persistent), or
    ``treq.testing.StubTreq`` in tests.
    """

    def __init__(
        self,
        baseUrl: str,
        keyId: str | None = None,
        secret: str | None = None,
        *,
        token: str | None = None,
        client: Any = None,
        timeout: float = 30.0,
    ) -> None:
        if token is None and not (keyId and secret):
            raise ValueError("a Publisher needs a key id and secret, or a token")
        self.baseUrl = baseUrl.rstrip("/")
        self.keyId = keyId
        self._secret = secret
        self._token = token
        self._client = treq if client is None else client
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Publisher({self.baseUrl!r}, keyId={self.keyId!r})"

    def _authorization(self) -> bytes:
        if self._token is not None:
            return b"Token " + self._token.encode("ascii")
        pair = f"{self.keyId}:{self._secret}".encode()
        return b"Basic " + base64.b64encode(pair)

    def urlFor(self, channel: str) -> str:
        """Where a publish to ``channel`` goes: ``<base>/channel/<channel without its leading slash>``."""
        return f"{self.baseUrl}/channel/{quote(channel.lstrip('/'), safe='/~')}"

    @inlineCallbacks
    def publish(self, channel: str, data: Any) -> Any:
        """
        POST ``data`` as JSON to ``channel``. Fires with None once the server accepted
        it (2xx); fails with :class:`PublishError` otherwise, or with the connection error.
        """
        body = json.dumps(data, separators=(",", ":")).encode("utf-8")
        response = yield self._client.post(
            self.urlFor(channel),
            data=body,
            headers={b"Content-Type": [b"application/json"], b"Authorization": [self._authorization()]},
            timeout=self.timeout,
        )
        content = yield getattr(self._client, "content", treq.content)(response)
        if not 200 <= response.code < 300:
            raise PublishError(response.code, _errorMessage(content), content)
        return None

    def token(self, channel: str, **claims: Any) -> str:
        """A token signed with this publisher's key (see :func:`pandapush.tokens.mintToken`)."""
        if not (self.keyId and self._secret):
            raise ValueError("minting a token needs the key's id and secret")
        return mintToken(self.keyId, self._secret, channel, **claims)
