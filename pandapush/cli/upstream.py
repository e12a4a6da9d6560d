"""
Upstream's command names (its ``server/cli.js``), kept so its instructions work as written:
``add``, ``addKey``, ``show`` and ``genToken``, each a form of one of our commands.
"""

from __future__ import annotations

from typing import Any

from pandapush.cli import apps, keys, tokens
from pandapush.cli.context import CommandError, Context
from pandapush.cli.options import addCommand
from pandapush.cli.records import appLines, keyLines, requireApp, usableKey

__all__ = ["register"]


def register(commands: Any) -> None:
    p = addCommand(commands, "add", "Upstream's form of `app create NAME --admin USER`.", _add)
    p.add_argument("name")
    p.add_argument("user")
    p = addCommand(commands, "addKey", "Upstream's form of `key create`.", _addKey, changesKeys=True)
    p.add_argument("appId", metavar="APP")
    p.add_argument("user")
    p.add_argument("purpose")
    p.add_argument("-e", "--expires", metavar="WHEN", help="P1Y, 30d, 2027-01-01 or never [never]")
    p = addCommand(commands, "show", "Upstream's listing: every application (or one) with its keys.", _show)
    p.add_argument("appId", nargs="?", metavar="APP")
    p = addCommand(commands, "genToken", "Upstream's form of `token`.", _genToken)
    p.add_argument("appId", metavar="APP")
    p.add_argument("keyId", metavar="KEY")
    p.add_argument("channel", help="full, or relative to /<app>/")
    tokens.addTokenOptions(p, short=True)


async def _add(ctx: Context) -> int:
    ctx.args.created_by = ctx.args.user
    return await apps.create(ctx, ctx.args.name, [ctx.args.user])


async def _addKey(ctx: Context) -> int:
    ctx.args.created_by = ctx.args.user
    await requireApp(ctx, ctx.args.appId)
    return await keys.create(ctx, ctx.args.purpose)


async def _show(ctx: Context) -> int:
    if ctx.args.appId:
        return await apps.show(ctx)
    storage = await ctx.storage()
    shown = []
    lines = []
    for app in await storage.listApplications():
        appKeys = await storage.listKeys(app.id)
        shown.append({**app.publicDict(), "keys": [k.publicDict() for k in appKeys]})
        lines.append(appLines(app))
        lines.extend("    " + keyLines(k).replace("\n", "\n    ") for k in appKeys)
    ctx.emit(shown, "\n".join(lines) or "no applications")
    return 0


async def _genToken(ctx: Context) -> int:
    args = ctx.args
    key = await usableKey(ctx, args.keyId)
    if key.application_id != args.appId:
        raise CommandError(f"key {key.id} belongs to application {key.application_id}, not {args.appId}")
    channel = args.channel
    if not channel.startswith(f"/{args.appId}/"):
        channel = f"/{args.appId}/{channel.lstrip('/')}"
    return await tokens.mint(ctx, channel)
