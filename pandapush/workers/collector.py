"""The garbage collector's settings in a ``--workers`` process (the parent and each worker).

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
garbage waits for at most 10,000 allocations more (a few MB); the older generations keep
Python's ratios (10 and 10, and a full collection only once the survivors grew by 25 %).
"""

from __future__ import annotations

import gc

__all__ = ["THRESHOLDS", "tuneCollector"]

#: ``gc.set_threshold`` arguments: youngest generation every 10,000 net allocations.
THRESHOLDS = (10_000, 10, 10)


def tuneCollector() -> None:
    """Freeze what start-up left, and collect the youngest generation less often (see above)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
