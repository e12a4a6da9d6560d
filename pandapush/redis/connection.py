"""Our own small interface over txredisapi: shards, a hash ring, and a subscriber.

Neither the Redis engine nor key sync touches txredisapi directly, so the
client library can be swapped (or faked) here alone. Per shard there is one
connection for commands and, on the shard that carries pub/sub, one connection
for SUBSCRIBE, as synapse does: a SUBSCRIBEd connection can run no other
command, and commands must not queue behind a flood of published messages.

Every command is bounded by ``commandTimeout``: while Redis is unreachable
txredisapi would otherwise keep a command waiting for a connection forever,
and a caller (the router answering a Bayeux request) must get an error instead.
Both connections reconnect forever with a capped backoff, and a periodic PING
aborts a connection that stopped answering (a half-open TCP connection is
otherwise noticed only by the kernel, minutes later).

An outage is logged once per server, with its cause, and its end once
(:mod:`pandapush.redis.health`); the reconnection attempts themselves are quiet
(Twisted's ``ClientService`` logs each one, dozens a minute per connection).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import txredisapi
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import ILogObserver, Logger
from zope.interface import implementer

from pandapush.redis.bounds import ObservedEndpoint, RedisUnavailable, ShardBounds, bounded
from pandapush.redis.commands import Deadlines
from pandapush.redis.health import RedisHealth, healthOf
from pandapush.redis.protocol import MAX_REPLY_SIZE, CommandProtocol, ReplyReader
from pandapush.redis.ring import HashRing

__all__ = [
    "HashRing",
    "RedisAddress",
    "RedisHealth",
    "RedisShard",
    "RedisSubscriber",
    "RedisUnavailable",
    "parseRedisHosts",
]


@implementer(ILogObserver)
def _discard(event: Any) -> None:
    pass


class _QuietClientService(ClientService):
    # Every connection attempt was an info line ("Scheduling retry N to connect..."):
    # with Redis down, dozens a minute per connection. The outage is logged once instead.
    _log = Logger(observer=_discard)


# txredisapi keeps each pooled connection with a ClientService of its own: the same quiet one.
txredisapi.ClientService = _QuietClientService


@dataclass(frozen=True)
class RedisAddress:
    """
    One Redis shard: a server and a logical database on it; or, with ``sentinels``,
    the primary those sentinels know as the master named ``host``, wherever it is
    now (``port`` unused; see :mod:`pandapush.redis.sentinel`).
    """

    host: str
    port: int = 6379
    db: int = 0
    sentinels: tuple[tuple[str, int], ...] = ()

    @property
    def server(self) -> str:
        """The server, whose health every connection to it shares (a Sentinel master: its name)."""
        return f"sentinel:{self.host}" if self.sentinels else f"{self.host}:{self.port}"

    @property
    def name(self) -> str:
        """Stable name of the shard on the hash ring (so the ring survives restarts and failovers)."""
        if self.sentinels:
            return f"sentinel:{self.host}/{self.db}"
        return f"{self.host}:{self.port}/{self.db}"


def parseRedisHosts(value: str) -> list[RedisAddress]:
    """
    Parse ``REDIS_HOSTS``: ``host:port[/db][,host:port[/db]...]``.

    The port defaults to 6379 and the database to 0. A database suffix lets one
    Redis server act as several shards (tests; small deployments trying out
    sharding). Brackets allow IPv6 literals: ``[::1]:6379``.
    """
    addresses: list[RedisAddress] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        db = 0
        if "/" in item:
            item, _, dbText = item.rpartition("/")
            db = int(dbText)
        port = 6379
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest.startswith(":"):
                port = int(rest[1:])
        elif item.count(":") == 1:
            host, _, portText = item.partition(":")
            port = int(portText)
        else:
            host = item
        if not host or not 0 < port < 65536 or db < 0:
            raise ValueError(f"bad Redis address {item!r} in {value!r}")
        address = RedisAddress(host, port, db)
        if address in addresses:
            raise ValueError(f"Redis address {address.name} given twice in {value!r}")
        addresses.append(address)
    if not addresses:
        raise ValueError(f"no Redis address in {value!r}")
    return addresses


class RedisShard:
    """One Redis database: a reconnecting command connection, with every command bounded in time."""

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        address: RedisAddress,
        commandTimeout: float = 2.0,
        reconnectMaxDelay: float = 5.0,
    ) -> None:
        self.address = address
        self._reactor = reactor
        self.commandTimeout = commandTimeout
        self.health = healthOf(reactor, address.server)
        self._deadlines = Deadlines(reactor, commandTimeout)
        # poolsize 1: commands from this node reach Redis in the order they were
        # issued (an attach's lease then a detach's deadline, never the reverse).
        # txredisapi.lazyConnection, but on an endpoint that tells our health.
        factory = txredisapi.RedisFactory(
            address.server,
            address.db or None,
            1,
            isLazy=True,
            charset="utf-8",
            convertNumbers=False,
        )
        factory.protocol = CommandProtocol  # our lean command path and reply parser
        factory.initialDelay = 0.1
        factory.maxDelay = reconnectMaxDelay
        # txredisapi fails this Deferred (its first connection's) when the connection's
        # AUTH or SELECT does not succeed, e.g. when the shard is closed while a SELECT is
        # under way. Nobody waits for it with a lazy connection, so it was logged as an
        # unhandled error when collected; the outage itself is told by our health.
        factory.deferred.addErrback(lambda _: None)
        self._primary: Any = None
        self._gated: Any = None
        endpoint: IStreamClientEndpoint
        if address.sentinels:
            # Imported here: the sentinel module builds on this one.
            from pandapush.redis.sentinel import PrimaryEndpoint

            endpoint = self._primary = PrimaryEndpoint(reactor, address, max(commandTimeout, 1.0))
        else:
            # Imported here too: the rolecheck module builds on this one.
            from pandapush.redis.rolecheck import GatedEndpoint

            plain = HostnameEndpoint(reactor, address.host, address.port, timeout=max(commandTimeout, 1.0))
            endpoint = self._gated = GatedEndpoint(plain)
        self._endpoint = ObservedEndpoint(endpoint, self.health)
        self.health.add(self._endpoint)
        self._bounds = ShardBounds(reactor, commandTimeout, self.health, self._endpoint)
        factory.startConnecting(self._endpoint)
        self._handler: Any = factory.handler
        # The pool's queue of connections (one): what the handler peeks at per command.
        self._connections: Any = factory.connectionQueue

    def gateReconnections(self, gate: Any) -> None:
        """
        Hold this shard's command connection, each time it is made again (after a
        Sentinel failover, a restart of the server, a cut connection), until ``gate``
        (a :data:`~pandapush.redis.sentinel.Gate`) has finished with it: the Redis
        engine's :class:`~pandapush.engines.redis.nodes.FailoverGate`, on the shard that
        carries pub/sub.
        """
        (self._primary or self._gated).gate = gate

    def _connection(self) -> Any:
        """
        The connected protocol, or None while there is none (the handler then waits for
        one). Commands go to it directly: through the handler each one cost a closure,
        an inlineCallbacks generator peeking at the pool's queue (with a random.choice
        over its one connection) and two Deferreds, 35 % of a worker's busy samples in a
        --workers 2 reconnect storm. Same connection, same order: the handler would
        hand a non-blocking command this very connection (peek, not get).
        """
        pending = self._connections.pending
        if pending:
            connection = pending[0]
            if connection.connected:
                return connection
        return None

    def execute(self, *args: Any) -> defer.Deferred[Any]:
        """Run one command; fails with RedisUnavailable after ``commandTimeout``."""
        try:
            connection = self._connection()
            if connection is not None:
                # Bounded by the protocol itself (CommandProtocol.command).
                d = connection.command(self._bounds, args)
            else:
                d = self._bounded(self._handler.execute_command(*args), str(args[0]))
        except Exception as e:
            return defer.fail(RedisUnavailable(str(e)))
        if self._primary is not None:
            d.addErrback(self._demoted)
        return d

    def _bounded(self, d: defer.Deferred[Any], what: str) -> defer.Deferred[Any]:
        return bounded(
            d, self.commandTimeout, self._reactor, what, self.health, self._endpoint, self._deadlines
        )

    def eval(self, script: str, keys: Sequence[str], args: Sequence[Any] = ()) -> defer.Deferred[Any]:
        """Run a Lua script (EVALSHA, falling back to EVAL), bounded in time."""
        try:
            connection = self._connection()
            if connection is not None:
                d = connection.evaluate(self._bounds, script, keys, args)
            else:
                d = self._bounded(self._evalLater(script, keys, args), "EVAL")
        except Exception as e:
            return defer.fail(RedisUnavailable(str(e)))
        if self._primary is not None:
            d.addErrback(self._demoted)
        return d

    def _evalLater(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> defer.Deferred[Any]:
        # No connection now: txredisapi's handler waits for one.
        return self._handler.eval(script, list(keys), list(args))  # type: ignore[no-any-return]

    def _demoted(self, failure: Any) -> Any:
        # The primary became a replica under this connection: find the new one.
        if failure.check(txredisapi.ResponseError) and str(failure.value).startswith("READONLY"):
            self._primary.demoted()
            raise RedisUnavailable(f"Redis {self.address.name} is read-only now (failover): {failure.value}")
        return failure

    def ping(self) -> defer.Deferred[None]:
        """PING; a connection that does not answer in time is aborted so that it reconnects."""
        d = self.execute("PING")
        sent = self._reactor.seconds()

        def failed(failure: Any) -> None:
            if self._endpoint.lastAnswer >= sent:
                # Answers kept coming: the PING waited behind a backlog, the connection is
                # not half-open. Aborting it would fail every command in that backlog.
                return
            for connection in list(self._handler._factory.pool):
                if connection.transport is not None:
                    # Debug only: the outage is logged once, by health.
                    self._log.debug(
                        "Redis {shard} did not answer PING: reconnecting", shard=self.address.name
                    )
                    connection.transport.abortConnection()

        return d.addCallbacks(lambda _: None, failed)

    def close(self) -> defer.Deferred[None]:
        self._endpoint.closed = True
        self.health.forget(self._endpoint)
        self._deadlines.close()
        d = self._handler.disconnect()
        if self._primary is not None:
            d.addBoth(lambda _: self._primary.close())
        return d.addErrback(lambda _: None)


class _SubscriberProtocol(txredisapi.SubscriberProtocol):  # type: ignore[misc]
    """
    txredisapi's subscriber (SUBSCRIBE, the reply queue, messages told apart from
    confirmations) with its replies read by :class:`ReplyReader`, all of a read at once.

    txredisapi's ``LineReceiver`` paused the connection after every bulk string
    (``stopReading``: ``epoll_ctl``) and read the rest of the data a reactor turn later
    (``callLater(0)``, then ``startReading``: ``epoll_ctl`` again), copying what was left
    of its buffer at every line: a SUBSCRIBE's or UNSUBSCRIBE's confirmation was two such
    turns, a published message three: in a ``--workers 2`` reconnect storm (its clients
    on 100 channels) about two ``epoll_ctl`` pairs, ``callLater``s and reactor turns per
    client on each worker (strace: ~860 ``epoll_ctl`` calls on that descriptor over ~220
    clients, for 26 sends).
    """

    owner: RedisSubscriber
    _log = Logger()
    #: The largest reply read before the connection is dropped (see ``MAX_REPLY_SIZE``).
    maxReplySize = MAX_REPLY_SIZE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reader = ReplyReader(self.maxReplySize)

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:
        try:
            replies = self._reader.feed(data)
        except txredisapi.InvalidResponse as e:
            # What follows could not be told apart: start afresh on a new connection.
            self._reader = ReplyReader(self.maxReplySize)
            self._log.error(
                "Dropping the Redis subscriber connection to {peer}: bad reply ({error})",
                peer=str(self.transport.getPeer()),
                error=str(e),
            )
            self.transport.abortConnection()
            return
        for reply in replies:
            self.replyReceived(reply)

    def connectionMade(self) -> Any:
        d = super().connectionMade()
        self.whenConnected().addCallback(lambda _: self.owner._connected(self))
        return d

    def connectionLost(self, why: Any) -> None:
        super().connectionLost(why)
        self.owner._lost(self)

    def messageReceived(self, pattern: Any, channel: str, message: str) -> None:
        self.owner.onMessage(channel, message)


class _SubscriberFactory(Factory):
    noisy = False  # "Starting factory"/"Stopping factory" at every reconnection attempt

    def __init__(self, owner: RedisSubscriber) -> None:
        self.owner = owner

    def buildProtocol(self, addr: Any) -> _SubscriberProtocol:
        p = _SubscriberProtocol(charset="utf-8", convertNumbers=False)
        p.factory = self
        p.owner = self.owner
        return p


class RedisSubscriber:
    """
    The SUBSCRIBE connection: keeps the set of channels this node wants, and
    subscribes them again after every reconnection.

    Messages published while the connection is down are lost for this node
    (Redis pub/sub is at-most-once); see ``pandapush/engines/REDIS-TODO.md``.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        address: RedisAddress,
        onMessage: Callable[[str, str], None],
        commandTimeout: float = 2.0,
        reconnectMaxDelay: float = 5.0,
        onConnected: Callable[[], None] | None = None,
    ) -> None:
        self.address = address
        self.onMessage = onMessage
        # Told after every (re)connection: Redis may have come back empty (the engine
        # restores what its nodes hold).
        self.onConnected = onConnected
        self._reactor = reactor
        self.commandTimeout = commandTimeout
        # channel -> True once Redis confirmed the subscription on the current connection
        self._wanted: dict[str, bool] = {}
        #: Subscribed last on every connection (see :meth:`setMarker`).
        self.marker: str | None = None
        self._waiting: dict[str, list[defer.Deferred[None]]] = {}
        # One timer for every SUBSCRIBE waiting (all have the same timeout), instead of a
        # callLater each: one per channel being subscribed (a storm's first subscribers).
        self._deadlines = Deadlines(reactor, commandTimeout)
        self._protocol: _SubscriberProtocol | None = None
        self.health = healthOf(reactor, address.server)
        self._primary: Any = None
        endpoint: IStreamClientEndpoint
        if address.sentinels:
            # Imported here: the sentinel module builds on this one.
            from pandapush.redis.sentinel import PrimaryEndpoint

            endpoint = self._primary = PrimaryEndpoint(reactor, address, max(commandTimeout, 1.0))
        else:
            endpoint = HostnameEndpoint(reactor, address.host, address.port, timeout=max(commandTimeout, 1.0))
        self._endpoint = ObservedEndpoint(endpoint, self.health)
        self.health.add(self._endpoint)
        self._service = _QuietClientService(
            self._endpoint,
            _SubscriberFactory(self),
            # Twisted's default jitter adds up to a whole second: too much for a node
            # whose clients wait for their messages.
            retryPolicy=backoffPolicy(
                initialDelay=0.1,
                maxDelay=reconnectMaxDelay,
                jitter=lambda: random.uniform(0, reconnectMaxDelay / 10),
            ),
            clock=reactor,
        )
        self._service.startService()

    @property
    def connected(self) -> bool:
        return self._protocol is not None

    def subscribe(self, channel: str) -> defer.Deferred[None]:
        """Fires once Redis confirmed the subscription (messages published after that arrive)."""
        if self._wanted.get(channel):
            return defer.succeed(None)
        self._wanted[channel] = False
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.setdefault(channel, []).append(d)
        if self._protocol is not None:
            self._send(self._protocol, channel)
        return bounded(
            d, self.commandTimeout, self._reactor, "SUBSCRIBE", self.health, self._endpoint, self._deadlines
        )

    def subscribeMany(self, channels: Iterable[str]) -> defer.Deferred[Any]:
        return defer.gatherResults([self.subscribe(c) for c in channels], consumeErrors=True)

    def unsubscribe(self, channel: str) -> None:
        if self._wanted.pop(channel, None) is None:
            return
        for d in self._waiting.pop(channel, []):
            if not d.called:
                d.callback(None)
        if self._protocol is not None:
            self._protocol.unsubscribe(channel).addErrback(lambda _: None)

    def setMarker(self, channel: str) -> None:
        """
        Subscribe ``channel`` after every other channel, on this and every later
        connection. Redis runs one connection's commands in order, so while
        ``PUBSUB NUMSUB channel`` counts this connection, every channel wanted when
        it connected is subscribed on it: a proof another connection can ask for
        (the Redis engine's failover gate does).
        """
        self.marker = channel
        if self._protocol is not None:
            self._protocol.subscribe(channel).addErrback(lambda _: None)

    def isSubscribed(self, channel: str) -> bool:
        return channel in self._wanted

    def _send(self, protocol: _SubscriberProtocol, channel: str) -> None:
        # One channel per SUBSCRIBE: txredisapi matches one confirmation to one command.
        waiting = self._waiting.pop(channel, [])

        def confirmed(_: Any) -> None:
            if protocol is self._protocol and channel in self._wanted:
                self._wanted[channel] = True
            for d in waiting:
                if not d.called:
                    d.callback(None)

        def failed(_: Any) -> None:
            if self._endpoint.closed:
                # Closed while the SUBSCRIBE was on its way: there is no next connection.
                for d in waiting:
                    if not d.called:
                        d.errback(RedisUnavailable("subscriber closed"))
                return
            # The connection went away: wait for the next one.
            self._waiting.setdefault(channel, []).extend(waiting)

        protocol.subscribe(channel).addCallbacks(confirmed, failed)

    def _connected(self, protocol: _SubscriberProtocol) -> None:
        self._protocol = protocol
        self._log.info(
            "subscriber connected to {shard}; subscribing {n} channels",
            shard=self.address.name,
            n=len(self._wanted),
        )
        for channel in list(self._wanted):
            self._send(protocol, channel)
        if self.marker is not None:
            protocol.subscribe(self.marker).addErrback(lambda _: None)
        if self.onConnected is not None:
            try:
                self.onConnected()
            except Exception:
                self._log.failure("subscriber connection callback failed")

    def _lost(self, protocol: _SubscriberProtocol) -> None:
        if self._protocol is protocol:
            self._protocol = None
            for channel in self._wanted:
                self._wanted[channel] = False

    def ping(self) -> defer.Deferred[None]:
        protocol = self._protocol
        if protocol is None:
            return defer.succeed(None)
        d = bounded(protocol.ping(), self.commandTimeout, self._reactor, "PING", self.health, self._endpoint)

        def failed(_: Any) -> None:
            if protocol.transport is not None:
                self._log.debug(
                    "subscriber on {shard} did not answer PING: reconnecting", shard=self.address.name
                )
                protocol.transport.abortConnection()

        return d.addCallbacks(lambda _: None, failed)

    def close(self) -> defer.Deferred[None]:
        self._endpoint.closed = True
        self.health.forget(self._endpoint)
        self._deadlines.close()
        self._wanted.clear()
        for waiting in self._waiting.values():
            for d in waiting:
                if not d.called:
                    d.errback(RedisUnavailable("subscriber closed"))
        self._waiting.clear()
        d = defer.maybeDeferred(self._service.stopService)
        if self._primary is not None:
            d.addBoth(lambda _: self._primary.close())
        return d
