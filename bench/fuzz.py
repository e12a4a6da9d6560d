"""
Fuzz a real pandapush over real sockets, for as many messages as you like (issue 7).

    .venv/bin/python bench/fuzz.py                       # 1,000,000 messages, a fresh server
    .venv/bin/python bench/fuzz.py --messages 20000      # a quick look
    .venv/bin/python bench/fuzz.py --seed 7 --out r.json # reproducible mutations, summary kept
    .venv/bin/python bench/fuzz.py --redis-hosts 127.0.0.1:6379   # on the Redis engine

It starts ``python -m twisted pandapush`` from this checkout (memory storage, a development
application and key, a second key made through the admin API for the fuzzer, ``--timeout 2``
so held connects do not stall the fuzzing connections) and then, all at once:

- **fuzzers** send random and mutated Bayeux messages and batches: ``--http`` keep-alive
  HTTP connections (POST ``application/json`` and form bodies to ``/push`` and its
  sub-paths, JSONP ``GET``, odd methods and content types, bodies over the size limit) and
  ``--ws`` websockets (text and binary frames, frames over the size limit). The messages
  come from the Hypothesis strategies of ``tests/test_router_fuzz.py`` (a corpus drawn
  once at start) and from a fast mutator of valid messages (real clientIds, channels of
  the application, keys, tokens, presence tokens) that swaps, drops, renames and retypes
  fields, mangles channels, and corrupts the serialized bytes;
- **watchers**, well-behaved clients that must not notice any of it: one on a websocket
  and one long-polling, subscribed to ``/<app>/public/fuzz-watch``, which a REST publisher
  (its own key) publishes a sequence number to every 50 ms. Every number must reach both,
  in order, within ``--max-latency`` seconds.

Every answer is checked: a 200 from ``/push`` is a JSON array (inside ``/**/cb(...);`` for
JSONP) of objects, each reply with a boolean ``successful`` and, when false, an ``error`` of
the form ``<code>:<params>:<text>`` (or the ``error`` the client put in its own message,
which Faye and we refuse it with), each delivery with a string ``channel``; other
statuses must be 400, 404, 405 or 413 (never 5xx); a websocket frame from the server is
the same JSON array; the server closes a websocket only with 1000, or 1009 after a frame
over the size limit, or 1007 after a text frame that is not UTF-8 (RFC 6455). At the end
the server's log must hold no traceback and no error or critical event, its gauges must
be back to the watchers alone once the fuzzers' clients expired, and its RSS must have
grown by at most ``--rss-slack`` MiB over the second half of the run (bounded caches of
keys, channel parses and expansions fill during the first). Both RSS figures are taken
in a pause (half-way the fuzzers wait 5 s; the settle at the end) with the server
returning the allocator's free memory every 2 s (``--trim-interval 2``): what it holds,
not the high-water mark of the hostile bodies it freed.

One JSON summary goes to stdout (and ``--out``); the exit status is 0 when nothing was
found. A failing run keeps the server's log (its path is in the summary).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import shutil
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, deque
from pathlib import Path
from typing import Any

# The server process and the shared clients' pieces are the tests' own (tests/support/).
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jwt  # noqa: E402
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol  # noqa: E402
from twisted.internet import defer, reactor  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol  # noqa: E402
from twisted.internet.protocol import Protocol  # noqa: E402
from twisted.internet.task import LoopingCall  # noqa: E402

from pandapush.redis import parseRedisHosts  # noqa: E402
from pandapush.tokens import mintToken  # noqa: E402
from tests.support.bayeux import HANDSHAKE  # noqa: E402
from tests.support.process import PandapushProcess, ServerFailedError, seededEnvironment  # noqa: E402
from tests.support.redis import deleteNamespace  # noqa: E402
from tests.support.waiting import sleep  # noqa: E402

APP = "fuzzapp0000000000001"
WATCH_KEY = "PSIDfuzzwatch0000001"
WATCH_SECRET = "fuzz-watcher-secret-0123456789abcdef0123"
ADMIN = ("admin", "fuzz-admin-password")
WATCH_CHANNEL = f"/{APP}/public/fuzz-watch"
ERROR_FORMAT = re.compile(r"^\d{3}:[^:]*:.+", re.DOTALL)
JSONP = re.compile(rb"^/\*\*/([A-Za-z0-9_$.\[\]]+)\((.*)\);$", re.DOTALL)
ALLOWED_STATUSES = {200, 400, 404, 405, 413}
BAD_LOG = re.compile(r"Traceback|Unhandled [Ee]rror|#critical\]|#error\]")
#: The server's --trim-interval: seconds between handing the allocator's free memory back.
TRIM = 2.0

# -- findings ------------------------------------------------------------------------


class Findings:
    """Everything wrong that was seen, with a few examples of each kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < 5:
            examples.append(detail[:600])

    @property
    def total(self) -> int:
        return sum(self.counts.values())


FINDINGS = Findings()


def echoed(error: Any, sent: bytes) -> bool:
    """
    Whether ``error`` is one the client put in its own message. As in Faye, a message
    that arrives with an ``error`` is refused with it (extensions refuse messages that
    way): a client can only refuse itself, with its own words.
    """
    try:
        encoded = json.dumps(error)
    except (TypeError, ValueError):
        return False
    text = sent.decode("utf-8", "replace")
    if isinstance(error, str) and error in text:
        return True  # sent raw (a corrupted body): not escaped as json.dumps would
    return encoded in text or encoded.strip('"') in text or urllib.parse.quote(encoded) in text


def checkBatch(batch: Any, where: str, sent: bytes | deque[bytes]) -> None:
    """
    A Bayeux answer: a list of objects, replies and deliveries well formed. ``sent``: what
    it answers, or the frames it may answer (joined only when a finding or a refusal
    needs them: a websocket keeps many).
    """

    def text() -> bytes:
        return sent if isinstance(sent, bytes) else b"\n".join(sent)

    if not isinstance(batch, list):
        FINDINGS.add("answer not a JSON array", f"{where}: {str(batch)[:200]} <- {text()[:200]!r}")
        return
    for message in batch:
        if not isinstance(message, dict):
            FINDINGS.add("answer element not an object", f"{where}: {message!r} <- {text()[:200]!r}")
        elif "successful" in message:
            if not isinstance(message["successful"], bool):
                FINDINGS.add("successful not a boolean", f"{where}: {message!r}")
            elif (
                not message["successful"]
                and not (isinstance(message.get("error"), str) and ERROR_FORMAT.match(message["error"]))
                and not echoed(message.get("error"), text())
            ):
                FINDINGS.add(
                    "refusal without a well-formed error", f"{where}: {message!r} <- {text()[:200]!r}"
                )
        elif not isinstance(message.get("channel"), str):
            FINDINGS.add("delivery without a channel", f"{where}: {message!r}")


# -- message generation --------------------------------------------------------------


class Mutator:
    """Random and mutated Bayeux messages, batches and bodies; fast and seedable."""

    META = ["/meta/handshake", "/meta/connect", "/meta/subscribe", "/meta/unsubscribe", "/meta/disconnect"]
    FIELDS = [
        "channel",
        "clientId",
        "id",
        "data",
        "subscription",
        "ext",
        "advice",
        "version",
        "supportedConnectionTypes",
        "connectionType",
        "minimumVersion",
        "successful",
        "error",
    ]

    def __init__(self, rng: random.Random, corpus: list[Any], key: tuple[str, str]) -> None:
        self.rng = rng
        self.corpus = corpus
        self.keyId, self.secret = key
        self.clientIds: list[str] = []
        expired = jwt.encode(
            {"keyId": self.keyId, "channel": f"/{APP}/private/x", "sub": True, "exp": int(time.time()) - 60},
            self.secret,
            algorithm="HS256",
        )
        channels = [
            f"/{APP}/private/**",
            f"/{APP}/private/room/1",
            f"/{APP}/presence/room",
            f"/{APP}/public/*",
            f"/{APP}/meta/statistics",
        ]
        self.tokens = [
            mintToken(self.keyId, self.secret, c, pub=True, sub=True, expiresIn=86400) for c in channels
        ] + [
            mintToken(
                self.keyId,
                self.secret,
                f"/{APP}/presence/room",
                sub=True,
                presence={"id": "u1"},
                expiresIn=86400,
            ),
            expired,
            mintToken(self.keyId, "wrong-secret-wrong-secret-wrong-secret", f"/{APP}/private/x", sub=True),
            "eyJhbGciOiJub25lIn0.eyJrZXlJZCI6IngifQ.",
        ]

    # values

    def value(self, depth: int = 0) -> Any:
        r = self.rng.random()
        if r < 0.12:
            return None
        if r < 0.2:
            return self.rng.choice([True, False])
        if r < 0.32:
            return self.rng.choice([0, -1, 1, 2**31, -(2**63), 2**64, 10**30, self.rng.randint(-1000, 1000)])
        if r < 0.4:
            return self.rng.choice([0.5, -0.0, 1e308, -1e-308, 3.14])
        if r < 0.7 or depth > 3:
            return self.text()
        if r < 0.85:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 4))]
        return {self.text(8): self.value(depth + 1) for _ in range(self.rng.randint(0, 4))}

    def text(self, limit: int = 40) -> str:
        r = self.rng.random()
        if r < 0.3:
            return "".join(self.rng.choice(string.printable) for _ in range(self.rng.randint(0, limit)))
        if r < 0.45:
            return "".join(chr(self.rng.randint(0, 0x2FFFF)) for _ in range(self.rng.randint(0, 12)))
        if r < 0.55:
            return self.rng.choice(["", " ", "\x00", "\ud800", "null", "true", "0", "-1", "*", "**", "/"])
        if r < 0.65:
            return "x" * self.rng.choice([100, 201, 1000, 70000])
        if r < 0.8:
            return self.channel()
        return self.rng.choice(self.clientIds) if self.clientIds else "nobody"

    def channel(self) -> str:
        kind = self.rng.choice(["public", "private", "presence", "meta", "nope", "", "*", "**"])
        segments = [
            self.rng.choice(["a", "room", "1", "*", "**", "..", "", "x" * 50, "é", "a b", "%2F", "~-_"])
            for _ in range(self.rng.randint(0, 4))
        ]
        app = self.rng.choice([APP, APP, "otherapp000000000001", "*", "**", "", "meta", "service"])
        base = self.rng.choice([f"/{app}/{kind}", f"/{app}", "/meta", "/service", "", "//", "/meta/connect"])
        return base + "".join("/" + s for s in segments)

    def auth(self) -> Any:
        r = self.rng.random()
        if r < 0.35:
            return {"key": self.keyId, "secret": self.secret}
        if r < 0.75:
            return {"token": self.rng.choice(self.tokens)}
        if r < 0.85:
            return {"key": self.keyId, "secret": self.text(10)}
        return self.value()

    # messages

    def clientId(self) -> Any:
        if self.clientIds and self.rng.random() < 0.85:
            return self.rng.choice(self.clientIds)
        return self.value()

    def template(self, transport: str) -> dict[str, Any]:
        kind = self.rng.choice(
            [
                "handshake",
                "connect",
                "subscribe",
                "subscribe",
                "unsubscribe",
                "publish",
                "publish",
                "disconnect",
            ]
        )
        message: dict[str, Any]
        if kind == "handshake":
            message = {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": [transport, "long-polling"],
            }
        elif kind == "connect":
            message = {"channel": "/meta/connect", "clientId": self.clientId(), "connectionType": transport}
        elif kind in ("subscribe", "unsubscribe"):
            subscription: Any = self.rng.choice(
                [
                    f"/{APP}/public/fuzz/{self.rng.randint(0, 20)}",
                    f"/{APP}/private/room/1",
                    f"/{APP}/private/**",
                    f"/{APP}/presence/room",
                    f"/{APP}/meta/statistics",
                    f"/{APP}/meta/channels",
                    self.channel(),
                ]
            )
            if self.rng.random() < 0.2:
                subscription = [subscription, self.channel()]
            message = {"channel": f"/meta/{kind}", "clientId": self.clientId(), "subscription": subscription}
            if self.rng.random() < 0.7:
                message["ext"] = {"auth": self.auth()}
        elif kind == "publish":
            channel = self.rng.choice(
                [f"/{APP}/public/fuzz/{self.rng.randint(0, 20)}", f"/{APP}/private/room/1", self.channel()]
            )
            message = {"channel": channel, "clientId": self.clientId(), "data": {"fuzz": self.value()}}
            r = self.rng.random()
            if r < 0.6:
                message["ext"] = {"auth": self.auth()}
            elif r < 0.8:
                message["data"]["__auth"] = self.auth()
        else:
            message = {"channel": "/meta/disconnect", "clientId": self.clientId()}
        if self.rng.random() < 0.7:
            message["id"] = self.rng.choice([str(self.rng.randint(0, 10**6)), 0, "0", self.value()])
        return message

    def mutate(self, message: dict[str, Any]) -> dict[str, Any]:
        for _ in range(self.rng.choice([0, 0, 1, 1, 2, 3])):
            r = self.rng.random()
            field = self.rng.choice(self.FIELDS)
            if r < 0.3:
                message[field] = self.value()
            elif r < 0.5:
                message.pop(self.rng.choice(list(message) or ["x"]), None)
            elif r < 0.6 and message:
                old = self.rng.choice(list(message))
                message[self.text(10)] = message.pop(old)
            elif r < 0.75:
                message["channel"] = self.channel()
            elif r < 0.85:
                message["ext"] = self.rng.choice([{"auth": self.auth()}, self.value(), {"auth": None}])
            elif r < 0.92:
                message["advice"] = self.rng.choice(
                    [{"timeout": self.value()}, {"interval": -1}, {"timeout": 10**9}, self.value()]
                )
            else:
                message["clientId"] = self.clientId()
        return message

    def fromCorpus(self) -> Any:
        batch = self.rng.choice(self.corpus)

        def swap(m: Any) -> Any:
            if isinstance(m, dict) and m.get("clientId") == "CLIENT":
                return {**m, "clientId": self.clientId()}
            return m

        return [swap(m) for m in batch] if isinstance(batch, list) else batch

    def batch(self, transport: str) -> tuple[Any, int]:
        """A batch (or a lone message or value) and how many messages it counts for."""
        if self.corpus and self.rng.random() < 0.3:
            batch = self.fromCorpus()
        else:
            batch = [
                self.mutate(self.template(transport)) for _ in range(self.rng.choice([1, 1, 1, 2, 3, 5, 8]))
            ]
            r = self.rng.random()
            if r < 0.05:
                batch = batch[0]  # a lone object is a batch of one
            elif r < 0.07:
                batch = self.value()
        count = len(batch) if isinstance(batch, list) else 1
        return batch, max(1, count)

    def serialize(self, batch: Any) -> bytes:
        """JSON, sometimes NaN, deep nesting, duplicate keys or corrupted bytes."""
        r = self.rng.random()
        if r < 0.02:
            depth = self.rng.choice([100, 1000, 100000])
            return b"[" * depth + b"]" * depth
        try:
            body = json.dumps(batch, allow_nan=True).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError):
            body = b"[]"
        if r < 0.85:
            return body
        mutable = bytearray(body)
        mode = self.rng.random()
        if mode < 0.3 and mutable:
            del mutable[self.rng.randrange(len(mutable)) :]
        elif mode < 0.6 and mutable:
            for _ in range(self.rng.randint(1, 4)):
                mutable[self.rng.randrange(len(mutable))] = self.rng.randrange(256)
        elif mode < 0.8:
            position = self.rng.randrange(len(mutable) + 1)
            mutable[position:position] = self.rng.choice(
                [b"\xff\xfe", b"\xef\xbb\xbf", b",", b"{", b'"', b"\\u"]
            )
        elif self.rng.random() < 0.5:
            mutable[0:0] = b"\xef\xbb\xbf"
        else:
            mutable += b"  "
        return bytes(mutable)

    def learn(self, batch: Any) -> None:
        """Keep the clientIds handshakes gave out, so later messages name live clients."""
        if isinstance(batch, list):
            for message in batch:
                if isinstance(message, dict) and message.get("channel") == "/meta/handshake":
                    clientId = message.get("clientId")
                    if isinstance(clientId, str):
                        self.clientIds.append(clientId)
            if len(self.clientIds) > 500:
                del self.clientIds[:250]


# -- raw HTTP/1.1 keep-alive client ----------------------------------------------------


class RawHTTP(Protocol):
    """One keep-alive connection, one request at a time; responses with length, chunked or close."""

    def __init__(self) -> None:
        self.buffer = b""
        self.waiting: defer.Deferred[tuple[int, dict[bytes, bytes], bytes]] | None = None
        self.closed = False
        self.lost: defer.Deferred[None] = defer.Deferred()

    def request(self, data: bytes) -> defer.Deferred[tuple[int, dict[bytes, bytes], bytes]]:
        self.waiting = defer.Deferred()
        self.transport.write(data)  # type: ignore[union-attr]
        return self.waiting

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        self._parse(False)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True
        self._parse(True)
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            waiting.errback(ConnectionError("connection closed before a response"))
        self.lost.callback(None)

    def _parse(self, atEnd: bool) -> None:
        if self.waiting is None:
            return
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            length = int(headers[b"content-length"])
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = b""
            position = 0
            while True:
                end = rest.find(b"\r\n", position)
                if end < 0:
                    return
                size = int(rest[position:end].split(b";")[0], 16)
                if size == 0:
                    trailer = rest.find(b"\r\n", end + 2)
                    if trailer < 0:
                        return
                    self.buffer = rest[trailer + 2 :]
                    break
                if len(rest) < end + 2 + size + 2:
                    return
                body += rest[end + 2 : end + 2 + size]
                position = end + 2 + size + 2
        else:
            if not atEnd:
                return
            body, self.buffer = rest, b""
        waiting, self.waiting = self.waiting, None
        waiting.callback((status, headers, body))


async def openHTTP(port: int) -> RawHTTP:
    return await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), RawHTTP())


def httpRequest(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# -- the run ----------------------------------------------------------------------------


class Run:
    def __init__(self, options: argparse.Namespace, port: int, fuzzKey: tuple[str, str]) -> None:
        self.options = options
        self.port = port
        self.rng = random.Random(options.seed)
        self.mutator = Mutator(self.rng, drawCorpus(options.corpus, options.seed), fuzzKey)
        self.sent = 0
        self.requests = 0
        self.frames = 0
        self.statuses: Counter[int] = Counter()
        self.closeCodes: Counter[int | None] = Counter()
        self.stopping = False
        #: time.monotonic() until which the fuzzers send nothing new.
        self.pausedUntil = 0.0
        self.watchers: dict[str, dict[int, float]] = {"websocket": {}, "long-polling": {}}
        self.pulses: dict[int, float] = {}
        self.watchEvents: Counter[str] = Counter()

    def budgetLeft(self) -> bool:
        return not self.stopping and self.sent < self.options.messages

    async def pauseIfAsked(self) -> None:
        """Wait out a pause the run asked for (half-way, while RSS is sampled)."""
        while self.pausedUntil > time.monotonic():
            await sleep(self.pausedUntil - time.monotonic())

    # fuzzers

    async def httpFuzzer(self) -> None:
        connection: RawHTTP | None = None
        while self.budgetLeft():
            await self.pauseIfAsked()
            if connection is None or connection.closed:
                connection = await openHTTP(self.port)
            data, sentBody, path, count = self.httpCase()
            self.sent += count
            self.requests += 1
            try:
                status, headers, body = await connection.request(data).addTimeout(30, reactor)
            except defer.TimeoutError:
                FINDINGS.add("HTTP request unanswered for 30 s", repr(data[:300]))
                connection.transport.abortConnection()  # type: ignore[union-attr]
                connection = None
                continue
            except ConnectionError:
                # The server may close after a 400/413 (Connection: close); a fresh one then.
                connection = None
                continue
            self.checkHTTP(status, headers, body, path, sentBody)
            if headers.get(b"connection", b"").lower() == b"close":
                connection.transport.loseConnection()  # type: ignore[union-attr]
                connection = None

    def httpCase(self) -> tuple[bytes, bytes, str, int]:
        rng = self.mutator.rng
        path = rng.choice(["/push", "/push", "/push", "/push/handshake", "/push/connect", "/push/x/y"])
        batch, count = self.mutator.batch(rng.choice(["long-polling", "callback-polling"]))
        body = self.mutator.serialize(batch)
        r = rng.random()
        if r < 0.0002:
            big = b"[" + b'"' + b"x" * (1024 * 1024 + 10) + b'"]'
            return httpRequest("POST", path, big, {"Content-Type": "application/json"}), big, path, 1
        if r < 0.7:
            return httpRequest("POST", path, body, {"Content-Type": "application/json"}), body, path, count
        if r < 0.82:
            form = b"message=" + urllib.parse.quote_from_bytes(body).encode()
            contentType = rng.choice(["application/x-www-form-urlencoded", "text/plain", ""])
            headers = {"Content-Type": contentType} if contentType else {}
            return httpRequest("POST", path, form, headers), body, path, count
        if r < 0.95:
            callback = rng.choice(["cb", "jsonpcallback", "a.b[0]", "$x", "bad-name()", "x" * 300, ""])
            query = urllib.parse.urlencode({"message": body.decode("utf-8", "replace"), "jsonp": callback})
            return httpRequest("GET", f"{path}?{query}"), body, path + " (JSONP)", count
        method = rng.choice(["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
        headers = {"Content-Type": "application/json"}
        if method == "OPTIONS":
            headers.update({"Origin": "http://x.example", "Access-Control-Request-Method": "POST"})
        if method == "HEAD":
            return httpRequest("GET", path, b"", {"Accept": "nothing"}), b"", path, 1
        return httpRequest(method, path, body, headers), body, path, count

    def checkHTTP(
        self, status: int, headers: dict[bytes, bytes], body: bytes, path: str, sent: bytes
    ) -> None:
        self.statuses[status] += 1
        if status >= 500:
            FINDINGS.add(f"HTTP {status}", f"{path}: {body[:300]!r} <- {sent[:300]!r}")
            return
        if status not in ALLOWED_STATUSES:
            FINDINGS.add(f"unexpected HTTP {status}", f"{path}: {body[:300]!r} <- {sent[:300]!r}")
            return
        if status != 200 or not body:
            return  # 400/413 are plain text ("Bad request ..."); an OPTIONS preflight is empty
        jsonp = JSONP.match(body)
        payload = jsonp.group(2) if jsonp else body
        try:
            batch = json.loads(payload)
        except ValueError:
            FINDINGS.add("HTTP 200 with a body that is not JSON", f"{path}: {body[:300]!r}")
            return
        checkBatch(batch, path, sent)
        self.mutator.learn(batch)

    async def wsFuzzer(self) -> None:
        while self.budgetLeft():
            client = FuzzSocket(self)
            try:
                await client.open(self.port)
            except Exception as e:
                FINDINGS.add("websocket could not open", repr(e))
                await sleep(0.5)
                continue
            await client.run()

    # watchers

    async def pulse(self) -> None:
        connection = await openHTTP(self.port)
        auth = base64.b64encode(f"{WATCH_KEY}:{WATCH_SECRET}".encode()).decode()
        seq = 0
        while not self.stopping:
            seq += 1
            body = json.dumps({"seq": seq}).encode()
            self.pulses[seq] = time.monotonic()
            if connection.closed:
                connection = await openHTTP(self.port)
            try:
                status, _, answer = await connection.request(
                    httpRequest(
                        "POST",
                        "/channel" + WATCH_CHANNEL,
                        body,
                        {"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
                    )
                ).addTimeout(10, reactor)
            except Exception as e:
                FINDINGS.add("watch publish failed", repr(e))
                connection = await openHTTP(self.port)
                continue
            if status != 200:
                FINDINGS.add("watch publish refused", f"{status} {answer[:200]!r}")
            await sleep(0.05)

    def received(self, watcher: str, message: dict[str, Any]) -> None:
        if message.get("channel") != WATCH_CHANNEL:
            return
        data = message.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("seq"), int):
            return  # a fuzzer's publish that landed here
        seq = data["seq"]
        got = self.watchers[watcher]
        if seq in got:
            FINDINGS.add("watcher got a message twice", f"{watcher}: {seq}")
        elif got and seq < max(got):
            FINDINGS.add("watcher got messages out of order", f"{watcher}: {seq} after {max(got)}")
        got[seq] = time.monotonic()

    async def longPollWatcher(self) -> defer.Deferred[None]:
        """Subscribes, then polls in the background (the Deferred it returns ends with it)."""
        control = await openHTTP(self.port)
        poll = await openHTTP(self.port)

        async def post(connection: RawHTTP, messages: list[dict[str, Any]], timeout: float) -> list[Any]:
            status, _, body = await connection.request(
                httpRequest(
                    "POST", "/push", json.dumps(messages).encode(), {"Content-Type": "application/json"}
                )
            ).addTimeout(timeout, reactor)
            if status != 200:
                raise AssertionError(f"long-poll watcher got HTTP {status}: {body[:200]!r}")
            return json.loads(body)  # type: ignore[no-any-return]

        (hello,) = await post(control, [{**HANDSHAKE, "supportedConnectionTypes": ["long-polling"]}], 10)
        clientId = hello["clientId"]
        (subscribed,) = await post(
            control, [{"channel": "/meta/subscribe", "clientId": clientId, "subscription": WATCH_CHANNEL}], 10
        )
        assert subscribed["successful"], subscribed
        return defer.ensureDeferred(self._poll(post, poll, clientId))

    async def _poll(self, post: Any, poll: RawHTTP, clientId: str) -> None:
        while not self.stopping:
            try:
                batch = await post(
                    poll,
                    [{"channel": "/meta/connect", "clientId": clientId, "connectionType": "long-polling"}],
                    self.options.server_timeout + 10,
                )
            except Exception as e:
                FINDINGS.add("long-poll watcher failed", repr(e))
                return
            for message in batch:
                if message.get("channel") == "/meta/connect":
                    if not message.get("successful"):
                        FINDINGS.add("long-poll watcher lost its session", repr(message))
                        return
                    self.watchEvents["long-polling connects"] += 1
                else:
                    self.received("long-polling", message)


class _FuzzProtocol(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.owner.opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.owner.frame(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.owner.closed(code, reason)


class _Socket:
    """A websocket to /push; subclasses say what to do with frames."""

    def __init__(self) -> None:
        self.protocol: Any = None
        self.isOpen: defer.Deferred[None] = defer.Deferred()
        self.done: defer.Deferred[None] = defer.Deferred()
        self.next: defer.Deferred[None] | None = None
        self.closeCode: int | None = None

    async def open(self, port: int) -> None:
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/push")
        factory.protocol = _FuzzProtocol
        factory.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
        factory.owner = self  # type: ignore[attr-defined]
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10).connect(factory)
        await self.isOpen.addTimeout(10, reactor)

    def opened(self, protocol: Any) -> None:
        self.protocol = protocol
        self.isOpen.callback(None)

    def frame(self, payload: bytes) -> None:
        raise NotImplementedError

    def closed(self, code: int | None, reason: str | None) -> None:
        self.closeCode = code
        if not self.isOpen.called:
            self.isOpen.errback(ConnectionError(f"closed before opening: {code} {reason}"))
        if not self.done.called:
            self.done.callback(None)
        self._wake()

    def _wake(self) -> None:
        if self.next is not None and not self.next.called:
            self.next.callback(None)


class FuzzSocket(_Socket):
    """Sends mutated frames; after each waits for an answer frame or 20 ms, whichever first."""

    def __init__(self, run: Run) -> None:
        super().__init__()
        self.run_ = run
        self.lastSent = b""
        # The frames a reply may answer: a subscribe that waits on Redis is answered
        # after many more frames have gone (64 were once too few, at 3,000,000 messages).
        self.recent: deque[bytes] = deque(maxlen=2048)
        self.sentInvalidText = False

    def frame(self, payload: bytes) -> None:
        self.run_.frames += 1
        try:
            batch = json.loads(payload)
        except ValueError:
            FINDINGS.add("websocket frame that is not JSON", repr(payload[:300]))
        else:
            # Replies may answer any frame still in flight, not only the last one.
            checkBatch(batch, "websocket", self.recent)
            self.run_.mutator.learn(batch)
        self._wake()

    async def run(self) -> None:
        run, rng = self.run_, self.run_.mutator.rng
        sentTooBig = False
        while run.budgetLeft() and not self.done.called:
            await run.pauseIfAsked()
            if rng.random() < 0.0002:
                body, count, sentTooBig = b'["' + b"x" * (1024 * 1024 + 10) + b'"]', 1, True
            else:
                batch, count = run.mutator.batch("websocket")
                body = run.mutator.serialize(batch)
            if self.protocol.state != self.protocol.STATE_OPEN:
                break  # the server is closing it; its close code is checked below
            self.lastSent = body
            self.recent.append(body)
            self.next = defer.Deferred()
            binary = rng.random() < 0.05
            if not binary:
                try:
                    body.decode("utf-8")
                except UnicodeDecodeError:
                    self.sentInvalidText = True  # RFC 6455: the server must close with 1007
            self.protocol.sendMessage(body, isBinary=binary)
            run.sent += count
            try:
                await self.next.addTimeout(0.02, reactor)
            except defer.TimeoutError:
                pass
        if not self.done.called:
            if self.protocol.state == self.protocol.STATE_OPEN:
                self.protocol.sendClose(1000)
            await self.done.addTimeout(10, reactor)
        run.closeCodes[self.closeCode] += 1
        expected = {1000}
        if sentTooBig:
            expected.add(1009)
        if self.sentInvalidText:
            expected.add(1007)
        if len(expected) > 1:
            # Autobahn fails such a connection by dropping it once its close frame is out;
            # a client still writing may see the drop first.
            expected.add(1006)
        if self.closeCode not in expected:
            FINDINGS.add(
                "server closed a fuzzing websocket", f"code {self.closeCode} after {self.lastSent[:200]!r}"
            )


class WatchSocket(_Socket):
    """The well-behaved websocket subscriber: handshake, subscribe, connect after each connect."""

    def __init__(self, run: Run) -> None:
        super().__init__()
        self.run_ = run
        self.clientId: str | None = None
        self.subscribed: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self.handshaken: defer.Deferred[dict[str, Any]] = defer.Deferred()

    def send(self, messages: list[dict[str, Any]]) -> None:
        self.protocol.sendMessage(json.dumps(messages).encode())

    def frame(self, payload: bytes) -> None:
        for message in json.loads(payload):
            channel = message.get("channel")
            if channel == "/meta/handshake":
                self.handshaken.callback(message)
            elif channel == "/meta/subscribe":
                self.subscribed.callback(message)
            elif channel == "/meta/connect":
                if not message.get("successful"):
                    FINDINGS.add("websocket watcher lost its session", repr(message))
                    return
                self.run_.watchEvents["websocket connects"] += 1
                if not self.run_.stopping:
                    self.connect()
            else:
                self.run_.received("websocket", message)

    def connect(self) -> None:
        self.send([{"channel": "/meta/connect", "clientId": self.clientId, "connectionType": "websocket"}])

    async def start(self, port: int) -> None:
        await self.open(port)
        self.send([HANDSHAKE])
        hello = await self.handshaken.addTimeout(10, reactor)
        self.clientId = hello["clientId"]
        self.send([{"channel": "/meta/subscribe", "clientId": self.clientId, "subscription": WATCH_CHANNEL}])
        assert (await self.subscribed.addTimeout(10, reactor))["successful"]
        self.connect()

    def closed(self, code: int | None, reason: str | None) -> None:
        if not self.run_.stopping:
            FINDINGS.add("websocket watcher's socket closed", f"{code} {reason}")
        super().closed(code, reason)


# -- corpus ----------------------------------------------------------------------------


def drawCorpus(size: int, seed: int) -> list[Any]:
    """``size`` batches drawn from tests/test_router_fuzz.py's Hypothesis strategy."""
    if size <= 0:
        return []
    import hypothesis
    from hypothesis import HealthCheck, Phase, given, settings

    from tests.test_router_fuzz import batches

    corpus: list[Any] = []

    @hypothesis.seed(seed)
    @settings(
        max_examples=size,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(batches)
    def collect(batch: list[Any]) -> None:
        corpus.append(batch)

    collect()
    return corpus


# -- the server ------------------------------------------------------------------------


def rss(pid: int) -> int:
    """Resident set size of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def gauges(port: int) -> dict[str, float]:
    """The server's own gauges (clients, subscriptions, queues...) from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    wanted = (
        "pandapush_clients",
        "pandapush_subscriptions",
        "pandapush_channels",
        "pandapush_queued_messages",
    )
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith(wanted):
            found[name] = float(value)
    return found


def adminRequest(port: int, method: str, path: str, body: Any) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode(),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def startServer(options: argparse.Namespace, workdir: Path) -> PandapushProcess:
    """``python -m twisted pandapush`` from this checkout, its log in ``workdir/server.log``."""
    # The allocator's free memory handed back every TRIM seconds: the RSS samples taken
    # in a pause (half-way, settled) are what the server holds, not its high-water mark.
    args = ["--timeout", str(options.server_timeout), "--trim-interval", str(TRIM)]
    if options.redis_hosts:
        args += ["--redis-hosts", options.redis_hosts, "--redis-namespace", options.redis_namespace]
    server = PandapushProcess(
        *args,
        *options.server_args,
        env=seededEnvironment(APP, WATCH_KEY, WATCH_SECRET, admin=ADMIN, DATABASE="memory"),
        logFile=workdir / "server.log",
    )
    server.workingDirectory = workdir
    server.stopTimeout = 15
    try:
        await server.start()
    except ServerFailedError as e:
        raise SystemExit(str(e)) from None
    return server


def gitCommit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "pandapush"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + ("+uncommitted changes in pandapush/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def main(options: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="pandapush-fuzz-"))
    server = await startServer(options, workdir)
    port, log, pid = server.port, server.logFile, server.pid
    assert log is not None and pid is not None
    summary: dict[str, Any] = {
        "commit": gitCommit(),
        "seed": options.seed,
        "engine": f"redis ({options.redis_hosts})" if options.redis_hosts else "memory",
        "server_log": str(log),
    }
    try:
        key = adminRequest(port, "POST", f"/admin/api/application/{APP}/keys", {"purpose": "fuzzer"})
        started = time.monotonic()
        run = Run(options, port, (key["id"], key["secret"]))
        summary["corpus"] = len(run.mutator.corpus)
        summary["corpus_seconds"] = round(time.monotonic() - started, 1)

        watcher = WatchSocket(run)
        await watcher.start(port)
        polling = await run.longPollWatcher()
        pulsing = defer.ensureDeferred(run.pulse())
        await sleep(1)

        samples: list[tuple[int, int]] = []
        rssStart = rss(pid)
        quietHalf: list[int] = []

        def sample() -> None:
            samples.append((run.sent, rss(pid)))
            if options.progress:
                print(f"{run.sent:>9} messages, RSS {samples[-1][1] / 1024:.1f} MiB", file=sys.stderr)
            if run.sent >= options.messages // 2 and not run.pausedUntil:
                # Half-way, a pause long enough for the server to hand its free memory
                # back: the RSS then is what the second half is compared with.
                run.pausedUntil = time.monotonic() + 2 * TRIM + 1
                reactor.callLater(2 * TRIM + 0.5, lambda: quietHalf.append(rss(pid)))

        sampler = LoopingCall(sample)
        sampler.start(options.sample_every, now=True)
        began = time.monotonic()
        fuzzers = [defer.ensureDeferred(run.httpFuzzer()) for _ in range(options.http)]
        fuzzers += [defer.ensureDeferred(run.wsFuzzer()) for _ in range(options.ws)]
        await defer.gatherResults(fuzzers, consumeErrors=True)
        duration = time.monotonic() - began
        rssEnd = rss(pid)

        # Let the last pulses arrive, then the fuzzers' clients expire (client expiry and held
        # connects), before the last RSS sample.
        await sleep(options.settle)
        run.stopping = True
        await pulsing
        rssSettled = rss(pid)
        summary["gauges_settled"] = settled = gauges(port)
        if settled.get("pandapush_clients") != 2 or settled.get("pandapush_queued_messages"):
            FINDINGS.add("clients or queues left behind", repr(settled))
        sampler.stop()
        watcher.protocol.sendClose(1000)
        await defer.DeferredList([polling], consumeErrors=True)

        # RSS when warmed up (10 % of the messages) and half-way: bounded caches (keys, channel
        # parses and expansions) fill during the first half; the second half must add little.
        warm = next((r for sent, r in samples if sent >= options.messages // 10), rssStart)
        half = (
            quietHalf[0]
            if quietHalf
            else next((r for sent, r in samples if sent >= options.messages // 2), warm)
        )
        lastPulse = max(run.pulses) if run.pulses else 0
        for name, got in run.watchers.items():
            expected = [s for s in run.pulses if s <= lastPulse - 10]  # the last ones may be in flight
            missing = [s for s in expected if s not in got]
            if missing:
                FINDINGS.add(
                    "watcher missed messages",
                    f"{name}: {len(missing)} of {len(expected)}, e.g. {missing[:5]}",
                )
            latencies = sorted(got[s] - run.pulses[s] for s in got if s in run.pulses)
            if latencies and latencies[-1] > options.max_latency:
                FINDINGS.add("watcher got a message late", f"{name}: {latencies[-1]:.2f} s")
            summary[f"watcher_{name}"] = {
                "received": len(got),
                "published": len(expected),
                "missing": len(missing),
                "latency_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
                "latency_max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
            }
        growth = (rssSettled - half) / 1024
        if growth > options.rss_slack:
            FINDINGS.add(
                "RSS grew in the second half",
                f"{half / 1024:.1f} MiB half-way, {rssSettled / 1024:.1f} MiB at the end",
            )
        text = log.read_text(errors="replace")
        bad = [line for line in text.splitlines() if BAD_LOG.search(line)]
        for line in bad:
            FINDINGS.add("server log", line)
        summary.update(
            {
                "messages": run.sent,
                "http_requests": run.requests,
                "websocket_frames_received": run.frames,
                "duration_s": round(duration, 1),
                "messages_per_s": round(run.sent / duration) if duration else None,
                "http_statuses": dict(sorted(run.statuses.items())),
                "websocket_close_codes": {str(k): v for k, v in run.closeCodes.items()},
                "watch_events": dict(run.watchEvents),
                "rss_mib": {
                    "start": round(rssStart / 1024, 1),
                    "warm": round(warm / 1024, 1),
                    "half_way": round(half / 1024, 1),
                    "end_of_fuzzing": round(rssEnd / 1024, 1),
                    "settled": round(rssSettled / 1024, 1),
                    "samples": [(s, round(r / 1024, 1)) for s, r in samples[:: max(1, len(samples) // 20)]],
                },
                "server_log_lines": len(text.splitlines()),
            }
        )
    finally:
        await server.stop()
        if options.redis_hosts:
            summary["redis_keys_deleted"] = await deleteNamespace(
                parseRedisHosts(options.redis_hosts), options.redis_namespace
            )
    summary["findings"] = {
        "total": FINDINGS.total,
        "counts": dict(FINDINGS.counts),
        "examples": FINDINGS.examples,
    }
    if FINDINGS.total == 0 and not options.keep:
        shutil.rmtree(workdir, ignore_errors=True)
        summary["server_log"] = None
    return summary


def parseArguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1_000_000, help="Bayeux messages to send in all")
    parser.add_argument("--seed", type=int, default=1, help="seed of the corpus and the mutator")
    parser.add_argument("--corpus", type=int, default=2000, help="batches drawn from the Hypothesis strategy")
    parser.add_argument("--http", type=int, default=12, help="fuzzing HTTP connections")
    parser.add_argument("--ws", type=int, default=12, help="fuzzing websockets")
    parser.add_argument("--server-timeout", type=float, default=2, help="pandapush --timeout (held connects)")
    parser.add_argument(
        "--settle",
        type=float,
        default=25,
        help="seconds after fuzzing before the last checks (clients expire within 2 x --client-expiry)",
    )
    parser.add_argument(
        "--redis-hosts",
        help="run pandapush on the Redis engine (host:port,...) in a namespace of its own, deleted after",
    )
    parser.add_argument(
        "--rss-slack", type=float, default=10, help="MiB the RSS may grow from half-way to settled"
    )
    parser.add_argument("--max-latency", type=float, default=2.0, help="seconds a watched message may take")
    parser.add_argument("--sample-every", type=float, default=2.0, help="seconds between RSS samples")
    parser.add_argument("--out", help="write the JSON summary here too")
    parser.add_argument("--keep", action="store_true", help="keep the server's directory and log")
    parser.add_argument("--progress", action="store_true", help="print progress to stderr")
    parser.add_argument("server_args", nargs="*", help="more pandapush options, after --")
    options = parser.parse_args(argv)
    options.redis_namespace = f"pp-fuzz-{os.getpid()}-{int(time.time())}"
    return options


def run(argv: list[str]) -> int:
    options = parseArguments(argv)
    outcome: dict[str, Any] = {}

    def finished(summary: dict[str, Any]) -> None:
        outcome.update(summary)

    def failed(failure: Any) -> None:
        outcome["crash"] = failure.getTraceback()

    def begin() -> None:
        d = defer.ensureDeferred(main(options))
        d.addCallbacks(finished, failed)
        d.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]

    reactor.callWhenRunning(begin)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    text = json.dumps(outcome, indent=2)
    print(text)
    if options.out:
        Path(options.out).write_text(text + "\n")
    return 0 if "crash" not in outcome and outcome.get("findings", {}).get("total") == 0 else 1


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
