"""One run of a command: its arguments, environment, output, storage, and the servers' Redis."""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import sys
from collections.abc import Mapping
from typing import IO, Any

from pandapush.auth.keycache import DEFAULT_NEGATIVE_TTL, DEFAULT_TTL
from pandapush.cli.options import DATABASE_OPTIONS
from pandapush.storage import StorageConfig, makeStorage
from pandapush.storage.interfaces import IStorage

__all__ = ["CommandError", "Context"]


class CommandError(Exception):
    """A refusal to report as ``pandapush: error: ...`` with exit status 1."""


def _defaultUser(environ: Mapping[str, str]) -> str:
    try:
        return environ.get("USER") or getpass.getuser() or "cli"
    except Exception:
        return "cli"


class Context:
    """One run's arguments, environment, output and (lazily) started storage."""

    def __init__(
        self,
        args: argparse.Namespace,
        environ: Mapping[str, str],
        out: IO[str],
        reactor: Any,
        err: IO[str] | None = None,
    ):
        self.args = args
        self.environ = environ
        self.out = out
        self.err = sys.stderr if err is None else err
        self.reactor = reactor
        self.json: bool = bool(getattr(args, "json", False))
        self._storage: IStorage | None = None

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    def emit(self, data: Any, human: str) -> None:
        self.out.write((json.dumps(data, indent=2) if self.json else human).rstrip("\n") + "\n")

    def createdBy(self) -> str:
        return getattr(self.args, "created_by", None) or _defaultUser(self.environ)

    # storage

    def storageConfig(self) -> StorageConfig:
        config = StorageConfig.fromEnvironment(self.environ)
        changes = {
            option.field: getattr(self.args, option.dest)
            for option in DATABASE_OPTIONS
            if option.field is not None and getattr(self.args, option.dest, None) is not None
        }
        return config.replace(**changes)

    def unstartedStorage(self) -> IStorage:
        if self._storage is None:
            self._storage = makeStorage(self.storageConfig())
        return self._storage

    async def storage(self) -> IStorage:
        """The storage, started: SQLite migrates itself, PostgreSQL refuses an old schema."""
        if self._storage is None:
            storage = self.unstartedStorage()
            await storage.start()
        assert self._storage is not None
        return self._storage

    async def close(self) -> None:
        if self._storage is not None:
            storage, self._storage = self._storage, None
            await storage.close()

    # the servers' Redis

    def redisShards(self) -> list[Any] | None:
        """
        The servers' Redis shards, as ``twistd pandapush`` reads them (options, then
        environment): ``REDIS_HOSTS``, or ``REDIS_SENTINELS`` with ``REDIS_SENTINEL_MASTERS``;
        None if neither is given. A malformed list is a CommandError.
        """

        def given(option: str, variable: str) -> str | None:
            return getattr(self.args, option, None) or self.environ.get(variable) or None

        hosts = given("redis_hosts", "REDIS_HOSTS")
        sentinels = given("redis_sentinels", "REDIS_SENTINELS")
        masters = given("redis_sentinel_masters", "REDIS_SENTINEL_MASTERS")
        if not (hosts or sentinels or masters):
            return None
        from pandapush.redis import parseRedisShards

        try:
            return parseRedisShards(hosts, sentinels, masters)
        except ValueError as e:
            raise CommandError(f"REDIS_HOSTS / --redis-hosts (or REDIS_SENTINELS): {e}") from None

    def redisNamespace(self) -> str:
        namespace = getattr(self.args, "redis_namespace", None)
        return namespace or self.environ.get("REDIS_NAMESPACE", "pandapush")

    def checkRedisHosts(self) -> None:
        """A malformed REDIS_HOSTS (or REDIS_SENTINELS) is refused before anything changes, not after."""
        self.redisShards()

    async def keysChanged(
        self, keyId: str | None = None, appId: str | None = None, stale: bool = True
    ) -> None:
        """
        Tell running servers to forget what they cached about ``keyId`` (or ``appId``'s
        keys), as the admin API does on the server. Never fails: the change is made
        already; a warning says when the servers will notice instead. ``stale``: the
        cached entry would keep a key working (revoke, delete), so say so even without Redis.
        """
        hosts = self.redisShards()
        if stale:
            later = f"running servers notice within their key cache TTL ({DEFAULT_TTL:g} s)"
        else:
            later = f"a server that looked this id up just now may refuse it for {DEFAULT_NEGATIVE_TTL:g} s"
        if not hosts:
            if stale:
                self.err.write(
                    f"pandapush: note: {later}; set REDIS_HOSTS as they have it to tell them at once\n"
                )
            return
        # Imported only when asked for, as the server does: no Redis client otherwise.
        from pandapush.auth.keysync import keysAddress, keysChannel, publishInvalidation

        namespace = self.redisNamespace()
        where = f"{keysChannel(namespace)} on {keysAddress(hosts).name}"
        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor
        try:
            heard = await publishInvalidation(reactor, hosts, namespace, keyId=keyId, appId=appId)
        except Exception as e:
            self.err.write(f"pandapush: warning: could not tell running servers ({where}: {e}); {later}\n")
            return
        if heard == 0:
            self.err.write(
                f"pandapush: note: no running server heard it on {where}"
                " (none is running, or they use another REDIS_NAMESPACE)\n"
            )
