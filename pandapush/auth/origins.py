"""Per-application allowed origins, enforced on every Bayeux subscribe and publish.

``--allowed-origins`` is checked when a connection opens (CORS, the websocket
handshake), before any channel is known. An application may narrow it with its own
list (``allowed_origins``, set in the admin API, the console or ``pandapush app
origins``): a message for ``/<appId>/...`` arriving from a browser whose origin is not
in that application's list is refused with ``403:<channel>:Origin not allowed``. One
connection may serve several applications, so the check is per message, not per
connection. An application without a list accepts every origin the server accepts.

The origin is the connection's ``Origin`` header (:attr:`MessageContext.origin`); for
callback-polling, whose script tags send none, the origin of the ``Referer``. A
message without either comes from something that is not a browser page (a server, a
command line) and is not checked here: an origin list keeps other web sites from using
an application's channels in their visitors' browsers, it cannot authenticate a client
that chooses its own headers. Callback-polling without a ``Referer`` is the exception:
it is a browser that hid where it runs, and is refused by applications with a list.

Lists are cached per application for the key cache's TTL, and forgotten whenever the
key cache invalidates the application (:meth:`KeyCache.addApplicationObserver`): the
admin API does so on every change, and :mod:`pandapush.auth.keysync` carries it to the
other nodes, as it does for keys.

While the storage cannot answer (PostgreSQL stopped), a list read before is used as
last read and asked for again every few seconds, as the key cache does with keys. An
application whose list this node never read is not checked meanwhile (logged once per
outage): refusing every browser, public channels included, for as long as the database
is down would turn an outage of the admin side into one of the service, while the lists
only keep other sites' pages out, and credentials still decide everything else.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from pandapush.auth.keycache import DEFAULT_TTL, KeyCache
from pandapush.auth.rules import PUBLISH, SUBSCRIBE, parseChannel
from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.errors import BayeuxError
from pandapush.bayeux.message import subscriptionChannels
from pandapush.interfaces import IExtension

__all__ = ["ORIGIN_NOT_ALLOWED", "AppOrigins", "OriginExtension", "originRefusal"]

Message = dict[str, Any]
Origins = frozenset[str] | None

ORIGIN_NOT_ALLOWED = "Origin not allowed"
_JSONP = "callback-polling"
#: Seconds between attempts to re-read a list while the storage fails.
RETRY_AFTER_FAILURE = 5.0


def originRefusal(channel: str) -> str:
    """The Bayeux ``error`` of a message refused for its origin."""
    return str(BayeuxError(BayeuxError.CHANNEL_FORBIDDEN, [channel], ORIGIN_NOT_ALLOWED))


class _ApplicationStore(Protocol):
    def getApplication(self, applicationId: str) -> Deferred[Any]: ...


class AppOrigins:
    """
    Each application's allowed origins (None: no list of its own, or no such
    application), from storage, cached for ``ttl`` seconds.
    """

    _log = Logger()

    def __init__(
        self,
        storage: _ApplicationStore,
        clock: IReactorTime,
        keys: KeyCache | None = None,
        ttl: float = DEFAULT_TTL,
        maxEntries: int = 100_000,
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.ttl = ttl
        self.maxEntries = maxEntries
        self._entries: OrderedDict[str, tuple[Origins, float]] = OrderedDict()
        self._pending: dict[str, Deferred[Origins]] = {}
        # Bumped by every invalidation, so a load that read the old list is not cached.
        self._generation = 0
        self._failing = False
        if keys is not None:
            keys.addApplicationObserver(self.forget)

    def peek(self, appId: str) -> tuple[bool, Origins]:
        """``(True, origins)`` if the answer is cached, else ``(False, None)``."""
        entry = self._entries.get(appId)
        if entry is not None and self.clock.seconds() < entry[1]:
            return True, entry[0]
        return False, None

    def get(self, appId: str) -> Deferred[Origins]:
        known, origins = self.peek(appId)
        if known:
            return defer.succeed(origins)
        pending = self._pending.get(appId)
        if pending is None:
            pending = self._load(appId)
            if pending.called:
                return pending
            self._pending[appId] = pending
        result: Deferred[Origins] = Deferred()

        def share(value: Any) -> Any:
            if isinstance(value, defer.Failure):
                result.errback(value)
                return None
            result.callback(value)
            return value

        pending.addBoth(share)
        return result

    def _load(self, appId: str) -> Deferred[Origins]:
        generation = self._generation

        def loaded(application: Any) -> Origins:
            if self._pending.get(appId) is pending:
                del self._pending[appId]
            if self._failing:
                self._failing = False
                self._log.info("allowed origins can be read again")
            listed = getattr(application, "allowed_origins", ()) if application is not None else ()
            origins = frozenset(listed) if listed else None
            if generation == self._generation and self.ttl > 0:
                self._entries[appId] = (origins, self.clock.seconds() + self.ttl)
                self._entries.move_to_end(appId)
                while len(self._entries) > self.maxEntries:
                    self._entries.popitem(last=False)
            return origins

        def failed(reason: defer.Failure) -> Origins:
            if self._pending.get(appId) is pending:
                del self._pending[appId]
            if not self._failing:
                self._failing = True
                self._log.failure(
                    "could not read allowed origins: lists read before are used, others not checked",
                    reason,
                )
            entry = self._entries.get(appId)
            if entry is None:
                return None
            # Stale, but the last known list: keep it, and ask again in a while.
            self._entries[appId] = (entry[0], self.clock.seconds() + RETRY_AFTER_FAILURE)
            return entry[0]

        pending: Deferred[Origins] = defer.maybeDeferred(self.storage.getApplication, appId)
        pending.addCallbacks(loaded, failed)
        return pending

    def forget(self, appId: str | None) -> None:
        """Forget ``appId``'s list (every list for None)."""
        self._generation += 1
        if appId is None:
            self._entries.clear()
            self._pending.clear()
        else:
            self._entries.pop(appId, None)
            self._pending.pop(appId, None)


def _channelsOf(message: Message) -> list[str]:
    channel = message.get("channel")
    if not isinstance(channel, str):
        return []
    if channel == "/meta/subscribe":
        return subscriptionChannels(message)
    if channel == "/meta" or channel.startswith("/meta/"):
        return []
    return [channel]


@implementer(IExtension)
class OriginExtension:
    """
    Refuses subscribes and publishes on an application's channels from browser
    origins outside the application's list. Runs after the tenancy extension (whose
    refusals come first, in the contract's order) and before presence (so a refused
    subscribe joins nobody). Synchronous when the lists are cached.
    """

    _log = Logger()

    def __init__(self, origins: AppOrigins) -> None:
        self.origins = origins

    def incoming(self, message: Message, context: MessageContext) -> Message | Deferred[Message]:
        if context.trusted or "error" in message:
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
