"""A real HTTP server in the test's reactor receiving webhooks, as a backend would.

``receiver = await WebhookReceiver.start()``; point an endpoint at ``receiver.url``. It
keeps every request (headers and raw body) it answered with 2xx in ``received``, answers
``status`` (200 by default), or, with ``hang``, keeps the request open without an answer
(a stuck backend). ``stop()`` stops listening (a backend that is down: connections are
refused); ``start(port=...)`` listens again on the same port.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from pandapush.webhooks.sender import sign

__all__ = ["Received", "WebhookReceiver"]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    path: str
    payload: Any = field(default=None)

    def signedWith(self, secret: str) -> bool:
        return self.headers.get("x-pandapush-signature") == sign(secret, self.body)


class _Hook(Resource):
    isLeaf = True

    def __init__(self, owner: WebhookReceiver) -> None:
        super().__init__()
        self.owner = owner

    def render_POST(self, request: Any) -> Any:
        owner = self.owner
        body = request.content.read()
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        received = Received(headers, body, request.path.decode(), json.loads(body))
        owner.attempts.append(received)
        if owner.hang:
            owner.hung.append(request)
            return NOT_DONE_YET
        request.setResponseCode(owner.status)
        if 200 <= owner.status < 300:
            owner.received.append(received)
        return b"ok"


class _Site(Site):
    """Keeps its connections, so a receiver going down drops the kept-alive ones too."""

    def __init__(self, resource: Any) -> None:
        super().__init__(resource)
        self.noisy = False
        self.open: list[Any] = []

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        self.open.append(protocol)
        return protocol


class WebhookReceiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.attempts: list[Received] = []
        self.hung: list[Any] = []
        self.status = 200
        self.hang = False
        self.port: Any = None
        self.portNumber = 0

    @classmethod
    async def start(cls, port: int = 0) -> WebhookReceiver:
        receiver = cls()
        await receiver.listen(port)
        return receiver

    async def listen(self, port: int | None = None) -> None:
        self.site = _Site(_Hook(self))
        self.port = await TCP4ServerEndpoint(reactor, port or self.portNumber, interface="127.0.0.1").listen(
            self.site
        )
        self.portNumber = self.port.getHost().port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.portNumber}/hook"

    async def stop(self) -> None:
        for request in self.hung:
            if not request.finished and not request._disconnected:
                request.channel.transport.abortConnection()
        self.hung.clear()
        if self.port is not None:
            port, self.port = self.port, None
            await defer.maybeDeferred(port.stopListening)
            for protocol in self.site.open:
                transport = getattr(protocol, "transport", None)
                if transport is not None:
                    transport.abortConnection()
            self.site.open.clear()

    def events(self) -> list[dict[str, Any]]:
        """Every event received (2xx), in the order received."""
        return [event for r in self.received for event in r.payload["events"]]
