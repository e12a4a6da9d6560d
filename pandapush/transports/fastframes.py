"""Reading and writing an open websocket's frames without autobahn's per-frame machinery.

Nearly every frame a Bayeux client sends is a small, masked, unfragmented text frame
holding one JSON batch, and nearly every frame the server sends back is a reply to it.
Autobahn reads each frame through a general state machine (``processData``,
``onFrameBegin``/``Data``/``End``, a masker object, an incremental UTF-8 validator,
message and frame callbacks: ~44 % of the server's busy samples in the one-to-one
benchmark, bench/README.md), and writes each reply through Twisted's buffered ``write``
(an ``epoll_ctl`` pair and a reactor turn per reply).

:class:`FastFramesProtocol` reads such frames in one loop and hands each payload to
``onMessage``; the first frame that is anything else (a control frame, a fragment,
binary, reserved bits, unmasked, over the size limits, not UTF-8) and everything after
it go to autobahn's own parser, in order, so every protocol error closes the connection
exactly as autobahn does. A simple frame whose end has not arrived yet waits in
autobahn's own buffer (``data``) at a frame boundary, as autobahn keeps a frame's first
bytes, and the next read continues with it; one still incomplete after a few reads is
autobahn's to stream (a frame trickling in a byte per read would cost each read the
whole of it again).

What a read makes the server send (replies, a close frame, a pong, the opening
handshake's answer) is collected and given to the kernel in one ``send`` at the end of
the read when nothing is waiting in the TCP transport's buffer; closing the connection
sends what was collected first, so a close frame is never lost behind
``loseConnection`` nor overtaken. Frames outside a read (deliveries, replies whose
answer waited for Redis) are sent the same way, each at once. TLS transports (not a
``tcp.Server``) and everything the kernel does not take go through Twisted's ``write``
as before.

Autobahn's traffic counters (``trafficStats``: octets, frames and messages each way) are
not kept on these paths: every socket shares one counter object that nothing reads
(:data:`~pandapush.transports.handshake.TRAFFIC`), and the ten additions per publish
and per delivery were ~2 % of a websocket publish's instructions. Autobahn's own
paths still add to it.
"""

from __future__ import annotations

import struct
from codecs import utf_8_decode

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from pandapush.transports.turnsends import sendAtTurnEnd
from pandapush.transports.xormask import unmask

__all__ = ["FastFramesProtocol", "arrayFrame", "textFrame"]

_OPEN = WebSocketServerProtocol.STATE_OPEN

#: The first byte of every frame read here: FIN, no reserved bits, opcode 1 (text).
_FIN_TEXT = 0x81
#: The largest payload read here: a 16-bit length. Larger frames are autobahn's.
_LARGEST = 0xFFFF
#: Reads a frame's start waits here for its rest; one still incomplete at the last of
#: them is autobahn's to read (see ``FastFramesProtocol._read``).
_WAITS = 4


# Heads of the frames with a 7-bit length, made once: ``bytes((0x81, size))`` built a
# tuple and a bytes from it for every frame sent.
_SHORT_HEADS = [bytes((_FIN_TEXT, size)) for size in range(126)]
_SHORT_OPEN_HEADS = [head + b"[" for head in _SHORT_HEADS]
_PACK_HEAD = struct.Struct(">BBH").pack


def textFrame(payload: bytes) -> bytes:
    """``payload`` as one unmasked text frame (what a server sends)."""
    size = len(payload)
    if size < 126:
        return _SHORT_HEADS[size] + payload
    if size <= _LARGEST:
        return _PACK_HEAD(_FIN_TEXT, 126, size) + payload
    return bytes((_FIN_TEXT, 127)) + size.to_bytes(8, "big") + payload


def arrayFrame(item: bytes) -> bytes:
    """
    ``textFrame(b"[" + item + b"]")``, the JSON array of one ``item`` (a delivery),
    with one copy of the payload fewer: built once per message delivered.
    """
    size = len(item) + 2
    if size < 126:
        return _SHORT_OPEN_HEADS[size] + item + b"]"
    if size <= _LARGEST:
        return b"".join((_PACK_HEAD(_FIN_TEXT, 126, size), b"[", item, b"]"))
    return textFrame(b"[" + item + b"]")


def _utf8Prefix(data: bytes, payloadStart: int, end: int) -> bool:
    """Whether the payload bytes of an incomplete frame so far could begin valid UTF-8."""
    partial = unmask(data[payloadStart:end], data[payloadStart - 4 : payloadStart])
    if partial.isascii():
        return True
    try:
        # Not final: a sequence cut at the end is only incomplete, as for autobahn.
        utf_8_decode(partial, "strict", False)
    except UnicodeDecodeError:
        return False
    return True


class FastFramesProtocol(WebSocketServerProtocol):
    """Autobahn's server protocol with a fast path for small text frames and replies."""

    # Autobahn's options, set on the protocol (class) by the factory.
    maxFramePayloadSize: int
    maxMessagePayloadSize: int
    utf8validateIncoming: bool
    applyMask: bool
    logOctets: bool
    logFrames: bool
    autoPingRestartOnAnyTraffic: bool
    autoFragmentSize: int
    maskServerFrames: bool

    #: Reads the frame at the start of ``data`` has waited for its rest (0: none waits).
    #: Set on the socket only while one waits, and deleted after: every idle socket
    #: reads a pong now and then, and an attribute of its own would make its instance
    #: dictionary bigger for good.
    _waits = 0

    def __init__(self) -> None:
        super().__init__()
        # Frames to send at the end of the read under way; None outside a read.
        self._outgoing: list[bytes] | None = None

    # reading

    def dataReceived(self, data: bytes) -> None:
        # Autobahn's own dataReceived formats debug-log arguments (hltype/hlval) on
        # every read before the log level is looked at: not called.
        if self._outgoing is not None:
            # Re-entered from inside a read: the outer read sends what is collected.
            self._read(data)
            return
        self._outgoing = []
        try:
            self._read(data)
        finally:
            if self._outgoing:
                try:
                    self._beforeReplies()
                finally:
                    outgoing, self._outgoing = self._outgoing, None
                    self._transmit(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing), True)
            else:
                self._outgoing = None

    def _beforeReplies(self) -> None:
        """Called at the end of a read with replies to send, before they go."""

    def _read(self, data: bytes) -> None:
        if (
            self.state != _OPEN
            or self.current_frame is not None
            or self.inside_message
            or self._perMessageCompress is not None
            or self.logOctets
            or self.logFrames
            or self.trackedTimings
            or not self.applyMask
        ):
            self._dataReceived(data)
            return
        if self.data:
            data = self.data + data
            self.data = b""
        end, waiting = self._readTextFrames(data)
        if end == len(data):
            if self._waits:
                del self._waits
            return
        self.data = data[end:] if end else data
        if waiting and self.state == _OPEN:
            # The start of a frame waits for the rest. Each read joins and checks the
            # frame's bytes so far again: cheap for a frame that comes in a few reads,
            # quadratic for one that trickles in (a 64 KiB frame a byte per read cost
            # 1.5 s of CPU, autobahn 0.27 s). So autobahn, which streams a frame, takes
            # one still incomplete after _WAITS reads.
            waits = 1 if end else self._waits + 1
            if waits < _WAITS:
                self._waits = waits
                return
        if self._waits:
            del self._waits
        self.consumeData()

    def _readTextFrames(self, data: bytes) -> tuple[int, bool]:
        """
        Reads the simple text frames at the start of ``data``, handing each to
        ``onMessage``, while the socket stays open. Returns where they end, and
        whether what follows is the start of a simple frame not complete yet (else
        it is for autobahn).
        """
        limit = _LARGEST
        size = self.maxFramePayloadSize
        if 0 < size < limit:
            limit = size
        size = self.maxMessagePayloadSize
        if 0 < size < limit:
            limit = size
        validate = self.utf8validateIncoming
        end = len(data)
        start = 0
        while start < end:
            if data[start] != _FIN_TEXT:
                return start, False
            if end - start < 2:
                return start, True
            length = data[start + 1]
            if length < 0x80:
                # Unmasked: autobahn closes with 1002.
                return start, False
            length &= 0x7F
            if length < 126:
                payloadStart = start + 6
            elif length == 126:
                if end - start < 4:
                    return start, True
                length = (data[start + 2] << 8) | data[start + 3]
                if length < 126:
                    # Not the minimal length encoding: autobahn closes with 1002.
                    return start, False
                payloadStart = start + 8
            else:
                return start, False
            if length > limit:
                # Autobahn closes with 1009.
                return start, False
            stop = payloadStart + length
            if stop > end:
                if validate and end > payloadStart and not _utf8Prefix(data, payloadStart, end):
                    # Autobahn validates a text frame's payload as it arrives and closes
                    # with 1007 before the frame is whole: it fails it here too.
                    return start, False
                return start, True
            payload = unmask(data[payloadStart:stop], data[payloadStart - 4 : payloadStart])
            if validate and not payload.isascii():
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError:
                    # Autobahn closes with 1007, saying where.
                    return start, False
            # Any data frame counts as the peer being alive, as in autobahn's onFrameEnd.
            if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
                self._cancelAutoPingTimeoutCall()
            start = stop
            self.onMessage(payload, False)
            if self.state != _OPEN:
                return start, False
        return start, False

    # writing

    def plainFrames(self) -> bool:
        """
        Whether a text message goes out as :func:`textFrame` makes it: no compression,
        fragmentation, masking or frame logging of autobahn's applies.
        """
        return (
            self.state == _OPEN
            and self._perMessageCompress is None
            and not self.autoFragmentSize
            and not self.maskServerFrames
            and not self.logFrames
            and not self.trackedTimings
        )

    def sendText(self, payload: bytes) -> None:
        """
        ``sendMessage(payload)`` for a text message, framed here when
        :meth:`plainFrames`: autobahn's sendMessage and sendFrame cost ~4 µs per
        reply (argument checks, options looked at, the frame built from pieces).
        """
        if not self.plainFrames() or 0 < self.maxMessagePayloadSize < len(payload):
            # Autobahn's refuses a message over the limit (PayloadExceededError).
            self.sendMessage(payload)
            return
        outgoing = self._outgoing
        if outgoing is not None and not self.send_queue and not self.logOctets:
            # A reply inside a read (nearly every one): sendData's collecting, directly.
            outgoing.append(textFrame(payload))
            return
        self.sendData(textFrame(payload))

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """
        Every frame goes out through here. Inside a read it is collected and sent
        with the read's others at its end. Outside a read (a delivery: the engine
        hands each socket its messages once per reactor turn; a reply whose answer
        waited for Redis) it is given to the kernel after the reactor turn's events
        (:func:`~pandapush.transports.turnsends.sendAtTurnEnd`) when nothing is waiting
        in the transport's buffer, instead of through Twisted's ``write``, which
        registers the socket for writability (epoll_ctl), sends on the next reactor
        turn, and unregisters it (epoll_ctl again): with one small frame per socket
        per message (the chat shape) that bookkeeping, and the per-event logging
        context around it, cost more than the send itself. On the Redis engine a
        websocket client's handshake and subscribe replies come outside a read (after
        the scripts' answers): two such ``write``s per client in a ``--workers 2``
        reconnect storm. Autobahn's own queue (``sync``, ``chopsize``) and octet
        logging keep its implementation.
        """
        if sync or chopsize or self.send_queue or self.logOctets:
            self._sendOutgoing()
            super().sendData(data, sync, chopsize)
            return
        outgoing = self._outgoing
        if outgoing is not None:
            outgoing.append(data)
        else:
            self._transmit(data, True)

    def _sendOutgoing(self, direct: bool = True) -> None:
        outgoing = self._outgoing
        if outgoing:
            data = b"".join(outgoing)
            outgoing.clear()
            self._transmit(data, direct)

    def _transmit(self, data: bytes, direct: bool) -> None:
        if direct:
            sendAtTurnEnd(self.transport, data)
        elif self.transport is not None:
            self.transport.write(data)

    def _closeConnection(self, abort: bool = False) -> None:
        # What this read collected (a close frame last) goes out before the FIN. An
        # abort discards it with the transport's buffer, as it did before collecting.
        self._sendOutgoing(direct=not abort)
        self._outgoing = None
        super()._closeConnection(abort)

    # closing

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # Autobahn's own connectionLost and its server protocol's _connectionLost wrap
        # the work in debug logs whose arguments are made before the level is looked at
        # (hltype, and hlval of the Failure: its brief traceback as text). A connection
        # closed or lost goes straight to the work; anything else (a TLS error, which
        # autobahn logs as an error) keeps autobahn's path.
        if isinstance(reason.value, (ConnectionDone, ConnectionLost)):
            self._connectionLost(reason)
        else:
            super().connectionLost(reason)

    def _connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        # WebSocketServerProtocol's, without its debug log.
        WebSocketProtocol._connectionLost(self, reason)  # type: ignore[arg-type]
        self.factory.countConnections -= 1
