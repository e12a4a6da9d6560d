"""``pandapush migrate``, ``pandapush serve`` and ``pandapush admin-password``: the database
schema, the server itself, and a new generated admin password for every node on the database."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from pandapush.auth.admin import hashPassword, newAdminPassword
from pandapush.cli.context import CommandError, Context
from pandapush.cli.options import DATABASE_OPTIONS, REDIS_OPTIONS, addCommand
from pandapush.storage.settings import ADMIN_PASSWORD_SETTING, ISettingsStorage

__all__ = ["register", "serveForever"]


def register(commands: Any) -> None:
    addCommand(commands, "migrate", "Bring the database schema to the latest version (idempotent).", _migrate)
    addCommand(
        commands,
        "admin-password",
        "Generate a new admin password (user ADMIN_USERNAME, default admin) for the servers on this"
        " database that have none configured; printed once, kept as a hash.",
        _adminPassword,
    )
    serve = commands.add_parser(
        "serve",
        add_help=False,
        help="Run the server; every option after `serve` goes to it (--listen tcp:3000, --help...).",
    )
    # main() runs it with serveForever before any handler: it takes over the process.
    serve.set_defaults(handler=_serve, runsServer=True)


async def _migrate(ctx: Context) -> int:
    storage = ctx.unstartedStorage()
    applied = await storage.migrate()
    version = await storage.schemaVersion()
    human = f"applied migrations {', '.join(map(str, applied))}; " if applied else "already current; "
    ctx.emit({"applied": applied, "version": version}, human + f"schema version {version}")
    return 0


async def _serve(ctx: Context) -> int:
    raise CommandError("`serve` runs the server in this process: use the pandapush command, not run()")


async def _adminPassword(ctx: Context) -> int:
    storage = await ctx.storage()
    if not ISettingsStorage.providedBy(storage):
        raise CommandError(
            f"the {storage.name} storage keeps no settings: its servers keep the password in a file"
        )
    password = newAdminPassword()
    await storage.setSetting(ADMIN_PASSWORD_SETTING, hashPassword(password))
    ctx.emit(
        {"password": password},
        f"new admin password: {password}\n(servers take it at the next login; shown only now)",
    )
    return 0


def serveForever(args: argparse.Namespace, serverOptions: Sequence[str]) -> None:
    """
    ``twistd --nodaemon --pidfile= pandapush <serverOptions>``: the server in the
    foreground, as containers want it. Database options given before ``serve`` reach
    it through the environment variables it reads.
    """
    from twisted.scripts.twistd import run as twistd

    for option in (*DATABASE_OPTIONS, *REDIS_OPTIONS):
        value = getattr(args, option.dest, None)
        if value is not None:
            os.environ[option.variable] = str(value)
    sys.argv = ["pandapush serve", "--nodaemon", "--pidfile=", "pandapush", *serverOptions]
    twistd()
