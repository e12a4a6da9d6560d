"""
Waiting without blocking the reactor: ``sleep`` for a fixed time, ``eventually`` for a condition.

Both hand the reactor back between checks, so the servers and clients a test runs in this
process go on working while it waits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task
from twisted.internet import reactor as _reactor

__all__ = ["eventually", "sleep"]


def sleep(seconds: float, reactor: Any = _reactor) -> defer.Deferred[None]:
    """A Deferred that fires after ``seconds`` on ``reactor``."""
    return task.deferLater(reactor, seconds, lambda: None)


async def eventually(predicate: Callable[[], object], timeout: float = 5.0, step: float = 0.02) -> bool:
    """
    Poll ``predicate`` until it is true or ``timeout`` seconds pass; whether it became true.
    A predicate answering a Deferred (a question to Redis, say) is judged by its result.
    """
    waited = 0.0
    while True:
        answer = predicate()
        if isinstance(answer, defer.Deferred):
            answer = await answer
        if answer:
            return True
        if waited >= timeout:
            return False
        await sleep(step)
        waited += step
