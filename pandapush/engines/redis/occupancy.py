"""Which channels are occupied, and by how many, counted over every node.

A channel's subscribers are a set on the channel's shard (``subscriptions``), its
presence members a hash beside it (``presence``): one channel's counts are one script
there. Listing an application's occupied channels without scanning the keyspace needs
an index: ``<ns>:a:<appId>`` on each shard holds the application's occupied channels
whose subscriber sets live on that shard, so a listing asks every shard once and each
answers from its own set.

The index follows the engine's own events: the node whose script saw a channel gain its
first subscriber (or lose its last) hears ``channelOccupied`` (``channelVacated``) and
syncs the index with the subscribers set as it is at that moment. Every transition is
followed by a sync, so the last sync to run saw the last transition, in whatever order
the nodes' calls reach Redis. A node killed between the two leaves at worst a channel
listed that has no subscriber (the listing skips and removes it) or, for a moment, an
occupied channel missing (until its next transition). Redis coming back empty loses the
index with everything else; the restore writes back the subscribers sets of its clients
and syncs their channels (``restored``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from pandapush.bayeux import json
from pandapush.bayeux.channel import listedApp
from pandapush.engines.redis import scripts
from pandapush.engines.redis.broadcast import Broadcasts
from pandapush.engines.redis.node import Node, unavailableAsEngine
from pandapush.interfaces import Occupancy
from pandapush.listeners import EngineListener

if TYPE_CHECKING:
    from pandapush.engines.redis.restore import Restorer
    from pandapush.interfaces import IEngineListener

__all__ = ["ClusterQueries", "Occupancies"]


class Occupancies(EngineListener):
    """Keeps the per-application index of occupied channels, and answers counts from Redis."""

    def __init__(self, node: Node) -> None:
        self._node = node

    # keeping the index (an engine listener of the engine itself)

    def channelOccupied(self, channel: str) -> None:
        self._sync(channel)

    def channelVacated(self, channel: str) -> None:
        self._sync(channel)

    def restored(self, channels: Iterable[str]) -> None:
        """Subscribers sets were written back after Redis lost them: index their channels again."""
        for channel in channels:
            self._sync(channel)

    def _sync(self, channel: str) -> None:
        app = listedApp(channel)
        if app is None:
            return
        node = self._node
        keys = node.keys
        node.track(
            node.shards.of(channel).eval(
                scripts.SYNC_OCCUPIED, [keys.subscribers(channel), keys.appChannels(app)], [channel]
            ),
            "indexing an occupied channel",
        )

    # queries

    def channel(self, channel: str) -> defer.Deferred[Occupancy]:
        keys = self._node.keys
        d = self._node.shards.of(channel).eval(
            scripts.OCCUPANCY, [keys.subscribers(channel), keys.presence(channel)]
        )
        return d.addCallback(lambda counts: Occupancy(int(counts[0]), int(counts[1])))

    def channels(self, appId: str, prefix: str) -> defer.Deferred[dict[str, Occupancy]]:
        keys = self._node.keys
        every = "1" if prefix == f"/{appId}/" else "0"
        args = [prefix, keys.subscribers(""), keys.presence(""), every]
        index = [keys.appChannels(appId)]
        asked = [shard.eval(scripts.OCCUPIED_CHANNELS, index, args) for shard in self._node.shards]
        d = defer.gatherResults(asked, consumeErrors=True)

        def merge(answers: list[Any]) -> dict[str, Occupancy]:
            found: dict[str, Occupancy] = {}
            for answer in answers:
                flat = json.loads(answer)
                for i in range(0, len(flat), 3):
                    found[flat[i]] = Occupancy(int(flat[i + 1]), int(flat[i + 2]))
            return found

        def unwrap(failure: Any) -> Any:
            return failure.value.subFailure if isinstance(failure.value, defer.FirstError) else failure

        return d.addCallbacks(merge, unwrap)


class ClusterQueries:
    """The IEngine methods the Redis engine answers with its ``_occupancies`` and ``_broadcasts``."""

    _occupancies: Occupancies
    _broadcasts: Broadcasts

    def addListener(self, listener: IEngineListener) -> None:
        raise NotImplementedError

    def _startCluster(self, node: Node, restorer: Restorer) -> None:
        self._occupancies = Occupancies(node)
        # First of the listeners: the index of occupied channels follows every transition.
        self.addListener(self._occupancies)
        restorer.restoredChannels = self._occupancies.restored
        self._broadcasts = Broadcasts(node)

    def channelOccupancy(self, channel: str) -> defer.Deferred[Occupancy]:
        return unavailableAsEngine(self._occupancies.channel(channel))

    def occupiedChannels(self, appId: str, prefix: str) -> defer.Deferred[dict[str, Occupancy]]:
        return unavailableAsEngine(self._occupancies.channels(appId, prefix))

    def broadcast(self, topic: str, data: Any) -> defer.Deferred[None]:
        return unavailableAsEngine(self._broadcasts.send(topic, data))

    def onBroadcast(self, topic: str, handler: Callable[[Any], None]) -> None:
        self._broadcasts.handle(topic, handler)
