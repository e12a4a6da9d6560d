"""
Small Bayeux clients for tests, over real sockets: websocket (Autobahn) and long-polling (treq).

The third-party clients (Faye's, in Node and Chromium) are driven from
``tests/test_e2e_faye.py``; these exist to script exact timings (a socket
killed without a goodbye, a poller that just stops) that a real client hides.
Clients that move between the nodes of a cluster are in :mod:`tests.support.failover`.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from tests.support.waiting import eventually

__all__ = [
    "HANDSHAKE",
    "LPClient",
    "RecordingPoller",
    "WSClient",
    "cancelAutobahnTimers",
    "holdConnect",
    "openWebSocket",
]

P = TypeVar("P", bound=WebSocketClientProtocol)

HANDSHAKE = {
    "channel": "/meta/handshake",
    "version": "1.0",
    "supportedConnectionTypes": ["websocket", "long-polling"],
}

# Autobahn's timers of one websocket. Its connectionLost cancels most of them but not the
# close handshake's: a socket that sent a close frame and then lost its connection before
# the answer (the server killed, the test's cleanup tearing everything down) keeps a
# timer in txaio's batched timer for up to closeHandshakeTimeout, and trial reports a
# dirty reactor for a test that ends meanwhile.
_AUTOBAHN_TIMERS = (
    "openHandshakeTimeoutCall",
    "closeHandshakeTimeoutCall",
    "serverConnectionDropTimeoutCall",
    "autoPingPendingCall",
    "autoPingTimeoutCall",
)


def cancelAutobahnTimers(protocol: WebSocketClientProtocol) -> None:
    """Cancel whatever timer ``protocol`` (a websocket whose connection is gone) still has pending."""
    for name in _AUTOBAHN_TIMERS:
        call = getattr(protocol, name, None)
        if call is not None:
            setattr(protocol, name, None)
            try:
                call.cancel()
            except Exception:
                pass  # fired or cancelled already (txaio's calls do not say which)


async def openWebSocket(url: str, protocol: type[P], origin: str | None = None) -> P:
    """A ``protocol`` over a websocket to ``url`` (``ws://host:port/path``), once it is open."""
    address = urlsplit(url)
    assert address.hostname is not None and address.port is not None, url
    factory = WebSocketClientFactory(url, origin=origin)
    factory.protocol = protocol
    connected = cast(P, await TCP4ClientEndpoint(reactor, address.hostname, address.port).connect(factory))
    await connected.is_open  # fired after the protocol's onOpen
    return connected


class _WSProtocol(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.client._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.client._received(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.client.closed = True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        cancelAutobahnTimers(self)


class WSClient:
    """
    A Bayeux client over one websocket; ``messages`` collects deliveries, ``replies`` the rest.

    End it with ``await close()`` (a close handshake) or ``kill()`` (no goodbye at all);
    either way autobahn's timers go with the connection, so a test may end at once.
    """

    def __init__(self, url: str, origin: str | None = None) -> None:
        self.url = url
        self.origin = origin
        self.replies: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.clientId: str | None = None
        self.closed = False
        self.protocol: Any = None
        self._open: defer.Deferred[Any] = defer.Deferred()
        self._nextId = 0

    def _opened(self, protocol: Any) -> None:
        self.protocol = protocol
        self._open.callback(protocol)

    def _received(self, batch: list[dict[str, Any]]) -> None:
        for message in batch:
            (self.replies if "successful" in message else self.messages).append(message)

    async def start(self) -> WSClient:
        host, port = self.url.split("//")[1].split("/")[0].split(":")
        factory = WebSocketClientFactory(self.url.replace("http", "ws", 1) + "/push", origin=self.origin)
        factory.protocol = _WSProtocol
        factory.client = self  # type: ignore[attr-defined]
        await TCP4ClientEndpoint(reactor, host, int(port)).connect(factory)
        await self._open
        reply = await self.call(HANDSHAKE)
        self.clientId = reply["clientId"]
        await self.call({"channel": "/meta/connect", "connectionType": "websocket"})
        return self

    async def call(self, message: dict[str, Any]) -> dict[str, Any]:
        self._nextId += 1
        message = {**message, "id": str(self._nextId)}
        if self.clientId is not None:
            message["clientId"] = self.clientId
        self.protocol.sendMessage(json.dumps([message]).encode())
        assert await eventually(lambda: any(r.get("id") == message["id"] for r in self.replies))
        return next(r for r in self.replies if r.get("id") == message["id"])

    async def close(self, timeout: float = 5.0) -> None:
        """A websocket close handshake (no Bayeux goodbye); the connection dropped if it takes too long."""
        if self.protocol is None or self.closed:
            return
        self.protocol.sendClose()
        if not await eventually(lambda: self.closed, timeout=timeout):
            self.kill()
            await eventually(lambda: self.closed, timeout=timeout)

    def kill(self) -> None:
        """Drop the TCP connection without a Bayeux goodbye or a close frame."""
        self.protocol.transport.abortConnection()


class LPClient:
    """A long-polling Bayeux client that keeps polling until stopped."""

    def __init__(self, url: str) -> None:
        self.push = url + "/push"
        self.messages: list[dict[str, Any]] = []
        self.clientId: str | None = None
        self.polling = False
        self._loop: defer.Deferred[None] | None = None

    async def post(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = await treq.post(
            self.push,
            data=json.dumps(messages).encode(),
            headers=Headers({"Content-Type": ["application/json"]}),
            persistent=False,
        )
        replies: list[dict[str, Any]] = json.loads(await response.content())
        return replies

    async def start(self) -> LPClient:
        (reply,) = await self.post([HANDSHAKE])
        self.clientId = reply["clientId"]
        self.polling = True
        self._loop = defer.ensureDeferred(self._poll())
        return self

    async def _poll(self) -> None:
        while self.polling:
            replies = await self.post(
                [{"channel": "/meta/connect", "clientId": self.clientId, "connectionType": "long-polling"}]
            )
            self.messages.extend(r for r in replies if "successful" not in r)

    async def call(self, message: dict[str, Any]) -> dict[str, Any]:
        (reply,) = await self.post([{**message, "clientId": self.clientId}])
        return reply

    def vanish(self) -> None:
        """Stop polling, as a closed laptop would (the held request is left to finish)."""
        self.polling = False

    async def stop(self) -> None:
        self.polling = False
        if self._loop is not None:
            await self._loop


class RecordingPoller(LPClient):
    """A long-polling client that keeps the replies to its connects, and stops when told to."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.connectReplies: list[dict[str, Any]] = []
        self.hops: list[str] = [url]

    async def _poll(self) -> None:
        turn = 0
        while self.polling:
            self.push = self.hops[turn % len(self.hops)] + "/push"
            turn += 1
            replies = await self.post(
                [{"channel": "/meta/connect", "clientId": self.clientId, "connectionType": "long-polling"}]
            )
            self.messages.extend(r for r in replies if "successful" not in r)
            self.connectReplies.extend(r for r in replies if "successful" in r)
            if any(r.get("advice", {}).get("reconnect") == "none" for r in replies):
                self.polling = False  # as a Bayeux client does


def holdConnect(client: WSClient) -> None:
    """Send the connect a websocket client always has waiting (the test client sends one only at start)."""
    message = {
        "channel": "/meta/connect",
        "clientId": client.clientId,
        "connectionType": "websocket",
        "id": "held",
    }
    client.protocol.sendMessage(json.dumps([message]).encode())
