"""Publishing through the engine: a client's message, once its hooks let it through, or the server's.

:class:`Publisher` serializes each message once, as the
:class:`~pandapush.bayeux.delivery.Delivery` every recipient shares, and answers the
publishing client (:class:`~pandapush.router.meta.MessageHandlers` hands it every message
that is not on a meta channel).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from pandapush._deferred import firedWith
from pandapush.bayeux import channel as channels
from pandapush.bayeux.delivery import Delivery
from pandapush.bayeux.errors import BayeuxError
from pandapush.bayeux.idempotency import idempotencyKeyError, scopedKey
from pandapush.bayeux.message import (
    Message,
    Reply,
    extensionError,
    fail,
    makeReply,
)
from pandapush.interfaces import EngineUnavailableError, IEngine
from pandapush.router.limits import Limits, Refusals, channelRefusal

__all__ = ["MAX_REMEMBERED", "Publisher"]

#: How many publishable channels :class:`Publisher` remembers (then it starts again).
MAX_REMEMBERED = 16384


class Publisher:
    """
    Publishes through the engine: a client's message (its incoming hooks have run) and
    the server's own (REST API, presence, meta events). Each is serialized once, as
    the :class:`~pandapush.bayeux.delivery.Delivery` every recipient shares.
    """

    _log = Logger()

    def __init__(self, engine: IEngine, limits: Limits, refusals: Refusals) -> None:
        self.engine = engine
        self.limits = limits
        self.refusals = refusals
        self._observers: list[Callable[[str, int], None]] = []
        # Channels clients published to that passed the checks of the channel alone
        # (length and depth under the limits, a valid name), with whether they keep
        # history: the same channels come back with every publish, and the checks were
        # five calls per publish. Valid while the channel length limit is the one they
        # were checked under; bounded like the grammar's caches.
        self._publishable: dict[str, bool] = {}
        self._checkedLength = limits.maxChannelLength

    def addObserver(self, observer: Callable[[str, int], None]) -> None:
        """Call ``observer(channel, recipients)`` once per message published (statistics)."""
        self._observers.append(observer)

    def publish(
        self,
        channel: str,
        data: Any,
        exclude: str | None = None,
        history: bool = True,
        idempotencyKey: str | None = None,
    ) -> Deferred[int]:
        """
        Publish from the server itself: no extensions run. Fires with the number of
        recipients. ``exclude`` names a client that should not receive it; without
        ``history`` (presence notices) the message is neither kept nor positioned. A
        second publish with the same ``idempotencyKey`` (checked by the caller:
        :func:`idempotencyKeyError`) in the same application within five minutes is
        acknowledged (0 recipients) and not delivered again.
        """
        published = self.publishNow(channel, data, exclude, history, idempotencyKey)
        return defer.succeed(published) if isinstance(published, int) else published

    def publishNow(
        self,
        channel: str,
        data: Any,
        exclude: str | None = None,
        history: bool = True,
        idempotencyKey: str | None = None,
    ) -> int | Deferred[int]:
        """
        :meth:`publish`, answering the number of recipients itself when the engine
        publishes at once (the in-memory one): a REST publish's hot path, without a
        Deferred made only to be looked into.
        """
        limits = self.limits
        # The channel checks once per channel, as Bayeux publishes remember them (none
        # of those is a meta channel: they are never published to).
        keeps = self._publishable.get(channel)
        if keeps is None or self._checkedLength != limits.maxChannelLength:
            refused = channelRefusal(channel, limits)
            if refused is not None:
                self.refusals.report(refused[0])
                return defer.fail(refused[1])
            if not channels.isValidName(channel) or channels.isMeta(channel):
                return defer.fail(BayeuxError.channelInvalid(channel))
            keeps = self._remember(channel, limits)
        delivery = Delivery.fromMessage({"channel": channel, "data": data}, exclude, history and keeps)
        maxSize = limits.maxMessageSize
        if len(delivery.payload) > maxSize:
            self.refusals.report("message_size")
            return defer.fail(BayeuxError(413, [channel], f"Message larger than {maxSize} bytes"))
        if idempotencyKey is not None:
            delivery.idempotencyKey = scopedKey(channel, idempotencyKey)
        # An engine that answers at once (the in-memory one): the count and the observers
        # without a callback on a Deferred and its run, a fifth of the router's part of a
        # REST publish.
        try:
            recipients = self._publishNow(delivery, channel)
        except Exception:
            return defer.fail()
        if recipients is not None:
            return recipients
        d = self.engine.publish(delivery)
        if self._observers:
            d.addCallback(self._published, channel)
        return d

    def publishBatch(
        self, messages: Sequence[tuple[str, Any]], idempotencyKeys: Sequence[str] | None = None
    ) -> Deferred[list[int]]:
        """
        Publish several messages from the server, in the order given. Every one is checked
        (channel name, size) before any is published: one refused refuses them all. With
        ``idempotencyKeys`` (one per message), each is published once in five minutes.
        """
        deliveries: list[Delivery] = []
        maxSize = self.limits.maxMessageSize
        for channel, data in messages:
            if not channels.isValidName(channel) or channels.isMeta(channel):
                return defer.fail(BayeuxError.channelInvalid(channel))
            delivery = Delivery.fromMessage(
                {"channel": channel, "data": data}, history=not channels.isService(channel)
            )
            if len(delivery.payload) > maxSize:
                self.refusals.report("message_size")
                return defer.fail(BayeuxError(413, [channel], f"Message larger than {maxSize} bytes"))
            deliveries.append(delivery)
        if idempotencyKeys is not None:
            for delivery, key in zip(deliveries, idempotencyKeys, strict=True):
                delivery.idempotencyKey = scopedKey(delivery.channel, key)
        try:
            published = self.engine.publishBatch(deliveries)
        except Exception:
            return defer.fail()
        now = firedWith(published)
        if now:
            # Published at once (the in-process engine): no Deferred per message.
            if isinstance(now[0], Failure):
                return defer.fail(now[0])
            self._publishedBatch(now[0], deliveries)
            return defer.succeed(now[0])

        def done(counts: list[int]) -> list[int]:
            self._publishedBatch(counts, deliveries)
            return counts

        return published.addCallback(done)

    def _publishedBatch(self, counts: list[int], deliveries: list[Delivery]) -> None:
        if self._observers:
            for recipients, delivery in zip(counts, deliveries, strict=True):
                self._published(recipients, delivery.channel)

    def _published(self, recipients: int, channel: str) -> int:
        for observer in self._observers:
            observer(channel, recipients)
        return recipients

    def handle(self, message: Message, channel: str) -> list[Reply] | Deferred[list[Reply]]:
        """The reply to a client's publish: now when the engine published at once, else a Deferred."""
        reply = makeReply(message)
        limits = self.limits
        history = self._publishable.get(channel)
        if history is None or self._checkedLength != limits.maxChannelLength:
            refused = channelRefusal(channel, limits)
            if refused is not None:
                return self.refusals.refuse(reply, *refused)
            if not channels.isValidName(channel):
                return [fail(reply, BayeuxError.channelInvalid(channel))]
            history = self._remember(channel, limits)
        error: str | BayeuxError | None = None
        if "data" not in message:
            error = BayeuxError.parameterMissing("data")
        elif "error" in message:
            error = extensionError(message)
        if error is not None:
            return [fail(reply, error)]
        delivered: Message = {"channel": channel, "data": message["data"]}
        if "id" in message:
            delivered["id"] = message["id"]
        ext = message.get("ext")
        key: Any = None
        if isinstance(ext, dict) and "idempotencyKey" in ext:
            # The publisher's, not the subscribers': not delivered.
            ext = dict(ext)
            key = ext.pop("idempotencyKey")
            keyError = idempotencyKeyError(key)
            if keyError is not None:
                return [fail(reply, BayeuxError(400, [channel], keyError))]
        if ext is not None:
            delivered["ext"] = ext
        delivery = Delivery.fromMessage(delivered, history=history)
        if key is not None:
            delivery.idempotencyKey = scopedKey(channel, key)
        if len(delivery.payload) > limits.maxMessageSize:
            return self.refusals.refuse(
                reply,
                "message_size",
                BayeuxError(413, [channel], f"Message larger than {limits.maxMessageSize} bytes"),
            )
        # _publishNow inline: a client's publish is the hottest path there is, and the call
        # was ~1,000 instructions of a one-recipient publish's ~160,000 (routerpath.py).
        publishNow = getattr(self.engine, "publishNow", None)
        if publishNow is not None:
            try:
                recipients = publishNow(delivery)
                for observer in self._observers:
                    observer(channel, recipients)
            except Exception:
                return self._answer(Failure(), reply, channel)
            # _answer's way, without its call, for the engine and observers that succeed.
            reply["successful"] = True
            return [reply]
        try:
            published = self.engine.publish(delivery)
        except Exception:
            published = defer.fail()
        now = firedWith(published)
        if now:
            return self._answer(now[0], reply, channel)
        return published.addBoth(self._answer, reply, channel)

    def _publishNow(self, delivery: Delivery, channel: str) -> int | None:
        """
        ``delivery`` published by an engine that answers at once (``publishNow``: the
        in-memory one), its observers told: the recipients; None for an engine that
        publishes only through ``publish``. Raises what the engine or an observer raises.
        """
        publishNow = getattr(self.engine, "publishNow", None)
        if publishNow is None:
            return None
        recipients: int = publishNow(delivery)
        for observer in self._observers:
            observer(channel, recipients)
        return recipients

    def _remember(self, channel: str, limits: Limits) -> bool:
        """Whether ``channel``, which passed the checks under ``limits``, keeps history; remembered."""
        publishable = self._publishable
        if self._checkedLength != limits.maxChannelLength or len(publishable) >= MAX_REMEMBERED:
            publishable.clear()
            self._checkedLength = limits.maxChannelLength
        history = publishable[channel] = not channels.isService(channel)
        return history

    def _answer(self, recipients: int | Failure, reply: Message, channel: str) -> list[Reply]:
        try:
            if isinstance(recipients, Failure):
                recipients.raiseException()
            for observer in self._observers:
                observer(channel, recipients)
        except EngineUnavailableError as error:
            # Redis down: the engine logged the outage once; the publisher may try again.
            return [fail(reply, BayeuxError(503, [channel], f"{error.what} unavailable; try again later"))]
        except Exception:
            self._log.failure("engine failed to publish to {channel}", channel=channel)
            return [fail(reply, BayeuxError.publishFailed(channel))]
        reply["successful"] = True
        return [reply]
