"""The delivery sink contract (tests/sink_suite.py) on each sink: websocket, event stream, held connect.

The sockets run over real loopback connections, as in production: the ``/push``
resource on a twisted.web Site, an Autobahn client for the websocket, an HTTP client
reading the event stream. The router in front of them is a stand-in that hands the
test the sockets the transports give it and answers batches when the test says.
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.internet import defer, reactor
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from twisted.web.server import Site

from pandapush.bayeux import json as wire
from pandapush.bayeux.context import MessageContext
from pandapush.engines.memory import MemoryEngine
from pandapush.interfaces import IClientSocket
from pandapush.router.pipeline import Extensions
from pandapush.router.sessions import HeldConnect, HeldConnects
from pandapush.transports.resource import BayeuxResource
from tests.sink_suite import CHANNEL, ClientSocketTestsMixin, DeliverySinkTestsMixin
from tests.support.bayeux import openWebSocket
from tests.support.ports import listenLocally, portNumber
from tests.support.waiting import eventually


class StandInRouter:
    """What the transports call on the router, recording the sockets and batches they hand it."""

    draining = False

    def __init__(self) -> None:
        self.sockets: list[IClientSocket] = []
        self.batches: list[defer.Deferred[list[Any]]] = []

    def process(
        self, messages: Any, context: MessageContext, socket: Any = None
    ) -> defer.Deferred[list[Any]]:
        if socket is not None and socket not in self.sockets:
            self.sockets.append(socket)
        batch: defer.Deferred[list[Any]] = defer.Deferred()
        self.batches.append(batch)
        return batch

    def processNow(
        self, messages: Any, context: MessageContext, socket: Any = None
    ) -> defer.Deferred[list[Any]]:
        return self.process(messages, context, socket)

    def bindSocket(self, clientId: str, socket: IClientSocket) -> defer.Deferred[bool]:
        self.sockets.append(socket)
        return defer.succeed(True)

    def socketClosed(self, socket: IClientSocket) -> None:
        pass


class _Peer:
    """What a sink's peer has received so far, decoded, and whether its connection ended."""

    def __init__(self, client: Any = None) -> None:
        self.client = client
        self.messages: list[dict[str, Any]] = []
        self.closed: defer.Deferred[None] = defer.Deferred()

    def ended(self) -> None:
        if not self.closed.called:
            self.closed.callback(None)

    def onChannel(self) -> int:
        return sum(1 for m in self.messages if m.get("channel") == CHANNEL)


async def _received(peer: _Peer, count: int) -> list[dict[str, Any]]:
    if not await eventually(lambda: peer.onChannel() >= count):
        raise AssertionError(f"the peer received {peer.messages!r}, not {count} messages on {CHANNEL}")
    return peer.messages


class _SocketCase(TestCase):
    """The ``/push`` resource of a stand-in router, listening on a loopback port."""

    def setUp(self) -> None:
        self.router = StandInRouter()
        self.resource = BayeuxResource(self.router, reactor)  # type: ignore[arg-type]
        self.port = listenLocally(Site(self.resource))
        self.addCleanup(self.port.stopListening)
        self.peers: dict[Any, _Peer] = {}

    async def received(self, sink: Any, count: int) -> list[dict[str, Any]]:
        return await _received(self.peers[sink], count)

    async def peerClosed(self, sink: Any) -> None:
        await self.peers[sink].closed

    async def _socket(self, known: int) -> Any:
        """The socket the transport hands the router after the ``known`` ones."""
        if not await eventually(lambda: len(self.router.sockets) > known):
            raise AssertionError("the transport handed the router no socket")
        return self.router.sockets[-1]


class _WebSocketPeer(WebSocketClientProtocol):
    record: _Peer  # (not ``peer``: autobahn's, the peer's address)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.record.messages.extend(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.record.ended()


class WebSocketSinkTests(_SocketCase, ClientSocketTestsMixin):
    """The websocket (``BayeuxWebSocketProtocol``)."""

    endsClientOnClose = True
    carriesReplies = True

    async def makeSink(self) -> Any:
        known = len(self.router.sockets)
        client = await openWebSocket(f"ws://127.0.0.1:{portNumber(self.port)}/push", _WebSocketPeer)
        client.record = peer = _Peer(client)

        async def close() -> None:
            if not peer.closed.called:
                assert client.transport is not None
                client.transport.loseConnection()
                await peer.closed

        self.addCleanup(close)
        # The transport hands the router its socket with the first batch over it.
        client.sendMessage(b'[{"channel":"/meta/connect"}]')
        sink = await self._socket(known)
        self.router.batches[-1].callback([])
        self.peers[sink] = peer
        return sink

    async def startBatch(self, sink: Any) -> defer.Deferred[list[Any]] | None:
        batches = len(self.router.batches)
        self.peers[sink].client.sendMessage(b'[{"channel":"/meta/disconnect"}]')
        if not await eventually(lambda: len(self.router.batches) > batches):
            raise AssertionError("the batch never reached the router")
        return self.router.batches[-1]


class _StreamPeer(Protocol):
    """Reads an event stream's body: each ``data:`` event is a JSON array of messages."""

    def __init__(self, peer: _Peer) -> None:
        self.peer = peer
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        *events, self.buffer = self.buffer.split(b"\r\n\r\n")
        for event in events:
            if event.startswith(b"data: "):
                self.peer.messages.extend(json.loads(event[len(b"data: ") :]))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.peer.ended()


class EventStreamSinkTests(_SocketCase, ClientSocketTestsMixin):
    """The event stream (``EventStream``)."""

    endsClientOnClose = False
    carriesReplies = False

    def setUp(self) -> None:
        super().setUp()
        # Ends the streams still open, so their requests finish before the port closes.
        self.addCleanup(self.resource.stop)

    async def makeSink(self) -> Any:
        known = len(self.router.sockets)
        url = f"http://127.0.0.1:{portNumber(self.port)}/push/client{len(self.peers)}"
        response = await Agent(reactor).request(
            b"GET", url.encode(), Headers({b"Accept": [b"text/event-stream"]})
        )
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/event-stream"])
        peer = _Peer()
        response.deliverBody(_StreamPeer(peer))
        sink = await self._socket(known)
        self.peers[sink] = peer
        return sink

    async def startBatch(self, sink: Any) -> defer.Deferred[list[Any]] | None:
        return None  # the client posts its messages, and reads their replies, elsewhere


class HeldConnectSinkTests(DeliverySinkTestsMixin, TestCase):
    """A held long-poll ``/meta/connect`` (``HeldConnect``): answered with its first delivery."""

    persistent = False

    def setUp(self) -> None:
        self.clock = Clock()
        self.engine = MemoryEngine(self.clock, timeout=30, expiry=10)
        # As the router's with no extension: replies through no hook.
        self.connects = HeldConnects(self.engine, Extensions())
        self.responses: dict[HeldConnect, list[list[Any]]] = {}

    async def makeSink(self) -> Any:
        clientId = await self.engine.createClient()
        reply = {"channel": "/meta/connect", "clientId": clientId, "successful": True}
        held = self.connects.hold(clientId, reply, MessageContext("long-polling"), None, attached=True)
        self.engine.attach(clientId, held)
        responses: list[list[Any]] = []
        self.responses[held] = responses
        held.deferred.addCallback(responses.append)
        return held

    async def received(self, sink: Any, count: int) -> list[dict[str, Any]]:
        responses = self.responses[sink]
        # The long-poll response: answered at once by the delivery, and only once.
        self.assertEqual(len(responses), 1)
        messages: list[dict[str, Any]] = json.loads(wire.encodeReplies(responses[0]))
        self.assertEqual(messages[0]["channel"], "/meta/connect")
        self.assertGreaterEqual(sum(1 for m in messages if m.get("channel") == CHANNEL), count)
        return messages

    async def test_releasedOnceAnswered(self) -> None:
        """Answered, the connect is no longer held, and the engine no longer delivers to it."""
        held = await self.makeSink()
        self.assertIs(self.connects.get(held.clientId), held)
        held.deliver([])
        self.assertIsNone(self.connects.get(held.clientId))
        self.assertEqual(len(self.connects), 0)
