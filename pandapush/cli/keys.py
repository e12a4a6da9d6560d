"""``pandapush key ...``: create, list, revoke and delete keys; running servers are told at once."""

from __future__ import annotations

from typing import Any

from pandapush.cli.context import Context
from pandapush.cli.durations import parseExpiry
from pandapush.cli.options import addCommand
from pandapush.cli.records import keyLines, requireApp
from pandapush.storage.models import isoformat

__all__ = ["create", "register"]


def register(commands: Any) -> None:
    key = commands.add_parser("key", help="Create, list, revoke and delete keys.")
    keys = key.add_subparsers(dest="keyCommand", metavar="ACTION", required=True)
    p = addCommand(
        keys, "create", "Create a key; its secret is printed this once only.", _create, changesKeys=True
    )
    p.add_argument("appId", metavar="APP")
    p.add_argument("--purpose", default="", help="what the key is for")
    p.add_argument("--expires", metavar="WHEN", help="1y, 30d, P1Y, 2027-01-01 or never [never]")
    p.add_argument("--created-by", metavar="USER", help="recorded creator [$USER]")
    p = addCommand(keys, "list", "List an application's keys (never secrets).", _list, aliases=["ls"])
    p.add_argument("appId", metavar="APP")
    p = addCommand(keys, "revoke", "Revoke a key: it stops working.", _revoke, changesKeys=True)
    p.add_argument("keyId", metavar="KEY")
    p = addCommand(keys, "delete", "Delete a key.", _delete, changesKeys=True, aliases=["rm"])
    p.add_argument("keyId", metavar="KEY")


async def create(ctx: Context, purpose: str) -> int:
    """A key for ``ctx.args.appId`` expiring at ``ctx.args.expires``; its secret printed once."""
    expires = parseExpiry(ctx.args.expires, ctx.now())
    key = await (await ctx.storage()).createKey(
        ctx.args.appId, ctx.createdBy(), purpose=purpose, expires=expires
    )
    human = (
        f"created key for application {key.application_id}\n"
        f"  key id:  {key.id}\n  secret:  {key.secret}\n  expires: {isoformat(key.expires) or 'never'}\n"
        "Keep the secret safe: it is not shown again."
    )
    ctx.emit(key.secretDict(), human)
    # A server may have cached "no such key" for this id a moment ago (a few seconds).
    await ctx.keysChanged(keyId=key.id, stale=False)
    return 0


async def _create(ctx: Context) -> int:
    return await create(ctx, ctx.args.purpose)


async def _list(ctx: Context) -> int:
    await requireApp(ctx, ctx.args.appId)
    keys = await (await ctx.storage()).listKeys(ctx.args.appId)
    ctx.emit([k.publicDict() for k in keys], "\n".join(keyLines(k) for k in keys) or "no keys")
    return 0


async def _revoke(ctx: Context) -> int:
    key = await (await ctx.storage()).revokeKey(ctx.args.keyId)
    ctx.emit(key.publicDict(), f"revoked key {key.id} at {isoformat(key.revoked_at)}")
    await ctx.keysChanged(keyId=key.id)
    return 0


async def _delete(ctx: Context) -> int:
    await (await ctx.storage()).deleteKey(ctx.args.keyId)
    ctx.emit({"deleted": ctx.args.keyId}, f"deleted key {ctx.args.keyId}")
    await ctx.keysChanged(keyId=ctx.args.keyId)
    return 0
