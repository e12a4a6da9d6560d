"""Small helpers around Deferreds shared by the router and the REST endpoint."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

__all__ = ["firedWith"]


def firedWith(d: Deferred[Any]) -> list[Any]:
    """
    ``[result]`` (a value or a :class:`Failure`, consumed) if ``d`` has fired
    already, else ``[]`` and ``d`` carries on with its result.

    The in-memory engine and cached keys answer at once: looking before waiting lets a
    caller carry on synchronously and spares a coroutine, a timer and a Deferred chain.
    """
    box: list[Any] = []

    def peek(result: Any) -> Any:
        box.append(result)
        return result

    d.addBoth(peek)
    if box and isinstance(box[0], Failure):
        d.addErrback(lambda _: None)  # handled by the caller, not an unhandled error
    return box
