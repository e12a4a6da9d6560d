"""
HTTP without sockets: ``stubTreq`` runs treq's calls against a resource in memory, and
``FakeRequest`` is one request handed straight to the code under test.

``treq.testing.StubTreq`` sets its methods (``get``, ``post``, ``request``...) in its
constructor, which a type checker cannot see; ``stubTreq`` returns the same object
described by :class:`StubHTTP`. Responses are treq's (``code``, ``headers``,
``content()``); ``flush()`` delivers what the resource wrote asynchronously.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, cast

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.test.requesthelper import DummyRequest

__all__ = ["FakeRequest", "StubHTTP", "stubTreq"]


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


class FakeRequest(DummyRequest):
    """
    Twisted's ``DummyRequest`` with what pandapush's pages read besides: the ``path`` and
    query (from ``uri``), the cookies received (``received_cookies``, as
    ``twisted.web.http.Request`` keeps them) and whether it came over TLS.

    ``DummyRequest`` stands in for ``twisted.web.server.Request`` but does not declare
    ``IRequest`` (it lacks much of it); :meth:`asIRequest` is the same object typed as the
    code under test takes it, for the parts of ``IRequest`` that code uses.
    """

    def __init__(
        self,
        uri: bytes,
        method: bytes = b"GET",
        *,
        headers: Mapping[bytes, bytes] | None = None,
        cookies: Mapping[bytes, bytes] | None = None,
        secure: bool = False,
    ) -> None:
        path = uri.split(b"?", 1)[0]
        super().__init__(path.split(b"/")[1:])
        self.uri = uri
        self.path = path
        self.method = method
        self.received_cookies: dict[bytes, bytes] = dict(cookies or {})
        self.secure = secure
        for name, value in (headers or {}).items():
            self.requestHeaders.setRawHeaders(name, [value])

    def isSecure(self) -> bool:
        return self.secure

    def getCookie(self, key: bytes) -> bytes | None:
        return self.received_cookies.get(key)

    def asIRequest(self) -> IRequest:
        return cast(IRequest, self)
