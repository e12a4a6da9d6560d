"""Per-application allowed origins, enforced on every Bayeux subscribe and publish.

``--allowed-origins`` is checked when a connection opens (CORS, the websocket
handshake), before any channel is known. An application may narrow it with its own
list (``allowed_origins``, set in the admin API, the console or ``pandapush app
origins``): a message for ``/<appId>/...`` arriving from a browser whose origin is not
in that application's list is refused with ``403:<channel>:Origin not allowed``. One
connection may serve several applications, so the check is per message, not per
connection. An application without a list accepts every origin the server accepts.
``null`` (sandboxed iframes, file:// pages) is in a list only if the list names it
(stored as ``null``, whatever its case), as for ``--allowed-origins``.

The origin is the connection's ``Origin`` header (:attr:`MessageContext.origin`); for
callback-polling, whose script tags send none, the origin of the ``Referer``. A
message without either comes from something that is not a browser page (a server, a
command line) and is not checked here: an origin list keeps other web sites from using
an application's channels in their visitors' browsers, it cannot authenticate a client
that chooses its own headers. Callback-polling without a ``Referer`` is the exception:
it is a browser that hid where it runs, and is refused by applications with a list.

Lists are cached per application for the key cache's TTL, and forgotten whenever the
key cache invalidates the application, by an :class:`~pandapush.auth.appcache.AppCache`.
While the storage cannot answer (PostgreSQL stopped), a list read before is used as
last read and asked for again every few seconds, as the key cache does with keys. An
application whose list this node never read is not checked meanwhile (logged once per
outage): refusing every browser, public channels included, for as long as the database
is down would turn an outage of the admin side into one of the service, while the lists
only keep other sites' pages out, and credentials still decide everything else.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from pandapush.auth.appcache import DEFAULT_TTL, AppCache
from pandapush.auth.keycache import KeyCache
from pandapush.auth.rules import PUBLISH, SUBSCRIBE, parseChannel
from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.errors import BayeuxError
from pandapush.bayeux.message import SUBSCRIBE as SUBSCRIBE_CHANNEL
from pandapush.bayeux.message import subscriptionChannels
from pandapush.interfaces import PUBLISHES, IScopedExtension

__all__ = ["ORIGIN_NOT_ALLOWED", "AppOrigins", "OriginExtension", "originRefusal"]

Message = dict[str, Any]
Origins = frozenset[str] | None

ORIGIN_NOT_ALLOWED = "Origin not allowed"
_JSONP = "callback-polling"


def originRefusal(channel: str) -> str:
    """The Bayeux ``error`` of a message refused for its origin."""
    return str(BayeuxError(BayeuxError.CHANNEL_FORBIDDEN, [channel], ORIGIN_NOT_ALLOWED))


class _ApplicationStore(Protocol):
    def getApplication(self, applicationId: str) -> Deferred[Any]: ...


def _originsOf(application: Any) -> Origins:
    listed = getattr(application, "allowed_origins", ()) if application is not None else ()
    return frozenset(listed) if listed else None


class AppOrigins(AppCache[Origins]):
    """
    Each application's allowed origins (None: no list of its own, or no such
    application), from storage, cached for ``ttl`` seconds. An application never read
    while the storage fails is not checked (None; see the module's docstring).
    """

    def __init__(
        self,
        storage: _ApplicationStore,
        clock: IReactorTime,
        keys: KeyCache | None = None,
        ttl: float = DEFAULT_TTL,
        maxEntries: int = 100_000,
    ) -> None:
        def load(appId: str) -> Deferred[Origins]:
            return defer.maybeDeferred(storage.getApplication, appId).addCallback(_originsOf)

        super().__init__(
            load, clock, keys, ttl, maxEntries, unknown=lambda appId: None, what="allowed origins"
        )
        self.storage = storage


def _channelsOf(message: Message) -> list[str]:
    channel = message.get("channel")
    if not isinstance(channel, str):
        return []
    if channel == "/meta/subscribe":
        return subscriptionChannels(message)
    if channel == "/meta" or channel.startswith("/meta/"):
        return []
    return [channel]


@implementer(IScopedExtension)
class OriginExtension:
    """
    Refuses subscribes and publishes on an application's channels from browser
    origins outside the application's list. Runs after the tenancy extension (whose
    refusals come first, in the contract's order) and before presence (so a refused
    subscribe joins nobody). Synchronous when the lists are cached.
    """

    # What the hooks act on (IScopedExtension): the router skips them for the rest.
    incomingOn: frozenset[str] = frozenset({SUBSCRIBE_CHANNEL, PUBLISHES})
    outgoingOn: frozenset[str] = frozenset()

    _log = Logger()

    def __init__(self, origins: AppOrigins) -> None:
        self.origins = origins

    def incoming(self, message: Message, context: MessageContext) -> Message | Deferred[Message]:
        if context.trusted or "error" in message:
            return message
        if not context.headers.get("origin") and context.transport != _JSONP:
            # What context.origin makes None of, and lets through below, without its call:
            # every message from a server (the bench's publishers) passes here.
            return message
        origin = context.origin
        if origin is None and context.transport != _JSONP:
            return message
        channels = _channelsOf(message)
        if not channels:
            return message
        operation = SUBSCRIBE if message.get("channel") == "/meta/subscribe" else PUBLISH
        wanted: list[tuple[str, str]] = []
        for channel in channels:
            parsed = parseChannel(channel, operation)
            if parsed is not None:
                wanted.append((channel, parsed.appId))
        if not wanted:
            return message
        missing = []
        for channel, appId in wanted:
            known, allowed = self.origins.peek(appId)
            if not known:
                missing.append(appId)
            elif allowed is not None and origin not in allowed:
                message["error"] = originRefusal(channel)
                return message
        if not missing:
            return message
        return Deferred.fromCoroutine(self._slow(message, wanted, origin))

    async def _slow(self, message: Message, wanted: list[tuple[str, str]], origin: str | None) -> Message:
        for channel, appId in wanted:
            try:
                allowed = await self.origins.get(appId)
            except Exception:
                self._log.failure("could not read the allowed origins of {appId}", appId=appId)
                message["error"] = str(BayeuxError.serverError())
                return message
            if allowed is not None and origin not in allowed:
                message["error"] = originRefusal(channel)
                return message
        return message

    def outgoing(self, reply: Message, context: MessageContext) -> Message:
        return reply
