"""The tenancy extension: the contract's channel rules on every Bayeux subscribe and publish.

It sits on the router like any Faye extension, so every transport gets the same
rules. On ``/meta/subscribe`` it checks each channel of ``subscription`` in order
(the first refusal refuses the message); on a publish it checks the channel. The
credentials are ``ext.auth`` (``{"token": ...}`` or ``{"key": ..., "secret": ...}``),
and for publishes also ``data.__auth`` as upstream accepted. Both are removed from the
message once read, refused or not, so no delivery can ever carry them.

A refusal becomes the message's ``error`` as ``<code>::<text>`` (Faye clients then
show the contract's text as the error's ``message``). A public subscribe, which anyone
may make, is never refused for its credentials, but good ones are noted like any
other's: ``context.attributes["keyId"]`` names the key, and ``["authenticated"]`` holds
the applications whose own credentials came with the message (the per-application
connection limits tell those clients from strangers). A presence subscribe's presence
object, taken from the verified token only, goes to ``context.attributes["presence"]``
for the presence extension, never into the message.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pandapush._deferred import isDeferred, settled
from pandapush.auth.checkers import AuthRefused, ChannelAuthority
from pandapush.auth.rules import PUBLISH, SUBSCRIBE, Allowed, parseChannel
from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.errors import BayeuxError
from pandapush.interfaces import PUBLISHES, IScopedExtension
from pandapush.storage.errors import StorageUnavailableError

__all__ = ["TenancyExtension"]

Message = dict[str, Any]

SUBSCRIBE_CHANNEL = "/meta/subscribe"


def _takeAuth(message: Message, fromData: bool) -> Any:
    """Remove and return the message's credentials (``ext.auth`` first, then ``data.__auth``)."""
    auth = None
    ext = message.get("ext")
    if isinstance(ext, dict) and "auth" in ext:
        auth = ext.pop("auth")
        if not ext:
            del message["ext"]
    data = message.get("data")
    if isinstance(data, dict) and "__auth" in data:
        dataAuth = data.pop("__auth")
        if fromData and auth is None:
            auth = dataAuth
    return auth


@implementer(IScopedExtension)
class TenancyExtension:
    """Applies :class:`~pandapush.auth.checkers.ChannelAuthority` to client messages."""

    # What the hooks act on (IScopedExtension): the router skips them for the rest.
    incomingOn: frozenset[str] = frozenset({SUBSCRIBE_CHANNEL, PUBLISHES})
    outgoingOn: frozenset[str] = frozenset()

    _log = Logger()

    def __init__(self, authority: ChannelAuthority) -> None:
        self.authority = authority

    def incoming(
        self, message: Message, context: MessageContext
    ) -> Message | Deferred[Message | None] | None:
        if context.trusted:
            return message
        channel = message.get("channel")
        if not isinstance(channel, str):
            return message  # the router answers a missing or odd channel itself
        if channel == SUBSCRIBE_CHANNEL:
            return self._subscribe(message, context)
        if channel == "/meta" or channel.startswith("/meta/"):
            return message
        # A publish: checked here rather than in a method of its own, and its
        # credentials taken with _takeAuth(message, fromData=True) inline, as a frame
        # is ~3 % of the instructions of a key+secret publish through this extension.
        auth = None
        ext = message.get("ext")
        if isinstance(ext, dict) and "auth" in ext:
            auth = ext.pop("auth")
            if not ext:
                del message["ext"]
        data = message.get("data")
        if isinstance(data, dict) and "__auth" in data:
            dataAuth = data.pop("__auth")
            if auth is None:
                auth = dataAuth
        if "error" in message:
            return message
        grant = self.authority.keyGrant(PUBLISH, channel, auth)
        if grant is not None:
            # The hot path (a server's publishes with its key): what _granted notes for a
            # key+secret grant (no presence, user or token expiry), inline.
            attributes = context.attributes
            attributes["keyId"] = grant.keyId
            authenticated = attributes.get("authenticated")
            if authenticated is None:
                attributes["authenticated"] = {grant.appId}
            else:
                authenticated.add(grant.appId)
            if grant.keyExpires is not None:
                attributes["keyExpires"] = grant.keyExpires
            return message
        if isinstance(auth, dict) and auth.get("token"):
            # A browser's publish (pandapush.webhooks: client events), once granted.
            context.attributes["byToken"] = True
        return self._check(PUBLISH, channel, auth, message, context)

    def outgoing(self, reply: Message, context: MessageContext) -> Message | None:
        return reply

    # checks

    def _subscribe(self, message: Message, context: MessageContext) -> Message | Deferred[Message | None]:
        auth = _takeAuth(message, fromData=False)
        subscription = message.get("subscription")
        if "error" in message:
            return message
        if isinstance(subscription, str):
            return self._check(SUBSCRIBE, subscription, auth, message, context)
        if not isinstance(subscription, list) or not subscription:
            return message  # the router refuses a missing or malformed subscription
        return self._subscribeAll(message, subscription, auth, context)

    def _subscribeAll(
        self, message: Message, subscription: list[Any], auth: Any, context: MessageContext, start: int = 0
    ) -> Message | Deferred[Message | None]:
        """
        Each channel from ``start`` on, in order (the first refusal refuses the message):
        at once while the keys are cached (a reconnect storm's subscribes; a coroutine per
        message was ~1.4 % of its busy samples), else once the key is fetched.
        """
        for index in range(start, len(subscription)):
            channel = subscription[index]
            try:
                allowed = self.authority.decide(SUBSCRIBE, channel, auth)
                if isDeferred(allowed):
                    allowed = settled(allowed)
                    if isDeferred(allowed):
                        return allowed.addBoth(
                            self._subscribeDecided, message, subscription, auth, context, index
                        )
            except Exception:
                self._refuse(message, Failure())
                return message
            self._grant(allowed, channel, context)
        return message

    def _subscribeDecided(
        self,
        allowed: Allowed | Failure,
        message: Message,
        subscription: list[Any],
        auth: Any,
        context: MessageContext,
        index: int,
    ) -> Message | Deferred[Message | None]:
        if isinstance(allowed, Failure):
            self._refuse(message, allowed)
            return message
        self._grant(allowed, subscription[index], context)
        return self._subscribeAll(message, subscription, auth, context, index + 1)

    # outcomes

    def _check(
        self, operation: str, channel: Any, auth: Any, message: Message, context: MessageContext
    ) -> Message | Deferred[Message | None]:
        """
        Decide, synchronously when the key is cached (the hot path: no Deferred per
        message), else once the key is fetched.
        """
        try:
            decision = self.authority.decide(operation, channel, auth)
        except Exception:
            self._refuse(message, Failure())
            return message
        if isinstance(decision, Allowed):
            self._grant(decision, channel, context)
            return message

        def decided(result: Allowed | Failure) -> Message:
            if isinstance(result, Failure):
                self._refuse(message, result)
            else:
                self._grant(result, channel, context)
            return message

        return decision.addBoth(decided)

    def _grant(self, allowed: Allowed, channel: Any, context: MessageContext) -> None:
        tenant = parseChannel(channel, SUBSCRIBE) if allowed.keyId is not None else None
        self._granted(allowed, tenant.appId if tenant is not None else None, context)

    def _granted(self, allowed: Allowed, appId: str | None, context: MessageContext) -> None:
        """Note in the context what ``allowed`` (on a channel of ``appId``) tells the other extensions."""
        attributes = context.attributes
        if allowed.presence is not None:
            attributes["presence"] = allowed.presence
        if allowed.keyId is not None:
            attributes["keyId"] = allowed.keyId
            # The applications whose own credentials came with the message (a key is of one
            # application): their connection limit counts this client as theirs, not a stranger.
            if appId is not None:
                authenticated = attributes.get("authenticated")
                if authenticated is None:
                    attributes["authenticated"] = {appId}
                else:
                    authenticated.add(appId)
        if allowed.keyExpires is not None:
            # For pandapush.extensions.expiry: the subscription ends when its key does.
            attributes["keyExpires"] = allowed.keyExpires
        if allowed.user is not None:
            # For pandapush.extensions.users: terminate_connections finds the client by it.
            attributes["user"] = allowed.user
        if allowed.expires is not None:
            # For pandapush.extensions.expiry: the subscription ends when its token does.
            earlier = attributes.get("tokenExpires")
            attributes["tokenExpires"] = allowed.expires if earlier is None else min(earlier, allowed.expires)

    def _refuse(self, message: Message, failure: Failure) -> None:
        if isinstance(failure.value, AuthRefused):
            message["error"] = failure.value.refusal.bayeuxError
            return
        if isinstance(failure.value, StorageUnavailableError):
            # The key is not cached and the database is down: neither "Could not find
            # key" (the client would give up a good key) nor a bug. The key cache has
            # logged the outage once.
            message["error"] = str(BayeuxError(503, [], "Storage unavailable; try again later"))
            return
        self._log.failure("could not check auth for {channel!r}", failure, channel=message.get("channel"))
        message["error"] = str(BayeuxError.serverError())
