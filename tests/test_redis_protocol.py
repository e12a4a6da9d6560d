"""
``pandapush.redis.protocol``: the command connection's replies read as txredisapi read
them, whatever the reads' boundaries, and its commands written as it wrote them. The same
reader serves the ROLE check and the failover gate (``readReply``); replies no Redis
sends are refused, not buffered for ever nor read out of step. A reply arriving in many
reads is parsed once, not again on each read, and one past ``MAX_REPLY_SIZE`` drops the
connection.
"""

from __future__ import annotations

from typing import Any

import txredisapi
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from pandapush.redis.commands import scriptHash
from pandapush.redis.connection import RedisAddress, RedisSubscriber, RedisUnavailable, _SubscriberProtocol
from pandapush.redis.protocol import (
    MAX_BULK_LENGTH,
    MAX_REPLY_SIZE,
    CommandProtocol,
    ReplyReader,
    encodeCommand,
    parseReplies,
    readReply,
)

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


def counted(reader: ReplyReader) -> list[int]:
    """The sizes of the buffers ``reader`` parses, one per attempt, as they are parsed."""
    attempts: list[int] = []
    read = reader._read

    def counting(buffer: bytes, position: int, one: bool) -> tuple[list[Any], int]:
        attempts.append(len(buffer) - position)
        return read(buffer, position, one)

    reader._read = counting  # type: ignore[method-assign]
    return attempts


def inReads(reply: bytes, size: int) -> list[bytes]:
    return [reply[at : at + size] for at in range(0, len(reply), size)]


class ReaderTests(SynchronousTestCase):
    def test_anySplit(self) -> None:
        """
        Fed to one reader in two reads cut anywhere, or a byte at a time, the replies come
        out the same, each once, and nothing is left buffered.
        """
        whole, _ = parseReplies(REPLIES)
        expected = [repr(r) for r in whole]
        for cut in range(len(REPLIES) + 1):
            reader = ReplyReader()
            replies = reader.feed(REPLIES[:cut]) + reader.feed(REPLIES[cut:])
            self.assertEqual([repr(r) for r in replies], expected, cut)
            self.assertEqual(reader.buffered, 0)
        reader = ReplyReader()
        replies = [r for byte in inReads(REPLIES, 1) for r in reader.feed(byte)]
        self.assertEqual([repr(r) for r in replies], expected)

    def test_largeBulkParsedOnce(self) -> None:
        """
        A 20 MB bulk string fed in 64 KiB reads is parsed twice (its header, then all of
        it once it is here), not again on each of its 306 reads.
        """
        payload = b"x" * 20_000_000
        reader = ReplyReader()
        attempts = counted(reader)
        replies = []
        for data in inReads(b"$%d\r\n%s\r\n:7\r\n" % (len(payload), payload), 65536):
            replies += reader.feed(data)
        self.assertEqual([len(replies[0]), replies[1]], [len(payload), 7])
        self.assertEqual(len(attempts), 2)

    def test_largeArrayParsedOnce(self) -> None:
        """
        An array of 200,000 elements (a nested one among them) fed in 4 KiB reads: each
        read parses only what it brought and the element it completes, so the bytes parsed
        in all are the reply's and a line per read, not the reply again on every read.
        """
        element = b"$10\r\n0123456789\r\n"
        reply = b"*200001\r\n" + element * 100_000 + b"*2\r\n:1\r\n+OK\r\n" + element * 100_000
        reader = ReplyReader()
        attempts = counted(reader)
        reads = inReads(reply, 4096)
        replies = [r for data in reads for r in reader.feed(data)]
        [array] = replies
        self.assertEqual((len(array), array[100_000], array[-1]), (200_001, [1, "OK"], "0123456789"))
        self.assertLessEqual(sum(attempts), len(reply) + len(reads) * len(element))

    def test_replyOverTheLimit(self) -> None:
        """
        A reply over the limit is refused: a bulk string as soon as its length says so (not
        waited for), an array once what arrived of it is over. One at the limit is read.
        """
        self.assertGreater(MAX_REPLY_SIZE, MAX_BULK_LENGTH + 20)
        reader = ReplyReader(1000)
        self.assertRaises(txredisapi.InvalidResponse, reader.feed, b"*2\r\n:1\r\n$990\r\n")
        reader = ReplyReader(1000)
        self.assertRaises(
            txredisapi.InvalidResponse,
            lambda: [reader.feed(data) for data in inReads(b"*500\r\n" + b":1\r\n" * 500, 7)],
        )
        # Read whole, over the limit across reads; then exactly at it.
        reader = ReplyReader(1000)
        self.assertEqual(reader.feed(b"*2\r\n$985\r\n"), [])
        self.assertRaises(txredisapi.InvalidResponse, reader.feed, b"x" * 985 + b"\r\n:1\r\n")
        reader = ReplyReader(1000)
        atLimit = b"*2\r\n$984\r\n" + b"x" * 984 + b"\r\n:1\r\n"
        self.assertEqual(len(atLimit), 1000)
        replies = [r for data in inReads(atLimit * 3, 100) for r in reader.feed(data)]
        self.assertEqual(replies, [["x" * 984, 1]] * 3)


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
        self.assertEqual(self.protocol._reader.buffered, 0)

    def test_replyOverTheLimitClosesTheConnection(self) -> None:
        """
        A reply over the protocol's limit fails every command waiting, closes the connection
        and says so in an error naming the limit; nothing of it is kept.
        """

        class Small(CommandProtocol):  # type: ignore[misc]
            maxReplySize = 64 * 1024

        protocol = Small(charset="utf-8", convertNumbers=False)
        protocol.transport = self.transport
        protocol.connected = 1
        outcomes: list[Any] = []
        for _ in range(2):
            protocol.execute_command("LRANGE", "k", 0, -1).addBoth(outcomes.append)
        with capturedLogs() as events:
            for data in inReads(b"*100000\r\n" + b"$1\r\nx\r\n" * 20_000, 4096):
                protocol.dataReceived(data)
                if self.transport.disconnecting:
                    break
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(
            [f.check(txredisapi.InvalidResponse) for f in outcomes], [txredisapi.InvalidResponse] * 2
        )
        self.assertIn("65536 bytes", outcomes[0].getErrorMessage())
        [event] = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertIn("65536 bytes", event["error"])
        self.assertEqual(event["count"], 2)
        self.assertEqual(protocol._reader.buffered, 0)

    def test_notConnected(self) -> None:
        """As txredisapi: a command on a connection that is not connected raises."""
        self.protocol.connected = 0
        self.assertRaises(txredisapi.ConnectionError, self.protocol.execute_command, "PING")


class RecordingBounds:
    """A ``CommandBounds`` on a Clock that records what the protocol tells it."""

    timeout = 2.0

    def __init__(self, clock: Clock) -> None:
        self.reactor: IReactorTime = clock
        self.answers: list[float] = []

    def answered(self, sent: float) -> None:
        self.answers.append(sent)

    def timedOut(self, what: str, sent: float) -> Exception:
        return TimeoutError(f"{what} sent at {sent}")

    def lost(self, what: str) -> Exception:
        return ConnectionAbortedError(what)


class BoundedCommandTests(SynchronousTestCase):
    """
    ``CommandProtocol.command`` and ``evaluate``: each command's deadline, the health's
    bookkeeping at its answer and a script's text once per connection, done on the queue
    of commands waiting, with no callback on the command's Deferred.
    """

    def setUp(self) -> None:
        self.protocol = CommandProtocol(charset="utf-8", convertNumbers=False)
        self.transport = StringTransport()
        self.protocol.transport = self.transport
        self.protocol.connected = 1
        self.clock = Clock()
        self.bounds = RecordingBounds(self.clock)

    def test_noCallbackPerCommand(self) -> None:
        """The Deferred a command returns carries no callback of ours: its caller's only."""
        d = self.protocol.command(self.bounds, ("GET", "k"))
        self.assertEqual(d.callbacks, [])
        e = self.protocol.evaluate(self.bounds, "return 1", ["k"], [])
        self.assertEqual(e.callbacks, [])

    def test_answeredTold(self) -> None:
        """
        A reply answers its command and tells the bounds when that command was sent;
        an error reply does not.
        """
        outcomes: list[Any] = []
        self.protocol.command(self.bounds, ("GET", "a")).addBoth(outcomes.append)
        self.clock.advance(0.5)
        self.protocol.command(self.bounds, ("GET", "b")).addBoth(outcomes.append)
        self.protocol.dataReceived(b"$1\r\na\r\n-ERR no\r\n")
        self.assertEqual(outcomes[0], "a")
        self.assertTrue(outcomes[1].check(txredisapi.ResponseError))
        self.assertEqual(self.bounds.answers, [0.0])

    def test_unansweredTimesOut(self) -> None:
        """
        A command unanswered ``timeout`` after it was sent fails with the bounds'
        ``timedOut``, one at a time in sending order with one timer; its late reply
        goes to nobody and later replies still reach their own commands.
        """
        outcomes: list[Any] = []
        self.protocol.command(self.bounds, ("GET", "a")).addBoth(outcomes.append)
        self.clock.advance(1.5)
        self.protocol.command(self.bounds, ("GET", "b")).addBoth(outcomes.append)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0.5)
        [failure] = outcomes
        self.assertTrue(failure.check(TimeoutError))
        self.assertEqual(failure.getErrorMessage(), "GET sent at 0.0")
        self.clock.advance(1.0)
        self.assertEqual(len(outcomes), 1)
        self.protocol.dataReceived(b"$1\r\na\r\n$1\r\nb\r\n")
        self.assertEqual(outcomes[1], "b")
        self.assertEqual(self.bounds.answers, [1.5])
        self.clock.advance(5)
        self.assertEqual(len(outcomes), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_backlogExpiresInOrder(self) -> None:
        """Many commands expire each at its own deadline; one examined is not looked at again."""
        outcomes: list[Any] = []
        for n in range(5):
            self.protocol.command(self.bounds, ("GET", f"k{n}")).addBoth(outcomes.append)
            self.clock.advance(0.25)
        self.clock.advance(0.8)  # now 2.05: k0 (sent at 0) expired
        self.assertEqual(len(outcomes), 1)
        self.clock.advance(0.5)  # now 2.55: k1 and k2 too
        self.assertEqual(len(outcomes), 3)
        self.protocol.dataReceived(b"$1\r\nx\r\n" * 3 + b"$1\r\nd\r\n")
        self.assertEqual(outcomes[3], "d")
        self.clock.advance(1.0)
        self.assertTrue(outcomes[4].check(TimeoutError))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lostConnection(self) -> None:
        """
        A lost connection fails the bounded commands waiting with the bounds' ``lost``,
        and stops the timer.
        """
        outcomes: list[Any] = []
        self.protocol.command(self.bounds, ("PING",)).addBoth(outcomes.append)
        self.protocol.execute_command("PING").addBoth(outcomes.append)
        self.protocol.connectionLost(None)
        self.assertTrue(outcomes[0].check(ConnectionAbortedError))
        self.assertTrue(outcomes[1].check(txredisapi.ConnectionError))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_scriptTextOncePerConnection(self) -> None:
        """A script's text goes once per connection, EVALSHA after it."""
        script = "return KEYS[1]"
        self.protocol.evaluate(self.bounds, script, ["k"], ["a"])
        self.protocol.evaluate(self.bounds, script, ["k"], ["a"])
        sent = self.transport.value()
        self.assertEqual(sent.count(b"EVALSHA"), 1)
        self.assertEqual(sent.count(script.encode()), 1)
        self.assertIn(scriptHash(script).encode(), sent)
        other = CommandProtocol(charset="utf-8", convertNumbers=False)
        other.transport = StringTransport()
        other.connected = 1
        other.evaluate(self.bounds, script, ["k"], ["a"])
        self.assertNotIn(b"EVALSHA", other.transport.value())

    def test_noScriptSendsTheTextAgain(self) -> None:
        """After NOSCRIPT (a SCRIPT FLUSH), the text is sent again and its reply answers the same Deferred."""
        script = "return 7"
        self.protocol.evaluate(self.bounds, script, [], [])
        self.protocol.dataReceived(b":7\r\n")
        outcomes: list[Any] = []
        self.protocol.evaluate(self.bounds, script, [], []).addBoth(outcomes.append)
        self.transport.clear()
        self.protocol.dataReceived(b"-NOSCRIPT No matching script\r\n")
        self.assertEqual(outcomes, [])
        self.assertIn(b"EVAL\r\n", self.transport.value())
        self.assertIn(script.encode(), self.transport.value())
        self.protocol.dataReceived(b":7\r\n")
        self.assertEqual(outcomes, [7])


class _Owner:
    def __init__(self) -> None:
        self.messages: list[tuple[str, Any]] = []

    def onMessage(self, channel: str, message: Any) -> None:
        self.messages.append((channel, message))

    def _connected(self, protocol: Any) -> None:
        pass

    def _lost(self, protocol: Any) -> None:
        pass


class SubscriberRepliesTests(SynchronousTestCase):
    """
    The SUBSCRIBE connection reads its replies as the command connection does: every
    message and confirmation of a read at once, however the reads are split, with no
    pause and no reactor turn between them (txredisapi paused after each bulk string).
    """

    def setUp(self) -> None:
        self.protocol = _SubscriberProtocol(charset="utf-8", convertNumbers=False)
        self.owner = _Owner()
        self.protocol.owner = self.owner  # type: ignore[assignment]
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.transport.clear()

    def test_messagesOfAReadAtOnce(self) -> None:
        """Three messages in one read reach the owner within that read, and reading is never paused."""
        paused: list[bool] = []
        self.patch(self.transport, "pauseProducing", lambda: paused.append(True))
        data = b"".join(b"*3\r\n$7\r\nmessage\r\n$2\r\n/%d\r\n$5\r\nhello\r\n" % n for n in range(3))
        self.protocol.dataReceived(data)
        self.assertEqual(self.owner.messages, [("/0", "hello"), ("/1", "hello"), ("/2", "hello")])
        self.assertEqual(paused, [])
        self.assertFalse(self.protocol.paused)

    def test_anySplit(self) -> None:
        """Messages and confirmations split anywhere: the same messages, the confirmation answered."""
        data = (
            b"*3\r\n$9\r\nsubscribe\r\n$2\r\n/a\r\n:1\r\n"
            b"*3\r\n$7\r\nmessage\r\n$2\r\n/a\r\n$3\r\n\xc3\xa9!\r\n"
            b"*3\r\n$7\r\nmessage\r\n$2\r\n/a\r\n$2\r\n\xff\xfe\r\n"
        )
        for size in (1, 2, 3, 7, 64):
            protocol = _SubscriberProtocol(charset="utf-8", convertNumbers=False)
            owner = _Owner()
            protocol.owner = owner  # type: ignore[assignment]
            protocol.makeConnection(StringTransport())
            answers: list[Any] = []
            protocol.subscribe("/a").addBoth(answers.append)
            for data_ in inReads(data, size):
                protocol.dataReceived(data_)
            self.assertEqual(answers, [["subscribe", "/a", 1]])
            self.assertEqual(owner.messages, [("/a", "é!"), ("/a", b"\xff\xfe")])

    def test_badReplyDropsTheConnection(self) -> None:
        """A reply no Redis sends drops the connection (it reconnects), and is not buffered."""
        self.protocol.dataReceived(b"?what\r\n")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.protocol._reader.buffered, 0)


class SubscribeDeadlinesTests(SynchronousTestCase):
    """A SUBSCRIBE waiting for its confirmation is bounded by one timer for all of them."""

    def test_oneTimerForManySubscribes(self) -> None:
        """
        Fifty SUBSCRIBEs waiting (no connection yet) add one timer, not fifty; each
        fails with RedisUnavailable once its timeout has passed.
        """
        reactor = MemoryReactorClock()
        subscriber = RedisSubscriber(reactor, RedisAddress("127.0.0.1", 6399), lambda c, m: None, 2.0)
        self.addCleanup(subscriber.close)
        before = len(reactor.getDelayedCalls())
        waiting = [subscriber.subscribe(f"/c{n}") for n in range(50)]
        self.assertEqual(len(reactor.getDelayedCalls()), before + 1)
        reactor.advance(1.9)
        self.assertEqual([d.called for d in waiting], [False] * 50)
        reactor.advance(0.2)
        for d in waiting:
            self.failureResultOf(d, RedisUnavailable)
