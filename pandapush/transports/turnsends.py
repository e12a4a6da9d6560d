"""
What a reactor turn writes to its plain TCP connections, given to the kernel together
once the turn's events are handled: :func:`sendAtTurnEnd`.

Every answer the server writes (a long-polling or REST answer, a websocket reply or
delivery) used to go to the kernel the moment it was ready (``socket.send`` when nothing
waited in the transport's buffer, which spared Twisted's buffered write its
``epoll_ctl`` pair). On loopback and on a VM, a ``send`` to a peer asleep in its poll
also wakes the peer: the kernel runs the peer's TCP receive and wake-up in the sender's
``send``, and on a VM the wake-up of the other vCPU is an interrupt between vCPUs. A
busy turn handles tens of reads (a storm's requests, a REST publisher's 32 in flight);
answered one by one, each answer woke a peer that had just gone back to sleep after
the one before. In a long-polling storm with 200 in flight the answers' ``send`` was
14 % of the server's busy samples (py-spy), and ``perf record`` found the largest part
of the server's kernel time in the peer's receive and wake-up under it
(``tcp_data_queue`` -> ``sock_def_readable``).

So an answer now goes into the transport's own buffer (Twisted's ``_tempDataBuffer``,
without registering the socket for writing) and one ``callLater(0)`` per turn sends
each connection's answers in one ``send`` after the turn's events: its peer is woken
once, and finds all of them. ``bench/run --compare-experiment`` (7 alternating pairs,
the AMD VM): storm-lp-200 663 -> 550 ms of server CPU per 1,000 client setups and
1,459 -> 1,769 setups/s; private-rest 142 -> 112 ms per 1,000 deliveries, its p99
18.4 -> 14.4 ms. The storm's repetitions had fallen in two groups by how the two
processes' timing interleaved (510-537 and 663-733 ms); after, one (520-593).

Nothing is reordered: everything a connection writes still goes through that one
buffer (a ``transport.write`` between two of these lands between them), and the turn's
send skips a connection that Twisted itself is writing (a partial write waiting, or a
``loseConnection``), whose ``doWrite`` sends the lot in order. Back pressure holds: what
would take a connection's buffer past Twisted's ``bufferSize`` goes through its
``write``, which pauses the connection's producer (a websocket's backlog) as before;
a send the kernel takes only part of leaves the rest to ``write``. Other transports
(TLS, a test's) are written at once, as before.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["TurnSends", "sendAtTurnEnd"]


class TurnSends:
    """
    The connections written to in this turn, sent after it by one ``callLater(0)`` of
    ``clock`` (the global reactor when None, resolved at the first send: importing it
    here would install a reactor before ``twistd`` chose one).
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime | None = None) -> None:
        self._clock = clock
        #: Connections with data of this turn's in their buffer, in the order first written.
        self._pending: dict[Any, None] = {}
        self._call: IDelayedCall | None = None

    def send(self, transport: Any, data: bytes) -> None:
        """``transport.write(data)``, given to the kernel after this reactor turn's events."""
        if (
            type(transport) is tcp.Server
            and transport.connected
            and not transport.disconnecting
            and not transport._writeDisconnected
            and transport._tempDataLen + len(data) <= transport.bufferSize
        ):
            pending = self._pending
            if transport not in pending:
                if transport._tempDataBuffer or len(transport.dataBuffer) != transport.offset:
                    # Behind what Twisted holds and writes itself.
                    transport.write(data)
                    return
                pending[transport] = None
                call = self._call
                if call is None or not call.active():
                    # (Not active: cancelled by someone, as trial's janitor does; a
                    # turn that never came would leave every later answer unsent.)
                    self._schedule()
            transport._tempDataBuffer.append(data)
            transport._tempDataLen += len(data)
            return
        if transport is not None:
            transport.write(data)

    def _schedule(self) -> None:
        clock = self._clock
        if clock is None:
            from twisted.internet import reactor

            clock = self._clock = reactor  # type: ignore[assignment]
        assert clock is not None
        self._call = clock.callLater(0, self.flush)

    def flush(self) -> None:
        """Send what this turn wrote, a ``send`` per connection."""
        self._call = None
        pending, self._pending = self._pending, {}
        for transport in pending:
            buffered = transport._tempDataBuffer
            if (
                not buffered
                or not transport.connected
                or transport.disconnecting
                or len(transport.dataBuffer) != transport.offset
            ):
                # Gone (its buffer with it), or Twisted writes it: a loseConnection or a
                # partial write registered it, and its doWrite sends this in order.
                continue
            try:
                data = buffered[0] if len(buffered) == 1 else b"".join(buffered)
                transport._tempDataBuffer = []
                transport._tempDataLen = 0
                try:
                    sent = transport.socket.send(data)
                except OSError:
                    # EAGAIN, or a broken connection: Twisted's write finds out on its
                    # next try and ends the connection as usual.
                    sent = 0
                if sent != len(data):
                    transport.write(data[sent:] if sent else data)
            except Exception:
                # (A producer's pauseProducing that raised, say.) The other connections
                # are still sent, and this one's rest is left to Twisted.
                self._log.failure("sending a turn's data failed")
                if transport.connected:
                    transport.startWriting()


#: The process's turn, on the global reactor.
_TURN = TurnSends()

#: ``transport.write(data)``, given to the kernel after this reactor turn (see above). The
#: bound method itself, so that a send (once per answer and per recipient) costs no frame more.
sendAtTurnEnd = _TURN.send  # noqa: N816
