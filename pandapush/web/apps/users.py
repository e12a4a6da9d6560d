"""``POST /apps/<appId>/users/<userId>/terminate_connections``: disconnect a user everywhere.

Every client of the application whose presence id is ``userId``, or that subscribed with
a token whose ``user`` claim is ``userId``, is disconnected on every node within a second
(:class:`pandapush.extensions.users.UserConnections`, in ``services.extra["users"]``):
its held connect is answered with ``advice.reconnect: none`` (client libraries stop
instead of handshaking again), the client is destroyed (its subscriptions end, presence
members leave, sockets close) and its connects for the next minute get the same advice.
Needs the application's key and secret. Answers ``{}`` (as Pusher) once every node has
been told; whether the user had connections is not reported.
"""

from __future__ import annotations

from typing import Any

from pandapush.web.apps.api import APICall, APIError, Route

__all__ = ["ROUTES"]

MAX_USER_ID = 200


async def terminateConnections(call: APICall) -> Any:
    userId = call.params["userId"]
    if len(userId) > MAX_USER_ID:
        raise APIError(400, f"A user id has at most {MAX_USER_ID} characters", [MAX_USER_ID])
    await call.keyLogin("Terminating connections")
    users = call.services.extra["users"]
    await call.within(
        users.terminate(call.appId, userId), call.services.queryTimeout, "Terminating connections"
    )
    return {}


ROUTES = [Route("POST", "/apps/{appId}/users/{userId}/terminate_connections", terminateConnections)]
