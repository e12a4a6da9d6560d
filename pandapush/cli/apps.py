"""``pandapush app ...``: create, list, show, rename and delete applications; admins, origins, history."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pandapush.cli.context import CommandError, Context
from pandapush.cli.options import addCommand
from pandapush.cli.records import appLines, historyLine, keyLines, requireApp
from pandapush.storage.models import HistoryLimits

__all__ = ["create", "register", "show"]


def register(commands: Any) -> None:
    app = commands.add_parser("app", help="Create, list, show, rename and delete applications.")
    apps = app.add_subparsers(dest="appCommand", metavar="ACTION", required=True)
    p = addCommand(apps, "create", "Create an application.", _create)
    p.add_argument("name")
    p.add_argument("--admin", action="append", default=[], metavar="USER", help="an admin user (repeatable)")
    p.add_argument("--created-by", metavar="USER", help="recorded creator [$USER]")
    p.add_argument("--id", dest="appId", metavar="ID", help="use this id instead of a fresh one")
    p = addCommand(apps, "list", "List applications.", _list, aliases=["ls"])
    p.add_argument("--admin", metavar="USER", help="only those USER administers")
    p = addCommand(apps, "show", "Show an application with its admins and keys (never secrets).", show)
    p.add_argument("appId", metavar="APP")
    p = addCommand(apps, "rename", "Rename an application.", _rename)
    p.add_argument("appId", metavar="APP")
    p.add_argument("name")
    p = addCommand(apps, "admins", "Replace, add or remove an application's admins.", _admins)
    p.add_argument("appId", metavar="APP")
    p.add_argument(
        "--set", action="append", metavar="USER", help="replace the admins with these (repeatable)"
    )
    p.add_argument("--add", action="append", default=[], metavar="USER", help="add an admin (repeatable)")
    p.add_argument(
        "--remove", action="append", default=[], metavar="USER", help="remove an admin (repeatable)"
    )
    p = addCommand(
        apps,
        "origins",
        "Show, replace or clear the browser origins an application's channels may be used from.",
        _origins,
        changesKeys=True,
    )
    p.add_argument("appId", metavar="APP")
    p.add_argument(
        "origins",
        nargs="*",
        metavar="ORIGIN",
        help="scheme://host[:port], or null (sandboxed iframes, file:// pages); none: show the list",
    )
    p.add_argument("--clear", action="store_true", help="no list of its own: any origin the server allows")
    p = addCommand(
        apps,
        "history",
        "Show or set how many messages each of an application's channels keeps, and how long.",
        _history,
        changesKeys=True,
    )
    p.add_argument("appId", metavar="APP")
    p.add_argument(
        "--size", metavar="N", help="messages each channel keeps (0: no history; default: the server's)"
    )
    p.add_argument("--ttl", metavar="SECONDS", help="seconds a message is kept (default: the server's)")
    p.add_argument("--default", action="store_true", help="back to the server's --history-size/--history-ttl")
    p = addCommand(
        apps,
        "delete",
        "Delete an application, its admins and its keys.",
        _delete,
        changesKeys=True,
        aliases=["rm"],
    )
    p.add_argument("appId", metavar="APP")


async def create(ctx: Context, name: str, admins: Sequence[str]) -> int:
    storage = await ctx.storage()
    app = await storage.createApplication(
        name, ctx.createdBy(), admins=admins, applicationId=getattr(ctx.args, "appId", None)
    )
    ctx.emit(app.publicDict(), f"created application {app.name}\n" + appLines(app))
    return 0


async def _create(ctx: Context) -> int:
    return await create(ctx, ctx.args.name, ctx.args.admin)


async def _list(ctx: Context) -> int:
    storage = await ctx.storage()
    admin = getattr(ctx.args, "admin", None)
    apps = await (storage.listApplicationsAdministeredBy(admin) if admin else storage.listApplications())
    ctx.emit([a.publicDict() for a in apps], "\n".join(appLines(a) for a in apps) or "no applications")
    return 0


async def show(ctx: Context) -> int:
    app = await requireApp(ctx, ctx.args.appId)
    keys = await (await ctx.storage()).listKeys(app.id)
    human = (
        appLines(app)
        + "\n  keys:\n"
        + ("\n".join("    " + keyLines(k).replace("\n", "\n    ") for k in keys) or "    -")
    )
    ctx.emit({**app.publicDict(), "keys": [k.publicDict() for k in keys]}, human)
    return 0


async def _rename(ctx: Context) -> int:
    app = await (await ctx.storage()).updateApplication(ctx.args.appId, name=ctx.args.name)
    ctx.emit(app.publicDict(), f"renamed\n{appLines(app)}")
    return 0


async def _origins(ctx: Context) -> int:
    args = ctx.args
    if args.clear and args.origins:
        raise CommandError("give origins or --clear, not both")
    if not args.clear and not args.origins:
        app = await requireApp(ctx, args.appId)
        ctx.emit(
            list(app.allowed_origins),
            "\n".join(app.allowed_origins) or "no list: any origin the server allows",
        )
        return 0
    app = await (await ctx.storage()).updateApplication(args.appId, allowedOrigins=args.origins)
    ctx.emit(app.publicDict(), appLines(app))
    # Running servers cache the list with the application's keys: the same broadcast.
    await ctx.keysChanged(appId=args.appId)
    return 0


def _limit(value: str | None, kind: type, name: str) -> Any:
    if value is None or value == "default":
        return None
    try:
        return kind(value)
    except ValueError:
        raise CommandError(f"--{name} must be a number or 'default', not {value!r}") from None


async def _history(ctx: Context) -> int:
    args = ctx.args
    if args.default and (args.size is not None or args.ttl is not None):
        raise CommandError("give --size/--ttl or --default, not both")
    if not args.default and args.size is None and args.ttl is None:
        app = await requireApp(ctx, args.appId)
        ctx.emit(app.history.publicDict(), historyLine(app))
        return 0
    current = (await requireApp(ctx, args.appId)).history
    limits = HistoryLimits()
    if not args.default:
        size, ttl = _limit(args.size, int, "size"), _limit(args.ttl, float, "ttl")
        limits = HistoryLimits(
            size if args.size is not None else current.size, ttl if args.ttl is not None else current.ttl
        )
    try:
        app = await (await ctx.storage()).updateApplication(args.appId, history=limits)
    except ValueError as error:
        raise CommandError(str(error)) from None
    ctx.emit(app.publicDict(), appLines(app))
    # Running servers read the limits again with the application's keys: the same broadcast.
    await ctx.keysChanged(appId=args.appId)
    return 0


async def _admins(ctx: Context) -> int:
    args = ctx.args
    current = await requireApp(ctx, args.appId)
    admins = set(current.admins if args.set is None else args.set)
    admins |= set(args.add)
    admins -= set(args.remove)
    app = await (await ctx.storage()).updateApplication(args.appId, admins=admins)
    ctx.emit(app.publicDict(), appLines(app))
    return 0


async def _delete(ctx: Context) -> int:
    await (await ctx.storage()).deleteApplication(ctx.args.appId)
    ctx.emit({"deleted": ctx.args.appId}, f"deleted application {ctx.args.appId} and its keys")
    await ctx.keysChanged(appId=ctx.args.appId)
    return 0
