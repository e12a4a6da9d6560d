"""The ``pandapush`` command: what operators do without the admin UI.

::

    pandapush migrate
    pandapush app create testapp --admin alice
    pandapush key create <appId> --purpose server --expires 1y
    pandapush token <keyId> --channel /<appId>/private/x --sub --expires 1h
    pandapush publish /<appId>/public/messages '{"foo": "bar"}' --key PSID... --secret ...

The database comes from upstream's variables (``DATABASE``, ``DATABASE_PATH``,
``DATABASE_ADDRESS``...) or the ``--database*`` options, which may be given before
or after the subcommand. ``--json`` prints machine-readable output. Upstream's
command names (``add``, ``addKey``, ``show``, ``genToken``) work too.

Running servers cache keys for a minute. With ``REDIS_HOSTS`` (``--redis-hosts``)
and ``REDIS_NAMESPACE`` as the servers have them, commands that create, revoke or
delete keys or delete applications also PUBLISH the invalidation the servers'
:class:`~pandapush.keysync.KeySync` applies, so they act at once. If Redis cannot
be reached the change is still made (it is in the database) and the command exits
0 with a warning: a failure status would read as "not revoked", and retrying a
delete that did happen fails.

Storage calls run on the reactor (``task.react``); :func:`run` is the same command
as a Deferred, for tests and for embedding.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError

from pandapush import __version__
from pandapush.auth.keycache import DEFAULT_NEGATIVE_TTL, DEFAULT_TTL
from pandapush.publisher import Publisher, PublishError
from pandapush.storage import StorageConfig, makeStorage
from pandapush.storage.errors import NoSuchApplicationError, NoSuchKeyError, StorageError
from pandapush.storage.interfaces import IStorage
from pandapush.storage.models import Application, Key, isoformat
from pandapush.tokens import mintToken

__all__ = ["buildParser", "main", "parseDuration", "parseExpiry", "run"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_SHORT = re.compile(r"(\d+)\s*([smhdwy])", re.I)
_ISO = re.compile(
    r"P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T?(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+)S)?)?",
    re.I,
)


class CommandError(Exception):
    """A refusal to report as ``pandapush: error: ...`` with exit status 1."""


def parseDuration(text: str) -> datetime.timedelta:
    """
    ``30s``, ``15m``, ``1h``, ``30d``, ``2w``, ``1y``, or ISO 8601 as upstream took it
    (``P1Y``, ``PT1H``, and moment's lenient ``P1H``). A month is 30 days, a year 365.
    """
    text = text.strip()
    short = _SHORT.fullmatch(text)
    if short:
        seconds = int(short.group(1)) * _UNITS[short.group(2).lower()]
    else:
        iso = _ISO.fullmatch(text)
        if not iso or text.upper() in ("P", "PT"):
            raise ValueError(f"not a duration: {text!r} (try 1h, 30d, 1y or P1Y)")
        n = {k: int(v) if v else 0 for k, v in iso.groupdict().items()}
        seconds = (
            n["y"] * _UNITS["y"]
            + n["mo"] * 30 * 86400
            + n["w"] * _UNITS["w"]
            + n["d"] * _UNITS["d"]
            + n["h"] * 3600
            + n["mi"] * 60
            + n["s"]
        )
    if seconds <= 0:
        raise ValueError(f"a duration must be positive: {text!r}")
    return datetime.timedelta(seconds=seconds)


def parseExpiry(text: str | None, now: datetime.datetime) -> datetime.datetime | None:
    """
    When something expires: ``never``/empty for never, a duration from ``now``
    (see :func:`parseDuration`), or a date/time (``2027-01-01``, ``2027-01-01T12:00:00Z``;
    UTC unless it says otherwise).
    """
    if text is None or text.strip().lower() in ("", "never", "none"):
        return None
    try:
        return now + parseDuration(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a duration or a date: {text!r} (try 1h, 30d, 1y, P1Y or 2027-01-01)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.astimezone(datetime.UTC)


def _defaultUser(environ: Mapping[str, str]) -> str:
    try:
        return environ.get("USER") or getpass.getuser() or "cli"
    except Exception:
        return "cli"


# parser


def _globalOptions() -> argparse.ArgumentParser:
    """
    Options accepted before and after any subcommand. Defaults are suppressed so that a
    subcommand's parser does not overwrite a value given before it; the environment
    supplies what is missing (see :meth:`_Context.storageConfig`).
    """
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("database (defaults from the environment)")
    S = argparse.SUPPRESS
    group.add_argument(
        "--database", default=S, help="sqlite, postgres, memory or a plugin [$DATABASE or sqlite]"
    )
    group.add_argument(
        "--database-path", default=S, help="SQLite file [$DATABASE_PATH or localdata/db.sqlite]"
    )
    group.add_argument("--database-address", default=S, help="PostgreSQL host [$DATABASE_ADDRESS]")
    group.add_argument(
        "--database-port", default=S, type=int, help="PostgreSQL port [$DATABASE_PORT or 5432]"
    )
    group.add_argument("--database-username", default=S, help="PostgreSQL user [$DATABASE_USERNAME]")
    group.add_argument("--database-password", default=S, help="PostgreSQL password [$DATABASE_PASSWORD]")
    group.add_argument("--database-name", default=S, help="PostgreSQL database [$DATABASE_NAME or pandapush]")
    group.add_argument("--database-schema", default=S, help="PostgreSQL schema [$DATABASE_SCHEMA or public]")
    group = parent.add_argument_group(
        "running servers, told of key changes at once (defaults from the environment)"
    )
    group.add_argument(
        "--redis-hosts", default=S, metavar="HOSTS", help="the servers' Redis shards [$REDIS_HOSTS; none]"
    )
    group.add_argument(
        "--redis-namespace",
        default=S,
        metavar="NAME",
        help="the servers' Redis namespace [$REDIS_NAMESPACE or pandapush]",
    )
    parent.add_argument("--json", action="store_true", default=S, help="print JSON, for scripts")
    return parent


def buildParser() -> argparse.ArgumentParser:
    """The whole command line; every subcommand has ``--help``."""
    common = _globalOptions()
    parser = argparse.ArgumentParser(
        prog="pandapush",
        parents=[common],
        description="Manage pandapush: database migrations, applications, keys, tokens; publish messages.",
        epilog=(
            "Run the server with `pandapush serve --listen tcp:3000 [more server options]`"
            " (the same as `twistd --nodaemon pandapush ...`; `pandapush serve --help` lists them)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"pandapush {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def sub(
        group: Any,
        name: str,
        helpText: str,
        handler: Callable[..., Any],
        changesKeys: bool = False,
        **kw: Any,
    ) -> Any:
        if changesKeys:
            kw.setdefault(
                "epilog",
                "With REDIS_HOSTS (--redis-hosts) set, running servers are told at once; otherwise,"
                f" or when Redis cannot be reached (a warning, exit status 0), within {DEFAULT_TTL:g} s.",
            )
        command = group.add_parser(name, parents=[common], help=helpText, description=helpText, **kw)
        command.set_defaults(handler=handler, changesKeys=changesKeys)
        return command

    sub(commands, "migrate", "Bring the database schema to the latest version (idempotent).", _migrate)
    serve = commands.add_parser(
        "serve",
        add_help=False,
        help="Run the server; every option after `serve` goes to it (--listen tcp:3000, --help...).",
    )
    serve.set_defaults(handler=_serve)

    # applications
    app = commands.add_parser("app", help="Create, list, show, rename and delete applications.")
    apps = app.add_subparsers(dest="appCommand", metavar="ACTION", required=True)
    p = sub(apps, "create", "Create an application.", _appCreate)
    p.add_argument("name")
    p.add_argument("--admin", action="append", default=[], metavar="USER", help="an admin user (repeatable)")
    p.add_argument("--created-by", metavar="USER", help="recorded creator [$USER]")
    p.add_argument("--id", dest="appId", metavar="ID", help="use this id instead of a fresh one")
    p = sub(apps, "list", "List applications.", _appList, aliases=["ls"])
    p.add_argument("--admin", metavar="USER", help="only those USER administers")
    p = sub(apps, "show", "Show an application with its admins and keys (never secrets).", _appShow)
    p.add_argument("appId", metavar="APP")
    p = sub(apps, "rename", "Rename an application.", _appRename)
    p.add_argument("appId", metavar="APP")
    p.add_argument("name")
    p = sub(apps, "admins", "Replace, add or remove an application's admins.", _appAdmins)
    p.add_argument("appId", metavar="APP")
    p.add_argument(
        "--set", action="append", metavar="USER", help="replace the admins with these (repeatable)"
    )
    p.add_argument("--add", action="append", default=[], metavar="USER", help="add an admin (repeatable)")
    p.add_argument(
        "--remove", action="append", default=[], metavar="USER", help="remove an admin (repeatable)"
    )
    p = sub(
        apps,
        "origins",
        "Show, replace or clear the browser origins an application's channels may be used from.",
        _appOrigins,
        changesKeys=True,
    )
    p.add_argument("appId", metavar="APP")
    p.add_argument("origins", nargs="*", metavar="ORIGIN", help="scheme://host[:port]; none: show the list")
    p.add_argument("--clear", action="store_true", help="no list of its own: any origin the server allows")
    p = sub(
        apps,
        "delete",
        "Delete an application, its admins and its keys.",
        _appDelete,
        changesKeys=True,
        aliases=["rm"],
    )
    p.add_argument("appId", metavar="APP")

    # keys
    key = commands.add_parser("key", help="Create, list, revoke and delete keys.")
    keys = key.add_subparsers(dest="keyCommand", metavar="ACTION", required=True)
    p = sub(
        keys, "create", "Create a key; its secret is printed this once only.", _keyCreate, changesKeys=True
    )
    p.add_argument("appId", metavar="APP")
    p.add_argument("--purpose", default="", help="what the key is for")
    p.add_argument("--expires", metavar="WHEN", help="1y, 30d, P1Y, 2027-01-01 or never [never]")
    p.add_argument("--created-by", metavar="USER", help="recorded creator [$USER]")
    p = sub(keys, "list", "List an application's keys (never secrets).", _keyList, aliases=["ls"])
    p.add_argument("appId", metavar="APP")
    p = sub(keys, "revoke", "Revoke a key: it stops working.", _keyRevoke, changesKeys=True)
    p.add_argument("keyId", metavar="KEY")
    p = sub(keys, "delete", "Delete a key.", _keyDelete, changesKeys=True, aliases=["rm"])
    p.add_argument("keyId", metavar="KEY")

    # tokens and publishing
    p = sub(
        commands, "token", "Mint a token signed with a key (its secret is read from the database).", _token
    )
    p.add_argument("keyId", metavar="KEY")
    _tokenOptions(p)
    p.add_argument("--channel", required=True, help="/<app>/<type>/path, may end in /* or /**")

    p = sub(commands, "publish", "Publish a JSON message to a channel over the HTTP API.", _publish)
    p.add_argument("channel", help="/<app>/<public|private|presence>/path")
    p.add_argument("message", help="the message, as JSON")
    p.add_argument("--url", help="the server [$PANDAPUSH_URL or http://localhost:3000]")
    p.add_argument("--key", metavar="KEY", help="key id [$PANDAPUSH_KEY_ID]")
    p.add_argument(
        "--secret", help="key secret [$PANDAPUSH_KEY_SECRET, else read from the database for --key]"
    )
    p.add_argument("--token", help="publish with this token instead of a key")

    # upstream's names (server/cli.js)
    p = sub(commands, "add", "Upstream's form of `app create NAME --admin USER`.", _add)
    p.add_argument("name")
    p.add_argument("user")
    p = sub(commands, "addKey", "Upstream's form of `key create`.", _addKey, changesKeys=True)
    p.add_argument("appId", metavar="APP")
    p.add_argument("user")
    p.add_argument("purpose")
    p.add_argument("-e", "--expires", metavar="WHEN", help="P1Y, 30d, 2027-01-01 or never [never]")
    p = sub(commands, "show", "Upstream's listing: every application (or one) with its keys.", _show)
    p.add_argument("appId", nargs="?", metavar="APP")
    p = sub(commands, "genToken", "Upstream's form of `token`.", _genToken)
    p.add_argument("appId", metavar="APP")
    p.add_argument("keyId", metavar="KEY")
    p.add_argument("channel", help="full, or relative to /<app>/")
    _tokenOptions(p, short=True)
    return parser


def _tokenOptions(p: argparse.ArgumentParser, short: bool = False) -> None:
    flags = (lambda *names: names) if short else (lambda *names: names[1:])
    p.add_argument(*flags("-p", "--pub"), action="store_true", help="allow publishing")
    p.add_argument(*flags("-s", "--sub"), action="store_true", help="allow subscribing")
    p.add_argument("--presence", metavar="JSON", help='presence object, e.g. \'{"id": "user1"}\'')
    p.add_argument(*flags("-e", "--expires"), metavar="WHEN", help="1h, PT1H, P1H, a date, or never [never]")


# running


class _Context:
    """One run's arguments, environment, output and (lazily) started storage."""

    def __init__(
        self,
        args: argparse.Namespace,
        environ: Mapping[str, str],
        out: IO[str],
        reactor: Any,
        err: IO[str] | None = None,
    ):
        self.args = args
        self.environ = environ
        self.out = out
        self.err = sys.stderr if err is None else err
        self.reactor = reactor
        self.json: bool = bool(getattr(args, "json", False))
        self._storage: IStorage | None = None

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    def storageConfig(self) -> StorageConfig:
        config = StorageConfig.fromEnvironment(self.environ)
        changes = {
            field: getattr(self.args, option)
            for option, field in (
                ("database", "database"),
                ("database_path", "path"),
                ("database_address", "address"),
                ("database_port", "port"),
                ("database_username", "username"),
                ("database_password", "password"),
                ("database_name", "name"),
                ("database_schema", "schema"),
            )
            if getattr(self.args, option, None) is not None
        }
        return config.replace(**changes)

    def unstartedStorage(self) -> IStorage:
        if self._storage is None:
            self._storage = makeStorage(self.storageConfig())
        return self._storage

    async def storage(self) -> IStorage:
        """The storage, started: SQLite migrates itself, PostgreSQL refuses an old schema."""
        if self._storage is None:
            storage = self.unstartedStorage()
            await storage.start()
        assert self._storage is not None
        return self._storage

    async def close(self) -> None:
        if self._storage is not None:
            storage, self._storage = self._storage, None
            await storage.close()

    def redisHosts(self) -> str | None:
        """The servers' Redis, as ``twistd pandapush`` reads it (option, then environment)."""
        return getattr(self.args, "redis_hosts", None) or self.environ.get("REDIS_HOSTS") or None

    def redisNamespace(self) -> str:
        namespace = getattr(self.args, "redis_namespace", None)
        return namespace or self.environ.get("REDIS_NAMESPACE", "pandapush")

    def checkRedisHosts(self) -> None:
        """A malformed REDIS_HOSTS is refused before anything changes, not after."""
        hosts = self.redisHosts()
        if hosts:
            from pandapush.redis import parseRedisHosts

            try:
                parseRedisHosts(hosts)
            except ValueError as e:
                raise CommandError(
                    f"REDIS_HOSTS / --redis-hosts {hosts!r} is not host:port[,host:port]: {e}"
                ) from None

    async def keysChanged(
        self, keyId: str | None = None, appId: str | None = None, stale: bool = True
    ) -> None:
        """
        Tell running servers to forget what they cached about ``keyId`` (or ``appId``'s
        keys), as the admin API does on the server. Never fails: the change is made
        already; a warning says when the servers will notice instead. ``stale``: the
        cached entry would keep a key working (revoke, delete), so say so even without Redis.
        """
        hosts = self.redisHosts()
        if stale:
            later = f"running servers notice within their key cache TTL ({DEFAULT_TTL:g} s)"
        else:
            later = f"a server that looked this id up just now may refuse it for {DEFAULT_NEGATIVE_TTL:g} s"
        if not hosts:
            if stale:
                self.err.write(
                    f"pandapush: note: {later}; set REDIS_HOSTS as they have it to tell them at once\n"
                )
            return
        # Imported only when asked for, as the server does: no Redis client otherwise.
        from pandapush.keysync import keysAddress, keysChannel, publishInvalidation

        namespace = self.redisNamespace()
        where = f"{keysChannel(namespace)} on {keysAddress(hosts).name}"
        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor
        try:
            heard = await publishInvalidation(reactor, hosts, namespace, keyId=keyId, appId=appId)
        except Exception as e:
            self.err.write(f"pandapush: warning: could not tell running servers ({where}: {e}); {later}\n")
            return
        if heard == 0:
            self.err.write(
                f"pandapush: note: no running server heard it on {where}"
                " (none is running, or they use another REDIS_NAMESPACE)\n"
            )

    def emit(self, data: Any, human: str) -> None:
        self.out.write((json.dumps(data, indent=2) if self.json else human).rstrip("\n") + "\n")

    def createdBy(self) -> str:
        return getattr(self.args, "created_by", None) or _defaultUser(self.environ)


def _appLines(app: Application) -> str:
    return (
        f"{app.id}  {app.name}\n"
        f"  created by {app.created_by or '-'} at {isoformat(app.created_at)},"
        f" updated {isoformat(app.updated_at)}\n"
        f"  admins: {', '.join(app.admins) or '-'}"
        + (f"\n  allowed origins: {', '.join(app.allowed_origins)}" if app.allowed_origins else "")
    )


def _keyLines(key: Key) -> str:
    state = "REVOKED " + str(isoformat(key.revoked_at)) if key.revoked else "active"
    return (
        f"{key.id}  purpose={key.purpose or '-'}  expires={isoformat(key.expires) or 'never'}  {state}\n"
        f"  created by {key.created_by or '-'} at {isoformat(key.created_at)};"
        f" used {key.use_count} times, last {isoformat(key.last_used) or 'never'}"
    )


async def _requireApp(ctx: _Context, appId: str) -> Application:
    app = await (await ctx.storage()).getApplication(appId)
    if app is None:
        raise CommandError(f"no application {appId}")
    return app


async def _migrate(ctx: _Context) -> int:
    storage = ctx.unstartedStorage()
    applied = await storage.migrate()
    version = await storage.schemaVersion()
    human = f"applied migrations {', '.join(map(str, applied))}; " if applied else "already current; "
    ctx.emit({"applied": applied, "version": version}, human + f"schema version {version}")
    return 0


async def _appCreate(ctx: _Context, name: str | None = None, admins: Sequence[str] | None = None) -> int:
    storage = await ctx.storage()
    app = await storage.createApplication(
        name if name is not None else ctx.args.name,
        ctx.createdBy(),
        admins=ctx.args.admin if admins is None else admins,
        applicationId=getattr(ctx.args, "appId", None),
    )
    ctx.emit(app.publicDict(), f"created application {app.name}\n" + _appLines(app))
    return 0


async def _appList(ctx: _Context) -> int:
    storage = await ctx.storage()
    admin = getattr(ctx.args, "admin", None)
    apps = await (storage.listApplicationsAdministeredBy(admin) if admin else storage.listApplications())
    ctx.emit([a.publicDict() for a in apps], "\n".join(_appLines(a) for a in apps) or "no applications")
    return 0


async def _appShow(ctx: _Context) -> int:
    app = await _requireApp(ctx, ctx.args.appId)
    keys = await (await ctx.storage()).listKeys(app.id)
    human = (
        _appLines(app)
        + "\n  keys:\n"
        + ("\n".join("    " + _keyLines(k).replace("\n", "\n    ") for k in keys) or "    -")
    )
    ctx.emit({**app.publicDict(), "keys": [k.publicDict() for k in keys]}, human)
    return 0


async def _appRename(ctx: _Context) -> int:
    app = await (await ctx.storage()).updateApplication(ctx.args.appId, name=ctx.args.name)
    ctx.emit(app.publicDict(), f"renamed\n{_appLines(app)}")
    return 0


async def _appOrigins(ctx: _Context) -> int:
    args = ctx.args
    if args.clear and args.origins:
        raise CommandError("give origins or --clear, not both")
    if not args.clear and not args.origins:
        app = await _requireApp(ctx, args.appId)
        ctx.emit(
            list(app.allowed_origins),
            "\n".join(app.allowed_origins) or "no list: any origin the server allows",
        )
        return 0
    app = await (await ctx.storage()).updateApplication(args.appId, allowedOrigins=args.origins)
    ctx.emit(app.publicDict(), _appLines(app))
    # Running servers cache the list with the application's keys: the same broadcast.
    await ctx.keysChanged(appId=args.appId)
    return 0


async def _appAdmins(ctx: _Context) -> int:
    args = ctx.args
    current = await _requireApp(ctx, args.appId)
    admins = set(current.admins if args.set is None else args.set)
    admins |= set(args.add)
    admins -= set(args.remove)
    app = await (await ctx.storage()).updateApplication(args.appId, admins=admins)
    ctx.emit(app.publicDict(), _appLines(app))
    return 0


async def _appDelete(ctx: _Context) -> int:
    await (await ctx.storage()).deleteApplication(ctx.args.appId)
    ctx.emit({"deleted": ctx.args.appId}, f"deleted application {ctx.args.appId} and its keys")
    await ctx.keysChanged(appId=ctx.args.appId)
    return 0


async def _keyCreate(ctx: _Context, purpose: str | None = None) -> int:
    expires = parseExpiry(ctx.args.expires, ctx.now())
    key = await (await ctx.storage()).createKey(
        ctx.args.appId,
        ctx.createdBy(),
        purpose=ctx.args.purpose if purpose is None else purpose,
        expires=expires,
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


async def _keyList(ctx: _Context) -> int:
    await _requireApp(ctx, ctx.args.appId)
    keys = await (await ctx.storage()).listKeys(ctx.args.appId)
    ctx.emit([k.publicDict() for k in keys], "\n".join(_keyLines(k) for k in keys) or "no keys")
    return 0


async def _keyRevoke(ctx: _Context) -> int:
    key = await (await ctx.storage()).revokeKey(ctx.args.keyId)
    ctx.emit(key.publicDict(), f"revoked key {key.id} at {isoformat(key.revoked_at)}")
    await ctx.keysChanged(keyId=key.id)
    return 0


async def _keyDelete(ctx: _Context) -> int:
    await (await ctx.storage()).deleteKey(ctx.args.keyId)
    ctx.emit({"deleted": ctx.args.keyId}, f"deleted key {ctx.args.keyId}")
    await ctx.keysChanged(keyId=ctx.args.keyId)
    return 0


async def _usableKey(ctx: _Context, keyId: str) -> Key:
    key = await (await ctx.storage()).getKey(keyId)
    if key is None:
        raise CommandError(f"no key {keyId}")
    if key.revoked:
        raise CommandError(f"key {keyId} is revoked")
    if key.isExpired(ctx.now()):
        raise CommandError(f"key {keyId} expired at {isoformat(key.expires)}")
    return key


async def _token(ctx: _Context, channel: str | None = None) -> int:
    args = ctx.args
    key = await _usableKey(ctx, args.keyId)
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
        channel if channel is not None else args.channel,
        pub=args.pub,
        sub=args.sub,
        presence=presence,
        expiresAt=expires,
    )
    ctx.emit({"token": token, "keyId": key.id, "expires": isoformat(expires)}, token)
    return 0


async def _publish(ctx: _Context) -> int:
    args, env = ctx.args, ctx.environ
    try:
        message = json.loads(args.message)
    except ValueError as e:
        raise CommandError(f"the message is not JSON: {e}") from None
    url = args.url or env.get("PANDAPUSH_URL") or "http://localhost:3000"
    client = _oneShotClient(ctx.reactor)
    token = args.token or env.get("PANDAPUSH_TOKEN")
    if token:
        publisher = Publisher(url, token=token, client=client)
    else:
        keyId = args.key or env.get("PANDAPUSH_KEY_ID")
        secret = args.secret or env.get("PANDAPUSH_KEY_SECRET")
        if not keyId:
            raise CommandError("publish needs --key (and --secret) or --token")
        if not secret:
            secret = (await _usableKey(ctx, keyId)).secret
        publisher = Publisher(url, keyId, secret, client=client)
    await publisher.publish(args.channel, message)
    ctx.emit({"published": args.channel}, f"published to {args.channel}")
    return 0


def _oneShotClient(reactor: Any) -> Any:
    """An HTTP client that keeps no connection open after its request: the command exits next."""
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    if reactor is None:
        from twisted.internet import reactor
    return HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))


async def _add(ctx: _Context) -> int:
    ctx.args.created_by = ctx.args.user
    return await _appCreate(ctx, name=ctx.args.name, admins=[ctx.args.user])


async def _addKey(ctx: _Context) -> int:
    ctx.args.created_by = ctx.args.user
    await _requireApp(ctx, ctx.args.appId)
    return await _keyCreate(ctx, purpose=ctx.args.purpose)


async def _show(ctx: _Context) -> int:
    if ctx.args.appId:
        return await _appShow(ctx)
    storage = await ctx.storage()
    shown = []
    lines = []
    for app in await storage.listApplications():
        keys = await storage.listKeys(app.id)
        shown.append({**app.publicDict(), "keys": [k.publicDict() for k in keys]})
        lines.append(_appLines(app))
        lines.extend("    " + _keyLines(k).replace("\n", "\n    ") for k in keys)
    ctx.emit(shown, "\n".join(lines) or "no applications")
    return 0


async def _genToken(ctx: _Context) -> int:
    args = ctx.args
    key = await _usableKey(ctx, args.keyId)
    if key.application_id != args.appId:
        raise CommandError(f"key {key.id} belongs to application {key.application_id}, not {args.appId}")
    channel = args.channel
    if not channel.startswith(f"/{args.appId}/"):
        channel = f"/{args.appId}/{channel.lstrip('/')}"
    return await _token(ctx, channel=channel)


async def _serve(ctx: _Context) -> int:
    raise CommandError("`serve` runs the server in this process: use the pandapush command, not run()")


def _serveForever(args: argparse.Namespace, serverOptions: Sequence[str]) -> None:
    """
    ``twistd --nodaemon --pidfile= pandapush <serverOptions>``: the server in the
    foreground, as containers want it. Database options given before ``serve`` reach
    it through the environment variables it reads.
    """
    from twisted.scripts.twistd import run as twistd

    for option, variable in (
        ("database", "DATABASE"),
        ("database_path", "DATABASE_PATH"),
        ("database_address", "DATABASE_ADDRESS"),
        ("database_port", "DATABASE_PORT"),
        ("database_username", "DATABASE_USERNAME"),
        ("database_password", "DATABASE_PASSWORD"),
        ("database_name", "DATABASE_NAME"),
        ("database_schema", "DATABASE_SCHEMA"),
        ("redis_hosts", "REDIS_HOSTS"),
        ("redis_namespace", "REDIS_NAMESPACE"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            os.environ[variable] = str(value)
    sys.argv = ["pandapush serve", "--nodaemon", "--pidfile=", "pandapush", *serverOptions]
    twistd()


async def _dispatch(ctx: _Context) -> int:
    try:
        handler: Callable[[_Context], Awaitable[int]] = ctx.args.handler
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
    ctx = _Context(args, environ, out, reactor, err)

    def refused(failure: Any) -> int:
        failure.trap(CommandError, StorageError, PublishError, ValueError, ConnectError)
        error = failure.value
        if isinstance(error, NoSuchKeyError):
            message = f"no key {error}"
        elif isinstance(error, NoSuchApplicationError):
            message = f"no application {error}"
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
    if getattr(args, "handler", None) is _serve:
        _serveForever(args, serverOptions)
        return

    async def command(reactor: Any) -> None:
        status = await run(arguments, reactor=reactor)
        if status:
            raise SystemExit(status)

    task.react(lambda reactor: Deferred.fromCoroutine(command(reactor)))


if __name__ == "__main__":
    main()
