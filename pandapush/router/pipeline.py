"""Every message through the incoming hooks, its handler and the outgoing hooks: in order, once.

One design serves both ways a step can answer. Each step (an extension's hook, the
message's handler, the engine's publish) answers with a value or a Deferred. While the
answers come at once, a batch goes through plain loops: no coroutine, no Deferred per
message (a chat-shaped load spent ~5 % of its time in that machinery when each publish
went through a coroutine). A step whose Deferred has not fired stops the loop and a
callback on that Deferred resumes the same loop at the next step, with the state it
stopped in passed along: nothing runs twice, and the rest of the batch waits in order.

The messages of a batch are handled one after another, so a batch's publishes keep
their order even when an extension must look something up. A held ``/meta/connect`` does
not hold up the rest of its batch: its handler answers :class:`Held`, gathered in its
place once the rest is done; its reply goes through the outgoing hooks when it is
answered (:class:`~pandapush.router.sessions.HeldConnect`).

A Deferred that has already fired is taken at once (:func:`~pandapush._deferred.settled`):
the in-memory engine and cached keys answer so, and a loop that went through a callback
for each of them would grow the stack with the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from pandapush._deferred import isDeferred, settled
from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.delivery import Delivery
from pandapush.bayeux.errors import BayeuxError
from pandapush.bayeux.message import (
    CONNECT,
    DISCONNECT,
    HANDSHAKE,
    SUBSCRIBE,
    UNSUBSCRIBE,
    Message,
    Reply,
    fail,
    makeReply,
)
from pandapush.interfaces import (
    PUBLISHES,
    EngineUnavailableError,
    IClientSocket,
    IConnectBatches,
    IExtension,
    IScopedExtension,
)

__all__ = ["Answer", "Extensions", "Handled", "Held", "MessageHandler", "Pipeline"]

#: An extension's ``incoming`` or ``outgoing``.
Hook = Callable[[Message, MessageContext], Any]
#: The kinds of message an extension's hooks may be scoped to (IScopedExtension).
_KINDS = (HANDSHAKE, CONNECT, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT, PUBLISHES)


class Held:
    """
    A reply that comes later: a held long-poll ``/meta/connect``'s. The batch goes on
    without it and gathers it, in its place, at the end.
    """

    __slots__ = ("replies",)

    def __init__(self, replies: Deferred[list[Reply]]) -> None:
        self.replies = replies


#: What a handler answers one message with.
Handled = list[Reply] | Held
#: That, now or later (a Deferred firing with it).
Answer = Handled | Deferred[Any]


class MessageHandler(Protocol):
    """What answers messages once the incoming hooks let them through."""

    def dispatch(self, message: Message, context: MessageContext, socket: IClientSocket | None) -> Answer:
        """The replies to one message (before the outgoing hooks)."""

    def refuseHandshake(self, message: Message, handshakes: int) -> list[Reply] | None:
        """
        Before any hook: the refusal of a batch's ``handshakes``-th handshake (too
        many clients for one connection), or None to handle it.
        """


class Extensions:
    """
    The router's extensions, in the order they were added, and running their hooks;
    also those of them that see each connect reply's batch (:class:`IConnectBatches`).

    Each message goes through the hooks of the extensions that act on its channel
    (:class:`IScopedExtension`), chosen by one dictionary lookup: a publish went through
    nine hooks each way, two of which did anything with it (~10 % of the router's
    instructions per publish, a sixth of a client's set-up).
    """

    def __init__(self) -> None:
        self._extensions: list[IExtension] = []
        self._batches: list[IConnectBatches] = []
        self._index()

    def add(self, extension: IExtension) -> None:
        self._extensions.append(extension)
        if IConnectBatches.providedBy(extension):
            self._batches.append(extension)  # type: ignore[arg-type]
        self._index()

    def remove(self, extension: IExtension) -> None:
        self._extensions.remove(extension)
        if extension in self._batches:
            self._batches.remove(extension)  # type: ignore[arg-type]
        self._index()

    def _index(self) -> None:
        """Each kind of message's incoming and outgoing hooks, in the extensions' order."""
        extensions = self._extensions
        self._allIncoming = tuple(extension.incoming for extension in extensions)
        self._allOutgoing = tuple(extension.outgoing for extension in extensions)
        # One extension that does not say what it acts on may change any message, its
        # channel included: then every message goes through every hook, as it is added.
        scoped = all(IScopedExtension.providedBy(extension) for extension in extensions)
        self._incoming: dict[str, tuple[Hook, ...]] = {}
        self._outgoing: dict[str, tuple[Hook, ...]] = {}
        for kind in _KINDS:
            self._incoming[kind] = tuple(
                e.incoming
                for e in extensions
                if not scoped or kind in e.incomingOn  # type: ignore[attr-defined]
            )
            self._outgoing[kind] = tuple(
                e.outgoing
                for e in extensions
                if not scoped or kind in e.outgoingOn  # type: ignore[attr-defined]
            )
        # A publish reply without an ``error`` skips the last hooks if they act on error
        # replies only (``outgoingErrorsOn``, the error counter's): a successful publish's
        # acknowledgement went through a call that did nothing. The index they start at, or -1.
        publishing = [e for e in extensions if not scoped or PUBLISHES in e.outgoingOn]  # type: ignore[attr-defined]
        errorsFrom = len(publishing)
        while (
            scoped and errorsFrom and PUBLISHES in getattr(publishing[errorsFrom - 1], "outgoingErrorsOn", ())
        ):
            errorsFrom -= 1
        self._publishErrorsFrom = errorsFrom if errorsFrom < len(publishing) else -1

    def connecting(self, clientId: str, context: MessageContext) -> bool:
        """Whether ``clientId``'s messages go out only with its connect replies (any extension says so)."""
        batched = False
        for extension in self._batches:
            # Every one hears of the connect, even once one has said yes.
            batched = extension.connecting(clientId, context) or batched
        return batched

    def batch(
        self, clientId: str, reply: Message, context: MessageContext, deliveries: Sequence[Delivery]
    ) -> Sequence[Delivery]:
        """What a connect reply to ``clientId`` carries, once every batching extension has seen it."""
        for extension in self._batches:
            deliveries = extension.batch(clientId, reply, context, deliveries)
        return deliveries

    def incoming(
        self, message: Message, context: MessageContext
    ) -> Message | Deferred[Message | None] | None:
        """
        ``message`` through the incoming hooks: the message to handle, None if a hook
        dropped it, or a Deferred of either. A hook that raises, or whose Deferred
        fails, fails the call.
        """
        # The hooks for the message's kind, inline: this runs once per message.
        channel = message.get("channel")
        if type(channel) is str:
            hooks = self._incoming.get(channel)
            if hooks is None:
                hooks = self._allIncoming if channel.startswith("/meta") else self._incoming[PUBLISHES]
        else:
            hooks = self._allIncoming
        return self._incomingFrom(hooks, message, context, 0)

    def _incomingFrom(
        self, hooks: tuple[Hook, ...], message: Message, context: MessageContext, start: int
    ) -> Message | Deferred[Message | None] | None:
        for index in range(start, len(hooks)):
            result = hooks[index](message, context)
            # A hook answers with the message (a dict) nearly always: told apart from a
            # Deferred by its type, without Deferred's ABCMeta isinstance (see isDeferred).
            if type(result) is not dict and isinstance(result, Deferred):
                result = settled(result)
                if isDeferred(result):
                    return result.addCallback(self._incomingAnswered, hooks, context, index + 1)
            if result is None:
                return None
            message = result
        return message

    def _incomingAnswered(
        self, message: Message | None, hooks: tuple[Hook, ...], context: MessageContext, start: int
    ) -> Message | Deferred[Message | None] | None:
        if message is None:
            return None
        return self._incomingFrom(hooks, message, context, start)

    def outgoing(self, replies: list[Reply], context: MessageContext) -> list[Reply] | Deferred[list[Reply]]:
        """
        The replies through the outgoing hooks (deliveries pass untouched, a reply a
        hook drops is left out): now, or a Deferred if a hook answers late.
        """
        if not self._extensions:
            return replies
        return self._outgoingFrom(replies, context, [], 0, 0, None)

    def _outgoingFrom(
        self,
        replies: list[Reply],
        context: MessageContext,
        out: list[Reply],
        position: int,
        start: int,
        resumed: Message | None,
    ) -> list[Reply] | Deferred[list[Reply]]:
        """
        Replies ``position`` on into ``out``. ``resumed``: reply ``position`` as the hook
        before ``start`` answered it late, to go on with at hook ``start``.
        """
        while position < len(replies):
            reply = replies[position] if resumed is None else resumed
            resumed = None
            if isinstance(reply, dict):
                # The hooks for the reply's kind, as for incoming: inline, once per reply.
                channel = reply.get("channel")
                errorsFrom = -1
                if type(channel) is str:
                    hooks = self._outgoing.get(channel)  # type: ignore[assignment]
                    if hooks is None:
                        if channel.startswith("/meta"):
                            hooks = self._allOutgoing
                        else:
                            hooks = self._outgoing[PUBLISHES]
                            errorsFrom = self._publishErrorsFrom
                else:
                    hooks = self._allOutgoing
                index = start
                stop = len(hooks)
                while index < stop:
                    if index == errorsFrom and "error" not in reply:
                        # Told from the reply as the hooks before left it.
                        stop = index  # the hooks left act on error replies only
                        continue
                    result = hooks[index](reply, context)
                    if type(result) is not dict and isinstance(result, Deferred):
                        result = settled(result)
                        if isDeferred(result):
                            return result.addCallback(
                                self._outgoingAnswered, replies, context, out, position, index + 1
                            )
                    if result is None:
                        break
                    reply = result
                    index += 1
                else:
                    out.append(reply)
            else:
                out.append(reply)
            position += 1
            start = 0
        return out

    def _outgoingAnswered(
        self,
        reply: Message | None,
        replies: list[Reply],
        context: MessageContext,
        out: list[Reply],
        position: int,
        start: int,
    ) -> list[Reply] | Deferred[list[Reply]]:
        if reply is None:
            return self._outgoingFrom(replies, context, out, position + 1, 0, None)
        return self._outgoingFrom(replies, context, out, position, start, reply)


class Pipeline:
    """Batches of messages through the extensions and the handler, in order."""

    _log = Logger()

    def __init__(self, extensions: Extensions, handler: MessageHandler) -> None:
        self.extensions = extensions
        self.handler = handler

    def process(
        self, messages: list[Any], context: MessageContext, socket: IClientSocket | None
    ) -> list[Reply] | Deferred[list[Reply]]:
        """
        The replies to a batch (and, after a long-poll connect's reply, its deliveries),
        in the order of the messages: now if every step answered at once, else a Deferred.
        ``context`` is the first message's; each later one gets a fresh one.
        """
        return self._batch(messages, context, socket, 0, [], 0, False)

    # the batch

    def _batch(
        self,
        messages: list[Any],
        context: MessageContext,
        socket: IClientSocket | None,
        index: int,
        out: list[Reply | Held],
        handshakes: int,
        holding: bool,
    ) -> list[Reply] | Deferred[list[Reply]]:
        """Messages ``index`` on, their replies into ``out``; ``holding``: ``out`` has a :class:`Held`."""
        while index < len(messages):
            message = messages[index]
            messageContext = context.forMessage() if index else context
            index += 1
            handled: Answer
            if isinstance(message, dict) and message.get("channel") == HANDSHAKE:
                handshakes += 1
                refused = self.handler.refuseHandshake(message, handshakes)
                if refused is None:
                    handled = self._message(message, messageContext, socket)
                else:
                    handled = self.extensions.outgoing(refused, messageContext)
            else:
                handled = self._message(message, messageContext, socket)
            if type(handled) is not list and isDeferred(handled):
                handled = settled(handled)
                if isDeferred(handled):
                    return handled.addCallback(
                        self._batchAnswered, messages, context, socket, index, out, handshakes, holding
                    )
            if isinstance(handled, Held):
                out.append(handled)
                holding = True
            else:
                out.extend(handled)
        if holding:
            return self._gather(out, 0, [])
        return out  # type: ignore[return-value]  # no Held in it

    def _batchAnswered(
        self,
        handled: Handled,
        messages: list[Any],
        context: MessageContext,
        socket: IClientSocket | None,
        index: int,
        out: list[Reply | Held],
        handshakes: int,
        holding: bool,
    ) -> list[Reply] | Deferred[list[Reply]]:
        if isinstance(handled, Held):
            out.append(handled)
            holding = True
        else:
            out.extend(handled)
        return self._batch(messages, context, socket, index, out, handshakes, holding)

    def _gather(
        self, entries: list[Reply | Held], index: int, out: list[Reply]
    ) -> list[Reply] | Deferred[list[Reply]]:
        """``entries`` from ``index`` on into ``out``, each :class:`Held` replaced by its replies."""
        while index < len(entries):
            entry = entries[index]
            index += 1
            if not isinstance(entry, Held):
                out.append(entry)
                continue
            replies = settled(entry.replies)
            if isDeferred(replies):
                return replies.addCallback(self._gathered, entries, index, out)
            out.extend(replies)
        return out

    def _gathered(
        self, replies: list[Reply], entries: list[Reply | Held], index: int, out: list[Reply]
    ) -> list[Reply] | Deferred[list[Reply]]:
        out.extend(replies)
        return self._gather(entries, index, out)

    # one message

    def _message(self, message: Any, context: MessageContext, socket: IClientSocket | None) -> Answer:
        """
        One message through the incoming hooks, its handler and the outgoing hooks:
        the three steps in one frame while each answers at once (every publish whose
        key is cached), else from the step that answered late on, in
        :meth:`_dispatch` and :meth:`_outgoing`.
        """
        if not isinstance(message, dict):
            return [fail({}, BayeuxError.badRequest())]
        current: Message = message
        try:
            incoming = self.extensions.incoming(message, context)
            # The type looked at first (here and below): a message or replies nearly
            # always, and isDeferred is a call per step of every message.
            if type(incoming) is not dict:
                if incoming is None:
                    return []  # a hook dropped it: no reply
                if isDeferred(incoming):
                    incoming = settled(incoming)
                    if isDeferred(incoming):
                        return incoming.addCallbacks(
                            self._dispatch,
                            self._failed,
                            callbackArgs=(context, socket),
                            errbackArgs=(message,),
                        )
                    if incoming is None:
                        return []
            current = incoming  # type: ignore[assignment]
            handled = self.handler.dispatch(current, context, socket)
            if type(handled) is not list:
                if isDeferred(handled):
                    handled = settled(handled)
                    if isDeferred(handled):
                        return handled.addCallbacks(
                            self._outgoing,
                            self._failed,
                            callbackArgs=(current, context),
                            errbackArgs=(current,),
                        )
                if isinstance(handled, Held):
                    return handled  # its reply goes through the outgoing hooks when it is answered
            replies = self.extensions.outgoing(handled, context)  # type: ignore[arg-type]
            if type(replies) is not list and isDeferred(replies):
                replies = settled(replies)
                if isDeferred(replies):
                    return replies.addErrback(self._failed, current)
        except Exception:
            return self._serverError(current, Failure())
        return replies  # type: ignore[return-value]

    def _dispatch(
        self, message: Message | None, context: MessageContext, socket: IClientSocket | None
    ) -> Answer:
        if message is None:
            return []  # a hook dropped it: no reply
        try:
            handled = self.handler.dispatch(message, context, socket)
            if type(handled) is not list and isDeferred(handled):
                handled = settled(handled)
                if isDeferred(handled):
                    return handled.addCallbacks(
                        self._outgoing,
                        self._failed,
                        callbackArgs=(message, context),
                        errbackArgs=(message,),
                    )
        except Exception:
            return self._serverError(message, Failure())
        return self._outgoing(handled, message, context)

    def _outgoing(self, handled: Handled, message: Message, context: MessageContext) -> Answer:
        if isinstance(handled, Held):
            return handled  # its reply goes through the outgoing hooks when it is answered
        try:
            replies = self.extensions.outgoing(handled, context)
            if type(replies) is not list and isDeferred(replies):
                replies = settled(replies)
                if isDeferred(replies):
                    return replies.addErrback(self._failed, message)
        except Exception:
            return self._serverError(message, Failure())
        return replies

    def _failed(self, failure: Failure, message: Message) -> list[Reply]:
        return self._serverError(message, failure)

    def _serverError(self, message: Message, failure: Failure) -> list[Reply]:
        if failure.check(EngineUnavailableError):
            return [unavailable(makeReply(message), failure.value)]  # type: ignore[arg-type]
        self._log.failure(
            "failed to handle a message on {channel!r}", failure, channel=message.get("channel")
        )
        return [fail(makeReply(message), BayeuxError.serverError())]


def unavailable(reply: Message, error: EngineUnavailableError) -> Message:
    """
    ``reply``, refused because the engine cannot reach its shared state (Redis down):
    ``503::Redis unavailable; try again later`` with advice to retry after the engine's
    ``retryAfter``, never a ``500`` nor a traceback (the engine logs the outage once).
    A ``/meta/connect`` keeps its session; a handshake is simply tried again.
    """
    fail(reply, BayeuxError(503, [], f"{error.what} unavailable; try again later"))
    reply["advice"] = {"reconnect": "retry", "interval": int(error.retryAfter * 1000)}
    return reply
