"""Cross-node key cache invalidation over Redis pub/sub.

Each node caches key facts for ``ttl`` seconds (:class:`~pandapush.auth.keycache.KeyCache`),
so without help a key revoked through node A's admin API would keep working on
node B until B's entry went stale (a minute by default). :class:`KeySync` closes
that gap: every local invalidation (``KeyCache.invalidate`` / ``invalidateApp``,
called by the admin API on create, revoke and delete) is PUBLISHed on
``<namespace>:keys``, and every other node applies it with ``propagate=False``
(so it is not broadcast again). Messages carry the sender's node id; a node
ignores its own.

Why it holds up when Redis does not:

- Redis pub/sub is at-most-once: a node whose SUBSCRIBE connection was down
  missed whatever was published meanwhile. So after every reconnection of the
  subscriber (not the first connection) the node **clears its whole key cache**:
  a reload per key costs little, serving a revoked key does not.
- A publish that fails (Redis down or slow) is retried with a capped backoff for
  as long as the cache TTL: after that every other node's entry has gone stale by
  itself, so nothing is left to invalidate.
- A periodic PING aborts a half-open connection so it reconnects (the
  connection layer's ``ping`` does that).

It uses the Redis engine's connection layer (:mod:`pandapush.redis`)
on the first of ``REDIS_HOSTS``, the shard the engine uses for pub/sub, but its own
two connections: the engine's subscriber delivers to the engine only, and keeping
them apart means neither can slow the other down.

A process that runs no server (the ``pandapush`` command revoking a key) sends the
same message with :func:`publishInvalidation`: one PUBLISH, no retry, since nobody
would be left to retry it once the command has exited.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from pandapush.auth.keycache import KeyCache
from pandapush.redis import (
    RedisAddress,
    RedisShard,
    RedisSubscriber,
    parseRedisHosts,
)

__all__ = ["KeySync", "invalidationMessage", "keysAddress", "keysChannel", "publishInvalidation"]


def keysChannel(namespace: str) -> str:
    """The pub/sub channel carrying key invalidations for ``namespace``."""
    return f"{namespace}:keys"


def keysAddress(hosts: str | Sequence[RedisAddress]) -> RedisAddress:
    """
    The Redis server carrying ``keysChannel``: the first of ``hosts``. Pub/sub does not
    cross servers, so every sender and every node must pick the same one.
    """
    return (parseRedisHosts(hosts) if isinstance(hosts, str) else list(hosts))[0]


def invalidationMessage(sender: str, keyId: str | None = None, appId: str | None = None) -> str:
    """
    The message every node's :class:`KeySync` applies: forget ``keyId``, or every key
    of ``appId``. A node ignores messages whose ``sender`` is its own node id.
    """
    if bool(keyId) == bool(appId):
        raise ValueError("an invalidation names either a key or an application")
    return json.dumps({"node": sender, "key": keyId, "app": appId}, separators=(",", ":"))


def publishInvalidation(
    reactor: Any,
    hosts: str | Sequence[RedisAddress],
    namespace: str,
    keyId: str | None = None,
    appId: str | None = None,
    sender: str | None = None,
    timeout: float = 2.0,
) -> defer.Deferred[int]:
    """
    Tell the running nodes of ``namespace`` to forget ``keyId`` (or ``appId``'s keys),
    from a process with no :class:`KeySync` of its own. Fires with the number of nodes
    that heard it (Redis's PUBLISH count: one per running node), or fails with
    :class:`~pandapush.redis.RedisUnavailable` after ``timeout``.
    Sent once: the caller decides what a failure means (the nodes' cache TTL still
    bounds how long they keep the stale entry).
    """
    payload = invalidationMessage(sender or "cli-" + secrets.token_hex(4), keyId, appId)
    shard = RedisShard(reactor, keysAddress(hosts), commandTimeout=timeout)

    def closed(result: Any) -> defer.Deferred[Any]:
        return shard.close().addCallback(lambda _: result)

    d = shard.execute("PUBLISH", keysChannel(namespace), payload)
    d.addBoth(closed)
    return d.addCallback(int)


class _ResyncingSubscriber(RedisSubscriber):
    """A subscriber that calls ``onReconnect`` on every connection but the first."""

    def __init__(self, onReconnect: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        self._onReconnect = onReconnect
        self._everConnected = False
        super().__init__(*args, **kwargs)

    def _connected(self, protocol: Any) -> None:
        super()._connected(protocol)
        if self._everConnected:
            self._onReconnect()
        self._everConnected = True


class KeySync(Service):
    """
    Shares ``keys``' invalidations with every node on the same Redis and namespace.

    A child service of the server: connections open in ``startService`` (lazily,
    reconnecting forever, so a node starts even while Redis is down) and close in
    ``stopService``. ``nodeId`` defaults to a random one; pass the engine's to make
    logs easier to follow.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        keys: KeyCache,
        hosts: str | Sequence[RedisAddress],
        namespace: str = "pandapush",
        nodeId: str | None = None,
        commandTimeout: float = 2.0,
        reconnectMaxDelay: float = 1.0,
        pingInterval: float = 5.0,
        retryFor: float | None = None,
    ) -> None:
        self.reactor = reactor
        self.keys = keys
        self.address = keysAddress(hosts)
        self.channel = keysChannel(namespace)
        self.nodeId = nodeId or secrets.token_hex(8)
        self.commandTimeout = commandTimeout
        self.reconnectMaxDelay = reconnectMaxDelay
        self.pingInterval = pingInterval
        # Past the cache TTL every other node has forgotten the entry on its own.
        self.retryFor = keys.ttl if retryFor is None else retryFor
        self._shard: RedisShard | None = None
        self._subscriber: RedisSubscriber | None = None
        self._pinger: task.LoopingCall | None = None
        self._retries: set[IDelayedCall] = set()
        #: Invalidations applied from other nodes, and cache clears after reconnecting (tests, metrics).
        self.received = 0
        self.clears = 0
        self.subscribed: defer.Deferred[None] = defer.Deferred()

    # lifecycle

    def startService(self) -> None:
        super().startService()
        self._shard = RedisShard(self.reactor, self.address, self.commandTimeout, self.reconnectMaxDelay)
        self._subscriber = _ResyncingSubscriber(
            self._reconnected,
            self.reactor,
            self.address,
            self._onMessage,
            self.commandTimeout,
            self.reconnectMaxDelay,
        )
        self._subscribe()
        self.keys.addInvalidationListener(self._invalidated)
        self._pinger = task.LoopingCall(self._ping)
        self._pinger.clock = self.reactor
        self._pinger.start(self.pingInterval, now=False).addErrback(
            lambda f: self._log.failure("key sync ping loop stopped", f)
        )

    def _subscribe(self) -> None:
        subscriber = self._subscriber
        if subscriber is None:
            return

        def done(_: Any) -> None:
            if not self.subscribed.called:
                self.subscribed.callback(None)

        def failed(failure: Any) -> None:
            # Redis is down at start: RedisSubscriber keeps the channel wanted and
            # subscribes it on its next connection; this only tells when that happened.
            # Redis's outage is logged once by its connections' health: debug here, as
            # this repeats every command timeout while Redis is down.
            self._log.debug("key sync not subscribed yet: {why}", why=failure.getErrorMessage())
            if self.running and subscriber is self._subscriber:
                self._subscribe()

        subscriber.subscribe(self.channel).addCallbacks(done, failed)

    def _reconnected(self) -> None:
        # Cleared now, and once more when the SUBSCRIBE is confirmed: a lookup that read
        # the database before a revocation published in between would otherwise stay.
        self.clears += 1
        self.keys.clear()
        self._log.info(
            "key sync reconnected to Redis: key cache cleared (invalidations may have been missed)"
        )
        if self._subscriber is not None:
            self._subscriber.subscribe(self.channel).addCallbacks(lambda _: self.keys.clear(), lambda _: None)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        try:
            self.keys.removeInvalidationListener(self._invalidated)
        except ValueError:
            pass
        if self._pinger is not None and self._pinger.running:
            self._pinger.stop()
        for call in list(self._retries):
            if call.active():
                call.cancel()
        self._retries.clear()
        closing = []
        if self._subscriber is not None:
            closing.append(self._subscriber.close())
        if self._shard is not None:
            closing.append(self._shard.close())
        self._subscriber = self._shard = None
        return defer.gatherResults(closing, consumeErrors=True).addBoth(lambda _: None)

    def _ping(self) -> defer.Deferred[Any]:
        pings = []
        if self._shard is not None:
            pings.append(self._shard.ping())
        if self._subscriber is not None:
            pings.append(self._subscriber.ping())
        return defer.gatherResults(pings, consumeErrors=True).addErrback(lambda _: None)

    # outgoing

    def _invalidated(self, keyId: str | None, appId: str | None) -> None:
        """A local invalidation: tell the other nodes (retrying while Redis is unavailable)."""
        payload = invalidationMessage(self.nodeId, keyId, appId)
        self._publish(payload, self.reactor.seconds() + self.retryFor, 0.1)

    def _publish(self, payload: str, deadline: float, delay: float) -> None:
        shard = self._shard
        if shard is None or not self.running:
            return

        def failed(failure: Any) -> None:
            if not self.running or self.reactor.seconds() + delay > deadline:
                self._log.warn(
                    "key invalidation not shared ({why}); other nodes forget it within their cache TTL",
                    why=failure.getErrorMessage(),
                )
                return
            call: IDelayedCall

            def retry() -> None:
                self._retries.discard(call)
                self._publish(payload, deadline, min(delay * 2, self.reconnectMaxDelay))

            call = self.reactor.callLater(delay, retry)
            self._retries.add(call)

        shard.execute("PUBLISH", self.channel, payload).addErrback(failed)

    # incoming

    def _onMessage(self, channel: str, message: str) -> None:
        if channel != self.channel:
            return
        try:
            body = json.loads(message)
            node, keyId, appId = body["node"], body.get("key"), body.get("app")
        except (ValueError, TypeError, KeyError):
            self._log.warn("ignoring a malformed key invalidation: {message!r}", message=message[:200])
            return
        if node == self.nodeId:
            return
        if isinstance(keyId, str) and keyId:
            self.keys.invalidate(keyId, propagate=False)
        elif isinstance(appId, str) and appId:
            self.keys.invalidateApp(appId, propagate=False)
        else:
            self._log.warn("ignoring a key invalidation naming nothing: {message!r}", message=message[:200])
            return
        self.received += 1
