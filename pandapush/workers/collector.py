"""The garbage collector's settings once serving: each process of ``--workers``, or one alone.

Measured in a reconnect storm on two workers over Redis (3,000 websocket clients
handshaking, connecting, subscribing, then disconnecting; 300 in flight), with the
collector timed by ``gc.callbacks`` in thread CPU time: with Python's defaults it took
1.4-1.8 s of a worker's 5-5.5 s of CPU (~30 %): 1,400-1,700 collections of the youngest
generation, ~130 of the middle one at ~2.3 ms, and 11-14 full collections at ~75 ms.
Every command in flight to Redis holds Deferreds, a coroutine and its frame: collected
every 700 allocations, thousands of them are alive at each collection and are promoted,
then traversed again by the older generations, and each full collection traverses the
~75,000 objects of start-up (modules, classes, functions) too.

So, once started: collect, then freeze what is left (start-up's objects leave the
collector's generations for good: they live as long as the process), and collect the
youngest generation every 10,000 allocations rather than 700, so that what is in
flight has finished by then. The same storm: 0.36-0.52 s of collection per worker (-70 %),
no full collection during the storm, the longest pause 50 ms instead of 140. Cyclic
garbage waits for at most 10,000 allocations more (a few MB).

The middle generation is collected at every fourth collection rather than every twelfth
(Python's ratio of 10): what survives a young collection waits there until the middle
one, which examines all of it at once. Clients that connect keep what they build:
in the one-to-one benchmark (2,000 websocket subscribers set up, then 10,000 messages,
bench/README.md) the ~80,000 objects of the set-up sat in the middle generation and the
first middle collection, in the first tenth of a second of publishing, took 23-34 ms of
CPU while every message in flight waited: it set the run's p99. At every fourth, it
examines at most ~40,000 objects (~30,000 there: ~8 ms). Each object is still examined
there once before it moves on, so the work is the same, in smaller pieces. The oldest
generation is looked at after 35 middle collections instead of 11, so as often as before
(every 144th collection), and a full collection still waits until the survivors grew by
25 %.

One process serving alone (no ``--workers``) gets the same once its ports listen: in
``bench/run`` reconnect storms (200 in flight) its CPU per 1,000 client setups went
down 15 % over websocket and 13 % over long-polling, its memory per idle websocket
unchanged (8.6 KB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.application.internet import TimerService
from twisted.internet.interfaces import IReactorTime

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IListeningPort

__all__ = ["THRESHOLDS", "TRIM_INTERVAL", "MemoryTrim", "mallocTrim", "tuneCollector", "tuneOnceListening"]

#: ``gc.set_threshold`` arguments: youngest generation every 10,000 net allocations, the
#: middle one every fourth time, the oldest looked at as often as with (10,000, 10, 10).
THRESHOLDS = (10_000, 2, 34)


def tuneCollector() -> None:
    """Freeze what start-up left, and collect the youngest generation less often (see above)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


def tuneOnceListening(listening: Deferred[list[IListeningPort]]) -> None:
    """
    For a server serving alone: ``tuneCollector`` once its ports listen (``listening``
    fires with them; with None when it could not start, and then nothing is done).
    """

    def tune(ports: list[IListeningPort] | None) -> list[IListeningPort] | None:
        if ports is not None:
            tuneCollector()
        return ports

    listening.addCallback(tune)


#: Seconds between two hand-backs of the allocator's free memory (``--trim-interval``).
TRIM_INTERVAL = 60.0


def mallocTrim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where there is none (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


class MemoryTrim(TimerService):
    """
    Hands the memory the C allocator holds free back to the system every ``interval``
    seconds (glibc's ``malloc_trim(0)``; nothing where there is none).

    CPython frees a large object (a request body, a decoded batch, a reply) to glibc's
    malloc, which keeps the pages for later unless they are at the top of its heap. After
    a burst of big or many short-lived objects the process keeps its high-water mark: in
    ``bench/fuzz.py`` (a million hostile messages) RSS grew from 136 MB half-way to 143
    MB at the end, while tracemalloc saw Python's own memory go down, and one
    ``malloc_trim(0)`` took RSS from 136 to 91 MB in 3.6 ms (4.9 ms at most of four).
    RSS is what an operator's memory limit, alert or autoscaler reads; a minute's interval
    costs ~0.01 % of a core and brings it back to what is in use within a minute of a
    burst (a reconnect storm, a fan-out), instead of never.
    """

    def __init__(
        self, interval: float, clock: IReactorTime, trim: Callable[[int], int] | None = None
    ) -> None:
        super().__init__(interval, self.trim)
        self.clock = clock
        self._trim = trim if trim is not None else mallocTrim()

    def trim(self) -> None:
        if self._trim is not None:
            self._trim(0)
