"""Small helpers around Deferreds shared by the router and the REST endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, cast

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing's own from Python 3.13

__all__ = ["firedWith", "isDeferred", "settled"]

_T = TypeVar("_T")

# What steps answer with at once (messages, replies, engine answers): never a Deferred.
_PLAIN = frozenset({dict, list, str, bool, int, set, tuple, type(None)})


def isDeferred(value: object) -> TypeIs[Deferred[Any]]:
    """
    ``isinstance(value, Deferred)``, cheaply for what a step answers at once.

    Deferred's metaclass is ABCMeta (it is an ``Awaitable``): ``isinstance`` of a dict or
    a list against it took 160-230 ns, against 30 for a plain class, and the router made
    ~70 such checks per client set up (each extension's answer to each message). A
    Deferred or a builtin is told by its exact type; anything else (a Deferred subclass)
    still gets ``isinstance``.
    """
    kind = type(value)
    return kind is Deferred or (kind not in _PLAIN and isinstance(value, Deferred))


def firedWith(d: Deferred[Any]) -> list[Any]:
    """
    ``[result]`` (a value or a :class:`Failure`, consumed) if ``d`` has fired
    already, else ``[]`` and ``d`` carries on with its result.

    The in-memory engine and cached keys answer at once: looking before waiting lets a
    caller carry on synchronously and spares a coroutine, a timer and a Deferred chain.
    It looks as ``await`` does (``Deferred.__await__``): a fired Deferred that is not
    waiting on another holds its result in ``result``. Adding a callback to find out
    instead cost 1.3 µs a call, a sixth of a whole publish through the router.
    """
    if not d.called or d.paused:
        return []
    result = d.result
    if isinstance(result, Failure):
        d.addErrback(lambda _: None)  # handled by the caller, not an unhandled error
    return [result]


def settled(d: Deferred[_T]) -> _T | Deferred[_T]:
    """
    What ``d`` fired with if it has fired (raising its failure's exception if it
    failed), else ``d`` itself, to wait on. A caller that goes on at once with a value
    stays in its loop: no callback, no deeper stack for each step that answered at once.
    """
    if not d.called or d.paused:
        return d
    result = d.result
    if isinstance(result, Failure):
        d.addErrback(lambda _: None)  # raised here: not an unhandled error in d
        result.raiseException()
    return cast(_T, result)
