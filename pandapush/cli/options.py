"""
The options every command shares, declared once, and the helper that declares a command.

The database and Redis options are the server's (the same environment variables,
which supply what is not given). The top-level parser lists them in its help; every
command accepts them too, before or after its name, without repeating them in its own
help. Their defaults are suppressed so that a command's parser does not overwrite a
value given before the command's name; :class:`~pandapush.cli.context.Context` falls
back on the environment.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pandapush.auth.keycache import DEFAULT_TTL

if TYPE_CHECKING:
    from pandapush.cli.context import Context

__all__ = ["DATABASE_OPTIONS", "REDIS_OPTIONS", "GlobalOption", "addCommand", "addGlobalOptions"]

Handler = Callable[["Context"], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class GlobalOption:
    """
    An option of the database or Redis the command shares with the server: ``variable``
    is where both read it otherwise, ``field`` the :class:`~pandapush.storage.StorageConfig`
    field it sets (None for Redis).
    """

    flag: str
    variable: str
    help: str
    field: str | None = None
    type: Callable[[str], Any] = str
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


DATABASE_OPTIONS = (
    GlobalOption(
        "--database", "DATABASE", "sqlite, postgres, memory or a plugin [$DATABASE or sqlite]", "database"
    ),
    GlobalOption(
        "--database-path", "DATABASE_PATH", "SQLite file [$DATABASE_PATH or localdata/db.sqlite]", "path"
    ),
    GlobalOption("--database-address", "DATABASE_ADDRESS", "PostgreSQL host [$DATABASE_ADDRESS]", "address"),
    GlobalOption("--database-port", "DATABASE_PORT", "PostgreSQL port [$DATABASE_PORT or 5432]", "port", int),
    GlobalOption(
        "--database-username", "DATABASE_USERNAME", "PostgreSQL user [$DATABASE_USERNAME]", "username"
    ),
    GlobalOption(
        "--database-password", "DATABASE_PASSWORD", "PostgreSQL password [$DATABASE_PASSWORD]", "password"
    ),
    GlobalOption(
        "--database-name", "DATABASE_NAME", "PostgreSQL database [$DATABASE_NAME or pandapush]", "name"
    ),
    GlobalOption(
        "--database-schema", "DATABASE_SCHEMA", "PostgreSQL schema [$DATABASE_SCHEMA or public]", "schema"
    ),
)

REDIS_OPTIONS = (
    GlobalOption(
        "--redis-hosts", "REDIS_HOSTS", "the servers' Redis shards [$REDIS_HOSTS; none]", metavar="HOSTS"
    ),
    GlobalOption(
        "--redis-sentinels",
        "REDIS_SENTINELS",
        "instead of --redis-hosts: the Redis Sentinels of the servers' shards [$REDIS_SENTINELS; none]",
        metavar="HOSTS",
    ),
    GlobalOption(
        "--redis-sentinel-masters",
        "REDIS_SENTINEL_MASTERS",
        "with --redis-sentinels: each shard's master name [$REDIS_SENTINEL_MASTERS; none]",
        metavar="NAMES",
    ),
    GlobalOption(
        "--redis-namespace",
        "REDIS_NAMESPACE",
        "the servers' Redis namespace [$REDIS_NAMESPACE or pandapush]",
        metavar="NAME",
    ),
)

_GROUPS = (
    ("database (defaults from the environment)", DATABASE_OPTIONS),
    ("running servers, told of key changes at once (defaults from the environment)", REDIS_OPTIONS),
)

_SHARED_EPILOG = "The database and Redis options of `pandapush --help` may be given here too."

_KEYS_EPILOG = (
    "With REDIS_HOSTS (--redis-hosts) set, running servers are told at once; otherwise,"
    f" or when Redis cannot be reached (a warning, exit status 0), within {DEFAULT_TTL:g} s."
)


def addGlobalOptions(parser: argparse.ArgumentParser, shown: bool) -> None:
    """The shared options on ``parser``: listed in its help if ``shown``, else only accepted."""
    S = argparse.SUPPRESS
    for title, options in _GROUPS:
        group: Any = parser.add_argument_group(title) if shown else parser
        for option in options:
            group.add_argument(
                option.flag,
                dest=option.dest,
                default=S,
                type=option.type,
                metavar=option.metavar,
                help=option.help if shown else S,
            )
    parser.add_argument("--json", action="store_true", default=S, help="print JSON, for scripts")


def addCommand(
    commands: Any,
    name: str,
    helpText: str,
    handler: Handler,
    changesKeys: bool = False,
    **kw: Any,
) -> argparse.ArgumentParser:
    """
    A command of ``commands`` (a subparsers action) run by ``handler``. ``changesKeys``:
    it creates, revokes or deletes keys, so running servers are told (the handler calls
    :meth:`~pandapush.cli.context.Context.keysChanged`) and REDIS_HOSTS is checked first.
    """
    epilog = kw.pop("epilog", _KEYS_EPILOG if changesKeys else None)
    kw["epilog"] = f"{epilog} {_SHARED_EPILOG}" if epilog else _SHARED_EPILOG
    command: argparse.ArgumentParser = commands.add_parser(name, help=helpText, description=helpText, **kw)
    addGlobalOptions(command, shown=False)
    command.set_defaults(handler=handler, changesKeys=changesKeys)
    return command
