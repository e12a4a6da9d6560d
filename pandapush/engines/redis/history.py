"""Channel history on the Redis engine: Redis Streams, one per channel, on the pub/sub shard.

A message is appended inside the script that publishes it (``scripts.PUBLISH``), so
history costs no round trip: one XADD trimmed to the channel's size (``MAXLEN ~``),
its offset from the channel's hash ``<ns>:hm:<channel>`` (``o``: the offset, ``e``: the
epoch), the entry's id being ``<offset>-0`` so that "after offset N" is one XRANGE. The
stream expires ``ttl`` after the last publish, and an entry older than ``ttl`` is left
out when read; the hash lives :data:`~pandapush.engines.history.META_TTL` longer.
A hash found without its epoch is a history that was lost: a new epoch starts.

Every node reads and writes the same streams: a client resumes on any node.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from twisted.internet import defer

from pandapush._deferred import isDeferred
from pandapush.engines.history import (
    META_TTL,
    EngineHistory,
    HistorySettings,
    asksHistory,
    newEpoch,
    readRequests,
    recoverLocally,
)
from pandapush.engines.redis import scripts
from pandapush.engines.redis.node import Node, RelayedDelivery, unavailableAsEngine
from pandapush.interfaces import HistoryPage, Position, Recovery

__all__ = ["READ", "Asked", "RedisEngineHistory", "RedisHistory"]

#: KEYS: per channel its stream and hash. ARGV: per channel: since ('' for the latest),
#: limit, size, ttl (ms), the hash's ttl (ms), an epoch should a new one start. Returns
#: per channel {epoch, offset, offset, payload, ...}, oldest first, only entries among
#: the last ``size`` and younger than ``ttl``. A channel without a hash gets one (offset
#: 0): see ``scripts.POSITION``.
READ = (
    scripts.POSITION
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local result = {}
for i = 1, #KEYS, 2 do
  local a = (i - 1) * 3
  local stream, meta = KEYS[i], KEYS[i + 1]
  local since, limit, size = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local oldest = now - tonumber(ARGV[a + 4])
  local epoch, offset = position(stream, meta, ARGV[a + 4], ARGV[a + 6])
  local entry = {epoch, offset}
  if limit > 0 and offset > 0 then
    local from = math.max(offset - size, 0)
    local items
    if since == '' then
      items = redis.call('XREVRANGE', stream, '+', (from + 1) .. '-0', 'COUNT', limit)
      local reversed = {}
      for j = #items, 1, -1 do table.insert(reversed, items[j]) end
      items = reversed
    else
      from = math.max(from, tonumber(since))
      items = redis.call('XRANGE', stream, (from + 1) .. '-0', '+', 'COUNT', limit)
    end
    for _, item in ipairs(items) do
      local fields, stamp, payload = item[2], 0, ''
      for f = 1, #fields, 2 do
        if fields[f] == 't' then stamp = tonumber(fields[f + 1]) else payload = fields[f + 1] end
      end
      if stamp >= oldest then
        table.insert(entry, tonumber(string.match(item[1], '^(%d+)')))
        table.insert(entry, payload)
      end
    end
  end
  table.insert(result, entry)
end
return result
"""
)


class Asked:
    """
    The channels a recovery of one client reports only the position of, and the positions
    its subscribes read (``RedisHistory.asking``): no READ for those.
    """

    __slots__ = ("channels", "pages")

    def __init__(self, channels: Collection[str]) -> None:
        self.channels = channels
        self.pages: dict[str, HistoryPage] = {}


class RedisHistory:
    """Reads the streams (one script for every channel of a subscribe) and what a publish appends."""

    def __init__(self, node: Node, settings: HistorySettings) -> None:
        self._node = node
        self.settings = settings
        # clientId -> its recoveries under way that want positions only (see ``asking``).
        self._asked: dict[str, list[Asked]] = {}

    def asking(self, clientId: str, channels: Collection[str]) -> Asked:
        """
        A recovery of ``clientId`` reports the positions of ``channels`` (and sends nothing
        of them): until ``answered``, a subscribe of the client to one of them whose keys
        and the channel's history are on one shard reads its position in the same script
        (``positionArgs``, ``positioned``), which the recovery's read takes instead of a READ.
        """
        asked = Asked(channels)
        self._asked.setdefault(clientId, []).append(asked)
        return asked

    def answered(self, clientId: str, asked: Asked) -> None:
        waiting = self._asked.get(clientId)
        if waiting is not None and asked in waiting:
            waiting.remove(asked)
            if not waiting:
                del self._asked[clientId]

    def positionArgs(self, clientId: str, channel: str) -> tuple[list[str], list[Any]] | None:
        """The keys and arguments SUBSCRIBE_BOTH reads ``channel``'s position with, if a recovery wants it."""
        waiting = self._asked.get(clientId)
        if waiting is None or not any(channel in asked.channels for asked in waiting):
            return None
        size, ttl = self.settings.of(channel)
        if size <= 0:
            return None
        keys = self._node.keys
        return [keys.historyStream(channel), keys.historyMeta(channel)], [int(ttl * 1000), newEpoch()]

    def positioned(self, clientId: str, channel: str, epoch: Any, offset: Any) -> None:
        """A subscribe read ``channel``'s position (in its script) for the client's recoveries."""
        page = HistoryPage(_text(epoch), int(offset), [])
        for asked in self._asked.get(clientId, ()):
            if channel in asked.channels:
                asked.pages[channel] = page

    def readAsked(
        self, asked: Asked, since: Mapping[str, int | None], limits: Mapping[str, int]
    ) -> defer.Deferred[dict[str, HistoryPage]]:
        """``read``, with the positions the recovery's subscribes read taken as they are."""
        pages = {
            channel: asked.pages[channel]
            for channel, after in since.items()
            if after is None and not limits[channel] and channel in asked.pages
        }
        if len(pages) == len(since):
            return defer.succeed(pages)
        rest = {channel: after for channel, after in since.items() if channel not in pages}
        return self.read(rest, limits).addCallback(lambda more: {**pages, **more})

    def publishArgs(self, channel: str, head: bytes | None) -> tuple[list[str], list[Any]] | None:
        """The keys and arguments a publish script appends ``channel``'s message with (None: no history)."""
        if head is None:
            return None
        size, ttl = self.settings.of(channel)
        if size <= 0:
            return None
        keys = self._node.keys
        return (
            [keys.historyStream(channel), keys.historyMeta(channel)],
            [size, int(ttl * 1000), int(max(ttl, META_TTL) * 1000), newEpoch()],
        )

    def read(
        self, since: Mapping[str, int | None], limits: Mapping[str, int]
    ) -> defer.Deferred[dict[str, HistoryPage]]:
        return defer.Deferred.fromCoroutine(self._read(since, limits))

    async def _read(
        self, since: Mapping[str, int | None], limits: Mapping[str, int]
    ) -> dict[str, HistoryPage]:
        names = self._node.keys
        pages: dict[str, HistoryPage] = {}
        keys: list[str] = []
        args: list[Any] = []
        asked: list[str] = []
        for channel, after in since.items():
            size, ttl = self.settings.of(channel)
            if size <= 0:
                pages[channel] = HistoryPage("", 0, [])
                continue
            asked.append(channel)
            keys += [names.historyStream(channel), names.historyMeta(channel)]
            args += [
                "" if after is None else after,
                limits[channel],
                size,
                int(ttl * 1000),
                int(max(ttl, META_TTL) * 1000),
                newEpoch(),
            ]
        if asked:
            answers = await self._node.shards.pubsub.eval(READ, keys, args)
            for channel, answer in zip(asked, answers, strict=True):
                flat = answer[2:]
                messages = [(int(flat[j]), _bytes(flat[j + 1])) for j in range(0, len(flat), 2)]
                pages[channel] = HistoryPage(_text(answer[0]), int(answer[1]), messages)
        return pages

    def page(self, channel: str, since: int | None, limit: int) -> defer.Deferred[HistoryPage]:
        d = self.read({channel: since}, {channel: limit})
        return d.addCallback(lambda pages: pages[channel])

    async def forgetApp(self, appId: str) -> None:
        """Delete every stream and hash of the application (SCAN in batches, on the pub/sub shard)."""
        names = self._node.keys
        shard = self._node.shards.pubsub
        for pattern in (names.historyStream(f"/{appId}/*"), names.historyMeta(f"/{appId}/*")):
            cursor = "0"
            while True:
                cursor, found = await shard.execute(
                    "SCAN", cursor, "MATCH", _escapeGlob(pattern), "COUNT", 1000
                )
                if found:
                    await shard.execute("UNLINK", *found)
                if str(cursor) == "0":
                    break


class RedisEngineHistory(EngineHistory):
    """
    The Redis engine's history methods (``history`` is EngineHistory's, and ``recover`` for
    a client this node owns). A client owned by another node (a long-poller whose subscribe
    came here) has its queue there: its recovery is the owner's (``recovery``).
    """

    _fanout: Any
    _recovery: Any
    _node: Node

    def recover(
        self,
        clientId: str,
        subscribe: Callable[[], defer.Deferred[Any]],
        wanted: Mapping[str, Position | None],
        latest: Collection[str],
    ) -> defer.Deferred[dict[str, Recovery]]:
        if clientId in self._local or not asksHistory(wanted, latest):
            return self._recoverHere(clientId, subscribe, wanted, latest)
        return unavailableAsEngine(
            defer.Deferred.fromCoroutine(self._recovery.recover(clientId, subscribe, wanted, latest))
        )

    def _recoverHere(
        self,
        clientId: str,
        subscribe: Callable[[], defer.Deferred[Any]],
        wanted: Mapping[str, Position | None],
        latest: Collection[str],
    ) -> defer.Deferred[dict[str, Recovery]]:
        """
        EngineHistory's recover, with the positions of channels it sends nothing of read by
        their subscribes where they can be (every subscribe of a reconnect storm comes here
        for its reply's position: a round trip less each, see ``RedisHistory.asking``).
        """
        since, limits = readRequests(wanted, latest, clientId in self._local)
        only = [channel for channel, limit in limits.items() if not limit and since[channel] is None]
        if not only and not any(limits.values()):
            return EngineHistory.recover(self, clientId, subscribe, wanted, latest)
        history = self._history
        asked = history.asking(clientId, only) if only else None

        def read(
            since: Mapping[str, int | None], limits: Mapping[str, int]
        ) -> defer.Deferred[dict[str, HistoryPage]]:
            pages = (
                unavailableAsEngine(history.readAsked(asked, since, limits))
                if asked is not None
                else self._readHistory(since, limits)
            )
            if any(limits.values()):
                # What is sent from history must be in front of the live copies of the same
                # messages, and those come on the SUBSCRIBE connection, which may still be
                # behind the READ this page came from: the queue is let go (and copies up to
                # the page's last offset dropped from it) once that connection answers a
                # PING sent after the READ was answered.
                pages.addCallback(self._caughtUp)
            return pages

        try:
            outcomes = recoverLocally(
                self._local, clientId, subscribe, wanted, latest, read, self._recoveredDelivery
            )
        except Exception:
            if asked is not None:
                history.answered(clientId, asked)
            return defer.fail()
        if asked is None:
            return outcomes if isDeferred(outcomes) else defer.succeed(outcomes)
        if not isDeferred(outcomes):
            history.answered(clientId, asked)
            return defer.succeed(outcomes)

        def answered(result: Any) -> Any:
            history.answered(clientId, asked)
            return result

        return outcomes.addBoth(answered)

    @property
    def _history(self) -> RedisHistory:
        return self._fanout.history  # type: ignore[no-any-return]

    @property
    def historySettings(self) -> HistorySettings:
        """Each channel's size and ttl: the server's, and each application's (``setApp``)."""
        return self._history.settings

    def _readHistory(
        self, since: Mapping[str, int | None], limits: Mapping[str, int]
    ) -> defer.Deferred[dict[str, HistoryPage]]:
        return unavailableAsEngine(self._history.read(since, limits))

    def _caughtUp(self, pages: dict[str, HistoryPage]) -> defer.Deferred[dict[str, HistoryPage]]:
        """``pages``, once every message published before they were read has arrived here live."""
        return self._node.caughtUp().addCallback(lambda _: pages)

    def _recoveredDelivery(self, channel: str, offset: int, epoch: str, payload: bytes) -> RelayedDelivery:
        # Its id differs from the live copy's: a hand-over keeps both, the seam dropped one.
        delivery = RelayedDelivery(channel, payload, None, f"h.{offset}.{channel}")
        delivery.offset, delivery.epoch = offset, epoch
        return delivery

    def forgetHistory(self, appId: str) -> defer.Deferred[None]:
        return unavailableAsEngine(defer.Deferred.fromCoroutine(self._history.forgetApp(appId)))


def _escapeGlob(pattern: str) -> str:
    # Only the trailing * is a wildcard: an application id or namespace with glob characters matches itself.
    body = pattern[:-1]
    for c in "\\?[]*":
        body = body.replace(c, "\\" + c)
    return body + "*"


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
