"""
Try a proposed server change without editing the server: ``bench/run --experiment NAMES``
(or ``node bench/profile.js --experiment NAMES``) starts pandapush through this file, which
patches the named spots at import time and then runs ``python -m twisted`` as usual.

    python bench/tools/experiments.py batchframe,quietautobahn,noutf8 -m twisted pandapush ...

These are measurements of proposals (see bench/README.md, "Where the time goes"), not
code to ship: the real change belongs in the module named by each patch.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable, Sequence
from typing import Any

PATCHES: dict[str, Callable[[], None]] = {}


def patch(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(function: Callable[[], None]) -> Callable[[], None]:
        PATCHES[name] = function
        return function

    return register


@patch("batchframe")
def batchFrame() -> None:
    """
    pandapush/transports/websocket.py, BayeuxWebSocketProtocol.deliver: a batch of several
    deliveries is framed once and shared by every socket receiving the same batch in this
    turn (as single deliveries already are), keyed by the tuple of Delivery objects.
    """
    from pandapush.transports import websocket

    original = websocket.BayeuxWebSocketProtocol.deliver

    def deliver(self: Any, deliveries: Sequence[Any]) -> None:
        if len(deliveries) < 2 or not self._sendable() or self._backlog is not None:
            return original(self, deliveries)
        key = ("batch", tuple(deliveries))
        frames = deliveries[0].frames
        frame = frames.get(key)
        if frame is None:
            frame = frames[key] = self.factory.prepareMessage(
                b"[" + b",".join(d.payload for d in deliveries) + b"]"
            )
        self.sendPreparedMessage(frame)
        return None

    websocket.BayeuxWebSocketProtocol.deliver = deliver  # type: ignore[method-assign]


@patch("nohistory")
def noHistory() -> None:
    """
    Channel history off on every channel (as ``--history-size 0``): the baseline the cost of
    history and positions is measured against (bench/README.md, "History and positions").
    """
    from pandapush.engines import history

    original = history.HistorySettings.__init__

    def init(self: Any, size: int = 0, ttl: float = history.DEFAULT_HISTORY_TTL) -> None:
        original(self, 0, ttl)

    history.HistorySettings.__init__ = init  # type: ignore[method-assign]


@patch("quietautobahn")
def quietAutobahn() -> None:
    """
    Autobahn formats debug-log arguments eagerly: pformat() of its options on every
    connection (websocket/protocol.py, _connectionMade) and hltype()/hlval() on every read
    (twisted/websocket.py, dataReceived). Skip both when nothing logs at debug level.
    """
    import autobahn.websocket.protocol as protocol

    from pandapush.transports import websocket

    protocol.pformat = lambda value, *args, **kwargs: ""  # type: ignore[assignment]

    def dataReceived(self: Any, data: bytes) -> None:
        self._dataReceived(data)

    websocket.BayeuxWebSocketProtocol.dataReceived = dataReceived  # type: ignore[method-assign]


@patch("noutf8")
def noUtf8() -> None:
    """
    pandapush/transports/websocket.py, BayeuxWebSocketFactory: utf8validateIncoming=False
    (orjson rejects invalid UTF-8 when decoding the message anyway).
    """
    from pandapush.transports import websocket

    original = websocket.BayeuxWebSocketFactory.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.setProtocolOptions(utf8validateIncoming=False)

    websocket.BayeuxWebSocketFactory.__init__ = init  # type: ignore[method-assign]


@patch("noformparse")
def noFormParse() -> None:
    """
    pandapush/web/site.py, LimitedRequest: _parsePOSTFormSubmission = False. Twisted parses
    the Content-Type of every POST with the email package (twisted/web/http.py,
    _parseContentType) to fill request.args from form bodies; pandapush reads bodies itself.
    """
    from pandapush.web import site

    site.LimitedRequest._parsePOSTFormSubmission = False  # type: ignore[attr-defined]


@patch("gcfreeze")
def gcFreeze() -> None:
    """Fewer, cheaper collections: move startup objects out of the GC and collect gen0 less often."""
    import gc

    gc.set_threshold(10000, 50, 100)
    gc.freeze()


@patch("memtrace")
def memTrace() -> None:
    """
    Where a connection's memory goes: tracemalloc on, and each SIGUSR2 writes a snapshot to
    $PANDAPUSH_MEMTRACE_DIR (default /tmp)/snapshot-<pid>-<n>.pickle. Take one before and one
    after opening N idle clients, then compare them (tracemalloc's Snapshot.compare_to) and
    divide by N. Slows the server: measure memory with it, never speed.
    """
    import os
    import signal
    import tracemalloc

    tracemalloc.start(8)
    taken = [0]

    def dump(signum: int, frame: Any) -> None:
        taken[0] += 1
        directory = os.environ.get("PANDAPUSH_MEMTRACE_DIR", "/tmp")
        snapshot = tracemalloc.take_snapshot()
        snapshot.dump(os.path.join(directory, f"snapshot-{os.getpid()}-{taken[0]}.pickle"))

    signal.signal(signal.SIGUSR2, dump)


def main() -> None:
    names = [n for n in sys.argv[1].split(",") if n]
    rest = sys.argv[2:]
    if rest[:1] != ["-m"] or len(rest) < 2:
        raise SystemExit("usage: experiments.py NAME[,NAME] -m module [args...]")
    unknown = [n for n in names if n not in PATCHES]
    if unknown:
        raise SystemExit(f"unknown experiments {unknown}; known: {sorted(PATCHES)}")
    sys.path.insert(0, "")
    for name in names:
        PATCHES[name]()
    module = rest[1]
    sys.argv = [module, *rest[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
