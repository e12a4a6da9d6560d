"""
HTTP without sockets: ``stubTreq`` runs treq's calls against a resource in memory.

``treq.testing.StubTreq`` sets its methods (``get``, ``post``, ``request``...) in its
constructor, which a type checker cannot see; ``stubTreq`` returns the same object
described by :class:`StubHTTP`. Responses are treq's (``code``, ``headers``,
``content()``); ``flush()`` delivers what the resource wrote asynchronously.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.web.resource import IResource

__all__ = ["StubHTTP", "stubTreq"]


class StubHTTP(Protocol):
    """What tests call on a ``StubTreq``."""

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]: ...

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]: ...

    def post(self, url: str, data: Any = None, **kwargs: Any) -> Deferred[Any]: ...

    def put(self, url: str, data: Any = None, **kwargs: Any) -> Deferred[Any]: ...

    def delete(self, url: str, **kwargs: Any) -> Deferred[Any]: ...

    def flush(self) -> None: ...


def stubTreq(resource: IResource) -> StubHTTP:
    """treq's calls answered by ``resource`` in memory (``treq.testing.StubTreq``)."""
    return cast(StubHTTP, StubTreq(resource))
