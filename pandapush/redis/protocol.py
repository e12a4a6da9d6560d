"""A lean command path and reply parser for the command connection (txredisapi's otherwise).

Profiled in a ``--workers 2`` reconnect storm (bench ``storm-ws-workers2``, py-spy on
a worker), txredisapi's side of a command was the largest part of a worker's busy
samples: per command, ``_build_command`` encoded every argument twice over into a
``bytearray``, ``execute_command`` made two Deferreds, a ``DeferredQueue`` entry and a
closure; per reply, ``LineReceiver`` split its buffer one line at a time (each element
of an array its own ``lineReceived``, each bulk string a switch to raw mode and back),
``MultiBulkStorage`` objects and ``tryConvertData`` for each element.

Here a command is one ``bytes`` join and one Deferred in a queue, and a read's replies
are parsed from one buffer by offset. Replies are what txredisapi made of them with
``charset="utf-8", convertNumbers=False`` (what :class:`~pandapush.redis.RedisShard`
asks for): bulk strings decoded (kept as bytes when not UTF-8), integers as ``int``,
status replies as ``str``, nil as None, errors as ``txredisapi.ResponseError`` (an
array's elements inline, a reply's raised). MULTI and pipelining are not ours to use
on this connection (nothing does).

This is the only RESP reader of the package: the ROLE check and the failover gate
(:mod:`pandapush.redis.rolecheck`) read their replies with :func:`readReply`. A reply
Redis would never send (an unknown type, a length that is not a number, below -1 or
over Redis's own limit, a header line that never ends, nesting deep enough to exhaust the
stack) is a :class:`txredisapi.InvalidResponse`: the connection cannot be read past it.
The checks run only where a reply is refused or incomplete, not on the path of a good
one (a check that each bulk string's CRLF is where its length says cost 3% of a bulk
string's parse; data of the wrong length is caught at the next reply's type anyway).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import txredisapi
from twisted.internet import defer

__all__ = ["MAX_BULK_LENGTH", "CommandProtocol", "encodeCommand", "parseReplies", "readReply"]

_INCOMPLETE: Any = object()

#: Redis's own limit on a bulk string (``proto-max-bulk-len``, 512 MB by default).
MAX_BULK_LENGTH = 512 * 1024 * 1024
#: A header line is a type byte and a number; a status or error line a sentence.
_MAX_LINE = 64 * 1024


def _encode(arg: Any) -> bytes:
    # As txredisapi's _encode_value (utf-8; floats fixed-point).
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, float):
        return format(arg, "f").encode()
    if isinstance(arg, bytearray):
        return bytes(arg)
    return str(arg).encode()


def encodeCommand(args: tuple[Any, ...]) -> bytes:
    """A command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        value = _encode(arg)
        parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)


def _parse(buffer: bytes, position: int) -> tuple[Any, int]:
    """One reply at ``position``: (value, the position after it), or (_INCOMPLETE, position)."""
    end = buffer.find(b"\r\n", position)
    if end < 0:
        if len(buffer) - position > _MAX_LINE:
            raise txredisapi.InvalidResponse("a reply line longer than 64 KiB")
        return _INCOMPLETE, position
    kind = buffer[position]
    if kind == 36:  # $ bulk string
        length = int(buffer[position + 1 : end])
        if length < 0:
            if length != -1:
                raise txredisapi.InvalidResponse(f"a negative length {length}")
            return None, end + 2
        start = end + 2
        stop = start + length
        if stop + 2 > len(buffer):
            if length > MAX_BULK_LENGTH:
                raise txredisapi.InvalidResponse(f"a bulk string of {length} bytes")
            return _INCOMPLETE, position
        raw = buffer[start:stop]
        try:
            return raw.decode(), stop + 2
        except UnicodeDecodeError:
            return raw, stop + 2
    if kind == 42:  # * array
        count = int(buffer[position + 1 : end])
        if count < 0:
            if count != -1:
                raise txredisapi.InvalidResponse(f"a negative length {count}")
            return None, end + 2
        items = []
        at = end + 2
        for _ in range(count):
            item, at = _parse(buffer, at)
            if item is _INCOMPLETE:
                return _INCOMPLETE, position
            items.append(item)
        return items, at
    if kind == 58:  # : integer
        return int(buffer[position + 1 : end]), end + 2
    if kind == 43:  # + status
        return buffer[position + 1 : end].decode(), end + 2
    if kind == 45:  # - error
        return txredisapi.ResponseError(buffer[position + 1 : end].decode(errors="replace")), end + 2
    raise txredisapi.InvalidResponse(f"unexpected reply type {chr(kind)!r}")


def _refused(e: Exception) -> txredisapi.InvalidResponse:
    if isinstance(e, txredisapi.InvalidResponse):
        return e
    # ValueError: a length or integer that is not a number (or not UTF-8, for a status);
    # RecursionError: arrays nested thousands deep.
    return txredisapi.InvalidResponse(f"unreadable reply: {e}")


def parseReplies(buffer: bytes) -> tuple[list[Any], bytes]:
    """
    The complete replies at the start of ``buffer``, and what is left of it; raises
    :class:`txredisapi.InvalidResponse` at a reply Redis would not send.
    """
    replies = []
    position = 0
    size = len(buffer)
    try:
        while position < size:
            reply, after = _parse(buffer, position)
            if reply is _INCOMPLETE:
                break
            replies.append(reply)
            position = after
    except (txredisapi.InvalidResponse, ValueError, RecursionError) as e:
        raise _refused(e) from e
    return replies, buffer[position:]


def readReply(buffer: bytes, position: int = 0) -> tuple[Any, int] | None:
    """
    One reply at ``buffer[position:]``, read as :func:`parseReplies` reads them: (value,
    the position after it), or None while it is incomplete. An error reply is a value
    here (a :class:`txredisapi.ResponseError`), as inside an array.
    """
    try:
        reply, after = _parse(buffer, position)
    except (txredisapi.InvalidResponse, ValueError, RecursionError) as e:
        raise _refused(e) from e
    return None if reply is _INCOMPLETE else (reply, after)


class CommandProtocol(txredisapi.RedisProtocol):  # type: ignore[misc]
    """txredisapi's protocol (connecting, SELECT, the pool) with the lean command path above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._answers: deque[defer.Deferred[Any]] = deque()
        self._rest = b""

    def execute_command(self, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        if not self.connected:
            raise txredisapi.ConnectionError("Not connected")
        self.transport.write(encodeCommand(args))
        d: defer.Deferred[Any] = defer.Deferred()
        self._answers.append(d)
        postProcess = kwargs.get("post_proc")
        if callable(postProcess):
            d.addCallback(postProcess)
        return d

    def dataReceived(self, data: bytes) -> None:
        buffer = self._rest + data if self._rest else data
        try:
            replies, self._rest = parseReplies(buffer)
        except Exception as e:
            # A reply we cannot read leaves every later one unmatched: start afresh.
            self._rest = b""
            self._failAll(txredisapi.InvalidResponse(f"bad reply from Redis: {e}"))
            self.transport.abortConnection()
            return
        answers = self._answers
        for reply in replies:
            if not answers:
                continue  # not ours to answer (nothing is sent otherwise)
            d = answers.popleft()
            if isinstance(reply, txredisapi.ResponseError):
                d.errback(reply)
            else:
                d.callback(reply)

    def connectionLost(self, why: Any) -> None:
        self._failAll(txredisapi.ConnectionError("Lost connection"))
        super().connectionLost(why)

    def _failAll(self, error: Exception) -> None:
        answers, self._answers = self._answers, deque()
        for d in answers:
            d.errback(error)
