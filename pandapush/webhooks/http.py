"""Sending one webhook request: checked addresses, a deadline, no redirects, the body ignored.

Twisted's ``Agent`` with an endpoint factory of our own (:class:`CheckedEndpoints`): for
every new connection it resolves the URL's host, refuses the request if any address of
the answer is one this endpoint may not reach (:class:`~pandapush.webhooks.addresses.AddressPolicy`),
and connects to the address it checked, wrapping TLS around it with the URL's host name
(server name indication and certificate check as usual; the ``Host`` header is the URL's
too). A name that resolves elsewhere by the time we connect (DNS rebinding) gets no
second, unchecked lookup.

``Agent`` follows no redirect (a 3xx is an answer like any other non-2xx). The request has
a deadline for its answer's status line; the answer's body is read and dropped (so the
connection can be reused) within the same deadline and at most 64 KB of it.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, FileBodyProducer, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

from pandapush.webhooks.addresses import AddressPolicy, Resolver

__all__ = ["AddressRefusedError", "CheckedEndpoints", "WebhookPoster"]

#: Bytes of an answer's body read (and dropped) before the connection is closed.
MAX_ANSWER = 64 * 1024


class AddressRefusedError(Exception):
    """The host resolves to an address this endpoint may not reach; the message says which and why."""


@implementer(IStreamClientEndpoint)
class CheckedEndpoint:
    def __init__(self, owner: CheckedEndpoints, scheme: bytes, host: str, port: int) -> None:
        self.owner = owner
        self.scheme = scheme
        self.host = host
        self.port = port

    def connect(self, factory: Any) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory: Any) -> Any:
        owner = self.owner
        literal = owner.policy.literal(self.host)
        addresses = [literal] if literal is not None else await owner.resolve(self.host, self.port)
        if not addresses:
            raise DNSLookupError(self.host)
        for address in addresses:
            refusal = owner.policy.refusal(address, owner.allowPrivate)
            if refusal is not None:
                raise AddressRefusedError(f"{self.host}: {refusal}")
        address = addresses[0]
        kind = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        endpoint: Any = kind(owner.reactor, address, self.port, timeout=owner.timeout)
        if self.scheme == b"https":
            endpoint = wrapClientTLS(
                owner.tls.creatorForNetloc(self.host.encode("idna"), self.port), endpoint
            )
        return await endpoint.connect(factory)


@implementer(IAgentEndpointFactory)
class CheckedEndpoints:
    """An ``Agent``'s endpoints, each checking the addresses it connects to."""

    def __init__(
        self,
        reactor: Any,
        policy: AddressPolicy,
        resolve: Resolver,
        allowPrivate: bool,
        timeout: float,
        tls: IPolicyForHTTPS | None = None,
    ) -> None:
        self.reactor = reactor
        self.policy = policy
        self.resolve = resolve
        self.allowPrivate = allowPrivate
        self.timeout = timeout
        self.tls = tls or BrowserLikePolicyForHTTPS()

    def endpointForURI(self, uri: Any) -> CheckedEndpoint:
        return CheckedEndpoint(self, uri.scheme, uri.host.decode("ascii").strip("[]"), uri.port)


class _Drop(Protocol):
    """Reads an answer's body and drops it: at most :data:`MAX_ANSWER` bytes, within the deadline."""

    def __init__(self, reactor: Any, timeout: float) -> None:
        self.received = 0
        self.done: Deferred[None] = Deferred()
        self._timer = reactor.callLater(timeout, self._abort)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > MAX_ANSWER:
            self._abort()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Any = None) -> None:
        if self._timer.active():
            self._timer.cancel()
        self.done.callback(None)


class WebhookPoster:
    """POSTs signed bodies; ``post`` fires with the answer's status or fails (refused, timed out, network)."""

    def __init__(
        self,
        reactor: Any,
        policy: AddressPolicy,
        resolve: Resolver,
        timeout: float,
        tls: IPolicyForHTTPS | None = None,
    ) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 2
        self._pool.cachedConnectionTimeout = 30
        self._pool.retryAutomatically = False  # a request is sent once; the sender retries
        self._agents = {
            allow: Agent.usingEndpointFactory(
                reactor, CheckedEndpoints(reactor, policy, resolve, allow, timeout, tls), pool=self._pool
            )
            for allow in (False, True)
        }

    async def post(self, url: str, body: bytes, headers: dict[bytes, bytes], allowPrivate: bool) -> int:
        sent = self._agents[allowPrivate].request(
            b"POST",
            url.encode("utf-8"),
            Headers({name: [value] for name, value in headers.items()}),
            FileBodyProducer(BytesIO(body)),
        )
        timedOut: list[bool] = []

        def tooLong() -> None:
            timedOut.append(True)
            sent.cancel()

        timer = self.reactor.callLater(self.timeout, tooLong)
        try:
            response = await sent
        except Exception:
            if timedOut:
                raise TimeoutError(f"no answer within {self.timeout:g} s") from None
            raise
        finally:
            if timer.active():
                timer.cancel()
        drop = _Drop(self.reactor, self.timeout)
        response.deliverBody(drop)
        # Read to the end (or the cap, or the deadline): the connection is free for reuse then.
        await drop.done
        return int(response.code)

    def close(self) -> Deferred[None]:
        return defer.maybeDeferred(self._pool.closeCachedConnections)
