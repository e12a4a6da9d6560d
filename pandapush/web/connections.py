"""What one TCP connection may hold of the server: time to send a request, and file descriptors.

A slow client costs a file descriptor for as long as it takes: at the common limit of
1,024, about 1,010 half-open requests (a header line every 10 s) made every new
connection fail, because Twisted's idle timeout starts again with every byte. Two
defences, both decided per connection, before any resource runs:

- :class:`PandapushChannel`: a request's headers must arrive within ``headersTimeout``
  seconds of its first byte and its body within ``bodyTimeout`` seconds of its headers,
  whatever trickles in meanwhile; past that the connection gets a 408 and is closed. A
  body announced larger than the site's ``maxBodySize`` is refused with a 413 from its
  ``Content-Length`` (and a chunked one as soon as it grows past it), and the
  connection closed, instead of reading it to the end first (100 MB were).
- :class:`AddressLimit`: at most ``maxPerAddress`` open connections per client address
  (an IPv6 client by its /64, which one subscriber usually has whole), counted from
  accept to close; one more is closed at once, before a byte is read. Trusted proxies
  are not counted: every client behind them shares their address.

A websocket upgrade of ``/push`` that arrives whole in one read goes from the channel
to the websocket protocol at once, as raw bytes (:meth:`PandapushChannel.dataReceived`):
twisted.web building a ``Request`` of it, and autobahn's ``WebSocketResource``
writing it out again for autobahn to parse, were a quarter of the server's CPU in a
reconnect storm (bench/README.md, issue 17). Only a request that twisted.web would
take as it is and hand to the same resource goes that way; anything else (a head in
several reads, a body, an oversized or malformed head, another path) goes through
twisted.web as before, and the deadlines and limits above hold either way. A REST
publish or a long-poll whose whole request is in the read is served from it the same
way, by the site's ``serveSimple`` (:mod:`pandapush.web.lean`).
"""

from __future__ import annotations

import ipaddress
import re
import weakref
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IProtocol, IReactorTime, ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import getChildForRequest
from zope.interface import directlyProvides, providedBy

from pandapush.extensions.limits import DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
from pandapush.transports.resource import IWebSocketUpgrade

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEADERS_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS_PER_ADDRESS",
    "AddressLimit",
    "PandapushChannel",
]

#: Seconds from a request's first byte to the end of its headers: a few hundred bytes
#: that any client sends in one packet, with room for a slow mobile link.
DEFAULT_HEADERS_TIMEOUT = 10.0
#: Seconds from the end of the headers to the end of the body: a body is at most
#: ``--max-body-size`` (1 MiB, 35 KB/s over this time) and usually a few hundred bytes.
DEFAULT_BODY_TIMEOUT = 30.0

_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


#: The first bytes of every request the channel may hand over.
_UPGRADE_START = b"GET /push"
#: The first bytes of every request the site's ``serveSimple`` may serve.
_SIMPLE_START = b"POST /"
#: A request head (without its final empty line) that twisted.web would take as it is
#: and route to ``/push``'s resource: ``GET`` of ``/push``, a path under it or a query
#: (the request-target bytes twisted.web allows), HTTP/1.1, then header lines of a
#: token name and a value without NUL, CR or LF (no obsolete line folding).
_UPGRADE_HEAD = re.compile(
    rb"GET /push(?:[/?][\x21-\xb0]*)? HTTP/1\.1\r\n((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00\r\n]*\r\n)*)"
)
_UPGRADE_HEADER = re.compile(rb"^upgrade:[ \t]*([^\r]*?)[ \t]*\r$", re.IGNORECASE | re.MULTILINE)
#: Headers that make twisted.web do more than route the request: read a body (which
#: the websocket resource passes on), answer ``100 Continue``. Such requests take its path.
_BUSY_HEADER = re.compile(rb"^(?:content-length|transfer-encoding|expect):", re.IGNORECASE | re.MULTILINE)


def _websocketUpgrade(head: bytes, maxHeaders: int) -> bool:
    """Whether ``head`` (see ``_UPGRADE_HEAD``) is an upgrade of /push for the channel to hand over."""
    match = _UPGRADE_HEAD.fullmatch(head)
    if match is None:
        return False
    headers = match.group(1)
    if headers.count(b"\n") > maxHeaders or _BUSY_HEADER.search(headers) is not None:
        return False
    # The same test as the resource's (the first Upgrade header, "websocket" in any
    # case); more than one goes through twisted.web, which reads the first.
    upgrade = _UPGRADE_HEADER.findall(headers)
    return len(upgrade) == 1 and upgrade[0].lower() == b"websocket"


class _PathProbe:
    """What resource traversal reads of a request, for ``/push``."""

    def __init__(self) -> None:
        self.prepath: list[bytes] = []
        self.postpath = [b"push"]


#: site -> (its root resource, the IWebSocketUpgrade that /push resolves to, or None).
_UPGRADES: weakref.WeakKeyDictionary[Any, tuple[Any, Any]] = weakref.WeakKeyDictionary()


def _upgradeResource(site: Any) -> Any:
    """The :class:`IWebSocketUpgrade` leaf that ``site`` routes every path under ``/push`` to, or None."""
    root = getattr(site, "resource", None)
    known = _UPGRADES.get(site)
    if known is not None and known[0] is root:
        return known[1]
    resource = None
    if root is not None:
        try:
            found = getChildForRequest(root, _PathProbe())
        except Exception:
            # A resource that routes on more than the path: twisted.web's path decides.
            found = None
        if getattr(found, "isLeaf", False) and IWebSocketUpgrade.providedBy(found):
            resource = found
    _UPGRADES[site] = (root, resource)
    return resource


class PandapushChannel(HTTPChannel):
    """
    An ``HTTPChannel`` with deadlines for receiving a request, and a body limit applied
    from the headers. The deadlines and the limit are the site's (``headersTimeout``,
    ``bodyTimeout``, ``maxBodySize``), read when a request starts. ``onRefused(limit)``
    (the site's) hears of each 408 (``request_timeout``) and early 413 (``body_size``).

    Timers are few, since every connection of a reconnect storm makes them: a deadline
    runs only while something of a request is still to come (a head or a body that did
    not arrive whole in one read; from accept to the first request, for the silent
    ones), and Twisted's idle timeout only between requests.
    """

    _deadline: IDelayedCall | None = None
    _refused = False
    #: Called once if another protocol takes the connection over (a websocket), which
    #: it does by setting this channel's transport to None.
    takenOver: Callable[[], None] | None = None
    _transport: Any = None
    _host: Any = None

    @property  # type: ignore[override]
    def transport(self) -> Any:
        return self._transport

    @transport.setter
    def transport(self, transport: Any) -> None:
        if transport is None and self._transport is not None and self.takenOver is not None:
            takenOver, self.takenOver = self.takenOver, None
            takenOver()
        self._transport = transport

    def getHost(self) -> Any:
        # Twisted asks for every request (Request.__init__): a getsockname call and a new
        # address object each time, for a connection's local address, which never changes.
        host = self._host
        if host is None:
            host = self._host = super().getHost()
        return host

    def connectionMade(self) -> None:
        _noDelay(self.transport)
        headers = self._setting("headersTimeout", DEFAULT_HEADERS_TIMEOUT)
        body = self._setting("bodyTimeout", DEFAULT_BODY_TIMEOUT)
        idle = self.timeOut
        if headers and body and (idle is None or max(headers, body) <= idle):
            # Twisted's idle timeout (a timer per connection, reset by every byte) can
            # not fire before the deadlines while the first request arrives, and is
            # stopped once it has: it starts after the first request instead (Twisted
            # restores it in requestDone), and a websocket never has one.
            self.timeOut = None
            super().connectionMade()
            self.timeOut = idle
        else:
            super().connectionMade()
        # Until the first request's headers, as for every later one: a connection
        # opened and left silent holds a descriptor as much as one sending slowly.
        self._startDeadline(headers)

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._handlingRequest:
            if data.startswith(_UPGRADE_START) and self._upgraded(data):
                return
            if data.startswith(_SIMPLE_START):
                # A REST publish or a long-poll served from this read (pandapush.web.lean).
                serveSimple = getattr(getattr(self, "site", None), "serveSimple", None)
                if serveSimple is not None:
                    rest = serveSimple(self, data)
                    if rest is None:
                        return
                    data = rest
            if self._deadline is None and b"\r\n\r\n" not in data:
                # The first bytes of the next request on a kept-alive connection, and
                # not all of its head: this read ends any head it has begun.
                self._startDeadline(self._setting("headersTimeout", DEFAULT_HEADERS_TIMEOUT))
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        limit = self._setting("maxBodySize", None)
        if limit is not None and self.length is not None and self.length > limit:
            self.refuseTooLarge()
            return
        if self.length != 0:
            # Without a body the request is complete now (allContentReceived follows).
            self._startDeadline(self._setting("bodyTimeout", DEFAULT_BODY_TIMEOUT))
        super().allHeadersReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        if self._refused:
            return
        self._cancelDeadline()
        super().allContentReceived()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancelDeadline()
        super().connectionLost(reason)

    def refuseTooLarge(self) -> None:
        """Answer 413 now, whatever of the body is still coming, and close."""
        if self._refused:
            return
        limit = self._setting("maxBodySize", 0)
        body = b"Request body larger than %d bytes" % limit
        self._close(
            b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
            "body_size",
        )

    # websocket upgrades

    def _upgraded(self, data: bytes) -> bool:
        """
        Hand the connection to ``/push``'s websocket protocol if ``data`` begins a
        request (nothing of one is buffered, no request is answered meanwhile) with the
        whole head of a websocket upgrade that twisted.web would route there as it is.
        As autobahn's ``WebSocketResource.render`` does, but with the bytes as they
        came: the protocol parses them once, and checks and answers the handshake
        (pandapush.transports.handshake; the origin policy is its ``admitOpening``'s).
        False: twisted.web takes the request.
        """
        end = data.find(b"\r\n\r\n")
        if (
            end < 0
            or end + 4 > self.totalHeadersSize
            or self._busyReceiving
            or self._buffer
            or self._receivedHeaderSize
            or not self.line_mode
            or not self.persistent
            or not _websocketUpgrade(data[: end + 2], self.maxHeaders)
        ):
            return False
        resource = _upgradeResource(getattr(self, "site", None))
        transport = self.transport
        if resource is None or transport is None:
            return False
        protocol = resource.upgradeProtocol(transport.getPeer())
        if protocol is None:
            return False
        # Nothing of HTTP's is left waiting (the twisted.web path ends both timers when
        # the request is complete, as this one is), and the channel stays busy with
        # this request for good, as it does there: until the socket opens and replaces
        # it, the channel is the transport's producer, and a busy one does not pause
        # reading when the transport's write buffer fills.
        self._cancelDeadline()
        self.setTimeout(None)
        self._handlingRequest = True
        # The takeover of WebSocketResource.render; the first line tells an address
        # limit over TLS that the connection left it (see _CountedConnection).
        self.transport = None
        if isinstance(transport, ProtocolWrapper):
            transport.wrappedProtocol = protocol
        elif isinstance(transport.protocol, ProtocolWrapper):
            transport.protocol.wrappedProtocol = protocol
        else:
            transport.protocol = protocol
        protocol.makeConnection(transport)
        # Reading is paused while a response waits on a peer that does not read.
        transport.resumeProducing()
        protocol.dataReceived(data)
        return True

    # deadlines

    def _setting(self, name: str, default: Any) -> Any:
        return getattr(getattr(self, "site", None), name, default)

    def _startDeadline(self, seconds: float) -> None:
        self._cancelDeadline()
        if seconds and self.callLater is not None:
            self._deadline = self.callLater(seconds, self._timedOut)

    def _cancelDeadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _timedOut(self) -> None:
        self._deadline = None
        self._close(_TIMED_OUT, "request_timeout")

    def _close(self, response: bytes, limit: str) -> None:
        self._refused = True
        self._cancelDeadline()
        self.setTimeout(None)
        onRefused = self._setting("onRefused", None)
        if onRefused is not None:
            onRefused(limit)
        transport = self.transport
        if transport is None:
            return
        transport.write(response)
        self.loseConnection()
        # As Twisted's own idle timeout does: a peer that does not read what is left
        # to send (and so keeps the descriptor) is cut off a little later.
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)


def _addressKey(host: str) -> str | None:
    """What connections are counted by: the address, an IPv6 one by its /64; None if not an IP."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class AddressLimit:
    """
    Open connections per client address, at most ``maxPerAddress`` (0: unlimited).
    ``trusts(address)`` names trusted proxies, which are not counted. Refusals go to
    ``onRefused("connections_per_address")`` and are logged at most once a minute.
    """

    _log = Logger()
    logInterval = 60.0

    def __init__(
        self,
        clock: IReactorTime,
        maxPerAddress: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
        trusts: Callable[[str], bool] = lambda address: False,
        onRefused: Callable[[str], None] | None = None,
    ) -> None:
        self.clock = clock
        self.maxPerAddress = maxPerAddress
        self.trusts = trusts
        self.onRefused = onRefused
        self._open: dict[str, int] = {}
        self._refusedSinceLog = 0
        self._loggedAt: float | None = None

    def connections(self, host: str) -> int:
        key = _addressKey(host)
        return self._open.get(key, 0) if key is not None else 0

    def admit(self, host: str | None) -> str | bool | None:
        """
        The key to :meth:`release` once the connection closes; None if it is not counted
        (no limit, not an IP address, a trusted proxy); False if it is refused.
        """
        if self.maxPerAddress <= 0 or host is None or self.trusts(host):
            return None
        key = _addressKey(host)
        if key is None:
            return None
        count = self._open.get(key, 0)
        if count >= self.maxPerAddress:
            self._refuse(key)
            return False
        self._open[key] = count + 1
        return key

    def release(self, key: str) -> None:
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)

    def wrap(self, key: str, protocol: IProtocol) -> _CountedConnection:
        """``protocol``, counted under ``key`` until its connection closes."""
        return _CountedConnection(self, key, protocol)

    @staticmethod
    def refused() -> Protocol:
        """
        What a refused connection gets: closed at once, nothing read or written. (Not
        None, which a TCP port takes for the same, but a TLS wrapper does not.)
        """
        return _Refused()

    def _refuse(self, key: str) -> None:
        if self.onRefused is not None:
            self.onRefused("connections_per_address")
        self._refusedSinceLog += 1
        now = self.clock.seconds()
        if self._loggedAt is None or now - self._loggedAt >= self.logInterval:
            self._log.warn(
                "refusing connections from {address}: {limit} open already"
                " (--max-connections-per-address); {refused} refused since the last report",
                address=key,
                limit=self.maxPerAddress,
                refused=self._refusedSinceLog,
            )
            self._loggedAt = now
            self._refusedSinceLog = 0


def _noDelay(transport: Any) -> None:
    """
    Turns Nagle's algorithm off for a new connection, as autobahn does for a websocket
    it opens, and Node's and Go's HTTP servers and nginx for every connection.

    With it on, a small write made while an earlier one is not yet acknowledged waits
    for the peer's ACK, which a peer that is not sending (a subscriber) delays by up to
    40 ms: the classic stall for small websocket frames. Answers and a read's frames
    already leave in one write each, so nothing is gained by letting the kernel wait.
    """
    setTcpNoDelay = getattr(transport, "setTcpNoDelay", None)
    if setTcpNoDelay is not None:
        try:
            setTcpNoDelay(True)
        except OSError:
            pass  # not TCP (a UNIX socket listener)


class _Refused(Protocol):
    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


class _CountedConnection(ProtocolWrapper):
    """
    Holds a place in an :class:`AddressLimit` from accept to close, whatever protocol
    the connection ends up speaking: a websocket takes the TCP transport over from the
    HTTP channel by making itself the protocol this wrapper forwards to (Autobahn does
    that for a transport whose protocol is a ``ProtocolWrapper``).

    The wrapped protocol is given the real transport, not this wrapper: every delivery
    is a write, and the websocket transport sends small frames straight to the TCP
    socket. Over TLS the transport is itself a wrapper, whose protocol a websocket
    replaces (this one, then): the place is given back when that happens, so a
    websocket over a TLS listener is counted until its upgrade only (TLS is best
    terminated in front of pandapush anyway).
    """

    def __init__(self, limit: AddressLimit, key: str, wrapped: IProtocol) -> None:
        self.wrappedProtocol = wrapped
        self._limit: AddressLimit | None = limit
        self._key = key

    def makeConnection(self, transport: ITransport) -> None:
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        if isinstance(transport, ProtocolWrapper) and isinstance(self.wrappedProtocol, PandapushChannel):
            self.wrappedProtocol.takenOver = self._release
        self.wrappedProtocol.makeConnection(transport)

    def _release(self) -> None:
        limit, self._limit = self._limit, None
        if limit is not None:
            limit.release(self._key)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._release()
        wrapped: IProtocol | None = self.wrappedProtocol
        self.wrappedProtocol = None  # type: ignore[assignment]  # no cycle left behind
        if wrapped is not None:
            wrapped.connectionLost(reason)
