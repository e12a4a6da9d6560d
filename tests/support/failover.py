"""
Bayeux clients that move between the nodes of a cluster, as real clients behind a balancer do.

- :class:`FailoverWS`: a websocket client that keeps a ``/meta/connect`` outstanding,
  handshakes (and subscribes) again when advised to, and when its socket closes opens one
  to the next node of its list with the same clientId (the session lives in Redis).
- :class:`FailoverPoller`: a long-poll client whose requests go to one node until one
  fails, then to the next, with the same clientId; it too handshakes (and subscribes)
  again when advised to.
- :class:`AlternatingPoller`: a long-poll client whose every request goes to the next
  node in turn (a balancer with no affinity at all).

Because they handshake again exactly when a real client would, their ``handshakes``
count is a check on the server: a session lost across a failover or a drain shows as a
second handshake. ``deliver`` and ``note`` are where a subclass records more (the fault
benchmark, ``bench/faults.py``, keeps arrival times).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Self

import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from tests.support.bayeux import HANDSHAKE, cancelAutobahnTimers
from tests.support.waiting import sleep

__all__ = [
    "AlternatingPoller",
    "FailoverPoller",
    "FailoverWS",
    "FailoverWSProtocol",
    "NoReplyError",
    "dataOn",
    "subscribeMessage",
]

Message = dict[str, Any]


class NoReplyError(AssertionError):
    """A message of a test's client went unanswered (an AssertionError: the test fails saying so)."""


def subscribeMessage(channel: str, ext: dict[str, Any] | None = None) -> Message:
    """``/meta/subscribe`` to ``channel`` (``ext``: e.g. a token); the clients repeat it after a handshake."""
    message: Message = {"channel": "/meta/subscribe", "subscription": channel}
    if ext is not None:
        message["ext"] = ext
    return message


def dataOn(client: Any, channel: str) -> list[Any]:
    """The ``data`` of every message ``client`` received on ``channel``, in order of arrival."""
    return [m["data"] for m in client.messages if m.get("channel") == channel]


def _refusedForGood(reply: Message) -> bool:
    """A refusal that asking again will not change (not the session gone, not a timeout or a 5xx)."""
    error = str(reply.get("error", ""))
    return reply.get("successful") is False and error[:1] == "4" and not error.startswith("401")


class FailoverWSProtocol(WebSocketClientProtocol):
    """One socket of a :class:`FailoverWS` (a subclass may note more of the handshake)."""

    def onOpen(self) -> None:
        self.factory.owner._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.owner._batch(self, json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.owner._closed(self, code)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        cancelAutobahnTimers(self)


class FailoverWS:
    """
    A websocket Bayeux client of the nodes ``urls``, named ``name`` in its message ids and
    failure messages. ``subscriptions`` are ``/meta/subscribe`` messages made after every
    handshake (``subscribe()`` adds the ones that succeed); ``failover=False`` (or
    ``stopped``) keeps it gone when its socket closes. ``messages`` collects deliveries,
    ``closes`` the close codes, ``events`` what happened; ``handshakes``/``failovers`` count.
    """

    protocolClass: type[WebSocketClientProtocol] = FailoverWSProtocol

    def __init__(
        self,
        urls: Sequence[str],
        name: str = "",
        subscriptions: Iterable[Message] = (),
        failover: bool = True,
        reactor: Any = None,
    ) -> None:
        self.urls = list(urls)
        self.name = name
        self.subscriptions = list(subscriptions)
        self.failover = failover
        self.reactor: Any = reactor or _reactor
        self.index = 0
        self.clientId: str | None = None
        self.protocol: Any = None
        self.stopped = False
        self.messages: list[Message] = []
        self.replies: list[Message] = []
        self.closes: list[tuple[float, int | None]] = []
        self.events: list[tuple[float, str]] = []
        self.handshakes = 0
        self.failovers = 0
        self._nextId = 0
        self._pending: dict[str, defer.Deferred[Message]] = {}
        self._opening: defer.Deferred[Any] | None = None
        self._retry: IDelayedCall | None = None
        self._recovering = False

    @property
    def url(self) -> str:
        """The node the client uses now."""
        return self.urls[self.index]

    @property
    def connected(self) -> bool:
        return self.protocol is not None

    def now(self) -> float:
        return float(self.reactor.seconds())

    def note(self, what: str) -> None:
        """Record an event (``handshake``, ``reopened on <url>``) with its time."""
        self.events.append((self.now(), what))

    def deliver(self, message: Message) -> None:
        """A message from the server that is not a reply."""
        self.messages.append(message)

    async def start(self) -> Self:
        await self._open()
        await self._handshake()
        return self

    async def call(self, message: Message, timeout: float = 5.0) -> Message:
        """Send ``message`` (an id and the clientId added); its reply, ``NoReplyError`` after ``timeout``."""
        self._nextId += 1
        messageId = f"{self.name}-{self._nextId}"
        message = {**message, "id": messageId}
        if self.clientId is not None and message["channel"] != "/meta/handshake":
            message["clientId"] = self.clientId
        waiting: defer.Deferred[Message] = defer.Deferred()
        self._pending[messageId] = waiting
        waiting.addTimeout(timeout, self.reactor)
        self._send([message])
        try:
            return await waiting
        except defer.TimeoutError:
            raise NoReplyError(
                f"{self.name}: no reply to {message['channel']} from {self.url} in {timeout} s"
            ) from None
        finally:
            self._pending.pop(messageId, None)

    async def subscribe(self, subscription: str, ext: dict[str, Any] | None = None) -> Message:
        """Subscribe now, and again after every later handshake if this succeeds."""
        message = subscribeMessage(subscription, ext)
        reply = await self.call(message)
        if reply.get("successful"):
            self.subscriptions.append(message)
        return reply

    async def disconnect(self) -> Message:
        """``/meta/disconnect``: the session ends here (no handshake again, no failover)."""
        self.stopped = True
        return await self.call({"channel": "/meta/disconnect"})

    def recover(self) -> None:
        """Handshake and subscribe again (one recovery at a time)."""
        if self._recovering or self.stopped:
            return
        self._recovering = True

        def done(_: object) -> None:
            self._recovering = False

        defer.ensureDeferred(self._handshake()).addBoth(done)

    def stop(self) -> None:
        """Gone for good: no failover, no retry, the socket dropped."""
        self.stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self.protocol is not None:
            self.protocol.transport.abortConnection()

    async def _open(self) -> None:
        host, port = self.url.split("//")[1].split(":")
        factory = WebSocketClientFactory(f"ws://{host}:{port}/push")
        factory.protocol = self.protocolClass
        factory.owner = self  # type: ignore[attr-defined]
        self._opening = defer.Deferred()
        self._opening.addTimeout(3, self.reactor)
        await TCP4ClientEndpoint(self.reactor, host, int(port), timeout=2).connect(factory)
        await self._opening

    def _opened(self, protocol: Any) -> None:
        self.protocol = protocol
        if self._opening is not None and not self._opening.called:
            self._opening.callback(protocol)

    def _send(self, messages: list[Message]) -> None:
        if self.protocol is not None:
            self.protocol.sendMessage(json.dumps(messages).encode())

    def _connect(self) -> None:
        self._retry = None
        if not self.stopped and self.clientId is not None:
            self._send(
                [{"channel": "/meta/connect", "clientId": self.clientId, "connectionType": "websocket"}]
            )

    def _batch(self, protocol: Any, batch: list[Message]) -> None:
        for message in batch:
            pending = self._pending.get(str(message.get("id"))) if "id" in message else None
            if pending is not None:
                if not pending.called:
                    pending.callback(message)
            elif message.get("channel") == "/meta/connect" and "successful" in message:
                # The answer to the connect kept outstanding (sent without an id).
                if protocol is not self.protocol or self.stopped:
                    continue
                if message["successful"]:
                    self._connect()
                elif (message.get("advice") or {}).get("reconnect") == "handshake":
                    self.recover()
                elif self._retry is None:
                    self._retry = self.reactor.callLater(0.2, self._connect)
            elif "successful" in message:
                self.replies.append(message)
            else:
                self.deliver(message)

    async def _handshake(self) -> None:
        while not self.stopped:
            self.clientId = None
            try:
                reply = await self.call(HANDSHAKE, timeout=3)
            except Exception:
                reply = {}
            if reply.get("successful"):
                self.clientId = reply["clientId"]
                self.handshakes += 1
                self.note("handshake")
                self._connect()
                if await self._resubscribe():
                    return
            await sleep(0.2, self.reactor)

    async def _resubscribe(self) -> bool:
        """Make ``subscriptions`` again; False when the session went meanwhile (handshake again)."""
        for subscription in self.subscriptions:
            while not self.stopped and self.protocol is not None:
                try:
                    reply = await self.call(subscription)
                except Exception:
                    reply = {}
                if reply.get("successful") or _refusedForGood(reply):
                    break
                if str(reply.get("error", "")).startswith("401"):
                    return False  # "Unknown client": the session is gone (Redis came back empty)
                await sleep(0.2, self.reactor)
        return True

    def _closed(self, protocol: Any, code: int | None) -> None:
        if protocol is not self.protocol:
            return
        self.closes.append((self.now(), code))
        self.protocol = None
        if self.failover and not self.stopped:
            defer.ensureDeferred(self._failover())

    async def _failover(self) -> None:
        while not self.stopped:
            self.index = (self.index + 1) % len(self.urls)
            try:
                await self._open()
            except Exception:
                await sleep(0.1, self.reactor)
                continue
            self.failovers += 1
            self.note(f"reopened on {self.url}")
            # Same session on the new node; an unknown clientId gets handshake advice.
            self._connect()
            return


class _Poller:
    """What the long-poll clients share: JSON POSTs to ``/push`` of a node, deliveries, refusals."""

    def __init__(self, urls: Sequence[str], name: str = "", reactor: Any = None) -> None:
        self.urls = list(urls)
        self.name = name
        self.reactor: Any = reactor or _reactor
        self.clientId: str | None = None
        self.messages: list[Message] = []
        #: Replies with ``successful: false`` (refusals, "Unknown client").
        self.failures: list[Message] = []
        self.events: list[tuple[float, str]] = []
        self._request: defer.Deferred[Any] | None = None

    def now(self) -> float:
        return float(self.reactor.seconds())

    def note(self, what: str) -> None:
        self.events.append((self.now(), what))

    def deliver(self, message: Message) -> None:
        self.messages.append(message)

    def _nextUrl(self) -> str:
        raise NotImplementedError

    async def post(self, messages: list[Message], timeout: float = 15) -> list[Message]:
        """One request to the node ``_nextUrl()`` picks; its replies (``stop`` may cancel it)."""
        self._request = treq.post(
            self._nextUrl() + "/push",
            data=json.dumps(messages).encode(),
            headers=Headers({b"Content-Type": [b"application/json"]}),
            persistent=False,
            timeout=timeout,
            reactor=self.reactor,
        )
        try:
            response = await self._request
            self._request = response.content()
            body = await self._request
        finally:
            self._request = None
        replies: list[Message] = json.loads(body)
        return replies

    def _connectMessage(self) -> Message:
        return {"channel": "/meta/connect", "clientId": self.clientId, "connectionType": "long-polling"}


class AlternatingPoller(_Poller):
    """A long-poll client whose every request goes to the next node of ``urls`` in turn."""

    def __init__(self, urls: Sequence[str], name: str = "", reactor: Any = None) -> None:
        super().__init__(urls, name, reactor)
        self.requests = 0
        self.nodesUsed: list[str] = []
        self.polling = False
        self._loop: defer.Deferred[None] | None = None

    def _nextUrl(self) -> str:
        url = self.urls[self.requests % len(self.urls)]
        self.requests += 1
        self.nodesUsed.append(url)
        return url

    async def start(self, subscription: str) -> Self:
        (reply,) = await self.post([HANDSHAKE])
        self.clientId = reply["clientId"]
        (reply,) = await self.post([{**subscribeMessage(subscription), "clientId": self.clientId}])
        assert reply["successful"], reply
        self.polling = True
        self._loop = defer.ensureDeferred(self._poll())
        return self

    async def _poll(self) -> None:
        while self.polling:
            for reply in await self.post([self._connectMessage()]):
                if "successful" not in reply:
                    self.deliver(reply)
                elif not reply["successful"]:
                    self.failures.append(reply)

    async def stop(self) -> None:
        """Stop after the request under way (held at most the server's --timeout)."""
        self.polling = False
        if self._loop is not None:
            await self._loop


class FailoverPoller(_Poller):
    """
    A long-poll client behind a balancer with affinity: one request at a time, each to the
    current node of ``urls``; a request that fails (refused, reset, timed out) moves it to
    the next node with the same clientId. A connect refused with handshake advice makes it
    handshake and make its ``subscriptions`` again, as a real client does.
    ``requestFailures`` records the failed requests, ``connectReplies`` every connect's answer.
    """

    def __init__(
        self,
        urls: Sequence[str],
        name: str = "",
        subscriptions: Iterable[Message] = (),
        connectTimeout: float = 45,
        reactor: Any = None,
    ) -> None:
        super().__init__(urls, name, reactor)
        self.subscriptions = list(subscriptions)
        self.connectTimeout = connectTimeout
        self.index = 0
        self.handshakes = 0
        self.stopped = False
        self.requestFailures: list[tuple[float, str]] = []
        self.connectReplies: list[tuple[float, bool, dict[str, Any]]] = []
        self._loop: defer.Deferred[None] | None = None

    @property
    def url(self) -> str:
        return self.urls[self.index]

    def _nextUrl(self) -> str:
        return self.url

    def _failed(self, reason: BaseException) -> None:
        self.requestFailures.append((self.now(), type(reason).__name__))
        if len(self.urls) > 1:
            self.index = (self.index + 1) % len(self.urls)
            self.note(f"moved to {self.url}")

    async def start(self) -> Self:
        await self._handshake()
        self._loop = defer.ensureDeferred(self._poll())
        return self

    async def _handshake(self) -> None:
        while not self.stopped:
            try:
                (reply,) = await self.post([HANDSHAKE])
                if reply.get("successful"):
                    self.clientId = reply["clientId"]
                    self.handshakes += 1
                    self.note("handshake")
                    for subscription in self.subscriptions:
                        (reply,) = await self.post([{**subscription, "clientId": self.clientId}])
                        if not reply.get("successful"):
                            self.failures.append(reply)
                            break
                    else:
                        return
            except Exception as e:
                if self.stopped:
                    return
                self._failed(e)
            await sleep(0.2, self.reactor)

    async def _poll(self) -> None:
        while not self.stopped:
            try:
                replies = await self.post([self._connectMessage()], timeout=self.connectTimeout)
            except Exception as e:
                if not self.stopped:
                    self._failed(e)
                    await sleep(0.05, self.reactor)
                continue
            for reply in replies:
                if reply.get("channel") == "/meta/connect" and "successful" in reply:
                    advice = reply.get("advice") or {}
                    self.connectReplies.append((self.now(), bool(reply["successful"]), advice))
                    if not reply["successful"]:
                        self.failures.append(reply)
                        if advice.get("reconnect") == "handshake":
                            await self._handshake()
                        else:
                            await sleep(0.2, self.reactor)
                elif "successful" in reply:
                    if not reply["successful"]:
                        self.failures.append(reply)
                else:
                    self.deliver(reply)

    async def stop(self) -> None:
        """Stop at once: the request under way is cancelled."""
        self.stopped = True
        if self._request is not None:
            self._request.cancel()
        if self._loop is not None:
            await self._loop
