"""The IDeliverySink and IClientSocket contracts, as tests every sink must pass.

A sink is where an engine hands a client's queued messages: a held long-poll connect
(one-shot), a websocket or an event stream (sockets, which stay bound to their client).
What is checked comes from the interfaces' docstrings (``pandapush/interfaces.py``):

- ``deliver`` takes messages in order; what the peer gets is each message once, in
  order, whole, also when one :class:`Delivery` (framed once) is shared by many sinks;
- ``persistent`` says which kind a sink is: a socket carries every later delivery, a
  one-shot sink answers once;
- a socket starts unbound (``clientId`` None), says whether its client ends with it
  (``endsClientOnClose``), carries replies after the deliveries before them (an event
  stream carries deliveries only), and ``close(afterReplies=True)`` sends the replies
  of the batch being processed before it closes.

A concrete test case mixes :class:`DeliverySinkTestsMixin` (or
:class:`ClientSocketTestsMixin`) into a ``TestCase`` and provides ``makeSink`` and a view
of what the peer received (``received``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from zope.interface.verify import verifyObject

from pandapush.bayeux.delivery import Delivery
from pandapush.interfaces import IClientSocket, IDeliverySink

if TYPE_CHECKING:
    from twisted.trial.unittest import TestCase

    _Base = TestCase
else:
    _Base = object

#: The channel the suite delivers on; anything else the peer receives is a reply.
CHANNEL = "/sink/a"


def delivery(data: Any, channel: str = CHANNEL) -> Delivery:
    return Delivery.fromMessage({"channel": channel, "data": data})


def deliveries(*data: Any) -> list[Delivery]:
    return [delivery(d) for d in data]


class DeliverySinkTestsMixin(_Base):
    """What every IDeliverySink does."""

    #: What the interface says this kind of sink is: True for a socket, False for one-shot.
    persistent: bool

    async def makeSink(self) -> Any:
        """A new sink of the kind under test, ready to deliver to a connected peer."""
        raise NotImplementedError

    async def received(self, sink: Any, count: int) -> list[dict[str, Any]]:
        """
        Everything ``sink``'s peer has received (decoded messages, in order), once it
        has received at least ``count`` messages on :data:`CHANNEL`.
        """
        raise NotImplementedError

    async def data(self, sink: Any, count: int) -> list[Any]:
        """The data of the messages on :data:`CHANNEL` the peer received, in order."""
        return [m["data"] for m in await self.received(sink, count) if m.get("channel") == CHANNEL]

    async def test_providesIDeliverySink(self) -> None:
        """The sink provides IDeliverySink."""
        sink = await self.makeSink()
        self.assertTrue(verifyObject(IDeliverySink, sink))

    async def test_persistentAsDocumented(self) -> None:
        """``persistent`` is True for a socket that stays bound, False for a one-shot connect."""
        sink = await self.makeSink()
        self.assertIs(sink.persistent, self.persistent)

    async def test_batchInOrderOnce(self) -> None:
        """The messages of one delivery reach the peer in order, each once."""
        sink = await self.makeSink()
        sink.deliver(deliveries(1, 2, 3))
        self.assertEqual(await self.data(sink, 3), [1, 2, 3])

    async def test_laterDeliveries(self) -> None:
        """
        A persistent sink carries every later delivery, in order; a one-shot sink has
        answered with the first and sends nothing more (the engine detaches it).
        """
        sink = await self.makeSink()
        sink.deliver(deliveries(1, 2))
        sink.deliver(deliveries(3))
        sink.deliver(deliveries(4, 5))
        if self.persistent:
            self.assertEqual(await self.data(sink, 5), [1, 2, 3, 4, 5])
        else:
            self.assertEqual(await self.data(sink, 2), [1, 2])

    async def test_sharedDelivery(self) -> None:
        """
        One Delivery handed to several sinks (it is serialized once, and a websocket
        frames it once for all) reaches each whole.
        """
        first, second = await self.makeSink(), await self.makeSink()
        shared = delivery({"text": "same for all"})
        first.deliver([shared])
        second.deliver([shared])
        self.assertEqual(await self.data(first, 1), [{"text": "same for all"}])
        self.assertEqual(await self.data(second, 1), [{"text": "same for all"}])

    async def test_textSurvives(self) -> None:
        """Any JSON text reaches the peer as it was: quotes, newlines, non-ASCII, U+2028."""
        sink = await self.makeSink()
        text = 'a "quoted"\nline\r\n\u00e9\u4e2d\u2028\u2029\U0001f600 data: [x]\n\n'
        sink.deliver(deliveries(text, {"nested": [text, None, 1.5, True]}))
        self.assertEqual(await self.data(sink, 2), [text, {"nested": [text, None, 1.5, True]}])


class ClientSocketTestsMixin(DeliverySinkTestsMixin):
    """What every IClientSocket does, besides being a delivery sink."""

    persistent = True
    #: What the interface says of this socket: does its client end when it closes?
    endsClientOnClose: bool
    #: Whether it carries replies (a websocket) or deliveries only (an event stream).
    carriesReplies: bool

    async def peerClosed(self, sink: Any) -> None:
        """Fires once ``sink``'s peer has seen the connection end."""
        raise NotImplementedError

    async def startBatch(self, sink: Any) -> Deferred[list[Any]] | None:
        """
        Have the peer send a batch that the router answers later: the Deferred to answer
        it with. None for a socket that takes no batches (their replies travel elsewhere).
        """
        raise NotImplementedError

    async def test_providesIClientSocket(self) -> None:
        """The socket provides IClientSocket."""
        sink = await self.makeSink()
        self.assertTrue(verifyObject(IClientSocket, sink))

    async def test_unboundAtFirst(self) -> None:
        """A new socket is bound to no client: the router binds it at its client's connect."""
        sink = await self.makeSink()
        self.assertIsNone(sink.clientId)

    async def test_endsClientOnCloseAsDocumented(self) -> None:
        """A websocket's client ends with it; an event stream's carries on over other requests."""
        sink = await self.makeSink()
        self.assertIs(sink.endsClientOnClose, self.endsClientOnClose)

    async def test_repliesAfterDeliveries(self) -> None:
        """
        Replies (and deliveries sent with them) come after the deliveries before them; an
        event stream carries no replies, and the deliveries after them still arrive.
        """
        sink = await self.makeSink()
        sink.deliver(deliveries(1))
        sink.sendReplies([{"channel": "/meta/connect", "successful": True}, delivery(2)])
        sink.deliver(deliveries(3))
        if self.carriesReplies:
            messages = await self.received(sink, 3)
            self.assertEqual(
                [(m["channel"], m.get("data")) for m in messages],
                [(CHANNEL, 1), ("/meta/connect", None), (CHANNEL, 2), (CHANNEL, 3)],
            )
        else:
            messages = await self.received(sink, 2)
            self.assertEqual([(m["channel"], m.get("data")) for m in messages], [(CHANNEL, 1), (CHANNEL, 3)])

    async def test_closeNow(self) -> None:
        """
        ``close(afterReplies=False)`` ends the connection after what was delivered; a
        delivery after that is dropped without an error, and closing again is harmless.
        """
        sink = await self.makeSink()
        sink.deliver(deliveries(1))
        sink.close(afterReplies=False)
        sink.deliver(deliveries(2))
        sink.close(afterReplies=False)
        sink.close(afterReplies=True)
        await self.peerClosed(sink)
        self.assertEqual(await self.data(sink, 1), [1])

    async def test_closeAfterReplies(self) -> None:
        """
        ``close(afterReplies=True)`` while a batch is being processed sends its replies
        first, then closes; with no batch it closes at once.
        """
        sink = await self.makeSink()
        batch = await self.startBatch(sink)
        sink.close(afterReplies=True)
        if batch is not None:
            batch.callback([{"channel": "/meta/disconnect", "successful": True}])
        await self.peerClosed(sink)
        if batch is not None:
            # Everything sent before the close has arrived by now.
            messages = await self.received(sink, 0)
            self.assertIn({"channel": "/meta/disconnect", "successful": True}, messages)
