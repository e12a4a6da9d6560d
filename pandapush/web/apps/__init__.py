"""The server API: ``/apps/<appId>/...``, what a backend asks of pandapush beyond one publish.

Authenticated like ``POST /channel/...`` (Basic key:secret, ``Authorization: Token|Bearer``,
``?token=``; a token only for the channels and rights it grants), JSON in and out, errors
as ``{"code", "params", "message"}``. Documented in ``docs/http-api.md`` and in the OpenAPI
document at ``/openapi.json`` (:mod:`pandapush.web.apps.openapi`), which a test holds to
these routes.

A module per group of routes, each with its ``ROUTES`` (and its part of the OpenAPI
document in :mod:`~pandapush.web.apps.openapi`):

- :mod:`~pandapush.web.apps.publish`: ``events``, ``batch_events``;
- :mod:`~pandapush.web.apps.queries`: ``channels``, ``channel``, ``members``;
- :mod:`~pandapush.web.apps.users`: ``users/<userId>/terminate_connections``;
- :mod:`~pandapush.web.apps.history`: ``history``.

Adding a route: write ``async def handler(call: APICall)`` in a module of its own, list
it in that module's ``ROUTES``, add those to :data:`ROUTES` here and its operation to the
OpenAPI document; what the handler needs beyond :class:`APIServices` goes in its ``extra``.
"""

from pandapush.web.apps import history, publish, queries, users
from pandapush.web.apps.api import APICall, APIError, APIServices, Route, ServerAPI

__all__ = ["ROUTES", "APICall", "APIError", "APIServices", "Route", "ServerAPI"]

#: Every route of the server API, in the order they are matched.
ROUTES: list[Route] = [*publish.ROUTES, *queries.ROUTES, *users.ROUTES, *history.ROUTES]
