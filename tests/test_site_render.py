"""
``LimitedRequest.render`` (a body of bytes given its length, written and finished in one
call) against twisted.web's own ``Request.render`` and ``write``: the same resources, the
same byte streams through one site, answered by each; the answers (status lines, headers,
bodies), what the site logged and whether the connection closed must be the same, byte
for byte but for the ``Date``.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.error import UnsupportedMethod
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from pandapush.web.site import LimitedRequest, PandapushSite

_DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")
#: What a 500 page shows of the request and the resource (their class and address).
_REPR = re.compile(rb"(?:_Twisted|LimitedRequest)|0x[0-9a-f]+")
_LENGTH = re.compile(rb"\r\nContent-Length: \d+\r\n")


class _Twisted(LimitedRequest):
    """The site's request, but rendered and written by twisted.web's own code."""

    render = Request.render  # type: ignore[assignment]
    write = Request.write  # type: ignore[assignment]


class _Leaf(Resource):
    isLeaf = True

    def __init__(self, answer: Any) -> None:
        super().__init__()
        self.answer = answer
        self.rendered = 0

    def render_GET(self, request: Any) -> Any:
        self.rendered += 1
        return self.answer(request)

    render_POST = render_GET


def _typed(request: Any) -> bytes:
    request.setHeader(b"Content-Type", b"text/plain")
    request.setHeader(b"X-Two", b"a")
    request.responseHeaders.addRawHeader(b"X-Two", b"b")
    return b"typed"


def _later(request: Any) -> int:
    request.setHeader(b"Content-Length", b"5")
    request.write(b"la")
    request.write(b"ter")
    request.finish()
    return NOT_DONE_YET


def _cookie(request: Any) -> bytes:
    request.addCookie(b"a", b"b")
    return b"cookie"


def _code(code: int) -> Any:
    def answer(request: Any) -> bytes:
        request.setResponseCode(code)
        return b"" if code in (204, 304) else b"coded"

    return answer


_ANSWERS = {
    b"plain": lambda request: b"hello",
    b"empty": lambda request: b"",
    b"typed": _typed,
    b"later": _later,
    b"cookie": _cookie,
    b"text": lambda request: "not bytes",
    b"none": lambda request: None,
    b"nocontent": _code(204),
    b"notmodified": _code(304),
    b"teapot": _code(418),
    b"close": lambda request: (request.setHeader(b"Connection", b"close"), b"bye")[1],
}


class _Only(Resource):
    """Renders only ``method``: any other is refused as twisted.web's resources refuse it."""

    isLeaf = True

    def __init__(self, method: bytes) -> None:
        super().__init__()
        self.method = method
        self.rendered = 0

    def render(self, request: Any) -> bytes:
        self.rendered += 1
        if request.method != self.method:
            raise UnsupportedMethod([self.method])
        return b"only " + self.method


class _Root(Resource):
    def __init__(self) -> None:
        super().__init__()
        self.leaves = {name: _Leaf(answer) for name, answer in _ANSWERS.items()}
        self.only: dict[bytes, _Only] = {b"getonly": _Only(b"GET"), b"putonly": _Only(b"PUT")}

    def getChild(self, path: bytes, request: Any) -> Any:
        if path in self.only:
            return self.only[path]
        return self.leaves.get(path) or super().getChild(path, request)


class RenderDifferentialTests(TestCase):
    def exchange(self, factory: type[Request], stream: bytes) -> tuple[bytes, bool, list[tuple[Any, ...]]]:
        root = _Root()
        site = PandapushSite(root, 1024, accessLog=False)
        site.serveSimple = None
        site.requestFactory = factory
        logged: list[tuple[Any, ...]] = []
        site.requestDone = lambda r: logged.append((r.code, r.method, r.uri, r.sentLength, r.finished))
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        protocol = site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        protocol.dataReceived(stream)
        closed = bool(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        rendered = [leaf.rendered for leaf in root.leaves.values()]
        rendered += [only.rendered for only in root.only.values()]
        logged.append(tuple(rendered))
        answers = _DATE.sub(b"\r\nDate: -\r\n", transport.value())
        if b" 500 Internal Server Error\r\n" in answers:
            answers = _LENGTH.sub(b"\r\nContent-Length: -\r\n", _REPR.sub(b"-", answers))
            logged = [entry[:3] + entry[4:] if len(entry) == 5 else entry for entry in logged]
        return answers, closed, logged

    def assertSame(self, stream: bytes) -> None:
        ours = self.exchange(LimitedRequest, stream)
        twisted = self.exchange(_Twisted, stream)
        self.assertEqual(ours, twisted)
        self.assertTrue(ours[0].startswith(b"HTTP/1."), ours)

    def test_answers(self) -> None:
        """Each kind of answer, alone and all pipelined on one connection: the same bytes and log."""
        streams = []
        for name in [*_ANSWERS, b"getonly", b"putonly", b"missing"]:
            for method in (b"GET", b"POST", b"HEAD", b"DELETE"):
                for version in (b"HTTP/1.1", b"HTTP/1.0"):
                    stream = b"%s /%s %s\r\nHost: x\r\n\r\n" % (method, name, version)
                    streams.append(stream)
                    self.assertSame(stream)
        self.assertSame(b"".join(s for s in streams if b"HTTP/1.1" in s and b"close" not in s))
