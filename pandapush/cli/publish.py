"""``pandapush publish``: one message to a channel over the server's HTTP API."""

from __future__ import annotations

from typing import Any

from pandapush.cli.context import CommandError, Context
from pandapush.cli.options import addCommand
from pandapush.cli.records import usableKey
from pandapush.publisher import Publisher
from pandapush.web.body import BodyError, parseBody

__all__ = ["register"]


def register(commands: Any) -> None:
    p = addCommand(commands, "publish", "Publish a JSON message to a channel over the HTTP API.", _publish)
    p.add_argument("channel", help="/<app>/<public|private|presence>/path")
    p.add_argument(
        "message",
        help='the message: JSON, or as the HTTP API also takes it ({text:"hi"}; a form: a=1&b=2)',
    )
    p.add_argument("--url", help="the server [$PANDAPUSH_URL or http://localhost:3000]")
    p.add_argument("--key", metavar="KEY", help="key id [$PANDAPUSH_KEY_ID]")
    p.add_argument(
        "--secret", help="key secret [$PANDAPUSH_KEY_SECRET, else read from the database for --key]"
    )
    p.add_argument("--token", help="publish with this token instead of a key")


async def _publish(ctx: Context) -> int:
    args, env = ctx.args, ctx.environ
    # Read as the server reads a request body, so what it would take is taken here
    # and what it would answer 400 is refused before any request.
    try:
        message = parseBody(args.message.encode("utf-8", "surrogateescape"), None)
    except BodyError as e:
        raise CommandError(f"the message is not JSON, the server would refuse it: {e}") from None
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
            secret = (await usableKey(ctx, keyId)).secret
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
