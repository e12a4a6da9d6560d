"""What a command connection spends per command, kept small: deadlines and script hashes.

(The shards' commands on a connected connection are bounded by
:class:`pandapush.redis.protocol.CommandProtocol` itself now; :class:`Deadlines` bounds
those txredisapi's handler holds until a connection is made, and a script's text is sent
once per connection by ``CommandProtocol.evaluate``.)

Measured in a ``--workers 2`` reconnect storm (bench ``storm-ws-workers2``), where a
client's set-up and disconnect are ~40 Redis commands: per command, a ``callLater``
(``Deferred.addTimeout``) made a DelayedCall, pushed it on the reactor's heap and
cancelled it at the answer; and txredisapi's ``eval`` hashed the whole script (SHA-1 of
a few KB) on every call and sent it in full (``EVAL``) until its first ``EVALSHA`` was
answered, which in a storm was 0.7 ``EVAL``s per client, each carrying the script's text.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["Deadlines", "scriptHash"]

_hashes: dict[str, str] = {}


def scriptHash(script: str) -> str:
    """The SHA-1 Redis knows ``script`` by (``EVALSHA``), computed once per script."""
    sha = _hashes.get(script)
    if sha is None:
        sha = _hashes[script] = hashlib.sha1(script.encode()).hexdigest()
    return sha


class Deadlines:
    """
    One timer for every command in flight on a connection, instead of one per command.

    Every command gets the same timeout, so deadlines are in the order the commands were
    sent: a queue, whose head is the next to expire. The timer is set for the head only;
    when it fires, every command past its deadline and not answered is cancelled (as
    ``addTimeout`` did: the caller sees ``CancelledError``), answered ones are dropped.
    """

    def __init__(self, reactor: IReactorTime, timeout: float) -> None:
        self._reactor = reactor
        self.timeout = timeout
        # [deadline, deferred or None once answered]
        self._queue: deque[list[Any]] = deque()
        self._timer: IDelayedCall | None = None

    def add(self, d: defer.Deferred[Any], now: float) -> Callable[[Any], Any]:
        """
        Bound ``d``; returns the callback that must see ``d``'s result (success or failure)
        once it is in, to stand down its deadline. Added last on ``d`` by the caller, so
        a result that is itself waiting (a script sent again after ``NOSCRIPT``) is still
        bounded, as with ``addTimeout``.
        """
        entry = [now + self.timeout, d]
        self._queue.append(entry)
        if self._timer is None:
            self._timer = self._reactor.callLater(self.timeout, self._expire)

        def done(result: Any) -> Any:
            entry[1] = None
            return result

        return done

    def _expire(self) -> None:
        self._timer = None
        queue = self._queue
        now = self._reactor.seconds()
        expired = []
        while queue and (queue[0][1] is None or queue[0][0] <= now):
            d = queue.popleft()[1]
            if d is not None:
                expired.append(d)
        if queue:
            self._timer = self._reactor.callLater(max(queue[0][0] - now, 0.0), self._expire)
        for d in expired:
            d.cancel()

    def close(self) -> None:
        """Stop the timer (the connection is closed; its commands fail on their own)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
