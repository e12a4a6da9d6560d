"""``/meta/subscribe`` and ``/meta/unsubscribe``: all or nothing, with what a client missed.

:class:`SubscriptionHandler` answers both for :class:`~pandapush.router.meta.MessageHandlers`.
Every channel of a message is checked before any is subscribed, so a refused message leaves
the client's subscriptions as they were; a subscribe asking to resume (see
:mod:`pandapush.router.resume`) is subscribed and gets what it missed queued before anything
live. Like the other meta handlers it answers at once while the engine does, else a
Deferred, through the same functions either way. The helpers at the end serve every meta
handler.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from pandapush._deferred import isDeferred, settled
from pandapush.bayeux import channel as channels
from pandapush.bayeux.errors import BayeuxError
from pandapush.bayeux.message import (
    Message,
    extensionError,
    fail,
    makeReply,
)
from pandapush.interfaces import IEngine, Recovery
from pandapush.router.limits import Limits, Refusals, channelRefusal
from pandapush.router.pipeline import Answer, Handled
from pandapush.router.resume import ResumeRequest, answer, resumeRequest

__all__ = ["SubscriptionHandler", "clientError", "succeeded", "succeeding"]


class SubscriptionHandler:
    _log = Logger()

    def __init__(self, engine: IEngine, limits: Limits, refusals: Refusals) -> None:
        self.engine = engine
        self.limits = limits
        self.refusals = refusals

    def handle(self, message: Message, subscribing: bool) -> Answer:
        """Answer a ``/meta/subscribe`` (``subscribing``) or a ``/meta/unsubscribe``."""
        reply = makeReply(message)
        clientId = message.get("clientId")
        subscription = message.get("subscription")
        error = clientError(self.engine, clientId)
        if isDeferred(error):
            return error.addCallback(
                self._subscriptionChecked, message, reply, clientId, subscription, subscribing
            )
        return self._subscriptionChecked(error, message, reply, clientId, subscription, subscribing)

    def _subscriptionChecked(
        self,
        error: str | BayeuxError | None,
        message: Message,
        reply: Message,
        clientId: Any,
        subscription: Any,
        subscribing: bool,
    ) -> Answer:
        reply["subscription"] = subscription if subscription is not None else []
        if subscription is None or subscription == "" or subscription == []:
            error = BayeuxError.parameterMissing("subscription")
        elif not (
            isinstance(subscription, str)
            or (isinstance(subscription, list) and all(isinstance(c, str) for c in subscription))
        ):
            error = BayeuxError.badRequest("subscription")
        error = error or extensionError(message)
        if error is not None:
            return [fail(reply, error)]
        assert isinstance(clientId, str)
        # Each channel once, in order: a list naming one twice asks for it once.
        asked: list[str] = [subscription] if isinstance(subscription, str) else list(subscription or [])
        requested = list(dict.fromkeys(asked))
        limits = self.limits
        # All or nothing: every channel is checked before any is subscribed, so a refused
        # message leaves the client's subscriptions as they were (a subscribe to 10,000
        # channels used to leave the first 128 subscribed), and the error names the first
        # channel that could not be.
        for channel in requested:
            refused = channelRefusal(channel, limits)
            if refused is not None:
                return self.refusals.refuse(reply, *refused)
            if not channels.isValid(channel):
                return [fail(reply, BayeuxError.channelInvalid(channel))]
            if not channels.isSubscribable(channel):
                return [fail(reply, BayeuxError.channelForbidden(channel))]
        if not subscribing:
            return succeeding(self._unsubscribeAll(clientId, requested), reply)
        request = resumeRequest(message, requested, limits.maxSubscriptions)
        if isinstance(request, BayeuxError):
            return [fail(reply, request)]
        current = settled(self.engine.subscriptions(clientId))
        if isDeferred(current):
            return current.addCallback(self._subscribeKnown, reply, clientId, requested, request, limits)
        return self._subscribeKnown(current, reply, clientId, requested, request, limits)

    def _subscribeKnown(
        self,
        current: set[str],
        reply: Message,
        clientId: str,
        requested: list[str],
        request: ResumeRequest,
        limits: Limits,
    ) -> Answer:
        """The subscribe, once the client's ``current`` subscriptions are known."""
        new = [channel for channel in requested if channel not in current]
        room = limits.maxSubscriptions - len(current)
        if len(new) > room:
            return self.refusals.refuse(
                reply,
                "subscriptions",
                BayeuxError(
                    403,
                    [new[max(room, 0)]],
                    f"Too many subscriptions (limit {limits.maxSubscriptions} per client)",
                ),
            )
        if not request.wanted and not request.latest:
            return succeeding(self._subscribeAll(clientId, requested, current), reply)
        # Subscribed, then what was missed queued before anything live (see resume).
        outcomes = settled(
            self.engine.recover(
                clientId,
                lambda: self._subscribeAllDeferred(clientId, requested, current),
                request.wanted,
                request.latest,
            )
        )
        if isDeferred(outcomes):
            return outcomes.addCallback(self._recovered, reply, clientId, requested, request, current)
        return self._recovered(outcomes, reply, clientId, requested, request, current)

    def _recovered(
        self,
        outcomes: dict[str, Recovery],
        reply: Message,
        clientId: str,
        requested: list[str],
        request: ResumeRequest,
        current: set[str],
    ) -> Answer:
        future = answer(reply, request, outcomes)
        if future is None:
            return succeeded(None, reply)
        undone = self._undo(clientId, [c for c in requested if c not in current])
        if isDeferred(undone):
            return undone.addCallback(lambda _: [fail(reply, future)])
        return [fail(reply, future)]

    def _subscribeAll(
        self,
        clientId: str,
        requested: list[str],
        current: set[str],
        start: int = 0,
        added: list[str] | None = None,
    ) -> Deferred[None] | None:
        """
        Subscribe to each of ``requested`` from ``start`` on (``added``: the new ones so far):
        None once done at once, else a Deferred; if the engine fails, undo the new ones and fail.
        """
        if added is None:
            added = []
        try:
            for index in range(start, len(requested)):
                channel = requested[index]
                subscribed = settled(self.engine.subscribe(clientId, channel))
                if isDeferred(subscribed):
                    return subscribed.addCallbacks(
                        self._subscribedOne,
                        self._subscribeFailed,
                        callbackArgs=(clientId, requested, current, index, added),
                        errbackArgs=(clientId, added),
                    )
                if channel not in current:
                    added.append(channel)
        except Exception:
            failure = Failure()
            undone = self._undo(clientId, added)
            if isDeferred(undone):
                return undone.addCallback(lambda _: failure)
            raise
        return None

    def _subscribedOne(
        self, _: object, clientId: str, requested: list[str], current: set[str], index: int, added: list[str]
    ) -> Deferred[None] | None:
        if requested[index] not in current:
            added.append(requested[index])
        return self._subscribeAll(clientId, requested, current, index + 1, added)

    def _subscribeFailed(self, failure: Failure, clientId: str, added: list[str]) -> Failure | Deferred[Any]:
        undone = self._undo(clientId, added)
        if isDeferred(undone):
            return undone.addCallback(lambda _: failure)
        return failure

    def _subscribeAllDeferred(self, clientId: str, requested: list[str], current: set[str]) -> Deferred[None]:
        """:meth:`_subscribeAll` as ``IEngine.recover``'s ``subscribe`` wants it: a Deferred."""
        try:
            subscribed = self._subscribeAll(clientId, requested, current)
        except Exception:
            return defer.fail()
        return subscribed if subscribed is not None else defer.succeed(None)

    def _undo(self, clientId: str, added: list[str], start: int = 0) -> Deferred[None] | None:
        """Unsubscribe from each of ``added`` from ``start`` on, logging (not raising) what fails."""
        for index in range(start, len(added)):
            channel = added[index]
            try:
                undone = settled(self.engine.unsubscribe(clientId, channel))
            except Exception:
                self._log.failure("could not undo the subscription to {channel}", channel=channel)
                continue
            if isDeferred(undone):
                return undone.addCallbacks(
                    self._undoNext,
                    self._undoFailed,
                    callbackArgs=(clientId, added, index),
                    errbackArgs=(clientId, added, index),
                )
        return None

    def _undoNext(self, _: object, clientId: str, added: list[str], index: int) -> Deferred[None] | None:
        return self._undo(clientId, added, index + 1)

    def _undoFailed(
        self, failure: Failure, clientId: str, added: list[str], index: int
    ) -> Deferred[None] | None:
        self._log.failure("could not undo the subscription to {channel}", failure, channel=added[index])
        return self._undo(clientId, added, index + 1)

    def _unsubscribeAll(self, clientId: str, requested: list[str], start: int = 0) -> Deferred[None] | None:
        """Unsubscribe from each of ``requested`` from ``start`` on, in order: None if done at once."""
        for index in range(start, len(requested)):
            unsubscribed = settled(self.engine.unsubscribe(clientId, requested[index]))
            if isDeferred(unsubscribed):
                return unsubscribed.addCallback(self._unsubscribeNext, clientId, requested, index)
        return None

    def _unsubscribeNext(
        self, _: object, clientId: str, requested: list[str], index: int
    ) -> Deferred[None] | None:
        return self._unsubscribeAll(clientId, requested, index + 1)


def clientError(engine: IEngine, clientId: Any) -> BayeuxError | Deferred[BayeuxError | None] | None:
    """The error for a message whose clientId is missing or unknown, else None (now or later)."""
    if clientId is None or clientId == "":
        return BayeuxError.parameterMissing("clientId")
    if not isinstance(clientId, str):
        return BayeuxError.clientUnknown(clientId)
    # An engine that answers at once says so with clientExistsNow (the in-memory one):
    # asked for every connect, subscribe and disconnect, a fired Deferred and looking
    # into it cost more than the answer.
    existsNow = getattr(engine, "clientExistsNow", None)
    if existsNow is not None:
        return None if existsNow(clientId) else BayeuxError.clientUnknown(clientId)
    exists = settled(engine.clientExists(clientId))
    if isDeferred(exists):
        return exists.addCallback(_unknownUnless, clientId)
    return _unknownUnless(exists, clientId)


def _unknownUnless(exists: bool, clientId: str) -> BayeuxError | None:
    return None if exists else BayeuxError.clientUnknown(clientId)


def succeeded(_: object, reply: Message) -> Handled:
    reply["successful"] = True
    return [reply]


def succeeding(done: Deferred[Any] | None, reply: Message) -> Answer:
    """``reply``, successful, once ``done`` (None: done already) has fired."""
    if done is None:
        return succeeded(None, reply)
    return done.addCallback(succeeded, reply)
