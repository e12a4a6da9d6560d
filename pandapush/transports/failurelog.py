"""Autobahn's per-connection failure warnings, gathered so that clients cannot flood the log.

Autobahn warns once or more for every websocket it fails for a protocol error (``failing
WebSocket connection (code=1007): ...``, then ``dropping connection to peer ...``): invalid
UTF-8, an unmasked frame, reserved bits, an oversized control frame. Each is the client's
doing, and a client that opens and spoils connections in a loop wrote two or three lines
per connection to the operator's log (HARDENING-TODO); while a ping is pending, each
pong that does not answer it was a warning too, as many as a client cares to send; and
each opening autobahn refuses (a bad version, no key, an origin not allowed) an ``info``
line.

:class:`FailureLog` stands in for autobahn's logger on pandapush's websocket protocol:
the first such warning in a window of :data:`WINDOW` seconds is logged as autobahn wrote
it; the rest are counted, and written as one line when the window ends, by close code (and
``dropped``, ``unexpected pong``, ``opening refused``), and counted for ``/metrics`` too.
Everything else autobahn logs goes through unchanged.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["WINDOW", "FailureLog"]

#: Seconds: at most one failure logged as it happened, and one summary line, per window.
WINDOW = 60.0

#: The warnings autobahn writes for each connection it fails or drops, and for each pong
#: that does not answer its pending ping (a client may send any number while one is).
_FAILING = "failing WebSocket connection"
_DROPPING = "dropping connection to peer"
_PONG = "Auto ping/pong: received non-pending pong"
#: And the ``info`` line for each opening it refuses (a bad version, a missing key, an
#: origin not allowed): one per request a client sends.
_REFUSING = "failing WebSocket opening handshake"


class FailureLog:
    """
    Autobahn's logger (``log``, a txaio/Twisted logger) with its per-connection failure
    warnings and refused openings gathered; every other call is ``log``'s own.
    """

    _summaryLog = Logger(namespace="pandapush.transports.websocket")

    def __init__(self, log: Any, clock: IReactorTime, window: float = WINDOW) -> None:
        self._log = log
        self.clock = clock
        self.window = window
        #: Lines counted and not yet written, by kind ("code 1002", "dropped", ...).
        self.counted: Counter[str] = Counter()
        #: Every such line since start, logged or counted, by kind: ``/metrics``'
        #: ``pandapush_websocket_failures_total{kind}``.
        self.totals: Counter[str] = Counter()
        self._windowEnds: IDelayedCall | None = None
        self._stopped = False

    def __getattr__(self, name: str) -> Any:
        # Everything but warn and info (debug, error, failure, the level...) is the logger's.
        return getattr(self._log, name)

    def warn(self, format: str, **kwargs: Any) -> None:
        if format.startswith(_FAILING):
            kind = f"code {kwargs.get('code')}"
        elif format.startswith(_DROPPING):
            kind = "dropped"
        elif format == _PONG:
            kind = "unexpected pong"
        else:
            self._log.warn(format, **kwargs)
            return
        self._gather(self._log.warn, kind, format, kwargs)

    def info(self, format: str, **kwargs: Any) -> None:
        if format.startswith(_REFUSING):
            self._gather(self._log.info, "opening refused", format, kwargs)
            return
        self._log.info(format, **kwargs)

    def _gather(self, log: Any, kind: str, format: str, kwargs: dict[str, Any]) -> None:
        self.totals[kind] += 1
        if self._stopped:
            # The server stops: nothing scheduled any more, so as autobahn wrote it.
            log(format, **kwargs)
            return
        if self._windowEnds is None:
            # The first of a window: as autobahn wrote it, so the log shows what happens.
            self._windowEnds = self.clock.callLater(self.window, self._summarize)
            log(format, **kwargs)
            return
        self.counted[kind] += 1

    def _summarize(self) -> None:
        self._windowEnds = None
        if not self.counted:
            return
        counted, self.counted = self.counted, Counter()
        self._summaryLog.warn(
            "{count} more websocket failures in {window:.0f} s, not logged one by one ({kinds})",
            count=sum(counted.values()),
            window=self.window,
            kinds=", ".join(f"{kind}: {n}" for kind, n in sorted(counted.items())),
            counts=dict(counted),
        )
        # The next one opens a window of its own, logged as it happens: however many
        # come, at most two lines a window.

    def stop(self) -> None:
        """The server stops: what is counted is written now, and later warnings as they come."""
        self._stopped = True
        call = self._windowEnds
        if call is not None and call.active():
            call.cancel()
        self._summarize()
