"""
``pandapush.redis.protocol``: the command connection's replies read as txredisapi read
them, whatever the reads' boundaries, and its commands written as it wrote them. The same
reader serves the ROLE check and the failover gate (``readReply``); replies no Redis
sends are refused, not buffered for ever nor read out of step.
"""

from __future__ import annotations

from typing import Any

import txredisapi
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from pandapush.redis.protocol import MAX_BULK_LENGTH, CommandProtocol, encodeCommand, parseReplies, readReply

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

    def test_roleReply(self) -> None:
        """
        One reply read whole (a primary's ROLE, nested), the position after it given, and
        None at every cut short of its end; what follows is left alone.
        """
        master = b"*3\r\n$6\r\nmaster\r\n:42\r\n*1\r\n*3\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n$2\r\n42\r\n"
        self.assertEqual(
            readReply(master + b"+NEXT\r\n"), (["master", 42, [["127.0.0.1", "6380", "42"]]], len(master))
        )
        self.assertEqual(readReply(master + b"+NEXT\r\n", len(master)), ("NEXT", len(master) + 7))
        for cut in range(len(master)):
            self.assertIsNone(readReply(master[:cut]), cut)
        replica = b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:42\r\n"
        self.assertEqual(readReply(replica), (["slave", "127.0.0.1", 6379, "connected", 42], len(replica)))

    def test_errorsAndNils(self) -> None:
        """An error reply is a value for ``readReply`` (the gate reads past one); nils are None."""
        error, end = readReply(b"-NOPERM no ROLE for you\r\n")  # type: ignore[misc]
        self.assertIsInstance(error, txredisapi.ResponseError)
        self.assertEqual((str(error), end), ("NOPERM no ROLE for you", 25))
        self.assertEqual(readReply(b"$-1\r\n"), (None, 5))
        self.assertEqual(readReply(b"*-1\r\n"), (None, 5))

    def test_hostile(self) -> None:
        """
        What no Redis sends is an InvalidResponse, from both readers, at once: an unknown
        type, a length that is no number, below -1 or over Redis's limit (not waited for),
        a line that never ends, nesting that would exhaust the stack. Data longer than its
        length is refused where the next reply should start.
        """
        for reply in [
            b"?what\r\n",
            b"\r\n",
            b"$\r\n",
            b"$abc\r\nabc\r\n",
            b":12x\r\n",
            b"*two\r\n",
            b"$-2\r\n",
            b"*-5\r\n",
            b"$%d\r\n" % (MAX_BULK_LENGTH + 1),
            b"$99999999999999999999\r\nshort",
            b"*2\r\n$1\r\nab\r\n:1\r\n",
            b"+" + b"x" * 70_000,
            b"$" + b"9" * 5000 + b"\r\n",
            b"*1\r\n" * 5000 + b":1\r\n",
            b"+\xff\xfe\r\n",
        ]:
            self.assertRaises(txredisapi.InvalidResponse, parseReplies, b"+OK\r\n" + reply)
            self.assertRaises(txredisapi.InvalidResponse, readReply, reply)
        self.assertRaises(txredisapi.InvalidResponse, parseReplies, b"$3\r\nabcdef\r\n")
        # Up to the limit, a long bulk string is only incomplete.
        self.assertEqual(parseReplies(b"$%d\r\nabc" % MAX_BULK_LENGTH), ([], b"$%d\r\nabc" % MAX_BULK_LENGTH))

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

    def test_hostileReplyClosesTheConnection(self) -> None:
        """
        A reply that cannot be read fails every command waiting (they could no longer be
        matched to their replies) and closes the connection; nothing of it is kept.
        """
        outcomes: list[Any] = []
        for _ in range(2):
            self.protocol.execute_command("GET", "k").addBoth(outcomes.append)
        self.protocol.dataReceived(b"$-7\r\n$1\r\na\r\n")
        self.assertEqual(
            [f.check(txredisapi.InvalidResponse) for f in outcomes], [txredisapi.InvalidResponse] * 2
        )
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.protocol._rest, b"")

    def test_notConnected(self) -> None:
        """As txredisapi: a command on a connection that is not connected raises."""
        self.protocol.connected = 0
        self.assertRaises(txredisapi.ConnectionError, self.protocol.execute_command, "PING")
