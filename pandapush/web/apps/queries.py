"""Who is where, cluster-wide: ``GET /apps/<appId>/channels``, ``.../channel``, ``.../members``.

The counts are the engine's (``IEngine.channelOccupancy``, ``occupiedChannels``,
``presenceMembers``): on the Redis engine every node's clients, read from Redis, never
one node's. Each query has a deadline (``queryTimeout``): while Redis is slow or gone
the answer is 503 with ``Retry-After``, never a request left hanging.

- ``channels?prefix=``: the application's occupied channels whose names start with
  ``prefix``, a full channel prefix (``/<appId>/presence/``; without one, every occupied
  channel of the application). Patterns and meta channels are not channels here. Needs
  the application's key and secret.
- ``channel?name=``: ``{"occupied", "subscription_count"}``, and ``user_count`` for a
  presence channel. ``subscription_count`` counts the clients subscribed to exactly that
  channel (a subscriber through ``/*`` or ``/**`` is not counted).
- ``members?channel=``: a presence channel's members, ``{"members": {id: data}}``.

``channel`` and ``members`` take the key and secret, or a token granting ``sub`` on the
channel (what a subscriber could learn, it may ask).
"""

from __future__ import annotations

from typing import Any

from pandapush.auth.rules import QUERY
from pandapush.interfaces import Occupancy
from pandapush.web.apps.api import APICall, APIError, Route

__all__ = ["ROUTES"]

MAX_PREFIX = 200


def _counts(channel: str, occupancy: Occupancy) -> dict[str, int]:
    if channel.startswith("presence/", channel.index("/", 1) + 1):
        return {"subscription_count": occupancy.subscriptions, "user_count": occupancy.users}
    return {"subscription_count": occupancy.subscriptions}


def _required(call: APICall, name: str) -> str:
    value = call.query(name)
    if not value:
        raise APIError(400, f"The query parameter {name} is required", [name])
    return value


async def channels(call: APICall) -> Any:
    own = f"/{call.appId}/"
    prefix = call.query("prefix") or own
    if len(prefix) > MAX_PREFIX or not prefix.startswith(own):
        raise APIError(400, f"prefix must be a channel prefix of this application: {own}...", [prefix])
    await call.keyLogin("Listing channels")
    services = call.services
    found = await call.within(
        services.engine.occupiedChannels(call.appId, prefix), services.queryTimeout, "Listing channels"
    )
    return {"channels": {name: _counts(name, found[name]) for name in sorted(found)}}


async def channel(call: APICall) -> Any:
    name = _required(call, "name")
    principal = await call.login()
    call.channel(principal, name, QUERY)
    services = call.services
    occupancy = await call.within(
        services.engine.channelOccupancy(name), services.queryTimeout, "Counting subscribers"
    )
    return {"occupied": occupancy.subscriptions > 0, **_counts(name, occupancy)}


async def members(call: APICall) -> Any:
    name = _required(call, "channel")
    principal = await call.login()
    parsed = call.channel(principal, name, QUERY)
    if parsed.type != "presence":
        raise APIError(400, f"{name} is not a presence channel: /{call.appId}/presence/...", [name])
    services = call.services
    found = await call.within(
        services.engine.presenceMembers(name), services.queryTimeout, "Reading presence members"
    )
    return {"members": found}


ROUTES = [
    Route("GET", "/apps/{appId}/channels", channels),
    Route("GET", "/apps/{appId}/channel", channel),
    Route("GET", "/apps/{appId}/members", members),
]
