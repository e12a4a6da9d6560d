"""Channel history, as both engines keep it: settings, the memory engine's store, recovery.

Every message published on a concrete channel with history is appended to that
channel's history and given its :class:`~pandapush.interfaces.Position`: an offset
(the channel's publishes, from 1) and an epoch naming the history it counts in. A
channel keeps at most ``size`` messages, none older than ``ttl`` seconds (per
application, over the server's defaults: :class:`HistorySettings`). Its position (the
offset and epoch, a few bytes) outlives its messages by :data:`META_TTL` (a channel never
published to, only asked for its position, keeps it for ``ttl``), so a client
that saw everything of a channel quiet for an hour resumes with nothing missed rather
than being told the history changed.

The memory engine keeps history in :class:`MemoryHistory`; the Redis engine in Redis
Streams (:mod:`pandapush.engines.redis.history`). Both recover a subscription the same
way (:func:`recoverLocally`): the client's queue is held (``LocalClient.recovering``),
the subscription made, the history read, then the history is put in front of what
queued meanwhile, dropping what it already holds.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Mapping
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from pandapush._deferred import isDeferred, settled
from pandapush.bayeux.delivery import Delivery, positionSuffix
from pandapush.engines.idempotency import IdempotencyKeys
from pandapush.engines.local import LocalClient, LocalClients
from pandapush.interfaces import HistoryPage, Position, Recovery

__all__ = [
    "DEFAULT_HISTORY_SIZE",
    "DEFAULT_HISTORY_TTL",
    "META_TTL",
    "EngineHistory",
    "HistorySettings",
    "MemoryEngineHistory",
    "MemoryHistory",
    "asksHistory",
    "newEpoch",
    "readRequests",
    "recoverLocally",
    "recoveries",
    "recovery",
]

#: Messages a channel keeps by default (``--history-size``): a chat room's last
#: screenful, a feed's last minutes; enough for a phone back from a few minutes asleep.
DEFAULT_HISTORY_SIZE = 100
#: Seconds a message is kept by default (``--history-ttl``): longer than a deploy or a
#: node's restart, a wifi change or a phone's short sleep.
DEFAULT_HISTORY_TTL = 300.0
#: Seconds a channel's position outlives its last publish.
META_TTL = 86400.0


def newEpoch() -> str:
    """A fresh epoch: 8 URL-safe characters (48 random bits), safe in JSON as it is."""
    return secrets.token_urlsafe(6)


class HistorySettings:
    """
    How much history each channel keeps: the server's defaults, and each application's
    own (``setApp``), read for every publish (one dictionary lookup).
    """

    def __init__(self, size: int = DEFAULT_HISTORY_SIZE, ttl: float = DEFAULT_HISTORY_TTL) -> None:
        self.default = (max(0, size), ttl)
        self._apps: dict[str, tuple[int, float]] = {}
        #: The shortest ttl of any application (what a sweep must look back to).
        self.shortestTtl = ttl
        #: Changes with every ``setApp``: a channel's size looked up under one generation
        #: holds until the next (``MemoryHistory.append`` looks it up again only then).
        self.generation = 0

    def setApp(self, appId: str, size: int | None, ttl: float | None) -> None:
        """The application's own settings (None: the server's default)."""
        self.generation += 1
        if size is None and ttl is None:
            self._apps.pop(appId, None)
            self.shortestTtl = min([self.default[1], *(t for _, t in self._apps.values())])
            return
        self._apps[appId] = (
            self.default[0] if size is None else max(0, size),
            self.default[1] if ttl is None else ttl,
        )
        self.shortestTtl = min([self.default[1], *(t for _, t in self._apps.values())])

    def of(self, channel: str) -> tuple[int, float]:
        """``(size, ttl)`` for ``channel`` (size 0: no history)."""
        apps = self._apps
        if apps:
            cut = channel.find("/", 1)
            found = apps.get(channel[1:cut] if cut > 0 else channel[1:])
            if found is not None:
                return found
        return self.default


class _Stream:
    __slots__ = ("entries", "epoch", "generation", "offset", "suffix", "touched")

    def __init__(self, epoch: str, size: int, generation: int = -1) -> None:
        self.epoch = epoch
        self.offset = 0
        self.entries: deque[tuple[int, float, bytes]] = deque(maxlen=size)
        self.touched = 0.0
        # The settings' generation ``entries``' size was set under (-1: to be checked).
        self.generation = generation
        # ``positionSuffix(offset, epoch)`` is ``suffix % offset``: the epoch's part made at
        # the first publish (not for a channel only subscribed to: idle memory), then kept.
        self.suffix: bytes | None = None

    def makeSuffix(self) -> bytes:
        suffix = self.suffix = positionSuffix(0, self.epoch.replace("%", "%%")).replace(b":0,", b":%d,", 1)
        return suffix


class MemoryHistory:
    """
    The memory engine's history: per channel a bounded deque of ``(offset, time,
    payload)``, and its position. Channels are kept in the order of their last publish,
    so a sweep (every ``sweepInterval`` while any is kept) empties the quiet ones from
    the front and stops at the first recent one.
    """

    def __init__(self, reactor: IReactorTime, settings: HistorySettings, sweepInterval: float = 60.0) -> None:
        self._reactor = reactor
        self.settings = settings
        self._sweepInterval = sweepInterval
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        self._sweepCall: IDelayedCall | None = None
        self._closed = False
        self.idempotency = IdempotencyKeys(reactor)

    def admit(self, delivery: Delivery) -> bool:
        """
        Whether ``delivery`` is to be published: False for a duplicate of an idempotent
        publish (given the first one's position); else it is kept and positioned.
        """
        key = delivery.idempotencyKey
        if key is None:
            self.append(delivery)
            return True
        prior = self.idempotency.seen(key)
        if prior is not None:
            delivery.duplicate = True
            delivery.offset, delivery.epoch = prior
            return False
        self.append(delivery)
        self.idempotency.remember(key, delivery.offset, delivery.epoch)
        return True

    def append(self, delivery: Delivery) -> None:
        """Keep ``delivery`` (if its channel has history) and give it its position."""
        head = delivery.head
        if head is None:
            return
        channel = delivery.channel
        streams = self._streams
        stream = streams.get(channel)
        settings = self.settings
        if stream is None or stream.generation != settings.generation:
            # The channel's size, looked up again only when the settings changed since:
            # the lookup was a call per publish.
            size = settings.of(channel)[0]
            if size <= 0:
                return
            if stream is None:
                stream = streams[channel] = _Stream(newEpoch(), size, settings.generation)
                self._scheduleSweep()
            else:
                streams.move_to_end(channel)
                stream.generation = settings.generation
                if stream.entries.maxlen != size:
                    stream.entries = deque(stream.entries, maxlen=size)
        else:
            streams.move_to_end(channel)
        now = self._reactor.seconds()
        offset = stream.offset = stream.offset + 1
        stream.touched = now
        # Delivery.position, with the stream's suffix (its epoch encoded once, not per
        # publish): history was ~8 % of a one-recipient publish's instructions.
        delivery.offset = offset
        delivery.epoch = stream.epoch
        suffix = stream.suffix or stream.makeSuffix()
        payload = delivery.payload = head + suffix % offset
        if delivery.frames:
            delivery.frames.clear()
        stream.entries.append((offset, now, payload))

    def position(self, channel: str) -> Position | None:
        """
        ``channel``'s position (None: no history), as ``page(channel, None, 0)`` tells it,
        a channel never published to given its epoch as ``page`` gives it: what a
        subscribe that resumes nothing reports, without a page.
        """
        size = self.settings.of(channel)[0]
        if size <= 0:
            return None
        stream = self._streams.get(channel)
        if stream is None:
            stream = self._streams[channel] = _Stream(newEpoch(), size)
            stream.touched = self._reactor.seconds()
            self._scheduleSweep()
        return Position(stream.offset, stream.epoch)

    def page(self, channel: str, since: int | None, limit: int) -> HistoryPage:
        size, ttl = self.settings.of(channel)
        if size <= 0:
            return HistoryPage("", 0, [])
        stream = self._streams.get(channel)
        if stream is None:
            # Its position from now on: a client may resume from it before the first publish.
            stream = self._streams[channel] = _Stream(newEpoch(), size)
            stream.touched = self._reactor.seconds()
            self._scheduleSweep()
            return HistoryPage(stream.epoch, 0, [])
        if limit <= 0:
            # Only the position (a subscribe that resumes nothing): no walk over the entries.
            return HistoryPage(stream.epoch, stream.offset, [])
        oldest = self._reactor.seconds() - ttl
        kept = [(o, p) for o, t, p in stream.entries if t >= oldest and (since is None or o > since)]
        if since is None:
            kept = kept[-limit:]
        else:
            kept = kept[:limit]
        return HistoryPage(stream.epoch, stream.offset, kept)

    def forgetApp(self, appId: str) -> None:
        """Drop every channel of the application (deleted, or its history reset)."""
        prefix = f"/{appId}/"
        for channel in [c for c in self._streams if c.startswith(prefix)]:
            del self._streams[channel]

    def __len__(self) -> int:
        return len(self._streams)

    def _scheduleSweep(self) -> None:
        if self._sweepCall is None and not self._closed:
            self._sweepCall = self._reactor.callLater(self._sweepInterval, self._sweep)

    def _sweep(self) -> None:
        self._sweepCall = None
        now = self._reactor.seconds()
        streams = self._streams
        shortest = self.settings.shortestTtl
        for channel in list(streams):
            stream = streams[channel]
            idle = now - stream.touched
            if idle < shortest:
                break
            ttl = self.settings.of(channel)[1]
            if idle >= META_TTL or (stream.offset == 0 and idle >= ttl):
                # A channel only subscribed to (a position asked for, nothing published) is
                # kept for its ttl only: anonymous subscribes to made-up channels cannot
                # fill memory for a day.
                del streams[channel]
            elif idle >= ttl:
                stream.entries.clear()
        if streams:
            self._scheduleSweep()

    def close(self) -> None:
        self._closed = True
        if self._sweepCall is not None and self._sweepCall.active():
            self._sweepCall.cancel()
        self._sweepCall = None


def recovery(
    page: HistoryPage, wanted: Position | None, latest: bool
) -> tuple[Recovery, list[tuple[int, bytes]]]:
    """What a subscription resuming from ``wanted`` gets of ``page``: the outcome, the messages."""
    if not page.epoch:
        return Recovery(None, "no history" if wanted is not None else None), []
    current = Position(page.offset, page.epoch)
    if wanted is None:
        return Recovery(current, None), page.messages[-1:] if latest else []
    if wanted.epoch != page.epoch:
        return Recovery(current, "epoch changed"), []
    if wanted.offset > page.offset:
        return Recovery(current, "future"), []
    messages = [m for m in page.messages if m[0] > wanted.offset]
    first = messages[0][0] if messages else page.offset + 1
    if first != wanted.offset + 1:
        # What is left is sent all the same: the client is told it is not everything.
        return Recovery(current, "position too old"), messages
    return Recovery(current, None), messages


Reader = Callable[[Mapping[str, int | None], Mapping[str, int]], "defer.Deferred[dict[str, HistoryPage]]"]
#: What a recovery queues: ``(channel, offset, epoch, payload)``, in order.
Recovered = list[tuple[str, int, str, bytes]]


def asksHistory(wanted: Mapping[str, Position | None], latest: Collection[str]) -> bool:
    """Whether a recovery sends anything (a position to resume from, or a latest message)."""
    return bool(latest) or any(position is not None for position in wanted.values())


#: The most messages one subscribe recovers, over all its channels (each channel gets at
#: least DEFAULT_HISTORY_SIZE): with applications keeping up to 10,000 messages a
#: channel, a wildcard resuming 128 channels could otherwise read a million messages
#: into one client's queue. As many as a client may have queued without a connection.
MAX_RECOVERED = 10_000


def readRequests(
    wanted: Mapping[str, Position | None], latest: Collection[str], available: bool
) -> tuple[dict[str, int | None], dict[str, int]]:
    """``(since, limits)`` to read for a recovery (only positions, when nothing can be sent)."""
    since: dict[str, int | None] = {}
    limits: dict[str, int] = {}
    resuming = sum(1 for position in wanted.values() if position is not None)
    share = max(DEFAULT_HISTORY_SIZE, MAX_RECOVERED // max(resuming, 1))
    for channel in dict.fromkeys([*wanted, *latest]):
        position = wanted.get(channel)
        if position is not None and available:
            since[channel], limits[channel] = position.offset, share
        else:
            since[channel], limits[channel] = None, 1 if (channel in latest and available) else 0
    return since, limits


def recoveries(
    pages: Mapping[str, HistoryPage],
    wanted: Mapping[str, Position | None],
    latest: Collection[str],
    available: bool,
    limits: Mapping[str, int] | None = None,
) -> tuple[dict[str, Recovery], Recovered, dict[str, int]]:
    """The outcome per channel, what to queue, and per channel the last offset queued."""
    outcomes: dict[str, Recovery] = {}
    queued: Recovered = []
    sent: dict[str, int] = {}
    for channel in dict.fromkeys([*wanted, *latest]):
        page = pages[channel]
        position = wanted.get(channel)
        if not available and (position is not None or channel in latest):
            current = Position(page.offset, page.epoch) if page.epoch else None
            outcomes[channel] = Recovery(current, "unavailable")
            continue
        outcome, messages = recovery(page, position, channel in latest)
        if (
            outcome.missed is None
            and position is not None
            and limits is not None
            and messages
            and len(messages) >= limits.get(channel, 1 << 62)
            and messages[-1][0] < page.offset
        ):
            # Cut at this subscribe's share of MAX_RECOVERED: the rest is not sent.
            outcome = Recovery(outcome.position, "too many missed")
        outcomes[channel] = outcome
        if messages:
            queued += [(channel, o, page.epoch, p) for o, p in messages]
            sent[channel] = messages[-1][0]
    return outcomes, queued, sent


def recoverLocally(
    local: LocalClients[Any],
    clientId: str,
    subscribe: Callable[[], defer.Deferred[Any]],
    wanted: Mapping[str, Position | None],
    latest: Collection[str],
    read: Reader,
    makeDelivery: Callable[[str, int, str, bytes], Delivery],
) -> dict[str, Recovery] | defer.Deferred[dict[str, Recovery]]:
    """
    :meth:`IEngine.recover` for a client held in ``local`` (or, if it is not, only the
    positions and ``"unavailable"``): ``read({channel: since}, {channel: limit})`` reads the
    pages (one round trip for all of them, on Redis), ``makeDelivery(channel, offset,
    epoch, payload)`` makes what is queued. The outcomes at once when ``subscribe()`` and
    ``read`` answered at once (the memory engine, whose subscribes that resume nothing
    take a shorter way: ``MemoryEngineHistory.recover``), else a Deferred of them.
    """
    return _LocalRecovery(local, clientId, wanted, latest, read, makeDelivery).run(subscribe)


class _LocalRecovery:
    """
    One :func:`recoverLocally`: subscribe, read, queue, each step going on at once when
    the one before answered at once, in a callback when it did not; and, however it ends,
    the client's queue let go if what was missed was not put in front of it.
    """

    def __init__(
        self,
        local: LocalClients[Any],
        clientId: str,
        wanted: Mapping[str, Position | None],
        latest: Collection[str],
        read: Reader,
        makeDelivery: Callable[[str, int, str, bytes], Delivery],
    ) -> None:
        self.local = local
        self.clientId = clientId
        self.wanted = wanted
        self.latest = latest
        self.read = read
        self.makeDelivery = makeDelivery
        self.client: LocalClient | None = local.get(clientId)
        # Whether the client's queue is held until what it missed is queued.
        self.sending = self.client is not None and asksHistory(wanted, latest)

    def run(
        self, subscribe: Callable[[], defer.Deferred[Any]]
    ) -> dict[str, Recovery] | defer.Deferred[dict[str, Recovery]]:
        if self.sending:
            assert self.client is not None
            self.client.recovering += 1
        try:
            subscribed = settled(subscribe())
            if isDeferred(subscribed):
                return subscribed.addCallback(self._read).addBoth(self._ended)
            outcomes = self._read(None)
        except BaseException:
            self._release()
            raise
        if isDeferred(outcomes):
            return outcomes.addBoth(self._ended)
        self._release()
        return outcomes

    def _read(self, _: object) -> dict[str, Recovery] | defer.Deferred[dict[str, Recovery]]:
        since, limits = readRequests(self.wanted, self.latest, self.client is not None)
        pages = settled(self.read(since, limits))
        if isDeferred(pages):
            return pages.addCallback(self._queue, limits)
        return self._queue(pages, limits)

    def _queue(self, pages: Mapping[str, HistoryPage], limits: Mapping[str, int]) -> dict[str, Recovery]:
        client = self.client
        outcomes, queued, sent = recoveries(pages, self.wanted, self.latest, client is not None, limits)
        if self.sending and self.local.get(self.clientId) is client:
            assert client is not None
            self.local.resume(client, [self.makeDelivery(*entry) for entry in queued], sent)
            self.sending = False
        return outcomes

    def _release(self) -> None:
        if self.sending and self.client is not None:
            self.local.resume(self.client, [], {})

    def _ended(self, result: Any) -> Any:
        self._release()
        return result


class EngineHistory:
    """
    :class:`IEngine`'s ``history`` and ``recover``, mixed into both engines: over the
    engine's local clients (``_local``) and its store (``_readHistory``).
    """

    _local: LocalClients[Any]

    @property
    def historySettings(self) -> HistorySettings:
        raise NotImplementedError

    def setHistoryLimits(self, appId: str, size: int | None, ttl: float | None) -> None:
        self.historySettings.setApp(appId, size, ttl)

    def _readHistory(
        self, since: Mapping[str, int | None], limits: Mapping[str, int]
    ) -> defer.Deferred[dict[str, HistoryPage]]:
        raise NotImplementedError

    def _recoveredDelivery(self, channel: str, offset: int, epoch: str, payload: bytes) -> Delivery:
        delivery = Delivery(channel, payload)
        delivery.offset = offset
        delivery.epoch = epoch
        return delivery

    def history(self, channel: str, since: int | None, limit: int) -> defer.Deferred[HistoryPage]:
        return self._readHistory({channel: since}, {channel: limit}).addCallback(lambda pages: pages[channel])

    def recover(
        self,
        clientId: str,
        subscribe: Callable[[], defer.Deferred[Any]],
        wanted: Mapping[str, Position | None],
        latest: Collection[str],
    ) -> defer.Deferred[dict[str, Recovery]]:
        try:
            outcomes = recoverLocally(
                self._local, clientId, subscribe, wanted, latest, self._readHistory, self._recoveredDelivery
            )
        except Exception:
            return defer.fail()
        return outcomes if isDeferred(outcomes) else defer.succeed(outcomes)


class MemoryEngineHistory(EngineHistory):
    """The memory engine's history methods, over its :class:`MemoryHistory` (``_history``)."""

    _history: MemoryHistory

    @property
    def historySettings(self) -> HistorySettings:
        """Each channel's size and ttl: the server's, and each application's (``setApp``)."""
        return self._history.settings

    def _readHistory(
        self, since: Mapping[str, int | None], limits: Mapping[str, int]
    ) -> defer.Deferred[dict[str, HistoryPage]]:
        return defer.succeed({c: self._history.page(c, s, limits[c]) for c, s in since.items()})

    def recover(
        self,
        clientId: str,
        subscribe: Callable[[], defer.Deferred[Any]],
        wanted: Mapping[str, Position | None],
        latest: Collection[str],
    ) -> defer.Deferred[dict[str, Recovery]]:
        # Nearly every subscribe (each of a reconnect storm's) resumes nothing: it only
        # reports each channel's position. That needs no queue held, no page, no
        # recovery object: the general path was ~13 % of a long-polling client's set-up.
        if latest:
            return super().recover(clientId, subscribe, wanted, latest)
        for position in wanted.values():
            if position is not None:
                return super().recover(clientId, subscribe, wanted, latest)
        try:
            subscribed = settled(subscribe())
        except Exception:
            return defer.fail()
        if isDeferred(subscribed):
            return subscribed.addCallback(self._positions, wanted)
        return defer.succeed(self._positions(None, wanted))

    def _positions(self, _: object, wanted: Mapping[str, Position | None]) -> dict[str, Recovery]:
        """What ``recoveries`` makes of position-only pages: each channel's position, nothing missed."""
        position = self._history.position
        return {channel: Recovery(position(channel), None) for channel in wanted}

    def forgetHistory(self, appId: str) -> defer.Deferred[None]:
        """Drop the application's history at once (deleted, or its history reset)."""
        self._history.forgetApp(appId)
        return defer.succeed(None)
