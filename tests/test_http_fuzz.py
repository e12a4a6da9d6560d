"""
The HTTP and websocket framing, fuzzed: mutated byte streams through the two ways
pandapush reads a request or a frame, which must answer alike.

pandapush reads the requests of its hot paths itself (:mod:`pandapush.web.lean` for REST
publishes and long-polls, :mod:`pandapush.transports.handshake` for websocket openings)
and websocket frames (:mod:`pandapush.transports.fastframes`), and hands everything it
does not take whole to twisted.web and autobahn, which answered every request and read
every frame before those paths existed. Their own differential tests
(``test_lean_http``, ``test_handshake``) send chosen streams; here Hypothesis mutates
valid ones (bytes flipped, inserted, deleted, duplicated, case changed, a
``Content-Length`` rewritten, line ends and separators inserted, a stream cut short or
split into two reads anywhere) and every answer, with whether the connection was closed,
must be the same byte for byte on both paths, but for the ``Date`` and server-made ids.

``PANDAPUSH_FUZZ_EXAMPLES`` sets the examples per test (default 400; 20,000 ran clean
when this was written).
"""

from __future__ import annotations

import os
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.support.inprocess import APP
from tests.test_fastframes import AutobahnServer, FastServer, frame, outcome
from tests.test_handshake import DIRECT, OpeningCase
from tests.test_lean_http import BASIC, PUSH, REST, DifferentialCase, bayeux, post, token

EXAMPLES = int(os.environ.get("PANDAPUSH_FUZZ_EXAMPLES", "400"))

#: What a mutation inserts: the bytes HTTP framing turns on, and whole lines that change
#: how a request is read.
INSERTS = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"\r\n\r\n",
    b"\r\n ",
    b"\xff",
    b"\x7f",
    b"%",
    b"%00",
    b"?",
    b"/",
    b"/../",
    b"Content-Length: 5\r\n",
    b"Content-Length: -1\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Expect: 100-continue\r\n",
    b"Connection: close\r\n",
    b"Upgrade: websocket\r\n",
    b"Host: other\r\n",
    b"Origin: http://elsewhere\r\n",
    b"X-Forwarded-For: 10.9.9.9\r\n",
    b"0\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"POST /push HTTP/1.0\r\n",
]

_LENGTH = re.compile(rb"(?i)(content-length:[ \t]*)(\d+)")


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """One of ``seeds``, mutated one to four times."""
    stream = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        size = len(stream)
        at = draw(st.integers(0, size))
        kind = draw(
            st.sampled_from(["insert", "byte", "delete", "duplicate", "case", "length", "truncate", "random"])
        )
        if kind == "insert":
            stream[at:at] = draw(st.sampled_from(INSERTS))
        elif kind == "random":
            stream[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "byte" and size:
            stream[min(at, size - 1)] = draw(st.integers(0, 255))
        elif kind == "delete":
            del stream[at : at + draw(st.integers(1, 16))]
        elif kind == "duplicate":
            stream[at:at] = stream[at : at + draw(st.integers(1, 64))]
        elif kind == "case":
            end = at + draw(st.integers(1, 32))
            stream[at:end] = bytes(stream[at:end]).swapcase()
        elif kind == "length":
            lengths = list(_LENGTH.finditer(stream))
            if lengths:
                match = draw(st.sampled_from(lengths))
                value = draw(st.sampled_from([b"0", b"1", b"99999999999999999999", b"00012", b"+5", b" 7"]))
                value = draw(st.sampled_from([value, str(draw(st.integers(0, 3000))).encode()]))
                stream[match.start(2) : match.end(2)] = value
        elif kind == "truncate":
            del stream[at:]
    return bytes(stream)


def _seeds() -> list[bytes]:
    """Valid requests of the lean path's kinds, alone and pipelined."""
    rest = post(REST, b'{"text":"hi"}', b"Authorization: " + BASIC)
    bearer = post(
        REST,
        b'{"a":[1,2]}',
        b"Authorization: Bearer " + token({"channel": f"/{APP}/private/lean", "pub": True}),
    )
    form = post(
        REST, b"a=1&b=%20", b"Authorization: " + BASIC, contentType=b"application/x-www-form-urlencoded"
    )
    handshake = post(
        PUSH,
        bayeux(
            {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}
        ),
    )
    subscribe = post(
        PUSH,
        b"message="
        + bayeux({"channel": "/meta/subscribe", "clientId": "nobody", "subscription": f"/{APP}/public/a"}),
        contentType=b"text/plain",
    )
    publish = post(
        PUSH + b"/publish",
        bayeux({"channel": f"/{APP}/public/a", "clientId": "nobody", "data": {"x": 1}}),
        b"Origin: http://o",
    )
    return [rest, bearer, form, handshake, subscribe, publish, rest + handshake, handshake + rest + rest]


SEEDS = _seeds()


class LeanFramingFuzzTests(DifferentialCase):
    """REST publishes and long-polls, mutated: the lean path answers as twisted.web does."""

    @settings(max_examples=EXAMPLES)
    @given(mutated(SEEDS), st.integers(0, 1 << 16))
    def test_mutatedRequests(self, stream: bytes, cut: int) -> None:
        # The stream in one read, then in two cut at a drawn byte.
        for reads in ([stream], [stream[: cut % (len(stream) + 1)], stream[cut % (len(stream) + 1) :]]):
            self.assertEqual(self.exchange(True, reads), self.exchange(False, reads), reads)


class OpeningFuzzTests(OpeningCase):
    """Websocket opening heads, mutated: the direct opening answers as autobahn does."""

    @settings(max_examples=EXAMPLES)
    @given(mutated(list(DIRECT.values())), st.integers(0, 1 << 16))
    def test_mutatedHeads(self, head: bytes, cut: int) -> None:
        at = cut % (len(head) + 1)
        self.assertSame("mutated", [head], session=cut % 2 == 0)
        self.assertSame("mutated, in two reads", [head[:at], head[at:]], session=False)


#: Frame streams a client sends: text frames short and long (16- and 64-bit lengths),
#: control frames between them, a fragmented message, binary, a close.
FRAMES = [
    frame(b'[{"channel":"/meta/connect","clientId":"abc","connectionType":"websocket"}]'),
    frame(b"a" * 130) + frame(b"ping", opcode=9) + frame(b"{}"),
    frame(b"x" * 300, longForm=True) + frame(b"close-me"),
    frame(b"\xe2\x82", fin=False) + frame(b"\xac", opcode=0) + frame(b"ok"),
    frame(b"\x00\x01", opcode=2) + frame(b"\x03\xe8bye", opcode=8),
    frame(b"b" * 70000) + frame(b"after"),
    b"".join(frame(b"%d" % i) for i in range(12)),
]


class FrameFuzzTests(SynchronousTestCase):
    """Websocket frame streams, mutated: the fast frame path reads them as autobahn does."""

    @settings(max_examples=EXAMPLES)
    @given(mutated(FRAMES), st.integers(0, 1 << 20), st.sampled_from([0, 1000, 100000]))
    def test_mutatedFrames(self, stream: bytes, cut: int, maxSize: int) -> None:
        at = cut % (len(stream) + 1)
        for reads in ([stream], [stream[:at], stream[at:]]):
            self.assertEqual(
                outcome(FastServer, reads, maxSize), outcome(AutobahnServer, reads, maxSize), reads
            )
