"""``GET /apps/<appId>/history?channel=&since=&limit=``: a channel's history over REST.

Authorized exactly like a subscribe to the channel with the same credentials: a public
channel's history needs no credentials (anyone may subscribe to it; credentials sent are
checked all the same), a private or presence channel's needs the application's key and
secret or a token granting ``sub`` on it. The answer is the engine's
(:meth:`IEngine.history`), shared by every node on Redis:
``{"epoch", "offset", "messages": [{"offset", "data", "id"?}, ...]}`` oldest first, the
channel's current position first (``epoch`` null for an application that keeps no
history). With ``since``, the messages after that offset; without it, the latest ``limit``.
With ``epoch`` (the one ``since`` counts in), a channel whose history is another epoch
answers 409 naming the current one, never messages that are not after your offset.
"""

from __future__ import annotations

from typing import Any

from pandapush.auth.checkers import ChannelAccess
from pandapush.auth.rules import SUBSCRIBE, Refusal, parseChannel
from pandapush.bayeux import json
from pandapush.interfaces import MAX_EPOCH_LENGTH
from pandapush.web.apps.api import APICall, APIError, Route
from pandapush.web.http import channelCredentials

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "ROUTES"]

#: Messages answered when ``limit`` is not given, and the most one request may ask for.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def _integer(call: APICall, name: str, default: int | None, lowest: int, highest: int) -> int | None:
    raw = call.query(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 18 or not lowest <= int(raw) <= highest:
        raise APIError(400, f"{name} must be an integer from {lowest} to {highest}", [name])
    return int(raw)


async def history(call: APICall) -> Any:
    name = call.query("channel")
    if not name:
        raise APIError(400, "The query parameter channel is required", ["channel"])
    since = _integer(call, "since", None, 0, 2**62)
    limit = _integer(call, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    epoch = call.query("epoch")
    if epoch is not None and not 0 < len(epoch) <= MAX_EPOCH_LENGTH:
        raise APIError(400, f"epoch must be 1 to {MAX_EPOCH_LENGTH} characters", ["epoch"])
    assert limit is not None
    channel = parseChannel(name, SUBSCRIBE)
    if channel is None or channel.wildcard or channel.type == "meta":
        raise APIError(400, f"Not a channel one can read the history of: {name}", [name])
    if channel.appId != call.appId:
        raise APIError(403, f"{name} is not a channel of application {call.appId}", [name])
    if channel.type != "public" or channelCredentials(call.request, call.appId) is not None:
        principal = await call.login()
        decision = ChannelAccess(principal).check(SUBSCRIBE, channel)
        if isinstance(decision, Refusal):
            raise APIError(403, decision.text, [name])
    elif not await call.appExists():
        raise APIError(404, f"Unknown application {call.appId}")
    services = call.services
    page = await call.within(
        services.engine.history(name, since, limit), services.queryTimeout, "Reading history"
    )
    if not page.epoch:
        return {"epoch": None, "offset": 0, "messages": []}
    if epoch is not None and epoch != page.epoch:
        raise APIError(
            409, "The channel's history changed: your offset counts in another epoch", [page.epoch]
        )
    if epoch is not None and since is not None and since > page.offset:
        raise APIError(400, f"since is beyond the channel's last message ({page.offset})", ["since"])
    return {"epoch": page.epoch, "offset": page.offset, "messages": [_entry(o, p) for o, p in page.messages]}


def _entry(offset: int, payload: bytes) -> dict[str, Any]:
    message = json.loads(payload)
    entry: dict[str, Any] = {"offset": offset, "data": message.get("data")}
    if "id" in message:
        entry["id"] = message["id"]
    return entry


ROUTES = [Route("GET", "/apps/{appId}/history", history)]
