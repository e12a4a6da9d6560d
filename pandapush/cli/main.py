"""The whole command line (:func:`buildParser`), one run (:func:`run`), the console script (:func:`main`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError

from pandapush import __version__
from pandapush.cli import apps, keys, publish, server, tokens, upstream, webhooks
from pandapush.cli.context import CommandError, Context
from pandapush.cli.options import addGlobalOptions
from pandapush.publisher import PublishError
from pandapush.storage.errors import NoSuchApplicationError, NoSuchKeyError, NoSuchWebhookError, StorageError

__all__ = ["buildParser", "main", "run"]


def buildParser() -> argparse.ArgumentParser:
    """The whole command line; every subcommand has ``--help``."""
    parser = argparse.ArgumentParser(
        prog="pandapush",
        description="Manage pandapush: migrations, applications, keys, tokens, webhooks; publish messages.",
        epilog=(
            "Run the server with `pandapush serve --listen tcp:3000 [more server options]`"
            " (the same as `twistd --nodaemon pandapush ...`; `pandapush serve --help` lists them)."
        ),
    )
    addGlobalOptions(parser, shown=True)
    parser.add_argument("--version", action="version", version=f"pandapush {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # The order of `pandapush --help`.
    server.register(commands)
    apps.register(commands)
    keys.register(commands)
    tokens.register(commands)
    publish.register(commands)
    upstream.register(commands)
    webhooks.register(commands)
    return parser


async def _dispatch(ctx: Context) -> int:
    try:
        handler: Callable[[Context], Awaitable[int]] = ctx.args.handler
        if getattr(ctx.args, "changesKeys", False):
            ctx.checkRedisHosts()
        return await handler(ctx)
    finally:
        await ctx.close()


def run(
    argv: Sequence[str],
    environ: Mapping[str, str] | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
    reactor: Any = None,
) -> Deferred[int]:
    """
    Run the command line ``argv`` (without the program name); fires with the exit
    status. Refusals (unknown application, schema out of date, server said no) print
    ``pandapush: error: ...`` to ``err`` and give 1; bad usage raises ``SystemExit(2)``
    from argparse.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    environ = os.environ if environ is None else environ
    args = buildParser().parse_args(list(argv))
    ctx = Context(args, environ, out, reactor, err)

    def refused(failure: Any) -> int:
        failure.trap(CommandError, StorageError, PublishError, ValueError, ConnectError)
        error = failure.value
        if isinstance(error, NoSuchKeyError):
            message = f"no key {error}"
        elif isinstance(error, NoSuchApplicationError):
            message = f"no application {error}"
        elif isinstance(error, NoSuchWebhookError):
            message = f"no webhook {error}"
        elif isinstance(error, ConnectError):
            message = f"could not connect: {error}"
        else:
            message = str(error)
        err.write(f"pandapush: error: {message}\n")
        return 1

    d = Deferred.fromCoroutine(_dispatch(ctx))
    d.addErrback(refused)
    return d


def main(argv: Sequence[str] | None = None) -> None:
    """The ``pandapush`` console script."""
    from twisted.internet import task

    arguments = sys.argv[1:] if argv is None else list(argv)
    args, serverOptions = buildParser().parse_known_args(arguments)
    if getattr(args, "runsServer", False):
        server.serveForever(args, serverOptions)
        return

    async def command(reactor: Any) -> None:
        status = await run(arguments, reactor=reactor)
        if status:
            raise SystemExit(status)

    task.react(lambda reactor: Deferred.fromCoroutine(command(reactor)))
