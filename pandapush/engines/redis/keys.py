"""Where the Redis engine's state lives: key names under a namespace, and the shard holding each.

On the shard of a client's id (the hash ring's choice):

- ``<ns>:clients``: the registry, a sorted set of deadlines (one per shard);
- ``<ns>:dying``: clients being destroyed, with the deadline after which the
  collector finishes a destroy its node did not (see ``destroy``);
- ``<ns>:c:<id>``: its owner node and ownership epoch; ``<ns>:c:<id>:subs``: its
  subscriptions; ``<ns>:c:<id>:pres``: channel -> the member id it is present as;
  ``<ns>:c:<id>:parked``: the queue a closing owner left for the next one.

On the shard of a subscription key or channel: ``<ns>:s:<key>`` (its subscribers),
``<ns>:p:<channel>`` (presence: member id -> data), ``<ns>:pm:<channel>:<member>``
(the clients a member is present through), and ``<ns>:a:<appId>``: the application's
occupied channels whose subscriber sets are on this shard (see ``occupancy``).

On the first shard: ``<ns>:h:<channel>`` (its history, a stream) and ``<ns>:hm:<channel>``
(its offset and epoch), see ``history``; ``<ns>:idem:<appId>:<key>``: an idempotent
publish's key, for five minutes.

On every shard, ``<ns>:gen``: the generation token (see ``restore``). On the first
shard, which carries pub/sub: the channels ``<ns>:ch:<key>`` (a message, once per
subscription key), ``<ns>:node:<nodeId>`` (node-to-node calls) and ``<ns>:up:<nodeId>``
(nothing is published there: see ``nodes``); ``<ns>:gc``, the collector's lock; and
``<ns>:nodes``, the live nodes. (``<ns>:keys`` is key sync's: :mod:`pandapush.auth.keysync`.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from pandapush.redis import HashRing, RedisAddress, RedisShard

__all__ = ["RedisKeys", "Shards"]


class RedisKeys:
    """Every key and pub/sub channel name the engine uses under ``namespace``."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.clients = f"{namespace}:clients"
        self.dying = f"{namespace}:dying"
        self.generation = f"{namespace}:gen"
        self.collector = f"{namespace}:gc"
        # A key nothing is ever written to, for a script argument that must name one.
        self.nothing = f"{namespace}:none"
        self.channelPrefix = f"{namespace}:ch:"
        self.nodePrefix = f"{namespace}:node:"
        #: Every node SUBSCRIBEs to it: ``IEngine.broadcast``.
        self.broadcast = f"{namespace}:bcast"
        #: The live nodes, scored by when each last said so (see ``nodes``).
        self.nodes = f"{namespace}:nodes"
        self.upPrefix = f"{namespace}:up:"

    def client(self, clientId: str) -> tuple[str, str, str, str]:
        """The registry, and the client's hash, subscriptions and presence keys."""
        base = f"{self.namespace}:c:{clientId}"
        return self.clients, base, base + ":subs", base + ":pres"

    def parked(self, clientId: str) -> str:
        return f"{self.namespace}:c:{clientId}:parked"

    def subscribers(self, key: str) -> str:
        return f"{self.namespace}:s:{key}"

    def presence(self, channel: str) -> str:
        return f"{self.namespace}:p:{channel}"

    def appChannels(self, appId: str) -> str:
        """The application's occupied channels (on each shard, those whose subscribers it holds)."""
        return f"{self.namespace}:a:{appId}"

    def member(self, channel: str, memberId: str) -> str:
        return f"{self.namespace}:pm:{channel}:{memberId}"

    def historyStream(self, channel: str) -> str:
        """The channel's history, a stream (on the pub/sub shard: see ``history``)."""
        return f"{self.namespace}:h:{channel}"

    def historyMeta(self, channel: str) -> str:
        """The channel's position: its offset and epoch."""
        return f"{self.namespace}:hm:{channel}"

    def idempotency(self, key: str) -> str:
        """A publish's idempotency key (``<appId>:<key>``), on the pub/sub shard."""
        return f"{self.namespace}:idem:{key}"

    def pubsub(self, key: str) -> str:
        """The pub/sub channel carrying messages for subscription key ``key``."""
        return self.channelPrefix + key

    def node(self, nodeId: str) -> str:
        """The pub/sub channel a node hears calls (and their answers) on."""
        return self.nodePrefix + nodeId

    def up(self, nodeId: str) -> str:
        """The channel a node's SUBSCRIBE connection subscribes last: its proof of being back."""
        return self.upPrefix + nodeId


class Shards:
    """
    The shards, which one holds a client's or a key's state (a consistent-hash ring of
    their names, so it survives restarts), and when a call to each last failed.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        addresses: Sequence[RedisAddress],
        commandTimeout: float,
        reconnectMaxDelay: float,
        replicas: int = 160,
    ) -> None:
        self._reactor = reactor
        self.addresses = list(addresses)
        self._shards = [RedisShard(reactor, a, commandTimeout, reconnectMaxDelay) for a in self.addresses]
        self._ring = HashRing([a.name for a in self.addresses], replicas)
        #: The shard carrying pub/sub (and the collector's lock): the first.
        self.pubsub = self._shards[0]
        # shard index -> when a call to it last failed (the GC holds back after an outage)
        self._troubleAt: dict[int, float] = {}

    def index(self, clientIdOrKey: str) -> int:
        return self._ring.index(clientIdOrKey)

    def of(self, clientIdOrKey: str) -> RedisShard:
        """The shard holding a client's state (by its id) or a subscription key's."""
        return self._shards[self._ring.index(clientIdOrKey)]

    def address(self, clientIdOrKey: str) -> RedisAddress:
        return self.addresses[self._ring.index(clientIdOrKey)]

    def __getitem__(self, index: int) -> RedisShard:
        return self._shards[index]

    def __len__(self) -> int:
        return len(self._shards)

    def __iter__(self) -> Iterator[RedisShard]:
        return iter(self._shards)

    def failed(self, index: int) -> None:
        """A call to shard ``index`` failed just now."""
        self._troubleAt[index] = self._reactor.seconds()

    def failedOn(self, failure: Any, index: int) -> Any:
        """An errback noting the failure on shard ``index``, passing it on."""
        self.failed(index)
        return failure

    def troubledWithin(self, index: int, seconds: float) -> bool:
        """Whether a call to shard ``index`` failed within the last ``seconds``."""
        return self._reactor.seconds() - self._troubleAt.get(index, -1e9) < seconds

    def ping(self) -> list[defer.Deferred[None]]:
        return [s.ping() for s in self._shards]

    def close(self) -> defer.Deferred[Any]:
        return defer.DeferredList([s.close() for s in self._shards], consumeErrors=True)
