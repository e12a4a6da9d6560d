"""Opening a websocket without autobahn's opening-handshake machinery.

Autobahn sets up every connection for a handshake it has not seen yet
(``_connectionMade``: ~30 options looked up, transport details, a UTF-8 validator, a
send deque, an open-handshake timer started and then cancelled), then parses the head
with general code (``processHandshake``: every header line through two regular
expressions, ``urlparse`` and ``parse_qs`` of the request target, a
``ConnectionRequest``, ``onConnect`` through a Deferred and callbacks) and builds its
101 from pieces. In a reconnect storm that was ~27 % of the server's busy samples
(bench/README.md, PERF-TODO 1), for heads that are all alike: ``GET /push``, HTTP/1.1,
a handful of headers, no subprotocol, and at most a ``permessage-deflate`` offer that
pandapush does not accept.

:class:`DirectOpeningProtocol` waits for its first read before doing any of that. If
the read holds a whole head that :func:`plainOpening` takes (one regular expression
for its syntax, the checks autobahn makes, in the same order of precedence) and that
the factory's options let through unchanged (:meth:`DirectOpeningProtocol._opening`),
it answers the same 101, byte for byte, and starts in the open state; the state
autobahn would have set per connection is class attributes here, so an open socket
also keeps less. Anything else (a head split over reads, another version, a
subprotocol named twice, an extension offer that is accepted or malformed, an origin
autobahn refuses, a TLS transport, options such as ``maxConnections`` or
``trustXForwardedFor``) is set up and answered by autobahn as before, from the same
bytes: every refusal (400, 403, 426, ...) is autobahn's own. After the opening the
protocol is autobahn's either way: pings, the close handshake, fragments, binary and
unusual frames.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from typing import Any

import txaio
from autobahn.websocket.compress import PERMESSAGE_COMPRESSION_EXTENSION
from autobahn.websocket.protocol import (
    TrafficStats,
    WebSocketProtocol,
    _is_same_origin,
    _url_to_origin,
)
from autobahn.websocket.utf8validator import Utf8Validator
from twisted.internet import tcp
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from pandapush.transports.fastframes import FastFramesProtocol

__all__ = ["TRAFFIC", "DirectOpeningProtocol", "SendQueue", "acceptKey", "plainOpening"]

_WS_MAGIC = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: A head this module answers, decoded as latin-1 (as autobahn decodes it): ``GET`` of
#: ``/push``, a path under it or a query (printable ASCII but ``#``: autobahn refuses a
#: fragment), HTTP/1.1, then header lines of a token name and a value of the bytes
#: autobahn's strict parser allows (HTAB, SP to ``~``, obs-text), no obsolete folding.
_HEAD = re.compile(
    'GET /push(?:[/?][!"$-~]*)? HTTP/1\\.1\r\n'
    "((?:[!#$%&'*+\\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r\n)*)\r\n"
)
#: A Sec-WebSocket-Key as autobahn takes it: 22 base64 characters and ``==``.
_KEY = re.compile("[A-Za-z0-9+/]{22}==")
#: Headers autobahn refuses to see twice.
_ONCE = frozenset(
    ("host", "sec-websocket-version", "origin", "sec-websocket-key", "sec-websocket-extensions")
)

# Autobahn counts each connection's traffic in a TrafficStats object of its own (1.3 KB
# per idle socket); nothing reads the counts, so every socket adds to this one.
TRAFFIC = TrafficStats()


class SendQueue(list[Any]):
    """
    Autobahn's queue of frames for ``sync``/``chopsize`` sends (pandapush makes none),
    as a list: an empty ``deque`` holds a 64-slot block, 600 bytes per idle socket.
    """

    def popleft(self) -> Any:
        return self.pop(0)


def acceptKey(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key``."""
    return binascii.b2a_base64(hashlib.sha1(key.encode() + _WS_MAGIC).digest(), newline=False).decode()


def _hasToken(value: str, token: str) -> bool:
    """Whether ``token`` is one of the comma-separated values of a header (autobahn's test)."""
    if value.lower() == token:
        return True
    for part in value.split(","):
        if part.strip().lower() == token:
            return True
    return False


def plainOpening(head: str) -> tuple[dict[str, str], str] | None:
    """
    For a request head (latin-1 text up to and with its empty line) that autobahn
    would answer with a 101 whatever the factory's options: its headers as autobahn
    parses them (lower-cased names, a repeated header's values joined with ", ") and
    its Sec-WebSocket-Key. None for every other head (autobahn answers those).
    """
    match = _HEAD.fullmatch(head)
    if match is None:
        return None
    headers: dict[str, str] = {}
    # _HEAD took each line as a token, a colon and a value without CR or LF; the value
    # without surrounding SP/HTAB is autobahn's. (A regular expression splitting the
    # fields cost three times as much as splitting here.)
    for line in match.group(1).split("\r\n")[:-1]:
        name, _, value = line.partition(":")
        name = name.lower()
        value = value.strip(" \t")
        if name in headers:
            if name in _ONCE:
                return None
            headers[name] += ", " + value
        else:
            headers[name] = value
    host = headers.get("host")
    if host is None:
        return None
    host = host.strip()
    if ":" in host and not host.endswith("]"):
        try:
            int(host.rsplit(":", 1)[1].strip())
        except ValueError:
            return None
    upgrade = headers.get("upgrade")
    connection = headers.get("connection")
    if upgrade is None or connection is None or not _hasToken(upgrade, "websocket"):
        return None
    if not _hasToken(connection, "upgrade") or headers.get("sec-websocket-version") != "13":
        return None
    protocols = headers.get("sec-websocket-protocol")
    if protocols is not None:
        offered = [p.strip() for p in protocols.split(",")]
        if len(set(offered)) != len(offered):
            return None
    key = headers.get("sec-websocket-key")
    if key is None:
        return None
    key = key.strip()
    if _KEY.fullmatch(key) is None:
        return None
    return headers, key


class _Lazy:
    """A per-connection object made on first use: most sockets never need it."""

    def __init__(self, name: str, make: Any) -> None:
        self.name = name
        self.make = make

    def __get__(self, instance: Any, owner: Any) -> Any:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.make()
        return value


class DirectOpeningProtocol(FastFramesProtocol):
    """
    :class:`FastFramesProtocol` that opens from a plain head itself (see the module's
    docstring), and is set up by autobahn at its first read otherwise.
    ``admitOpening(headers)`` decides, as ``onConnect`` does for autobahn's path.
    """

    #: Off: every opening is autobahn's (tests compare the two).
    directOpening = True

    # What autobahn's _connectionMade and succeedHandshake set per connection, as the
    # class's: an opened socket has the same values without storing them.
    _perMessageCompress = None
    trackedTimings = None  # type: ignore[assignment]
    trafficStats = TRAFFIC
    state = WebSocketProtocol.STATE_CONNECTING
    send_state = WebSocketProtocol.SEND_STATE_GROUND
    data = b""
    triggered = False
    utf8validator = _Lazy("utf8validator", Utf8Validator)
    wasMaxFramePayloadSizeExceeded = False
    wasMaxMessagePayloadSizeExceeded = False
    closedByMe = False
    failedByMe = False
    droppedByMe = False
    wasClean = False
    wasNotCleanReason = None  # type: ignore[assignment]
    wasServerConnectionDropTimeout = False
    wasOpenHandshakeTimeout = False
    wasCloseHandshakeTimeout = False
    wasServingFlashSocketPolicyFile = False
    localCloseCode = None
    localCloseReason = None
    remoteCloseCode = None
    remoteCloseReason = None
    openHandshakeTimeoutCall = None
    closeHandshakeTimeoutCall = None
    autoPingTimeoutCall = None
    autoPingPending = None
    autoPingPendingCall = None
    autoPingPendingSeq = 0
    autoPingPendingSent = None
    websocket_version = 13
    websocket_protocol_in_use = None
    websocket_extensions_in_use: tuple[Any, ...] = ()  # type: ignore[assignment]
    inside_message = False
    current_frame = None  # type: ignore[assignment]

    # Autobahn's options read here (class attributes of the factory's protocol class).
    versions: Any
    trackTimings: bool
    trustXForwardedFor: int
    maxConnections: int
    allowedOriginsPatterns: Any
    autoPingInterval: float
    perMessageCompressionAccept: Any

    #: True from connectionMade to the first read: autobahn's set-up is still to do.
    _awaitingHead = False

    def admitOpening(self, headers: dict[str, str]) -> bool:
        """Whether to open for ``headers``; False: autobahn's path decides (and answers)."""
        return False

    def connectionMade(self) -> None:
        # The set-up waits for the first read, which tells whether autobahn's is needed.
        self._awaitingHead = True

    def _setUp(self) -> None:
        self._awaitingHead = False
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._awaitingHead:
            self._setUp()
        super().connectionLost(reason)

    def _read(self, data: bytes) -> None:
        if self._awaitingHead:
            rest = self._openDirectly(data) if self.directOpening else None
            if rest is None:
                self._setUp()
            else:
                data = rest
                if not data:
                    return
        super()._read(data)

    def _openDirectly(self, data: bytes) -> bytes | None:
        """Opens for a plain head at the start of ``data``: what follows it; None if autobahn must."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return None
        try:
            key = self._opening(data[: end + 4].decode("latin-1"))
        except Exception:
            # Whatever this code did not foresee, autobahn answers as it always has.
            key = None
        if key is None:
            return None
        factory = self.factory
        self._awaitingHead = False
        self.send_queue = SendQueue()  # type: ignore[assignment]
        factory.countConnections += 1
        self.sendData(_answerPrefix(factory) + b"Sec-WebSocket-Accept: %s\r\n\r\n" % acceptKey(key).encode())
        self.state = WebSocketProtocol.STATE_OPEN
        if self.autoPingInterval:
            self.autoPingPendingCall = factory._batched_timer.call_later(
                self.autoPingInterval, self._sendAutoPing
            )
        self._onOpen()
        txaio.resolve(self.is_open, None)  # type: ignore[attr-defined]
        return data[end + 4 :]

    def _opening(self, head: str) -> str | None:
        """
        The Sec-WebSocket-Key of ``head`` if :func:`plainOpening` takes it, and the
        connection, the options and ``admitOpening`` let autobahn's answer be the plain 101.
        """
        transport = self.transport
        if type(transport) is not tcp.Server and ISSLTransport.providedBy(transport):
            # Autobahn records the TLS channel's details at the opening.
            return None
        if (
            self.trackTimings
            or self.logOctets
            or self.logFrames
            or self.trustXForwardedFor
            or self.maxConnections > 0
            or 13 not in self.versions
        ):
            return None
        opening = plainOpening(head)
        if opening is None:
            return None
        headers = opening[0]
        factory = self.factory
        if factory.externalPort:
            # Autobahn compares it with the Host header's port.
            return None
        origin = headers.get("origin")
        extensions = headers.get("sec-websocket-extensions")
        if origin is not None or extensions is not None:
            verdicts = _verdicts(self)
            if origin is not None:
                allowed = verdicts.origins.get(origin)
                if allowed is None:
                    allowed = verdicts.remember(verdicts.origins, origin, self._originAllowed(origin.strip()))
                if not allowed:
                    return None
            if extensions is not None:
                declined = verdicts.extensions.get(extensions)
                if declined is None:
                    declined = verdicts.remember(verdicts.extensions, extensions, self._declined(extensions))
                if not declined:
                    return None
        if not self.admitOpening(headers):
            return None
        return opening[1]

    def _originAllowed(self, origin: str) -> bool:
        """Whether autobahn takes ``origin`` (stripped): it parses, and its patterns allow it."""
        factory = self.factory
        try:
            originTuple = _url_to_origin(origin)
        except ValueError:
            return False
        return (originTuple == "null" and factory.allowNullOrigin) or _is_same_origin(
            originTuple,
            "https" if factory.isSecure else "http",
            factory.externalPort or factory.port,
            self.allowedOriginsPatterns,
        )

    def _declined(self, header: str) -> bool:
        """Whether autobahn would parse the extension offers in ``header`` and accept none."""
        offers = []
        try:
            for extension, params in self._parseExtensionsHeader(header):
                negotiation: Any = PERMESSAGE_COMPRESSION_EXTENSION.get(extension)
                if negotiation is not None:
                    offers.append(negotiation["Offer"].parse(params))
        except Exception:
            # A malformed offer, which autobahn refuses (400).
            return False
        return not offers or self.perMessageCompressionAccept(offers) is None


class _Verdicts:
    """
    What :meth:`DirectOpeningProtocol._opening` decided about Origin and
    Sec-WebSocket-Extensions values under the factory's current options. A browser
    sends the same two on every connection, and judging them the way autobahn does
    (``urlsplit`` of the origin, the offers' parameters) took 53k of the 347k
    instructions of a Chromium opening (callgrind). At most ``kept`` values of each
    (they are the client's to choose): then it starts again.
    """

    kept = 1000

    def __init__(self, options: tuple[Any, ...]) -> None:
        self.options = options
        self.origins: dict[str, bool] = {}
        self.extensions: dict[str, bool] = {}

    def remember(self, table: dict[str, bool], value: str, verdict: bool) -> bool:
        if len(table) >= self.kept:
            table.clear()
        table[value] = verdict
        return verdict


def _verdicts(protocol: DirectOpeningProtocol) -> _Verdicts:
    """The factory's :class:`_Verdicts`, new whenever an option they depend on changed."""
    factory = protocol.factory
    options = (
        factory.allowNullOrigin,
        factory.isSecure,
        factory.port,
        protocol.allowedOriginsPatterns,
        protocol.perMessageCompressionAccept,
    )
    verdicts = factory.__dict__.get("_openingVerdicts")
    if verdicts is None or verdicts.options != options:
        verdicts = factory._openingVerdicts = _Verdicts(options)
    return verdicts  # type: ignore[no-any-return]


def _answerPrefix(factory: Any) -> bytes:
    """The start of autobahn's 101 for ``factory``, up to the Sec-WebSocket-Accept line."""
    known = factory.__dict__.get("_answerPrefix")
    if known is not None and known[0] is factory.server and known[1] == factory.headers:
        return known[2]  # type: ignore[no-any-return]
    # As autobahn's succeedHandshake writes it (no subprotocol, no extension).
    response = "HTTP/1.1 101 Switching Protocols\r\n"
    if factory.server:
        response += f"Server: {factory.server}\r\n"
    response += "Upgrade: WebSocket\r\nConnection: Upgrade\r\n"
    for name, value in factory.headers.items():
        if isinstance(value, str):
            values = [value]
        else:
            try:
                values = iter(value)
            except TypeError:
                values = [value]
        for one in values:
            response += f"{name}: {one}\r\n"
    prefix = response.encode("utf8")
    factory._answerPrefix = (factory.server, dict(factory.headers), prefix)
    return prefix
