"""``pandapush token``: a token signed with a key whose secret is read from the database."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pandapush.auth.rules import CHANNEL_TYPES, SUBSCRIBE, TenantChannel, parseChannel
from pandapush.bayeux.channel import isMeta, isService, isSubscribable, isValidName, isValidPattern
from pandapush.cli.context import CommandError, Context
from pandapush.cli.durations import parseExpiry
from pandapush.cli.options import addCommand
from pandapush.cli.records import usableKey
from pandapush.storage.models import isoformat
from pandapush.tokens import mintToken

__all__ = ["addTokenOptions", "checkChannel", "mint", "register"]

_GRAMMAR = "a channel is /<app>/<public|private|presence|meta>/<path>, which may end in /* or /**"


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
    p.add_argument("--user", metavar="ID", help="the user subscribing (terminate_connections ends it)")
    p.add_argument(*flags("-e", "--expires"), metavar="WHEN", help="1h, PT1H, P1H, a date, or never [never]")


def checkChannel(channel: str) -> TenantChannel:
    """
    ``channel`` as servers will read a token's channel, or :class:`CommandError`: a
    token for a channel they do not take covers nothing, and minting one without a word
    leaves the mistake to be found in a browser. Servers match a token's channel as a
    subscription (:func:`~pandapush.auth.rules.tokenCovers`), so a wildcard is fine.
    """
    parsed = parseChannel(channel, SUBSCRIBE)
    valid = isValidName(channel) or isValidPattern(channel)
    if parsed is None or not valid or not isSubscribable(channel):
        raise CommandError(f"{channel!r} is not a channel: {_whyNot(channel)}; {_GRAMMAR}")
    return parsed


def _whyNot(channel: str) -> str:
    """The first thing wrong with a channel the rules refused, in words."""
    parts = channel.split("/")
    if not channel.startswith("/"):
        return "it does not start with '/'"
    if isMeta(channel) or isService(channel):
        return "/meta/... and /service/... are Bayeux's own channels, no application's"
    if len(parts) > 2 and parts[2] not in CHANNEL_TYPES:
        types = sorted(CHANNEL_TYPES)
        return f"{parts[2]!r} is not a channel type ({', '.join(types[:-1])} or {types[-1]})"
    if len(parts) < 4:
        return "a path must follow the type"
    return "each segment is letters, digits, '_', '~' or '-', and only the last may be * or **"


async def mint(ctx: Context, channel: str) -> int:
    """Print a token for ``channel`` signed with ``ctx.args.keyId``, granting what the options say."""
    args = ctx.args
    target = checkChannel(channel)
    key = await usableKey(ctx, args.keyId)
    if key.application_id != target.appId:
        # Servers look the key up in the channel's application: "Could not find key".
        raise CommandError(
            f"key {key.id} belongs to application {key.application_id}, not {target.appId}:"
            " servers would refuse the token"
        )
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
        user=getattr(args, "user", None) or None,
    )
    ctx.emit({"token": token, "keyId": key.id, "expires": isoformat(expires)}, token)
    return 0


async def _token(ctx: Context) -> int:
    return await mint(ctx, ctx.args.channel)
