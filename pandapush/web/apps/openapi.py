"""``GET /openapi.json``: the server API (and ``POST /channel/...``) as an OpenAPI 3.1 document.

Written by hand, next to the routes: ``tests/test_server_api_openapi.py`` holds it to the
code, checking that every route of :data:`pandapush.web.apps.ROUTES` is documented and
nothing else is, and that the answers of a real server validate against the schemas here.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import Resource

import pandapush
from pandapush.bayeux import json
from pandapush.web.apps.publish import MAX_BATCH, MAX_CHANNELS

__all__ = ["REST_PUBLISH_PATH", "OpenAPIResource", "document"]

#: Documented here, served by :mod:`pandapush.web.publish` (not a server API route).
REST_PUBLISH_PATH = "/channel/{appId}/{channelType}/{path}"

_ERRORS = {
    400: "The request is malformed; the message says why.",
    401: "No credentials (``WWW-Authenticate`` says which kinds).",
    403: "Credentials refused, or a channel of another application, or not granted by the token.",
    404: "Unknown application.",
    409: "``epoch`` is not the channel's: the history the offset counts in is gone (``params``: current).",
    413: "Too many channels or messages, a message too large, or the body too large.",
    429: "Past the key's publishes per second (``Retry-After`` says when to try again).",
    503: "Storage or Redis unavailable, or the deadline passed (``Retry-After``).",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"content": {"application/json": media}}


def _operation(
    summary: str,
    description: str,
    answer: str,
    example: Any,
    errors: tuple[int, ...],
    parameters: tuple[dict[str, Any], ...] = (),
    body: str | None = None,
    bodyExample: Any = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "Done.", **_json(_ref(answer), example)}}
    for status in errors:
        responses[str(status)] = {"description": _ERRORS[status], **_json(_ref("Error"))}
    operation: dict[str, Any] = {
        "summary": summary,
        "description": description,
        "parameters": [_APP, *parameters],
        "responses": responses,
    }
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(_ref(body), bodyExample)}
    return operation


_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "1 to 200 characters: a retry with the same key within 5 minutes publishes nothing again.",
    "schema": {"type": "string"},
}


def _query(name: str, description: str, required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": _STRING}


_STRING = {"type": "string"}
_COUNT = {"type": "integer", "minimum": 0}
_APP = {
    "name": "appId",
    "in": "path",
    "required": True,
    "description": "The application's id.",
    "schema": _STRING,
}
_ANY: dict[str, Any] = {}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["code", "params", "message"],
        "properties": {"code": {"type": "integer"}, "params": {"type": "array"}, "message": _STRING},
    },
    "Events": {
        "type": "object",
        "required": ["channels", "data"],
        "properties": {
            "channels": {"type": "array", "minItems": 1, "maxItems": MAX_CHANNELS, "items": _STRING},
            "data": _ANY,
        },
    },
    "Batch": {
        "type": "object",
        "required": ["batch"],
        "properties": {
            "batch": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH,
                "items": {
                    "type": "object",
                    "required": ["channel", "data"],
                    "properties": {"channel": _STRING, "data": _ANY},
                },
            }
        },
    },
    "Empty": {"type": "object", "additionalProperties": False},
    "BatchAnswer": {
        "type": "object",
        "required": ["batch"],
        "additionalProperties": False,
        "properties": {"batch": {"type": "array", "items": _ref("Empty")}},
    },
    "Counts": {
        "type": "object",
        "required": ["subscription_count"],
        "additionalProperties": False,
        "properties": {"subscription_count": _COUNT, "user_count": _COUNT},
    },
    "Channels": {
        "type": "object",
        "required": ["channels"],
        "additionalProperties": False,
        "properties": {"channels": {"type": "object", "additionalProperties": _ref("Counts")}},
    },
    "Channel": {
        "type": "object",
        "required": ["occupied", "subscription_count"],
        "additionalProperties": False,
        "properties": {"occupied": {"type": "boolean"}, "subscription_count": _COUNT, "user_count": _COUNT},
    },
    "Members": {
        "type": "object",
        "required": ["members"],
        "additionalProperties": False,
        "properties": {"members": {"type": "object", "additionalProperties": _ANY}},
    },
    "History": {
        "type": "object",
        "required": ["epoch", "offset", "messages"],
        "additionalProperties": False,
        "properties": {
            "epoch": {"type": ["string", "null"]},
            "offset": _COUNT,
            "messages": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["offset", "data"],
                    "properties": {"offset": _COUNT, "data": _ANY, "id": _ANY},
                },
            },
        },
    },
}

_PATHS: dict[str, Any] = {
    "/apps/{appId}/events": {
        "post": _operation(
            "One message to several channels",
            f"Publishes ``data`` to each of up to {MAX_CHANNELS} channels of the application. Every "
            "channel is checked first: one refused refuses the request and nothing is published.",
            "Empty",
            {},
            (400, 401, 403, 404, 413, 429, 503),
            (_IDEMPOTENCY_KEY,),
            body="Events",
            bodyExample={"channels": ["/app/public/a", "/app/private/b"], "data": {"text": "hi"}},
        )
    },
    "/apps/{appId}/batch_events": {
        "post": _operation(
            "Several messages in one request",
            f"Publishes up to {MAX_BATCH} messages to channels of the application, in the order "
            "given; all are checked before any is published.",
            "BatchAnswer",
            {"batch": [{}, {}]},
            (400, 401, 403, 404, 413, 429, 503),
            (_IDEMPOTENCY_KEY,),
            body="Batch",
            bodyExample={
                "batch": [{"channel": "/app/public/a", "data": 1}, {"channel": "/app/public/b", "data": 2}]
            },
        )
    },
    "/apps/{appId}/channels": {
        "get": _operation(
            "The occupied channels",
            "The application's channels with at least one subscriber, counted on every node. Patterns "
            "and meta channels are not listed. Needs the key and secret.",
            "Channels",
            {"channels": {"/app/presence/room": {"subscription_count": 3, "user_count": 2}}},
            (400, 401, 403, 404, 503),
            (
                _query(
                    "prefix",
                    "A full channel prefix, e.g. /<appId>/presence/ (default: every channel).",
                    False,
                ),
            ),
        )
    },
    "/apps/{appId}/channel": {
        "get": _operation(
            "One channel's subscribers",
            "Whether the channel is occupied, its subscribers (exactly on it, not through a pattern), and "
            "for a presence channel its members.",
            "Channel",
            {"occupied": True, "subscription_count": 3, "user_count": 2},
            (400, 401, 403, 404, 503),
            (_query("name", "The channel, e.g. /<appId>/presence/room."),),
        )
    },
    "/apps/{appId}/members": {
        "get": _operation(
            "A presence channel's members",
            "Each member's id and the presence data of its token.",
            "Members",
            {"members": {"u1": {"id": "u1", "name": "Zoë"}}},
            (400, 401, 403, 404, 503),
            (_query("channel", "A presence channel, /<appId>/presence/..."),),
        )
    },
    "/apps/{appId}/history": {
        "get": _operation(
            "A channel's recent messages",
            "The channel's position (``epoch``, ``offset``) and the messages it keeps, oldest first: after "
            "``since``, or the latest ``limit``. Authorized like a subscribe: a public channel's needs no "
            "credentials, a private or presence channel's the key and secret or a token granting ``sub``.",
            "History",
            {"epoch": "Ab3x9Q_z", "offset": 18, "messages": [{"offset": 18, "data": {"text": "hi"}}]},
            (400, 401, 403, 404, 409, 503),
            (
                _query("channel", "A channel of the application, /<appId>/<type>/<path> (no wildcard)."),
                _query("since", "An offset: the messages after it (default: the latest).", required=False),
                _query("limit", "At most this many messages, 1 to 1000 (default 100).", required=False),
                _query(
                    "epoch", "The epoch ``since`` counts in: 409 if the channel has another.", required=False
                ),
            ),
        )
    },
    "/apps/{appId}/users/{userId}/terminate_connections": {
        "post": _operation(
            "Disconnect a user everywhere",
            "Every client of the application whose presence id is the user, or that subscribed with a "
            "token whose ``user`` claim names it, is disconnected on every node within a second and told "
            "not to reconnect. Needs the key and secret. No body.",
            "Empty",
            {},
            (400, 401, 403, 404, 503),
            ({"name": "userId", "in": "path", "required": True, "schema": _STRING},),
        )
    },
    REST_PUBLISH_PATH: {
        "post": {
            "summary": "One message to one channel",
            "description": "``path`` may hold slashes (``users/123/messages``). The body is JSON, "
            "or a urlencoded form (an object of strings). Answers ``OK`` as text.",
            "parameters": [
                _APP,
                {
                    "name": "channelType",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": ["public", "private", "presence"]},
                },
                {"name": "path", "in": "path", "required": True, "schema": _STRING},
                _IDEMPOTENCY_KEY,
            ],
            "requestBody": {"required": True, **_json(_ANY, {"text": "hello"})},
            "responses": {
                "200": {
                    "description": "Published.",
                    "content": {"text/plain": {"schema": _STRING, "example": "OK"}},
                },
                **{
                    str(status): {"description": _ERRORS[status], **_json(_ref("Error"))}
                    for status in (400, 401, 403, 404, 413, 429, 503)
                },
            },
        }
    },
}


def paths() -> dict[str, Any]:
    """The documented paths (the routes' modules add theirs here)."""
    return _PATHS


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pandapush server API",
            "version": pandapush.__version__,
            "description": "Publishing, channel queries and user connections for a backend. Errors are "
            '``{"code", "params", "message"}``. See docs/http-api.md.',
        },
        "security": [{"basic": []}, {"bearer": []}, {"token": []}],
        "paths": _PATHS,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic", "description": "keyId:secret"},
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A token of the application's key (``Authorization: Token`` works too).",
                },
                "token": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
    }


class OpenAPIResource(Resource):
    """Serves :func:`document`, encoded once."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self._body = json.dumps(document())

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        request.setHeader(b"Access-Control-Allow-Origin", b"*")
        return self._body

    render_HEAD = render_GET
