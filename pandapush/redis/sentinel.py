"""Redis Sentinel: shards that follow their primary through a failover.

With ``REDIS_SENTINELS=host:port,...`` and ``REDIS_SENTINEL_MASTERS=name,...`` (one
master name per shard, in place of ``REDIS_HOSTS``) a shard is a
:class:`~pandapush.redis.RedisAddress` whose ``host`` is the master's name and whose
``sentinels`` say whom to ask where it is. Its connections (the command connection of
:class:`~pandapush.redis.RedisShard`, the SUBSCRIBE connection of
:class:`~pandapush.redis.RedisSubscriber`) connect through a :class:`PrimaryEndpoint`:

- before every connection attempt the sentinels are asked ``SENTINEL
  GET-MASTER-ADDR-BY-NAME`` (all at once; the first address given wins);
- the new connection sends ``ROLE`` before anything else and is handed to txredisapi
  only if the server says ``master``: a replica (an old primary that came back, a
  sentinel that has not heard of the failover yet) never sees a command;
- while the address given is down or not the primary yet (a failover under way), the
  endpoint asks again every ``pollInterval`` and as soon as a sentinel announces
  ``+switch-master``, instead of failing into the connection's exponential backoff:
  the nodes are back on the new primary as soon as the sentinels have elected it;
- every connection made through it is closed when a sentinel announces that its
  master moved elsewhere (each process subscribes to ``+switch-master`` on every
  sentinel), so a primary that was demoted while it kept its clients (a partition)
  stops taking writes that its replicas would never see; and a ``READONLY`` error
  (see ``RedisShard``) closes the connection too;
- a connection made again after the first is handed over only once its ``gate`` (if any)
  has finished with it: the Redis engine holds its pub/sub shard's command connection
  until every live node listens on the new primary
  (:mod:`pandapush.engines.redis.nodes`). The ROLE check and the gate's commands run
  before the connection's own protocol sees it (:mod:`pandapush.redis.rolecheck`).

What a failover loses (measured in ``bench/README.md``): commands in flight when the
primary died fail (callers get ``RedisUnavailable``, as for any outage), writes the
replica had not received yet (replication is asynchronous), and pub/sub messages
published while a node's SUBSCRIBE connection was down.

The sentinels' own connections (one for questions, one for ``+switch-master``, per
sentinel) are shared by every shard of the process that names the same sentinels, and
closed with the last of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from twisted.internet import defer, error
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pandapush.redis.connection import RedisAddress, RedisShard, RedisSubscriber, RedisUnavailable
from pandapush.redis.rolecheck import NotPrimary, PrimaryCheck, PrimaryCheckFactory, abort

__all__ = [
    "SWITCH_MASTER",
    "Gate",
    "NotPrimary",
    "PrimaryEndpoint",
    "Sentinels",
    "parseRedisShards",
    "parseSentinels",
]

#: The sentinels' pub/sub channel announcing a failover's new primary.
SWITCH_MASTER = "+switch-master"

Endpoint = tuple[str, int]
#: What holds a reconnected connection: called with a way to send it commands
#: (``command(*args)`` firing with the reply), it fires when the connection may be used.
Gate = Callable[[Callable[..., defer.Deferred[Any]]], defer.Deferred[None]]


def _hostPort(item: str, what: str) -> Endpoint:
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 26379
    elif item.count(":") == 1:
        host, _, portText = item.partition(":")
        port = int(portText)
    else:
        host, port = item, 26379
    if not host or not 0 < port < 65536:
        raise ValueError(f"bad {what} {item!r}")
    return host, port


def parseSentinels(sentinels: str, masters: str) -> list[RedisAddress]:
    """
    ``REDIS_SENTINELS`` (``host:port,...``, the port 26379 by default) and
    ``REDIS_SENTINEL_MASTERS`` (``name[/db],...``): one shard per master name, in
    that order (the order of the hash ring, as ``REDIS_HOSTS``'s).
    """
    found: list[Endpoint] = []
    for item in sentinels.split(","):
        item = item.strip()
        if item:
            try:
                endpoint = _hostPort(item, "sentinel address")
            except ValueError as e:
                raise ValueError(f"{e} in {sentinels!r}") from None
            if endpoint not in found:
                found.append(endpoint)
    if not found:
        raise ValueError(f"no sentinel address in {sentinels!r}")
    addresses: list[RedisAddress] = []
    for item in masters.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, dbText = item.partition("/")
        db = int(dbText) if dbText else 0
        if not name or db < 0 or any(c.isspace() for c in name):
            raise ValueError(f"bad master name {item!r} in {masters!r}")
        address = RedisAddress(name, 0, db, tuple(found))
        if address in addresses:
            raise ValueError(f"master {address.name} given twice in {masters!r}")
        addresses.append(address)
    if not addresses:
        raise ValueError(f"no master name in {masters!r}")
    return addresses


def parseRedisShards(
    hosts: str | None, sentinels: str | None = None, masters: str | None = None
) -> list[RedisAddress] | None:
    """
    The shards that ``REDIS_HOSTS``, or ``REDIS_SENTINELS`` with
    ``REDIS_SENTINEL_MASTERS``, name (None if neither is given). Raises ValueError
    for both at once, or for one of the Sentinel pair without the other.
    """
    from pandapush.redis.connection import parseRedisHosts

    if hosts and (sentinels or masters):
        raise ValueError("give either REDIS_HOSTS or REDIS_SENTINELS with REDIS_SENTINEL_MASTERS, not both")
    if hosts:
        return parseRedisHosts(hosts)
    if bool(sentinels) != bool(masters):
        raise ValueError("REDIS_SENTINELS and REDIS_SENTINEL_MASTERS go together: give both")
    if sentinels and masters:
        return parseSentinels(sentinels, masters)
    return None


# --- the sentinels ------------------------------------------------------------------------


class Sentinels:
    """
    The sentinels of one deployment, as this process talks to them: asks where a
    master's primary is, and tells who follows a master when it moves. Shared
    (:meth:`acquire`) by every endpoint naming the same sentinels.
    """

    _log = Logger()
    _shared: ClassVar[dict[tuple[int, tuple[Endpoint, ...]], Sentinels]] = {}

    @classmethod
    def acquire(cls, reactor: Any, sentinels: Sequence[Endpoint], timeout: float) -> Sentinels:
        """The process's connections to ``sentinels``; give them back with :meth:`release`."""
        key = (id(reactor), tuple(sentinels))
        shared = cls._shared.get(key)
        if shared is None:
            shared = cls._shared[key] = cls(reactor, sentinels, timeout)
        shared._users += 1
        return shared

    def __init__(self, reactor: Any, sentinels: Sequence[Endpoint], timeout: float) -> None:
        self._reactor = reactor
        self._key = (id(reactor), tuple(sentinels))
        self._users = 0
        self.addresses = [RedisAddress(host, port) for host, port in sentinels]
        self._questions = [RedisShard(reactor, a, commandTimeout=timeout) for a in self.addresses]
        self._watchers = [
            RedisSubscriber(reactor, a, self._message, commandTimeout=timeout) for a in self.addresses
        ]
        for watcher in self._watchers:
            # Subscribed again by the subscriber after every reconnection; a sentinel
            # down now is not an error (the others announce the same switches).
            watcher.subscribe(SWITCH_MASTER).addErrback(lambda _: None)
        # master name -> who wants to hear its new primary at once
        self._followers: dict[str, list[Callable[[Endpoint], None]]] = {}
        # masters none of whose connections could reach a primary since it was last reached
        self._outages: set[str] = set()

    def release(self) -> defer.Deferred[None]:
        """One user less; the connections close with the last."""
        self._users -= 1
        if self._users > 0:
            return defer.succeed(None)
        if self._shared.get(self._key) is self:
            del self._shared[self._key]
        closing = [q.close() for q in self._questions] + [w.close() for w in self._watchers]
        return defer.gatherResults(closing, consumeErrors=True).addCallback(lambda _: None)

    def primary(self, master: str) -> defer.Deferred[Endpoint]:
        """
        Where ``master``'s primary is, as the first sentinel to answer says (all are
        asked at once: one that is down costs nothing while another answers). Fails
        with RedisUnavailable when none knows it.
        """
        answer: defer.Deferred[Endpoint] = defer.Deferred()
        failures: list[str] = []
        asked = len(self._questions)

        def answered(reply: Any, sentinel: RedisAddress) -> None:
            if answer.called:
                return
            if isinstance(reply, list) and len(reply) == 2:
                try:
                    answer.callback((str(reply[0]), int(reply[1])))
                    return
                except ValueError:
                    pass
            gaveUp(f"{sentinel.name} does not know master {master!r}")

        def gaveUp(why: str) -> None:
            failures.append(why)
            if len(failures) == asked and not answer.called:
                answer.errback(RedisUnavailable(f"no sentinel names a primary: {'; '.join(failures)}"))

        for shard in self._questions:
            d = shard.execute("SENTINEL", "GET-MASTER-ADDR-BY-NAME", master)
            d.addCallbacks(
                answered,
                lambda f, s=shard.address: gaveUp(f"{s.name}: {f.getErrorMessage()}"),
                callbackArgs=(shard.address,),
            )
        return answer

    def outage(self, master: str, why: str) -> None:
        """No primary of ``master`` could be reached: said once per outage, for every connection."""
        if master not in self._outages:
            self._log.warn(
                "Redis master {master}: no primary to connect to yet ({why}); asking the sentinels "
                "again until there is one",
                master=master,
                why=why,
            )
        self._outages.add(master)

    def reached(self, master: str, primary: Endpoint) -> None:
        """A connection reached ``master``'s primary: the end of an outage, if there was one."""
        if master in self._outages:
            self._outages.discard(master)
            self._log.info(
                "Redis master {master}: connected to its primary {host}:{port}",
                master=master,
                host=primary[0],
                port=primary[1],
            )

    def follow(self, master: str, follower: Callable[[Endpoint], None]) -> None:
        """Call ``follower(newPrimary)`` whenever a sentinel announces that ``master`` moved."""
        self._followers.setdefault(master, []).append(follower)

    def unfollow(self, master: str, follower: Callable[[Endpoint], None]) -> None:
        followers = self._followers.get(master, [])
        if follower in followers:
            followers.remove(follower)
        if not followers:
            self._followers.pop(master, None)

    def _message(self, channel: str, message: str) -> None:
        # "<master name> <old ip> <old port> <new ip> <new port>", from every sentinel.
        if channel != SWITCH_MASTER:
            return
        parts = message.split()
        if len(parts) != 5:
            self._log.warn("unexpected {channel} message {message!r}", channel=channel, message=message)
            return
        try:
            primary = (parts[3], int(parts[4]))
        except ValueError:
            return
        for follower in list(self._followers.get(parts[0], ())):
            try:
                follower(primary)
            except Exception:
                self._log.failure("following master {master} failed", master=parts[0])


# --- the endpoint -------------------------------------------------------------------------


@implementer(IStreamClientEndpoint)
class PrimaryEndpoint:
    """
    Connects to the current primary of ``address`` (a Sentinel shard), checked with
    ROLE; see the module docstring. A connection attempt goes on through a failover
    (asking again every ``pollInterval`` and at every ``+switch-master``) for
    ``patience`` seconds before it fails into the caller's own backoff. A
    connection made again after the first is handed over only once ``gate`` (if
    set) has finished with it (see ``RedisShard.gateReconnections``).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        address: RedisAddress,
        timeout: float,
        pollInterval: float = 0.25,
        patience: float = 10.0,
        gate: Gate | None = None,
    ) -> None:
        if not address.sentinels:
            raise ValueError(f"{address.name} is not a Sentinel shard")
        self.address = address
        self.master = address.host
        self._reactor: IReactorTime = reactor
        self._timeout = timeout
        self._pollInterval = pollInterval
        self._patience = patience
        #: Run on a connection made again after the first, before anything else uses it.
        self.gate = gate
        # Connections made so far: the first is not a reconnection.
        self._made = 0
        self._sentinels = Sentinels.acquire(reactor, address.sentinels, timeout)
        self._sentinels.follow(self.master, self._switched)
        # Connections made here and still open, with the primary each was made to.
        self._open: list[PrimaryCheck] = []
        self._waiting: list[defer.Deferred[None]] = []
        self._closed = False

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        return defer.Deferred.fromCoroutine(self._connect(protocolFactory))

    async def _connect(self, protocolFactory: IProtocolFactory) -> IProtocol:
        deadline = self._reactor.seconds() + self._patience
        while True:
            try:
                primary = await self._sentinels.primary(self.master)
                protocol = await self._connectTo(primary, protocolFactory)
            except (RedisUnavailable, NotPrimary, error.ConnectError, defer.TimeoutError) as e:
                self._sentinels.outage(self.master, f"{type(e).__name__}: {e}")
                if self._closed or self._reactor.seconds() >= deadline:
                    raise
                await self._switchOrPoll()
                continue
            self._sentinels.reached(self.master, primary)
            return protocol

    async def _connectTo(self, primary: Endpoint, protocolFactory: IProtocolFactory) -> IProtocol:
        checked: defer.Deferred[None] = defer.Deferred()
        factory = PrimaryCheckFactory(protocolFactory, checked)
        endpoint = HostnameEndpoint(self._reactor, primary[0], primary[1], timeout=self._timeout)
        await endpoint.connect(factory)
        check = factory.made
        assert check is not None
        check.primary = primary

        def timedOut(failure: Failure) -> Failure:
            if failure.check(defer.CancelledError, defer.TimeoutError):
                abort(check.transport)
                return Failure(RedisUnavailable(f"{primary[0]}:{primary[1]} did not answer ROLE"))
            return failure

        checked.addTimeout(self._timeout, self._reactor)  # type: ignore[arg-type]
        checked.addErrback(timedOut)
        try:
            await checked
            if self._made and self.gate is not None:
                # Back after an outage: the commands that waited (publishes) must not
                # reach a primary that not every node listens to yet.
                await self.gate(check.command)
            protocol = check.start()
        except BaseException:
            abort(check.transport)
            raise
        self._made += 1
        self._open.append(check)

        def lost() -> None:
            if check in self._open:
                self._open.remove(check)

        check.onLost = lost
        return protocol

    def _switchOrPoll(self) -> defer.Deferred[None]:
        """Fires at the next ``+switch-master`` of this master, or after ``pollInterval``."""

        def cancelled(d: defer.Deferred[None]) -> None:
            if d in self._waiting:
                self._waiting.remove(d)
            if timer.active():
                timer.cancel()

        waiter: defer.Deferred[None] = defer.Deferred(cancelled)

        def wake() -> None:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
                waiter.callback(None)

        timer = self._reactor.callLater(self._pollInterval, wake)
        self._waiting.append(waiter)

        def stopTimer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return waiter.addBoth(stopTimer)

    def _switched(self, primary: Endpoint) -> None:
        """A sentinel announced the master's new primary: leave any other, try it now."""
        for check in list(self._open):
            if check.primary != primary and check.transport is not None:
                self._log.warn(
                    "Redis master {master} moved to {host}:{port}: closing the connection to the "
                    "old primary {old}",
                    master=self.master,
                    host=primary[0],
                    port=primary[1],
                    old=f"{check.primary[0]}:{check.primary[1]}" if check.primary else "?",
                )
                abort(check.transport)
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(None)

    def demoted(self) -> None:
        """A command was refused with READONLY: the server is a replica now, find the primary."""
        for check in list(self._open):
            if check.transport is not None:
                abort(check.transport)

    def close(self) -> defer.Deferred[None]:
        if self._closed:
            return defer.succeed(None)
        self._closed = True
        self._sentinels.unfollow(self.master, self._switched)
        return self._sentinels.release()
