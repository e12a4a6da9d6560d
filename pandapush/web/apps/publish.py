"""``POST /apps/<appId>/events`` and ``POST /apps/<appId>/batch_events``: publishing many at once.

``events`` sends one message to up to :data:`MAX_CHANNELS` channels of the application,
``batch_events`` up to :data:`MAX_BATCH` messages to any of its channels, in the order
given. Both check everything before publishing anything: the body, every channel (one
grant check per distinct channel, with one login per request), the key's publish rate
(each message counts), every message's size; one refusal refuses the request as a
whole and nothing is published. Then the router publishes them in one call
(``IRouter.publishBatch``): the in-process engine answers at once, with no Deferred per
message.

Answers, as Pusher's: ``{}`` for ``events``, ``{"batch": [{}, ...]}`` (one object per
message) for ``batch_events``.
"""

from __future__ import annotations

from typing import Any

from pandapush.auth.rules import PUBLISH
from pandapush.bayeux.errors import BayeuxError
from pandapush.bayeux.idempotency import idempotencyKeyError
from pandapush.transports.http import header
from pandapush.web.apps.api import APICall, APIError, Route, unavailable

__all__ = ["MAX_BATCH", "MAX_CHANNELS", "ROUTES"]

MAX_CHANNELS = 100
MAX_BATCH = 100


def _tooMany(what: str, limit: int, given: int) -> APIError:
    return APIError(413, f"At most {limit} {what} in one request, not {given}", [limit])


def _idempotencyKey(call: APICall) -> str | None:
    """The request's ``Idempotency-Key`` (400 if it cannot be one), or None."""
    key = header(call.request, b"idempotency-key")
    if key is not None:
        refused = idempotencyKeyError(key)
        if refused is not None:
            raise APIError(400, refused)
    return key


async def _publish(call: APICall, messages: list[tuple[str, Any]], keys: list[str] | None = None) -> None:
    services = call.services
    try:
        published = (
            services.router.publishBatch(messages, keys) if keys else services.router.publishBatch(messages)
        )
    except Exception:
        raise unavailable("Failed to publish; try again") from None
    try:
        await call.within(published, services.publishTimeout, "Publishing")
    except BayeuxError as refused:
        status = 413 if refused.code == 413 else 400
        raise APIError(status, refused.message, refused.params) from None


async def events(call: APICall) -> Any:
    body = call.body()
    channels = body.get("channels")
    if not isinstance(channels, list) or not channels:
        raise APIError(400, "channels must be a non-empty list of channel names")
    if len(channels) > MAX_CHANNELS:
        raise _tooMany("channels", MAX_CHANNELS, len(channels))
    if "data" not in body:
        raise APIError(400, "data is required: the message to publish")
    if not all(isinstance(name, str) for name in channels):
        raise APIError(400, "channels must be a non-empty list of channel names")
    key = _idempotencyKey(call)
    principal = await call.login()
    distinct = list(dict.fromkeys(channels))
    for name in distinct:
        call.channel(principal, name, PUBLISH)
    await call.throttle(principal, len(distinct))
    data = body["data"]
    # One key for the request, one message per channel: each channel's message is known by both.
    keys = [f"{key}\n{name}" for name in distinct] if key else None
    await _publish(call, [(name, data) for name in distinct], keys)
    return {}


async def batchEvents(call: APICall) -> Any:
    body = call.body()
    batch = body.get("batch")
    if not isinstance(batch, list) or not batch:
        raise APIError(400, 'batch must be a non-empty list of {"channel", "data"} objects')
    if len(batch) > MAX_BATCH:
        raise _tooMany("messages", MAX_BATCH, len(batch))
    key = _idempotencyKey(call)
    principal = await call.login()
    checked: set[str] = set()
    messages: list[tuple[str, Any]] = []
    for position, message in enumerate(batch):
        if not isinstance(message, dict) or "channel" not in message or "data" not in message:
            raise APIError(400, f'batch[{position}] must be an object with "channel" and "data"', [position])
        name = message["channel"]
        if not isinstance(name, str) or name not in checked:
            call.channel(principal, name, PUBLISH)
            checked.add(name)
        messages.append((name, message["data"]))
    await call.throttle(principal, len(messages))
    # One key for the request: each message is known by it and its place in the batch.
    await _publish(call, messages, [f"{key}\n{i}" for i in range(len(messages))] if key else None)
    return {"batch": [{} for _ in messages]}


ROUTES = [
    Route("POST", "/apps/{appId}/events", events),
    Route("POST", "/apps/{appId}/batch_events", batchEvents),
]
