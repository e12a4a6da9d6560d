"""A synchronous client for pandapush's HTTP API, on the standard library alone.

For Django, Flask, Celery workers, scripts: every call blocks until the server answered (or
the call failed) and returns the answer or raises a :class:`~pandapush_client.errors.PandapushError`.
A Twisted program wants ``pandapush.publisher.Publisher`` instead, which never blocks a reactor.

Each thread keeps one keep-alive connection (``http.client`` connections are not thread-safe;
a thread-local one is, and saves a TCP handshake per publish). A connection the server closed
while it sat idle is opened again at once, without counting as a retry.

Retries: a call that got no answer (connection refused, reset, timed out) or a 502/503/504 is
sent again up to ``max_retries`` times, after ``Retry-After`` when the server gave one, else
after an exponential back-off with jitter. Publishes carry an ``Idempotency-Key`` (the
caller's, or one made up per call when retries are on) that stays the same on every attempt,
so a server that already took the first attempt can drop the repeat.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import http.client
import json
import logging
import random
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from pandapush_client import errors, tokens, webhooks

__all__ = ["DEFAULT_TIMEOUT", "MAX_IDEMPOTENCY_KEY_LENGTH", "Client"]

__version__ = "0.1.0"

DEFAULT_TIMEOUT = 10.0
#: The server refuses longer keys (issue 15: "an idempotency key over 200 characters").
MAX_IDEMPOTENCY_KEY_LENGTH = 200
RETRYABLE_STATUSES = frozenset({502, 503, 504})

_log = logging.getLogger("pandapush_client")

# A connection the server closed while it sat in our pool fails with one of these on the next
# request, before any answer: the request never reached the application.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def _appOf(channel: str) -> str:
    """The application id of ``/<appId>/<type>/...``."""
    if not isinstance(channel, str) or not channel.startswith("/"):
        raise ValueError(f"a channel starts with '/<appId>/': {channel!r}")
    appId = channel.split("/", 2)[1]
    if not appId:
        raise ValueError(f"a channel starts with '/<appId>/': {channel!r}")
    return appId


def _retryAfter(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), if readable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def _checkIdempotencyKey(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError("an idempotency key is a non-empty string")
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValueError(f"an idempotency key has at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
    if not all(" " <= c <= "~" for c in key):
        raise ValueError("an idempotency key is printable ASCII (it travels in an HTTP header)")
    return key


class _Answer:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        if not self.body.strip():
            return None
        contentType = self.headers.get("Content-Type", "")
        if "json" not in contentType:
            return self.body.decode("utf-8", "replace")
        return json.loads(self.body)


class Client:
    """
    ``Client("https://push.example.com", "PSID...", "secret")``: every call authenticates with
    the key and its secret (HTTP Basic) and blocks until answered.

    ``timeout`` bounds each socket operation (connect, send, each read) in seconds;
    ``max_retries`` how many times a call is sent again after no answer or a 502/503/504
    (0: never); ``retry_delay`` the first back-off, doubled per attempt up to
    ``max_retry_delay``, which also bounds how long a ``Retry-After`` is honoured (longer, and
    the error is raised at once). ``app_id`` is the application for calls that name no channel
    (:meth:`channels` without a prefix, :meth:`terminate_user_connections`).
    """

    def __init__(
        self,
        url: str,
        key_id: str,
        secret: str,
        *,
        app_id: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = 2,
        retry_delay: float = 0.5,
        max_retry_delay: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http(s)://host[:port][/path], not {url!r}")
        if parts.username or parts.password:
            raise ValueError("give the key and secret as arguments, not in the url")
        if not key_id or not secret:
            raise ValueError("a Client needs a key id and its secret")
        if max_retries < 0 or timeout <= 0:
            raise ValueError("max_retries must be >= 0 and timeout > 0")
        self.url = url.rstrip("/")
        self.key_id = key_id
        self.__secret = secret
        self.app_id = app_id
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.retry_delay = float(retry_delay)
        self.max_retry_delay = float(max_retry_delay)
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._basePath = parts.path.rstrip("/")
        self._ssl = ssl_context
        self._local = threading.local()
        self._authorization = "Basic " + base64.b64encode(f"{key_id}:{secret}".encode()).decode("ascii")
        #: Waits between attempts (tests replace it to record the delays).
        self._sleep: Callable[[float], None] = time.sleep

    def __repr__(self) -> str:
        return f"Client({self.url!r}, key_id={self.key_id!r})"

    def __getstate__(self) -> Any:
        raise TypeError("a pandapush Client holds a secret and a connection: it is not picklable")

    # --- publishing ---------------------------------------------------------------------------

    def publish(self, channel: str, data: Any, *, idempotency_key: str | None = None) -> None:
        """
        Publish ``data`` (anything JSON can encode) to ``channel`` (``/<appId>/<type>/<path>``).
        Returns once the server accepted it; raises a :class:`PandapushError` otherwise.
        """
        _appOf(channel)
        path = "/channel/" + quote(channel.lstrip("/"), safe="/~")
        self._call("POST", path, body=data, idempotency_key=self._idempotencyKey(idempotency_key))

    def publish_many(self, channels: Sequence[str], data: Any, *, idempotency_key: str | None = None) -> Any:
        """
        Publish one message to several channels of one application in one request
        (``POST /apps/<appId>/events``); the server refuses all of them if it refuses one.
        """
        if isinstance(channels, str) or not channels:
            raise ValueError("channels is a non-empty list of channel names")
        channels = list(channels)
        appId = self._sameApp(channels)
        return self._call(
            "POST",
            f"/apps/{quote(appId, safe='')}/events",
            body={"channels": channels, "data": data},
            idempotency_key=self._idempotencyKey(idempotency_key),
        )

    def publish_batch(
        self, messages: Iterable[Mapping[str, Any] | tuple[str, Any]], *, idempotency_key: str | None = None
    ) -> Any:
        """
        Publish several messages (``{"channel", "data"}`` mappings or ``(channel, data)`` pairs),
        in the order given, in one request (``POST /apps/<appId>/batch_events``).
        """
        batch: list[dict[str, Any]] = []
        for message in messages:
            if isinstance(message, Mapping):
                if "channel" not in message or "data" not in message:
                    raise ValueError("each batch message has a 'channel' and 'data'")
                batch.append({"channel": message["channel"], "data": message["data"]})
            else:
                channel, data = message
                batch.append({"channel": channel, "data": data})
        if not batch:
            raise ValueError("a batch holds at least one message")
        appId = self._sameApp([m["channel"] for m in batch])
        return self._call(
            "POST",
            f"/apps/{quote(appId, safe='')}/batch_events",
            body={"batch": batch},
            idempotency_key=self._idempotencyKey(idempotency_key),
        )

    # --- tokens and webhooks ----------------------------------------------------------------------

    def token(
        self,
        channel: str,
        *,
        pub: bool = False,
        sub: bool = False,
        presence: Mapping[str, Any] | None = None,
        expires_in: float | datetime.timedelta | None = None,
        user: str | int | None = None,
    ) -> str:
        """
        A JWT for a browser (``client.subscribeTo(channel, token, ...)``): ``pub`` lets it
        publish on ``channel``, ``sub`` subscribe, ``presence`` (``{"id": ..., ...}``) names the
        member on a presence channel, ``expires_in`` seconds (or a timedelta) bound its life,
        ``user`` names the user it is for (``terminate_user_connections(user)`` then ends what
        it subscribed).
        """
        return tokens.mint_token(
            self.key_id,
            self.__secret,
            channel,
            pub=pub,
            sub=sub,
            presence=presence,
            expires_in=expires_in,
            user=user,
        )

    def verify_webhook(self, body: bytes | str, signature: str | None, *, key_id: str | None = None) -> bool:
        """
        True if ``signature`` (``X-Pandapush-Signature``) signs the raw ``body`` with this
        client's secret, and ``key_id`` (``X-Pandapush-Key``), when given, is this client's key.
        """
        return webhooks.verify_webhook(self.key_id, self.__secret, body, signature, key_id)

    def parse_webhook(self, body: bytes | str, headers: Mapping[str, str]) -> Any:
        """The verified webhook payload; :class:`InvalidWebhookError` if not signed by this key."""
        return webhooks.parse_webhook(self.key_id, self.__secret, body, headers)

    # --- queries ------------------------------------------------------------------------------------

    def channel(self, name: str) -> Any:
        """``{"occupied", "subscription_count", "user_count"}`` of one channel."""
        return self._call("GET", f"/apps/{quote(_appOf(name), safe='')}/channel", query={"name": name})

    def channels(self, prefix: str | None = None, *, app_id: str | None = None) -> Any:
        """The occupied channels (those starting with ``prefix``): ``{"channels": {name: {...}}}``."""
        appId = _appOf(prefix) if prefix else self._appId(app_id)
        query = {"prefix": prefix} if prefix else None
        return self._call("GET", f"/apps/{quote(appId, safe='')}/channels", query=query)

    def members(self, channel: str) -> Any:
        """The members of a presence channel: ``{"members": {id: presence data}}``."""
        return self._call(
            "GET", f"/apps/{quote(_appOf(channel), safe='')}/members", query={"channel": channel}
        )

    def history(self, channel: str, *, since: int | None = None, limit: int | None = None) -> Any:
        """
        The channel's recent messages, oldest first, after offset ``since`` (at most ``limit``):
        ``{"epoch", "offset", "messages": [{"offset", "data", ...}]}``.
        """
        query: dict[str, Any] = {"channel": channel}
        if since is not None:
            query["since"] = int(since)
        if limit is not None:
            query["limit"] = int(limit)
        return self._call("GET", f"/apps/{quote(_appOf(channel), safe='')}/history", query=query)

    def terminate_user_connections(self, user_id: str, *, app_id: str | None = None) -> Any:
        """Disconnect every client of the application whose presence id is ``user_id``, on every node."""
        if not user_id:
            raise ValueError("user_id is required")
        appId = quote(self._appId(app_id), safe="")
        return self._call("POST", f"/apps/{appId}/users/{quote(str(user_id), safe='')}/terminate_connections")

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the HTTP exchange ----------------------------------------------------------------------

    def _appId(self, given: str | None) -> str:
        appId = given or self.app_id
        if not appId:
            raise ValueError("this call needs an application: pass app_id here or to the Client")
        return appId

    def _sameApp(self, channels: Sequence[str]) -> str:
        apps = {_appOf(channel) for channel in channels}
        if len(apps) != 1:
            raise ValueError(f"all channels must belong to one application, not {sorted(apps)}")
        return apps.pop()

    def _idempotencyKey(self, given: str | None) -> str | None:
        if given is not None:
            return _checkIdempotencyKey(given)
        # Only a call that may be sent twice needs one; the same key goes with every attempt.
        return uuid.uuid4().hex if self.max_retries > 0 else None

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        idempotency_key: str | None = None,
    ) -> Any:
        target = self._basePath + path + ("?" + urlencode(query) if query else "")
        headers = {
            "Authorization": self._authorization,
            "Accept": "application/json",
            "User-Agent": f"pandapush-client-python/{__version__}",
        }
        payload: bytes | None = None
        if method == "POST":
            payload = b"{}" if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = "application/json; charset=utf-8"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        attempt = 0
        while True:
            try:
                answer = self._exchange(method, target, payload, headers)
            except errors.NetworkError as failure:
                error: errors.PandapushError = type(failure)(failure.message, method=method, path=path)
                error.__cause__ = failure.__cause__
                delay = self._backoff(attempt)
            else:
                if 200 <= answer.status < 300:
                    return answer.json()
                error = self._error(answer, method, path)
                if answer.status not in RETRYABLE_STATUSES:
                    raise error
                delay = error.retry_after if error.retry_after is not None else self._backoff(attempt)
            if attempt >= self.max_retries or delay > self.max_retry_delay:
                raise error
            attempt += 1
            _log.info(
                "pandapush: retrying %s %s in %.2fs (retry %d of %d) after: %s",
                method,
                path,
                delay,
                attempt,
                self.max_retries,
                error,
            )
            self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        # Full jitter over an exponential ceiling: clients refused together do not come back together.
        ceiling = min(self.max_retry_delay, self.retry_delay * (2**attempt))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _error(self, answer: _Answer, method: str, path: str) -> errors.PandapushError:
        message = http.client.responses.get(answer.status, "Error")
        code: int | None = None
        params: list[Any] = []
        try:
            decoded = json.loads(answer.body) if answer.body.strip() else None
        except ValueError:
            decoded = None
            text = answer.body.decode("utf-8", "replace").strip()
            if text:
                message = text[:300]
        if isinstance(decoded, dict):
            if isinstance(decoded.get("message"), str):
                message = decoded["message"]
            if isinstance(decoded.get("code"), int) and not isinstance(decoded.get("code"), bool):
                code = decoded["code"]
            if isinstance(decoded.get("params"), list):
                params = decoded["params"]
        return errors.errorForStatus(answer.status)(
            message,
            status=answer.status,
            code=code,
            params=params,
            method=method,
            path=path,
            retry_after=_retryAfter(answer.headers.get("Retry-After")),
        )

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            if self._https:
                context = self._ssl or ssl.create_default_context()
                connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.timeout, context=context
                )
            else:
                connection = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
            self._local.connection = connection
        return connection

    def _exchange(self, method: str, target: str, payload: bytes | None, headers: dict[str, str]) -> _Answer:
        """One request and its answer; :class:`NetworkError` when no answer came."""
        for fresh in (False, True):
            connection = self._connection()
            reused = connection.sock is not None
            try:
                connection.request(method, target, body=payload, headers=headers)
                response = connection.getresponse()
                body = response.read()
            except (TimeoutError, socket.timeout) as failure:  # one class since 3.10, two before
                self.close()
                raise errors.RequestTimeoutError(f"No answer within {self.timeout:g}s") from failure
            except _STALE as failure:
                self.close()
                if reused and not fresh:
                    continue  # the server closed an idle keep-alive connection: open a new one
                raise errors.NetworkError(f"Connection failed: {type(failure).__name__}") from failure
            except (OSError, http.client.HTTPException) as failure:
                self.close()
                raise errors.NetworkError(
                    f"Connection failed: {type(failure).__name__}: {failure}"
                ) from failure
            if response.will_close:
                self.close()
            return _Answer(response.status, response.headers, body)
        raise AssertionError("unreachable")
