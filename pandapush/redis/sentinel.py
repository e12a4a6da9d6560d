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
  (see ``RedisShard``) closes the connection too.

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

from twisted.internet import defer, error, task
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pandapush.redis.connection import RedisAddress, RedisShard, RedisSubscriber, RedisUnavailable

__all__ = [
    "COMMAND_SETTLE",
    "SWITCH_MASTER",
    "NotPrimary",
    "PrimaryEndpoint",
    "Sentinels",
    "parseRedisShards",
    "parseSentinels",
]

#: The sentinels' pub/sub channel announcing a failover's new primary.
SWITCH_MASTER = "+switch-master"

Endpoint = tuple[str, int]


class NotPrimary(Exception):  # noqa: N818 - a state, like RedisUnavailable
    """The server Sentinel named is not (or no longer) the master's primary."""


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


# --- checking the role of a new connection ------------------------------------------------


def _abort(transport: Any) -> None:
    if transport is not None:
        transport.abortConnection()


class _Error(bytes):
    """A RESP error reply."""


def _parseReply(buffer: bytes, position: int = 0) -> tuple[Any, int] | None:
    """One RESP2 reply from ``buffer[position:]``: (value, end), None if incomplete."""
    end = buffer.find(b"\r\n", position)
    if end < 0:
        return None
    kind, line, after = buffer[position : position + 1], buffer[position + 1 : end], end + 2
    if kind in (b"+", b":"):
        return bytes(line), after
    if kind == b"-":
        return _Error(line), after
    if kind == b"$":
        length = int(line)
        if length < 0:
            return None, after
        if len(buffer) < after + length + 2:
            return None
        return buffer[after : after + length], after + length + 2
    if kind == b"*":
        count = int(line)
        items: list[Any] = []
        for _ in range(max(count, 0)):
            parsed = _parseReply(buffer, after)
            if parsed is None:
                return None
            item, after = parsed
            items.append(item)
        return (items if count >= 0 else None), after
    raise ValueError(f"not a RESP reply: {buffer[position : position + 20]!r}")


#: ROLE answers in a few hundred bytes, plus ~40 per replica.
_MAX_ROLE_REPLY = 64 * 1024


class _PrimaryCheck(Protocol):
    """
    Asks ROLE on a new connection; ``checked`` fires if the server is the primary
    (else fails, and the connection is closed). Nothing of the protocol the
    connection was made for runs until :meth:`start`, so no command can reach a
    replica; then it sees the connection as if it had just been made.
    """

    def __init__(self, wrapped: IProtocolFactory, checked: defer.Deferred[None]) -> None:
        self._wrapped = wrapped
        self._checked = checked
        self._buffer = b""
        self.inner: IProtocol | None = None
        self.primary: Endpoint | None = None
        self.lost: Failure | None = None
        #: Told when the connection is lost after :meth:`start`.
        self.onLost: Callable[[], None] = lambda: None

    def connectionMade(self) -> None:
        self.transport.write(b"*1\r\n$4\r\nROLE\r\n")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.dataReceived(data)
            return
        self._buffer += data
        if self._checked.called:
            return  # kept for the protocol (nothing is expected before it speaks)
        try:
            parsed = _parseReply(self._buffer)
            if parsed is None and len(self._buffer) > _MAX_ROLE_REPLY:
                raise ValueError("ROLE reply too long")
        except ValueError as e:
            self._refuse(RedisUnavailable(f"bad ROLE reply: {e}"))
            return
        if parsed is None:
            return
        reply, end = parsed
        self._buffer = self._buffer[end:]
        role = reply[0] if isinstance(reply, list) and reply else reply
        if role != b"master":
            what = role.decode(errors="replace") if isinstance(role, bytes) else repr(role)
            self._refuse(NotPrimary(f"the server Sentinel named answers ROLE with {what!r}"))
            return
        self._checked.callback(None)

    def start(self) -> IProtocol:
        """Hand the checked connection to the protocol it was made for."""
        if self.lost is not None:
            raise RedisUnavailable(f"connection lost after ROLE: {self.lost.getErrorMessage()}")
        inner = self._wrapped.buildProtocol(self.transport.getPeer())  # type: ignore[union-attr]
        if inner is None:
            _abort(self.transport)
            raise RedisUnavailable("no protocol for the connection")
        self.inner = inner
        inner.makeConnection(self.transport)  # type: ignore[arg-type]
        rest, self._buffer = self._buffer, b""
        if rest:
            inner.dataReceived(rest)
        return inner

    def _refuse(self, reason: Exception) -> None:
        if not self._checked.called:
            self._checked.errback(reason)
        _abort(self.transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason
        if self.inner is not None:
            self.onLost()
            self.inner.connectionLost(reason)
        elif not self._checked.called:
            why = reason.getErrorMessage()
            self._checked.errback(RedisUnavailable(f"connection lost before ROLE: {why}"))


class _PrimaryCheckFactory(Factory):
    noisy = False

    def __init__(self, wrapped: IProtocolFactory, checked: defer.Deferred[None]) -> None:
        self.wrapped = wrapped
        self.checked = checked
        self.made: _PrimaryCheck | None = None

    def buildProtocol(self, addr: Any) -> _PrimaryCheck:
        self.made = _PrimaryCheck(self.wrapped, self.checked)
        return self.made


# --- the endpoint -------------------------------------------------------------------------


@implementer(IStreamClientEndpoint)
class PrimaryEndpoint:
    """
    Connects to the current primary of ``address`` (a Sentinel shard), checked with
    ROLE; see the module docstring. A connection attempt goes on through a failover
    (asking again every ``pollInterval`` and at every ``+switch-master``) for
    ``patience`` seconds before it fails into the caller's own backoff. A
    connection made again after the first waits ``settle`` seconds before it is
    used (see ``COMMAND_SETTLE``).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        address: RedisAddress,
        timeout: float,
        pollInterval: float = 0.25,
        patience: float = 10.0,
        settle: float = 0.0,
    ) -> None:
        if not address.sentinels:
            raise ValueError(f"{address.name} is not a Sentinel shard")
        self.address = address
        self.master = address.host
        self._reactor: IReactorTime = reactor
        self._timeout = timeout
        self._pollInterval = pollInterval
        self._patience = patience
        self._settle = settle
        # Connections made so far: the first is not a reconnection.
        self._made = 0
        self._sentinels = Sentinels.acquire(reactor, address.sentinels, timeout)
        self._sentinels.follow(self.master, self._switched)
        # Connections made here and still open, with the primary each was made to.
        self._open: list[_PrimaryCheck] = []
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
        factory = _PrimaryCheckFactory(protocolFactory, checked)
        endpoint = HostnameEndpoint(self._reactor, primary[0], primary[1], timeout=self._timeout)
        await endpoint.connect(factory)
        check = factory.made
        assert check is not None
        check.primary = primary

        def timedOut(failure: Failure) -> Failure:
            if failure.check(defer.CancelledError, defer.TimeoutError):
                _abort(check.transport)
                return Failure(RedisUnavailable(f"{primary[0]}:{primary[1]} did not answer ROLE"))
            return failure

        checked.addTimeout(self._timeout, self._reactor)  # type: ignore[arg-type]
        checked.addErrback(timedOut)
        try:
            await checked
            if self._made and self._settle:
                # Back after an outage: let every node's SUBSCRIBE connection come back
                # first, or the commands that waited (publishes) would reach a primary
                # nobody listens to yet, and be acknowledged yet lost.
                await task.deferLater(self._reactor, self._settle, lambda: None)  # type: ignore[arg-type]
            protocol = check.start()
        except BaseException:
            _abort(check.transport)
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
                _abort(check.transport)
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(None)

    def demoted(self) -> None:
        """A command was refused with READONLY: the server is a replica now, find the primary."""
        for check in list(self._open):
            if check.transport is not None:
                _abort(check.transport)

    def close(self) -> defer.Deferred[None]:
        if self._closed:
            return defer.succeed(None)
        self._closed = True
        self._sentinels.unfollow(self.master, self._switched)
        return self._sentinels.release()


#: Seconds a command connection (``RedisShard``'s) made again after a failover waits before carrying
#: the commands that queued meanwhile. Every node's SUBSCRIBE connection looks for the
#: new primary at the same moments (each ``pollInterval``, and at ``+switch-master``)
#: and subscribes again within milliseconds of finding it: publishes sent before that
#: reached nobody. Measured with ``bench/faults.py --only sentinel`` (see its README).
COMMAND_SETTLE = 0.5
