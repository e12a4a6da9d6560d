"""Applications and keys as the commands find and print them (never a key's secret)."""

from __future__ import annotations

from pandapush.cli.context import CommandError, Context
from pandapush.storage.models import Application, Key, isoformat

__all__ = ["appLines", "historyLine", "keyLines", "requireApp", "usableKey"]


def appLines(app: Application) -> str:
    return (
        f"{app.id}  {app.name}\n"
        f"  created by {app.created_by or '-'} at {isoformat(app.created_at)},"
        f" updated {isoformat(app.updated_at)}\n"
        f"  admins: {', '.join(app.admins) or '-'}"
        + (f"\n  allowed origins: {', '.join(app.allowed_origins)}" if app.allowed_origins else "")
        + (f"\n  {historyLine(app)}" if app.history.size is not None or app.history.ttl is not None else "")
    )


def historyLine(app: Application) -> str:
    """The application's history limits, as a person reads them."""
    size, ttl = app.history.size, app.history.ttl
    kept = "the server's default" if size is None else ("none (history off)" if size == 0 else f"{size}")
    age = "the server's default" if ttl is None else f"{ttl:g} s"
    return f"history: messages per channel {kept}, kept {age}"


def keyLines(key: Key) -> str:
    state = "REVOKED " + str(isoformat(key.revoked_at)) if key.revoked else "active"
    return (
        f"{key.id}  purpose={key.purpose or '-'}  expires={isoformat(key.expires) or 'never'}  {state}\n"
        f"  created by {key.created_by or '-'} at {isoformat(key.created_at)};"
        f" used {key.use_count} times, last {isoformat(key.last_used) or 'never'}"
    )


async def requireApp(ctx: Context, appId: str) -> Application:
    app = await (await ctx.storage()).getApplication(appId)
    if app is None:
        raise CommandError(f"no application {appId}")
    return app


async def usableKey(ctx: Context, keyId: str) -> Key:
    """The key ``keyId``, if it may sign: it exists, is not revoked and has not expired."""
    key = await (await ctx.storage()).getKey(keyId)
    if key is None:
        raise CommandError(f"no key {keyId}")
    if key.revoked:
        raise CommandError(f"key {keyId} is revoked")
    if key.isExpired(ctx.now()):
        raise CommandError(f"key {keyId} expired at {isoformat(key.expires)}")
    return key
