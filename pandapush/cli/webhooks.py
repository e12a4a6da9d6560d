"""``pandapush webhook ...``: an application's webhook endpoints, from the command line.

The command is the operator's: its endpoints may reach private and loopback addresses
(as a root admin's may). Running servers learn of a change at once when given their
``REDIS_HOSTS`` (their endpoint caches follow the application's key cache invalidation),
else within the cache's TTL.
"""

from __future__ import annotations

from typing import Any

from pandapush.cli.context import CommandError, Context
from pandapush.cli.options import addCommand
from pandapush.cli.records import requireApp, usableKey
from pandapush.storage.errors import NoSuchWebhookError
from pandapush.storage.models import isoformat
from pandapush.storage.webhooks import EVENT_NAMES, IWebhookStorage, Webhook, checkEvents
from pandapush.webhooks.addresses import checkURL

__all__ = ["register"]


def register(commands: Any) -> None:
    webhook = commands.add_parser("webhook", help="Create, list and delete webhook endpoints.")
    actions = webhook.add_subparsers(dest="webhookCommand", metavar="ACTION", required=True)
    p = addCommand(actions, "create", "Create an endpoint of an application.", _create, changesKeys=True)
    p.add_argument("appId", metavar="APP")
    p.add_argument("--url", required=True, help="where to POST events: http:// or https://")
    p.add_argument(
        "--events",
        required=True,
        metavar="LIST",
        help=f"comma-separated, of: {', '.join(EVENT_NAMES)}",
    )
    p.add_argument("--key", required=True, metavar="KEY", help="the application's key whose secret signs")
    p.add_argument("--created-by", metavar="USER", help="recorded creator [$USER]")
    p = addCommand(actions, "list", "List an application's endpoints.", _list, aliases=["ls"])
    p.add_argument("appId", metavar="APP")
    p = addCommand(actions, "delete", "Delete an endpoint.", _delete, changesKeys=True, aliases=["rm"])
    p.add_argument("webhookId", metavar="WEBHOOK")


def _lines(webhook: Webhook) -> str:
    return (
        f"{webhook.id}  {webhook.url}\n"
        f"  events: {', '.join(webhook.events)}; signed by {webhook.key_id}\n"
        f"  created by {webhook.created_by or '-'} at {isoformat(webhook.created_at)}"
    )


async def _storage(ctx: Context) -> IWebhookStorage:
    storage = await ctx.storage()
    if not IWebhookStorage.providedBy(storage):
        raise CommandError(f"the {storage.name} storage keeps no webhooks")
    return storage  # type: ignore[no-any-return]


async def _create(ctx: Context) -> int:
    args = ctx.args
    try:
        target = checkURL(args.url)
        events = checkEvents([e.strip() for e in args.events.split(",") if e.strip()])
    except ValueError as error:
        raise CommandError(str(error)) from None
    await requireApp(ctx, args.appId)
    key = await usableKey(ctx, args.key)
    if key.application_id != args.appId:
        raise CommandError(f"key {key.id} belongs to application {key.application_id}, not {args.appId}")
    webhook = await (await _storage(ctx)).createWebhook(
        args.appId, target.url, events, key.id, ctx.createdBy(), allowPrivate=True
    )
    ctx.emit(webhook.publicDict(), "created webhook " + _lines(webhook))
    await ctx.keysChanged(appId=args.appId, stale=False)
    return 0


async def _list(ctx: Context) -> int:
    await requireApp(ctx, ctx.args.appId)
    found = await (await _storage(ctx)).listWebhooks(ctx.args.appId)
    ctx.emit([w.publicDict() for w in found], "\n".join(_lines(w) for w in found) or "no webhooks")
    return 0


async def _delete(ctx: Context) -> int:
    storage = await _storage(ctx)
    webhook = await storage.getWebhook(ctx.args.webhookId)
    if webhook is None:
        raise NoSuchWebhookError(ctx.args.webhookId)
    await storage.deleteWebhook(webhook.id)
    ctx.emit({"deleted": webhook.id}, f"deleted webhook {webhook.id}")
    await ctx.keysChanged(appId=webhook.application_id)
    return 0
