"""``pandapush token``: a token signed with a key whose secret is read from the database."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pandapush.cli.context import CommandError, Context
from pandapush.cli.durations import parseExpiry
from pandapush.cli.options import addCommand
from pandapush.cli.records import usableKey
from pandapush.storage.models import isoformat
from pandapush.tokens import mintToken

__all__ = ["addTokenOptions", "mint", "register"]


def register(commands: Any) -> None:
    p = addCommand(
        commands, "token", "Mint a token signed with a key (its secret is read from the database).", _token
    )
    p.add_argument("keyId", metavar="KEY")
    addTokenOptions(p)
    p.add_argument("--channel", required=True, help="/<app>/<type>/path, may end in /* or /**")


def addTokenOptions(p: argparse.ArgumentParser, short: bool = False) -> None:
    """What a token grants; ``short``: upstream's ``-p``, ``-s`` and ``-e`` as well."""
    flags = (lambda *names: names) if short else (lambda *names: names[1:])
    p.add_argument(*flags("-p", "--pub"), action="store_true", help="allow publishing")
    p.add_argument(*flags("-s", "--sub"), action="store_true", help="allow subscribing")
    p.add_argument("--presence", metavar="JSON", help='presence object, e.g. \'{"id": "user1"}\'')
    p.add_argument(*flags("-e", "--expires"), metavar="WHEN", help="1h, PT1H, P1H, a date, or never [never]")


async def mint(ctx: Context, channel: str) -> int:
    """Print a token for ``channel`` signed with ``ctx.args.keyId``, granting what the options say."""
    args = ctx.args
    key = await usableKey(ctx, args.keyId)
    presence = None
    if args.presence:
        try:
            presence = json.loads(args.presence)
        except ValueError as e:
            raise CommandError(f"--presence is not JSON: {e}") from None
    expires = parseExpiry(args.expires, ctx.now())
    token = mintToken(
        key.id,
        key.secret,
        channel,
        pub=args.pub,
        sub=args.sub,
        presence=presence,
        expiresAt=expires,
    )
    ctx.emit({"token": token, "keyId": key.id, "expires": isoformat(expires)}, token)
    return 0


async def _token(ctx: Context) -> int:
    return await mint(ctx, ctx.args.channel)
