"""Redis coming back empty: the owners write their clients back.

Each shard holds a generation token (``<ns>:gen``, set when absent). A node
remembers the token its clients were written under; when it finds another one,
the shard lost its data (a restart without persistence, a FLUSHALL) and the node
writes back what it holds of its clients there (sessions, subscriptions, presence
memberships), before the request that found a client missing is answered. It looks
when its pub/sub connection reconnects, at every lease renewal, and before telling
that a client it owns is unknown.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from pandapush.engines.redis import scripts
from pandapush.engines.redis.node import Node

__all__ = ["RESTORE_BATCH", "RESTORE_MEMBERS", "Restorer"]

#: Clients re-registered per script when a shard comes back empty: one round trip per
#: batch, and no script long enough to hold Redis up for other nodes.
RESTORE_BATCH = 500
#: Subscriber-set entries put back per script.
RESTORE_MEMBERS = 5000


class Restorer:
    """Notices a shard that lost this node's data, and writes this node's clients back to it."""

    _log = Logger()

    def __init__(self, node: Node) -> None:
        self._node = node
        # shard index -> the generation (see ``check``) this node last knew it at
        self._generations: dict[int, str] = {}
        # shard index -> waiters for the generation check under way on it
        self._checks: dict[int, list[defer.Deferred[bool]]] = {}
        #: Shards this node is restoring its clients on (the GC leaves them alone).
        self.restoring: set[int] = set()
        #: Told the subscription keys whose subscribers sets were written back.
        self.restoredChannels: Callable[[list[str]], None] = lambda channels: None

    @staticmethod
    def newToken() -> str:
        """A generation token for a shard that has none (new, or emptied)."""
        return secrets.token_hex(8)

    def remember(self, index: int, generation: str) -> None:
        """
        A client was written to shard ``index`` at ``generation``. A node whose first
        check has not run yet must know which contents its clients were written to, or
        it could not tell that Redis lost them.
        """
        self._generations.setdefault(index, generation)

    def known(self, index: int) -> str | None:
        """The generation this node last knew shard ``index`` at (None before its first check)."""
        return self._generations.get(index)

    def checkAll(self) -> None:
        """Check every shard (in the background) that is not being checked already."""
        node = self._node
        if node.closed:
            return
        for index in range(len(node.shards)):
            if index not in self._checks:
                node.track(self.check(index), "checking Redis for lost data")

    def check(self, index: int) -> defer.Deferred[bool]:
        """
        Whether shard ``index`` lost what this node wrote to it (it restarted without
        persistence, or was flushed), in which case this node's clients are restored
        on it before this fires. One check at a time per shard; callers share it.

        Each shard holds a generation token, set when absent: a node that remembers
        another token than the one it finds knows the shard's contents are new.
        """
        waiters = self._checks.get(index)
        if waiters is not None:
            waiter: defer.Deferred[bool] = defer.Deferred()
            waiters.append(waiter)
            return waiter
        self._checks[index] = []
        d = defer.Deferred.fromCoroutine(self._checkOne(index))

        def done(result: Any) -> Any:
            for waiter in self._checks.pop(index, []):
                if isinstance(result, defer.Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(result)
            return result

        return d.addBoth(done)

    async def _checkOne(self, index: int) -> bool:
        node = self._node
        try:
            current = await node.shards[index].eval(
                scripts.GENERATION, [node.keys.generation], [self.newToken()]
            )
        except Exception:
            node.shards.failed(index)
            raise
        known = self._generations.get(index)
        if known is None or known == current:
            self._generations[index] = current
            return False
        # Remembered only once restored: a restore cut short is tried again at the next check.
        self.restoring.add(index)
        try:
            await self._restoreShard(index)
        finally:
            self.restoring.discard(index)
        self._generations[index] = current
        return True

    async def _restoreShard(self, index: int) -> None:
        """
        Write back to shard ``index`` what this node holds of its clients, after the
        shard lost it: their registry entries (owner, epoch, a lease), their
        subscriptions and presence memberships, and the subscriber sets and presence
        members of the keys on this shard. Clients keep their sessions and members
        stay listed; the SUBSCRIBEs come back with the subscriber connection.

        Idempotent and never overwriting: a client registered meanwhile (claimed by
        another node, or restored by its newer owner) is left alone and kept out of
        the sets written here, and a member's data written by a join since is kept.
        No listener events fire: from the cluster's point of view nothing ended and
        nothing began (a leave after the restore is announced as any other).
        """
        node = self._node
        local, shards, keys = node.local, node.shards, node.keys
        shard = shards[index]
        mine = [c for c in local.values() if c.epoch and shards.index(c.id) == index]
        elsewhere: set[str] = set()
        restored = 0
        for start in range(0, len(mine), RESTORE_BATCH):
            chunk = [c for c in mine[start : start + RESTORE_BATCH] if local.get(c.id) is c]
            if not chunk:
                continue
            names = [keys.clients]
            args: list[Any] = [node.id, 2 * node.expiry, node.expiry]
            for client in chunk:
                _, base, subs, presence = keys.client(client.id)
                names += [base, subs, presence]
                args += [client.id, client.epoch, "1" if client.sink is not None else "0"]
                args += [len(client.subscriptions), *client.subscriptions, len(client.presence)]
                for channel, (memberId, _) in client.presence.items():
                    args += [channel, memberId]
            statuses = await shard.eval(scripts.RESTORE, names, args)
            for client, status in zip(chunk, statuses, strict=True):
                if int(status) == 0:
                    elsewhere.add(client.id)
                elif int(status) == 2:
                    restored += 1
        sets: list[str] = []
        members: list[Any] = []
        written: list[str] = []
        for key in list(local.index.keys()):
            if shards.index(key) != index:
                continue
            ids = [c.id for c in local.index.subscribers(key) or () if c.epoch and c.id not in elsewhere]
            if not ids:
                continue
            written.append(key)
            sets.append(keys.subscribers(key))
            members += [len(ids), *ids]
            if len(members) >= RESTORE_MEMBERS:
                batch, sets, members = (sets, members), [], []
                await shard.eval(scripts.RESTORE_SUBSCRIBERS, *batch)
        if sets:
            await shard.eval(scripts.RESTORE_SUBSCRIBERS, sets, members)
        present = await self._restorePresence(index, elsewhere)
        self.restoredChannels(written)
        self._log.warn(
            "Redis {shard} lost its data (restarted without persistence?): restored {restored} of "
            "this node's clients on it ({moved} had moved) and {present} presence memberships",
            shard=shards.addresses[index].name,
            restored=restored,
            moved=len(elsewhere),
            present=present,
        )

    async def _restorePresence(self, index: int, elsewhere: set[str]) -> int:
        """The presence members of the channels on shard ``index`` that this node's clients are."""
        node = self._node
        shards, keys = node.shards, node.keys
        # (channel, member id) -> (data, clients here present as it)
        members: dict[tuple[str, str], tuple[str, list[str]]] = {}
        for client in list(node.local.values()):
            if not client.epoch or client.id in elsewhere:
                continue
            for channel, (memberId, encoded) in client.presence.items():
                if shards.index(channel) == index:
                    members.setdefault((channel, memberId), (encoded, []))[1].append(client.id)
        names: list[str] = []
        args: list[Any] = []
        restored = 0
        for (channel, memberId), (encoded, ids) in members.items():
            names += [keys.presence(channel), keys.member(channel, memberId)]
            args += [memberId, encoded, len(ids), *ids]
            restored += len(ids)
            if len(args) >= RESTORE_MEMBERS:
                batch, names, args = (names, args), [], []
                await shards[index].eval(scripts.RESTORE_PRESENCE, *batch)
        if names:
            await shards[index].eval(scripts.RESTORE_PRESENCE, names, args)
        return restored
