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
over Redis's own limit, a header line that never ends, arrays nested over a thousand deep)
is a :class:`txredisapi.InvalidResponse`: the connection cannot be read past it. So is a
reply over ``MAX_REPLY_SIZE`` (1 GiB): the command connection drops the connection, failing
the commands waiting, and logs why.
The checks run only where a reply is refused or incomplete, not on the path of a good
one (a check that each bulk string's CRLF is where its length says cost 3% of a bulk
string's parse; data of the wrong length is caught at the next reply's type anyway).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import txredisapi
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from pandapush.redis.commands import scriptHash

__all__ = [
    "MAX_BULK_LENGTH",
    "MAX_REPLY_SIZE",
    "CommandBounds",
    "CommandProtocol",
    "ReplyReader",
    "encodeCommand",
    "parseReplies",
    "readReply",
]

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


#: The most one reply may take (its bytes as Redis sent them), over all its parts: at
#: least a whole bulk string of Redis's own limit with its header, and above the largest
#: reply pandapush asks for under its default limits (recovering or unparking 10,000
#: messages of 64 KiB: 640 MiB and their framing). Past it the connection is dropped.
MAX_REPLY_SIZE = 1024 * 1024 * 1024
#: Arrays within arrays: pandapush's replies nest three deep; the recursive reader this
#: one replaced refused about a thousand (Python's recursion limit), as this one does.
_MAX_DEPTH = 1000


class ReplyReader:
    """
    Replies read from a stream of reads, each byte parsed once: the elements of an array
    parsed so far are kept while the rest of it arrives, and a bulk string whose length is
    known is not looked at again until all of it is here (reads are kept in a list and
    joined once). Before, a bulk string of 50 MB arriving in 64 KiB reads was copied twice
    and parsed again on each of its 763 reads: 11 s of CPU, 0.12 s now; an array of a
    million 50-byte strings 270 s, 0.64 s now.
    """

    def __init__(self, maxReplySize: int = MAX_REPLY_SIZE) -> None:
        self.maxReplySize = maxReplySize
        # Reads not parsed yet (the start of an element that is not complete), their size,
        # and the size they must reach before parsing them can get further.
        self._tail: list[bytes] = []
        self._tailSize = 0
        self._need = 0
        # The innermost array being read: its elements so far and how many are to come
        # (None: none is); the arrays around it, outermost first.
        self._items: list[Any] | None = None
        self._remaining = 0
        self._outer: list[tuple[list[Any], int]] = []
        # Bytes of the reply being read that were parsed already (before the tail).
        self._replySize = 0

    @property
    def buffered(self) -> int:
        """Bytes received and not parsed yet."""
        return self._tailSize

    def feed(self, data: bytes) -> list[Any]:
        """
        The replies completed by ``data``; raises :class:`txredisapi.InvalidResponse` at a
        reply Redis would not send or one over ``maxReplySize`` (the reader is then of no
        further use: what follows could not be matched to its commands).
        """
        if self._tail:
            self._tail.append(data)
            self._tailSize += len(data)
            if self._tailSize < self._need:
                return []
            data = b"".join(self._tail)
            self._tail = []
        try:
            return self._read(data, 0, False)[0]
        except (txredisapi.InvalidResponse, ValueError) as e:
            raise _refused(e) from e

    def _read(self, buffer: bytes, position: int, one: bool) -> tuple[list[Any], int]:
        """
        Parse ``buffer`` from ``position``: the replies completed and the position after
        the last of them (with ``one``, stop after the first); keeps what is left for the
        next read. The checks run where a reply is refused, incomplete or spans reads, not
        on the path of a good reply read whole (see the module's docstring).
        """
        replies: list[Any] = []
        items = self._items
        remaining = self._remaining
        outer = self._outer
        size = len(buffer)
        # Where the reply being read started, as a position in buffer (below 0: in earlier reads).
        replyStart = position - self._replySize
        need = 0
        value: Any
        while position < size:
            end = buffer.find(b"\r\n", position)
            if end < 0:
                if size - position > _MAX_LINE:
                    raise txredisapi.InvalidResponse("a reply line longer than 64 KiB")
                need = size - position + 1
                break
            kind = buffer[position]
            if kind == 36:  # $ bulk string
                length = int(buffer[position + 1 : end])
                if length >= 0:
                    stop = end + 2 + length
                    if stop + 2 > size:
                        if length > MAX_BULK_LENGTH:
                            raise txredisapi.InvalidResponse(f"a bulk string of {length} bytes")
                        if stop + 2 - replyStart > self.maxReplySize:
                            raise _tooLarge(stop + 2 - replyStart, self.maxReplySize)
                        need = stop + 2 - position
                        break
                    raw = buffer[end + 2 : stop]
                    try:
                        value = raw.decode()
                    except UnicodeDecodeError:
                        value = raw
                    position = stop + 2
                elif length == -1:
                    value = None
                    position = end + 2
                else:
                    raise txredisapi.InvalidResponse(f"a negative length {length}")
            elif kind == 42:  # * array
                count = int(buffer[position + 1 : end])
                position = end + 2
                if count > 0:
                    if items is not None:
                        if len(outer) >= _MAX_DEPTH:
                            raise txredisapi.InvalidResponse(f"arrays nested over {_MAX_DEPTH} deep")
                        outer.append((items, remaining))
                    items = []
                    remaining = count
                    continue
                if count == 0:
                    value = []
                elif count == -1:
                    value = None
                else:
                    raise txredisapi.InvalidResponse(f"a negative length {count}")
            elif kind == 58:  # : integer
                value = int(buffer[position + 1 : end])
                position = end + 2
            elif kind == 43:  # + status
                value = buffer[position + 1 : end].decode()
                position = end + 2
            elif kind == 45:  # - error
                value = txredisapi.ResponseError(buffer[position + 1 : end].decode(errors="replace"))
                position = end + 2
            else:
                raise txredisapi.InvalidResponse(f"unexpected reply type {chr(kind)!r}")
            # A value: the next element of the innermost array, or a reply.
            while items is not None:
                items.append(value)
                remaining -= 1
                if remaining:
                    break
                value = items
                items, remaining = outer.pop() if outer else (None, 0)
            else:
                if replyStart < 0 and position - replyStart > self.maxReplySize:
                    raise _tooLarge(position - replyStart, self.maxReplySize)
                replies.append(value)
                replyStart = position
                if one:
                    break
        self._items = items
        self._remaining = remaining
        if position < size:
            if size - replyStart > self.maxReplySize:
                raise _tooLarge(size - replyStart, self.maxReplySize)
            self._tail = [buffer[position:]]
            self._tailSize = size - position
            self._need = need
        else:
            self._tailSize = 0
        self._replySize = position - replyStart
        return replies, replyStart


def _tooLarge(size: int, limit: int) -> txredisapi.InvalidResponse:
    return txredisapi.InvalidResponse(f"a reply of over {limit} bytes (at least {size})")


def _refused(e: Exception) -> txredisapi.InvalidResponse:
    if isinstance(e, txredisapi.InvalidResponse):
        return e
    # ValueError: a length or integer that is not a number (or not UTF-8, for a status).
    return txredisapi.InvalidResponse(f"unreadable reply: {e}")


def parseReplies(buffer: bytes) -> tuple[list[Any], bytes]:
    """
    The complete replies at the start of ``buffer``, and what is left of it; raises
    :class:`txredisapi.InvalidResponse` at a reply Redis would not send.
    """
    try:
        replies, end = ReplyReader()._read(buffer, 0, False)
    except (txredisapi.InvalidResponse, ValueError) as e:
        raise _refused(e) from e
    return replies, buffer[end:]


def readReply(buffer: bytes, position: int = 0) -> tuple[Any, int] | None:
    """
    One reply at ``buffer[position:]``, read as :func:`parseReplies` reads them: (value,
    the position after it), or None while it is incomplete. An error reply is a value
    here (a :class:`txredisapi.ResponseError`), as inside an array.
    """
    try:
        replies, end = ReplyReader()._read(buffer, position, True)
    except (txredisapi.InvalidResponse, ValueError) as e:
        raise _refused(e) from e
    return (replies[0], end) if replies else None


class CommandBounds(Protocol):
    """
    What bounds a shard's commands on :meth:`CommandProtocol.command`: the shard's side
    (:class:`pandapush.redis.connection.RedisShard` makes it), so this module need not
    know the shard's health or errors.
    """

    reactor: IReactorTime
    timeout: float

    def answered(self, sent: float) -> None:
        """A command sent at ``sent`` was answered (not with an error reply)."""

    def timedOut(self, what: str, sent: float) -> Exception:
        """What a command sent at ``sent`` fails with, unanswered ``timeout`` later."""

    def lost(self, what: str) -> Exception:
        """What a command fails with when its connection is lost."""


class CommandProtocol(txredisapi.RedisProtocol):  # type: ignore[misc]
    """
    txredisapi's protocol (connecting, SELECT, the pool) with the lean command path above.

    :meth:`command` is the shards' path: the command's deadline, the health's
    bookkeeping at its answer, the errors a timeout or a lost connection become and a
    script sent again after ``NOSCRIPT`` are all done here, on the queue of commands
    waiting for their replies, instead of a chain of callbacks (and closures) on each
    command's Deferred: in a ``--workers 2`` reconnect storm those four callbacks,
    their closures and the deadline queue's entry were ~8 % of a worker's busy samples.
    Every command has the same timeout, so deadlines come in the queue's order: one
    timer, set for the oldest command not yet examined.
    """

    _log = Logger()
    #: The largest reply read before the connection is dropped (see ``MAX_REPLY_SIZE``).
    maxReplySize = MAX_REPLY_SIZE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per command waiting: [deferred, sent (None: unbounded, execute_command's),
        # what (its name, for errors), the script's (text, keys, args) for an EVALSHA].
        self._answers: deque[list[Any]] = deque()
        self._reader = ReplyReader(self.maxReplySize)
        self._bounds: CommandBounds | None = None
        self._timer: IDelayedCall | None = None
        # How many commands at the queue's head the timer looked at already (expired,
        # or not bounded): the next deadline is that of the one after them.
        self._examined = 0
        self._scripts: set[str] = set()

    def execute_command(self, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        if not self.connected:
            raise txredisapi.ConnectionError("Not connected")
        self.transport.write(encodeCommand(args))
        d: defer.Deferred[Any] = defer.Deferred()
        self._answers.append([d, None, None, None])
        postProcess = kwargs.get("post_proc")
        if callable(postProcess):
            d.addCallback(postProcess)
        return d

    def command(self, bounds: CommandBounds, args: tuple[Any, ...]) -> defer.Deferred[Any]:
        """
        Send ``args``; the Deferred fires with the reply, fails with the error reply, or
        with ``bounds.timedOut(...)`` once ``bounds.timeout`` passed unanswered, or with
        ``bounds.lost(...)`` if the connection is lost first. Raises
        ``txredisapi.ConnectionError`` when not connected.
        """
        if not self.connected:
            raise txredisapi.ConnectionError("Not connected")
        self.transport.write(encodeCommand(args))
        d: defer.Deferred[Any] = defer.Deferred()
        self._answers.append([d, bounds.reactor.seconds(), args[0], None])
        self._bounds = bounds
        if self._timer is None:
            self._timer = bounds.reactor.callLater(bounds.timeout, self._expire)
        return d

    def evaluate(
        self, bounds: CommandBounds, script: str, keys: Sequence[str], args: Sequence[Any]
    ) -> defer.Deferred[Any]:
        """
        :meth:`command` for a Lua script: its text once per connection, EVALSHA after it
        (Redis runs a connection's commands in order, so the EVALSHAs find it loaded). A
        ``NOSCRIPT`` (only after a ``SCRIPT FLUSH``: a restarted Redis is a new
        connection) sends the text again, answering the same Deferred, bounded anew.
        """
        sha = scriptHash(script)
        if sha not in self._scripts:
            self._scripts.add(sha)
            return self.command(bounds, ("EVAL", script, len(keys), *keys, *args))
        d = self.command(bounds, ("EVALSHA", sha, len(keys), *keys, *args))
        entry = self._answers[-1]
        entry[2] = "EVAL"
        entry[3] = (script, keys, args)
        return d

    def _expire(self) -> None:
        self._timer = None
        bounds = self._bounds
        if bounds is None:
            return
        answers = self._answers
        now = bounds.reactor.seconds()
        deadline = now - bounds.timeout
        examined = self._examined
        waiting = len(answers)
        expired = []
        while examined < waiting:
            entry = answers[examined]
            sent = entry[1]
            if sent is not None and not entry[0].called:
                if sent > deadline:
                    break
                expired.append(entry)
            examined += 1
        self._examined = examined
        if examined < waiting:
            self._timer = bounds.reactor.callLater(answers[examined][1] - deadline, self._expire)
        for d, sent, what, _ in expired:
            if not d.called:
                d.errback(bounds.timedOut(what, sent))

    def dataReceived(self, data: bytes) -> None:
        try:
            replies = self._reader.feed(data)
        except Exception as e:
            # A reply we cannot read leaves every later one unmatched: start afresh.
            self._reader = ReplyReader(self.maxReplySize)
            self._log.error(
                "Dropping the Redis connection to {peer}: bad reply ({error}); failing {count} commands",
                peer=str(self.transport.getPeer()),
                error=str(e),
                count=len(self._answers),
            )
            self._failAll(txredisapi.InvalidResponse(f"bad reply from Redis: {e}"))
            self.transport.abortConnection()
            return
        answers = self._answers
        bounds = self._bounds
        for reply in replies:
            if not answers:
                continue  # not ours to answer (nothing is sent otherwise)
            d, sent, what, script = answers.popleft()
            if self._examined:
                self._examined -= 1
            if d.called:
                continue  # timed out (or cancelled by its caller) already
            if isinstance(reply, txredisapi.ResponseError):
                if script is not None and bounds is not None and str(reply).startswith("NOSCRIPT"):
                    self._scripts.discard(scriptHash(script[0]))
                    try:
                        self.evaluate(bounds, *script).chainDeferred(d)
                    except txredisapi.ConnectionError:
                        d.errback(bounds.lost(what))
                    continue
                d.errback(reply)
            else:
                if sent is not None and bounds is not None:
                    bounds.answered(sent)
                d.callback(reply)

    def connectionLost(self, why: Any) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        self._failAll(txredisapi.ConnectionError("Lost connection"))
        super().connectionLost(why)

    def _failAll(self, error: Exception) -> None:
        answers, self._answers = self._answers, deque()
        self._examined = 0
        bounds = self._bounds
        lost = isinstance(error, txredisapi.ConnectionError) and bounds is not None
        for d, sent, what, _ in answers:
            if d.called:
                continue
            if lost and sent is not None:
                assert bounds is not None
                d.errback(bounds.lost(what))
            else:
                d.errback(error)
