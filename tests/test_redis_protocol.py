"""
``pandapush.redis.protocol``: the command connection's replies read as txredisapi read
them, whatever the reads' boundaries, and its commands written as it wrote them.
"""

from __future__ import annotations

from typing import Any

import txredisapi
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from pandapush.redis.protocol import CommandProtocol, encodeCommand, parseReplies

REPLIES = (
    b"+OK\r\n:42\r\n$6\r\nh\xc3\xa9llo\r\n$-1\r\n*-1\r\n*0\r\n"
    b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n$2\r\n\xff\xfe\r\n-ERR inner\r\n"
    b"-NOSCRIPT No matching script\r\n$0\r\n\r\n"
)


class ParseTests(SynchronousTestCase):
    def test_replies(self) -> None:
        """Every kind of reply, as txredisapi (utf-8, numbers not converted) gave them."""
        replies, rest = parseReplies(REPLIES)
        self.assertEqual(rest, b"")
        ok, number, text, nil, nilArray, empty, nested, error, blank = replies
        self.assertEqual(
            (ok, number, text, nil, nilArray, empty, blank), ("OK", 42, "héllo", None, None, [], "")
        )
        self.assertEqual(nested[:2], ["a", [1, b"\xff\xfe"]])
        self.assertIsInstance(nested[2], txredisapi.ResponseError)
        self.assertIsInstance(error, txredisapi.ResponseError)
        self.assertEqual(str(error), "NOSCRIPT No matching script")

    def test_anySplit(self) -> None:
        """Cut anywhere, the replies come out the same, each once."""
        whole, _ = parseReplies(REPLIES)
        for cut in range(len(REPLIES) + 1):
            first, rest = parseReplies(REPLIES[:cut])
            second, left = parseReplies(rest + REPLIES[cut:])
            self.assertEqual(left, b"")
            self.assertEqual([repr(r) for r in first + second], [repr(r) for r in whole], cut)

    def test_encode(self) -> None:
        """Arguments encoded as txredisapi encoded them."""
        self.assertEqual(
            encodeCommand(("EVALSHA", "ab", 2, 1.5, b"\x00", "é")),
            b"*6\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n2\r\n$8\r\n1.500000\r\n$1\r\n\x00\r\n$2\r\n\xc3\xa9\r\n",
        )


class ProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.protocol = CommandProtocol(charset="utf-8", convertNumbers=False)
        self.transport = StringTransport()
        self.protocol.transport = self.transport
        self.protocol.connected = 1

    def test_answersInOrder(self) -> None:
        """Replies answer the commands in the order they were sent, across reads."""
        outcomes: list[Any] = []
        for n in range(3):
            self.protocol.execute_command("GET", f"k{n}").addBoth(outcomes.append)
        self.assertEqual(self.transport.value().count(b"GET"), 3)
        self.protocol.dataReceived(b"$1\r\na\r\n-WRONGTYPE no\r")
        self.protocol.dataReceived(b"\n$")
        self.protocol.dataReceived(b"-1\r\n")
        self.assertEqual(outcomes[0], "a")
        self.assertTrue(outcomes[1].check(txredisapi.ResponseError))
        self.assertIsNone(outcomes[2])

    def test_lostConnectionFailsWaiting(self) -> None:
        """Commands still waiting fail with txredisapi's ConnectionError when the connection is lost."""
        outcomes: list[Any] = []
        self.protocol.execute_command("PING").addBoth(outcomes.append)
        self.protocol.connectionLost(None)
        [failure] = outcomes
        self.assertTrue(failure.check(txredisapi.ConnectionError))

    def test_notConnected(self) -> None:
        """As txredisapi: a command on a connection that is not connected raises."""
        self.protocol.connected = 0
        self.assertRaises(txredisapi.ConnectionError, self.protocol.execute_command, "PING")
