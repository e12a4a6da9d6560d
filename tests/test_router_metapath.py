"""
The meta channels answered at once, and the same answered late.

With the memory engine and extensions that answer at once, a handshake, a connect and a
subscribe are answered without a Deferred (``processNow`` gives a list): a reconnect storm
is thousands of them. An engine that answers later (Redis) and extensions that answer
later (a key not cached) go through the same handlers in callbacks; these tests pin that
both ways give the same replies, make the same engine calls in the same order, show the
extensions the same messages and contexts, and handle a failing engine the same way.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from pandapush.bayeux.context import MessageContext
from pandapush.engines import history
from pandapush.engines.memory import MemoryEngine
from pandapush.interfaces import IExtension
from pandapush.router import BayeuxRouter
from tests.test_router import FakeSocket

CHANNEL = "/app/public/room"


class Later:
    """Deferreds answered later: each fires with what it stands for when ``release`` is called."""

    def __init__(self) -> None:
        self.pending: list[tuple[Deferred[Any], Deferred[Any]]] = []

    def later(self, answer: Deferred[Any]) -> Deferred[Any]:
        late: Deferred[Any] = Deferred()
        self.pending.append((answer, late))
        return late

    def release(self) -> int:
        """Fire every Deferred handed out so far (and those they lead to): how many."""
        released = 0
        while self.pending:
            answer, late = self.pending.pop(0)
            answer.chainDeferred(late)
            released += 1
        return released


class RecordingEngine:
    """
    The memory engine behind a recorder of the calls the router makes, each answered at
    once (``later`` None) or later (through ``later``).
    """

    _recorded = (
        "createClient",
        "clientExists",
        "subscriptions",
        "subscribe",
        "unsubscribe",
        "destroyClient",
        "recover",
        "ping",
    )

    def __init__(self, engine: MemoryEngine, later: Later | None) -> None:
        self.engine = engine
        self._later = later
        self.calls: list[tuple[Any, ...]] = []
        self.failing: dict[tuple[str, str], Exception] = {}
        self.ids: dict[str, str] = {}

    def __getattr__(self, name: str) -> Any:
        if name == "clientExistsNow":
            # Hidden: the router asks clientExists, recorded, answering now or later.
            raise AttributeError(name)
        method = getattr(self.engine, name)
        if name not in self._recorded:
            return method

        def recorded(*args: Any) -> Any:
            self.calls.append((name, *[self._named(a) for a in args]))
            failure = self.failing.get((name, args[1] if len(args) > 1 else ""))
            answer = defer.fail(failure) if failure is not None else method(*args)
            if name == "createClient":
                answer.addCallback(self._name)
            if self._later is None or not isinstance(answer, Deferred):
                return answer
            return self._later.later(answer)

        return recorded

    def _name(self, clientId: str) -> str:
        self.ids[clientId] = f"client{len(self.ids)}"
        return clientId

    def _named(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.ids.get(value, value)
        if callable(value):
            return "callable"
        return value


@implementer(IExtension)
class Hooks:
    """Records what each hook is shown; answers now, or later through ``later``."""

    def __init__(self, later: Later | None) -> None:
        self._later = later
        self.seen: list[tuple[str, str, list[str]]] = []

    def incoming(self, message: dict[str, Any], context: MessageContext) -> Any:
        self.seen.append(("in", json.dumps(message, sort_keys=True), sorted(context.attributes)))
        context.attributes["hooks"] = True
        return message if self._later is None else self._later.later(defer.succeed(message))

    def outgoing(self, reply: dict[str, Any], context: MessageContext) -> Any:
        self.seen.append(("out", json.dumps(reply, sort_keys=True), sorted(context.attributes)))
        return reply if self._later is None else self._later.later(defer.succeed(reply))


class Side:
    """A router on the memory engine, its engine and hooks answering now or later."""

    def __init__(self, late: bool, engineLate: bool = True, hooksLate: bool = True) -> None:
        self.clock = Clock()
        self.later = Later()
        self.memory = MemoryEngine(self.clock, timeout=30, expiry=10)
        self.engine = RecordingEngine(self.memory, self.later if late and engineLate else None)
        self.router = BayeuxRouter(self.engine, self.clock, timeout=30)  # type: ignore[arg-type]
        self.hooks = Hooks(self.later if late and hooksLate else None)
        self.router.addExtension(self.hooks)
        self.socket = FakeSocket()
        self.late = late

    def process(self, message: dict[str, Any], socket: FakeSocket | None = None) -> Any:
        """The replies to ``message``: a list at once on the synchronous side."""
        answer = self.router.processNow([message], MessageContext("websocket"), socket)
        if not self.late:
            return answer
        assert isinstance(answer, Deferred), answer
        results: list[Any] = []
        answer.addBoth(results.append)
        while not results and self.later.release():
            pass
        [result] = results
        return result

    def named(self, value: Any) -> Any:
        """``value`` as JSON, each client id replaced by its name (clientN), for comparing."""
        text = json.dumps(value, sort_keys=True, default=lambda d: d.payload.decode())
        for clientId, name in self.engine.ids.items():
            text = text.replace(clientId, name)
        return json.loads(text)


class MetaPathTests(TestCase):
    def setUp(self) -> None:
        # Each side's channels get the same epochs, in the order they are made.
        self.epochs = itertools.count()
        self.patch(history, "newEpoch", lambda: f"epoch{next(self.epochs)}")

    def run_both(self, script: Any, **late: bool) -> tuple[Side, Side]:
        """Run ``script(side)`` on a synchronous side and on a late one: both transcripts."""
        now, later = Side(late=False), Side(late=True, **late)
        for side in (now, later):
            self.epochs = itertools.count()
            side.transcript = script(side)  # type: ignore[attr-defined]
        self.assertEqual(now.named(now.transcript), later.named(later.transcript))  # type: ignore[attr-defined]
        self.assertEqual(now.engine.calls, later.engine.calls)
        self.assertEqual(now.named(now.hooks.seen), later.named(later.hooks.seen))
        return now, later

    def setup(self, side: Side, socket: FakeSocket | None = None, **subscribe: Any) -> list[Any]:
        """A client's handshake, first connect and subscribe; everything it was answered."""
        transport = "websocket" if socket is not None else "long-polling"
        handshake = side.process(
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": [transport],
                "id": "1",
            },
            socket,
        )
        clientId = handshake[0]["clientId"]
        connect = side.process(
            {"channel": "/meta/connect", "clientId": clientId, "connectionType": transport, "id": "2"}, socket
        )
        subscribed = side.process(
            {
                "channel": "/meta/subscribe",
                "clientId": clientId,
                "subscription": [CHANNEL],
                "id": "3",
                **subscribe,
            },
            socket,
        )
        return [handshake, connect, subscribed, socket.sent if socket is not None else []]

    def test_answeredAtOnce(self) -> None:
        """
        With the memory engine and hooks that answer at once, a client's setup runs no
        coroutine: each was a Deferred, a cancellation status and a context copy per message.
        """
        coroutines: list[Any] = []
        fromCoroutine = Deferred.fromCoroutine

        def counted(coro: Any) -> Deferred[Any]:
            coroutines.append(coro)
            return fromCoroutine(coro)

        self.patch(Deferred, "fromCoroutine", counted)
        side = Side(late=False)
        handshake, connect, subscribed, _ = self.setup(side)
        self.assertIsInstance(handshake, list)
        self.assertTrue(handshake[0]["successful"])
        self.assertEqual([r["channel"] for r in connect], ["/meta/connect"])
        self.assertTrue(connect[0]["successful"])
        self.assertIsInstance(subscribed, list)
        self.assertEqual(subscribed[0]["ext"]["positions"][CHANNEL]["offset"], 0)
        self.assertEqual(coroutines, [])

    def test_websocketSetup(self) -> None:
        """Over a socket: the same replies (the connect's through the socket), calls and hooks."""
        now, _later = self.run_both(lambda side: self.setup(side, side.socket))
        _handshake, connect, subscribed, sent = now.transcript  # type: ignore[attr-defined]
        self.assertEqual(connect, [])
        self.assertEqual([r["channel"] for [r] in sent], ["/meta/connect"])
        self.assertTrue(subscribed[0]["successful"])
        self.assertEqual(
            [c[0] for c in now.engine.calls],
            ["createClient", "clientExists", "ping", "clientExists", "subscriptions", "recover", "subscribe"],
        )

    def test_longPollingSetup(self) -> None:
        """Without a socket: the first connect answered at once, the same both ways."""
        self.run_both(self.setup)

    def test_lateEngineOnly(self) -> None:
        """Hooks answering at once around an engine answering later."""
        self.run_both(self.setup, hooksLate=False)

    def test_lateHooksOnly(self) -> None:
        """The engine answering at once behind hooks answering later (a key not cached)."""
        self.run_both(self.setup, engineLate=False)

    def test_resume(self) -> None:
        """A subscribe resuming from a position: the same recovery both ways."""

        def script(side: Side) -> list[Any]:
            first = self.setup(side)
            position = first[2][0]["ext"]["positions"][CHANNEL]
            side.router.publish(CHANNEL, "missed")
            side.clock.advance(0)
            clientId = first[0][0]["clientId"]
            resumed = side.process(
                {
                    "channel": "/meta/subscribe",
                    "clientId": clientId,
                    "subscription": CHANNEL,
                    "ext": {"resume": position},
                }
            )
            return [first, resumed]

        now, _ = self.run_both(script)
        self.assertEqual(now.transcript[1][0]["ext"]["recovered"], True)  # type: ignore[attr-defined]

    def test_errors(self) -> None:
        """Refusals (unknown client, a bad subscription, a future position) are the same both ways."""

        def script(side: Side) -> list[Any]:
            clientId = self.setup(side)[0][0]["clientId"]
            return [
                side.process(
                    {"channel": "/meta/connect", "clientId": "nobody", "connectionType": "long-polling"}
                ),
                side.process({"channel": "/meta/subscribe", "clientId": "nobody", "subscription": CHANNEL}),
                side.process(
                    {"channel": "/meta/subscribe", "clientId": clientId, "subscription": ["/a", "/meta/x"]}
                ),
                side.process(
                    {
                        "channel": "/meta/subscribe",
                        "clientId": clientId,
                        "subscription": "/app/public/new",
                        "ext": {"resume": {"offset": 5, "epoch": "nope"}},
                    }
                ),
                side.process({"channel": "/meta/disconnect", "clientId": "nobody"}),
            ]

        now, _ = self.run_both(script)
        errors = [replies[0].get("error") for replies in now.transcript]  # type: ignore[attr-defined]
        self.assertEqual(
            errors,
            [
                "401:nobody:Unknown client",
                "401:nobody:Unknown client",
                "403:/meta/x:Forbidden channel",
                None,  # another epoch: not resumed, said so
                "401:nobody:Unknown client",
            ],
        )

    def test_unsubscribeAndDisconnect(self) -> None:
        """Unsubscribing from several channels in order, then disconnecting: the same both ways."""

        def script(side: Side) -> list[Any]:
            clientId = self.setup(side)[0][0]["clientId"]
            both = ["/a/*", "/b"]
            return [
                side.process({"channel": "/meta/subscribe", "clientId": clientId, "subscription": both}),
                side.process({"channel": "/meta/unsubscribe", "clientId": clientId, "subscription": both}),
                side.process({"channel": "/meta/disconnect", "clientId": clientId}),
            ]

        now, _ = self.run_both(script)
        self.assertEqual([replies[0]["successful"] for replies in now.transcript], [True, True, True])  # type: ignore[attr-defined]
        self.assertEqual(now.memory.clientCount(), 0)

    def test_engineFailsMidSubscribe(self) -> None:
        """
        The engine failing the second channel of a subscribe: the first (new) one is undone,
        the reply is a server error, the same both ways.
        """

        def script(side: Side) -> list[Any]:
            clientId = self.setup(side)[0][0]["clientId"]
            side.engine.failing[("subscribe", "/b")] = RuntimeError("down")
            reply = side.process(
                {"channel": "/meta/subscribe", "clientId": clientId, "subscription": ["/a", "/b", "/c"]}
            )
            return [reply, sorted(side.memory._local.get(clientId).subscriptions)]  # type: ignore[union-attr]

        now, _later = self.run_both(script)
        self.assertEqual(now.transcript[0][0]["error"], "500::Internal server error")  # type: ignore[attr-defined]
        self.assertEqual(now.transcript[1], [CHANNEL])  # type: ignore[attr-defined]
        self.assertIn(("unsubscribe", "client0", "/a"), now.engine.calls)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_undoFailureLogged(self) -> None:
        """An undo that fails too is logged and the reply is still the subscribe's server error."""

        def script(side: Side) -> list[Any]:
            clientId = self.setup(side)[0][0]["clientId"]
            side.engine.failing[("subscribe", "/b")] = RuntimeError("down")
            side.engine.failing[("unsubscribe", "/a")] = ValueError("still down")
            return side.process(
                {"channel": "/meta/subscribe", "clientId": clientId, "subscription": ["/a", "/b"]}
            )

        self.run_both(script)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_engineFailsHandshake(self) -> None:
        """An engine that cannot create a client: a server error, both ways."""

        def script(side: Side) -> Any:
            side.engine.failing[("createClient", "")] = RuntimeError("down")
            return side.process(
                {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["websocket"]}
            )

        now, _ = self.run_both(script)
        self.assertEqual(now.transcript[0]["error"], "500::Internal server error")  # type: ignore[attr-defined]
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


class HeldSocketConnectTests(TestCase):
    def test_heldOverSocketKeepsLittle(self) -> None:
        """
        A connect held over a websocket (every idle websocket has one) has no instance dict
        and no Deferred: its reply goes through the socket. One held without a socket has.
        """
        side = Side(late=False)
        for socket in (side.socket, None):
            transport = "websocket" if socket is not None else "long-polling"
            [handshake] = side.process(
                {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": [transport]},
                socket,
            )
            connect = {
                "channel": "/meta/connect",
                "clientId": handshake["clientId"],
                "connectionType": transport,
            }
            side.process(connect, socket)  # the first, answered at once
            side.router.processNow([connect], MessageContext(transport), socket)  # held
            held = side.router._sessions.connects.get(handshake["clientId"])
            assert held is not None
            self.assertFalse(hasattr(held, "__dict__"))
            self.assertEqual(hasattr(held, "deferred"), socket is None)
