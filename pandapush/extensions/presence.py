"""Presence: who else is subscribed to ``/<app>/presence/...``.

An extension on the router plus a listener on the engine. The member list and
the membership itself live in the engine (so the Redis engine shares them
between nodes); this module only speaks the contract's messages:

- the subscriber's own subscribe reply carries
  ``ext.presence = {"subscribe": {<id>: <presence>, ...every member...}}``;
- everyone else on the channel receives ``{"subscribe": {<id>: <presence>}}``
  when a member appears, and ``{"unsubscribe": {<id>: null}}`` when its last
  connection leaves (unsubscribe, disconnect, closed socket, or expiry).

The presence object comes from the subscriber's token only: the tenancy
extension verifies the token and leaves it in ``context.attributes["presence"]``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from pandapush.bayeux import json
from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.errors import BayeuxError
from pandapush.bayeux.message import SUBSCRIBE, subscriptionChannels
from pandapush.interfaces import IRouter, IScopedExtension
from pandapush.listeners import EngineListener

__all__ = ["PresenceExtension", "isPresenceChannel"]

Message = dict[str, Any]

#: Pusher's defaults: 100 members per presence channel, 1 KB of member data.
DEFAULT_MAX_MEMBERS = 100
DEFAULT_MAX_DATA = 1024


def isPresenceChannel(channel: str) -> bool:
    """``/<app>/presence/<path...>`` with no wildcard."""
    parts = channel.split("/")
    return len(parts) >= 4 and parts[2] == "presence" and parts[-1] not in ("*", "**")


@implementer(IScopedExtension)
class PresenceExtension(EngineListener):
    """Joins presence subscribers to their channel's membership and announces changes."""

    # What the hooks act on (IScopedExtension): the router skips them for the rest.
    incomingOn: frozenset[str] = frozenset({SUBSCRIBE})
    outgoingOn: frozenset[str] = frozenset({SUBSCRIBE})

    _log = Logger()

    def __init__(
        self, router: IRouter, maxMembers: int = DEFAULT_MAX_MEMBERS, maxDataSize: int = DEFAULT_MAX_DATA
    ) -> None:
        self.router = router
        self.engine = router.engine
        self.maxMembers = maxMembers
        self.maxDataSize = maxDataSize
        self.engine.addListener(self)

    # IExtension

    def incoming(self, message: Message, context: MessageContext) -> Message | Deferred[Any]:
        if message.get("channel") != "/meta/subscribe" or "error" in message:
            return message
        channels = [c for c in subscriptionChannels(message) if isPresenceChannel(c)]
        presence = context.attributes.get("presence")
        if not channels or not isinstance(presence, dict):
            return message
        if len(json.dumps(presence)) > self.maxDataSize:
            message["error"] = str(
                BayeuxError(403, [], f"Presence data larger than {self.maxDataSize} bytes")
            )
            return message
        return Deferred.fromCoroutine(self._checkRoom(message, channels, str(presence.get("id"))))

    async def _checkRoom(self, message: Message, channels: list[str], memberId: str) -> Message:
        for channel in channels:
            members = await self.engine.presenceMembers(channel)
            if memberId not in members and len(members) >= self.maxMembers:
                message["error"] = str(
                    BayeuxError(403, [channel], f"Presence channel is full ({self.maxMembers} members)")
                )
                break
        return message

    def outgoing(self, reply: Message, context: MessageContext) -> Message | Deferred[Any]:
        if reply.get("channel") != "/meta/subscribe" or not reply.get("successful"):
            return reply
        presence = context.attributes.get("presence")
        clientId = reply.get("clientId")
        if not isinstance(presence, dict) or not isinstance(clientId, str):
            return reply
        channels = [c for c in subscriptionChannels(reply) if isPresenceChannel(c)]
        if not channels:
            return reply
        return Deferred.fromCoroutine(self._join(reply, clientId, channels, presence))

    async def _join(
        self, reply: Message, clientId: str, channels: list[str], presence: dict[str, Any]
    ) -> Message:
        memberId = str(presence.get("id"))
        members: dict[str, Any] = {}
        for channel in channels:
            members = await self.engine.presenceJoin(clientId, channel, memberId, presence)
        ext = reply.get("ext")
        if not isinstance(ext, dict):
            ext = reply["ext"] = {}
        ext["presence"] = {"subscribe": members}
        return reply

    # IEngineListener

    def memberJoined(self, channel: str, memberId: str, data: Any, clientId: str) -> None:
        # The joiner learns the member list from its own reply; announce to the rest.
        self._announce(channel, {"subscribe": {memberId: data}}, exclude=clientId)

    def memberLeft(self, channel: str, memberId: str) -> None:
        self._announce(channel, {"unsubscribe": {memberId: None}})

    def _announce(self, channel: str, data: Any, exclude: str | None = None) -> None:
        # Not kept: a notice of who came and went is not a message to recover.
        d = self.router.publish(channel, data, exclude=exclude, history=False)
        d.addErrback(
            lambda f: self._log.failure("presence announcement on {channel} failed", f, channel=channel)
        )
