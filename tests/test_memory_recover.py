"""The memory engine's ``recover`` for a subscribe that resumes nothing answers as the general path."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Collection, Mapping
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pandapush.engines import history
from pandapush.engines.history import EngineHistory
from pandapush.engines.memory import MemoryEngine
from pandapush.interfaces import Position, Recovery
from tests.history_suite import kept

#: Channels of an application keeping history (one published to, one never), and one without.
KEPT, FRESH, OFF = "/app/public/kept", "/app/public/fresh", "/off/public/a"


class PositionsOnlyTests(TestCase):
    def engine(self) -> MemoryEngine:
        """An engine whose epochs are counted afresh: ``epoch000`` for KEPT, ``epoch001`` next."""
        epochs = (f"epoch{n:03d}" for n in itertools.count())
        self.patch(history, "newEpoch", lambda: next(epochs))
        engine = MemoryEngine(Clock())
        engine.setHistoryLimits("off", 0, None)
        engine.publish(kept(KEPT, 1))
        engine.publish(kept(KEPT, 2))
        engine.publish(kept(OFF, 3))
        self.addCleanup(engine.close)
        return engine

    def recovered(
        self,
        recover: Callable[..., defer.Deferred[dict[str, Recovery]]],
        engine: MemoryEngine,
        clientId: str,
        wanted: Mapping[str, Position | None],
        latest: Collection[str] = (),
    ) -> dict[str, Recovery]:
        def subscribe() -> defer.Deferred[Any]:
            return defer.gatherResults([engine.subscribe(clientId, c) for c in wanted])

        return self.successResultOf(recover(clientId, subscribe, wanted, latest))

    def assertSameAsGeneral(self, wanted: Mapping[str, Position | None], known: bool = True) -> None:
        """Two engines, the same history and epochs: the fast and the general path answer the same."""
        outcomes = []
        for general in (False, True):
            engine = self.engine()
            clientId = self.successResultOf(engine.createClient()) if known else "unknown"
            recover = functools.partial(EngineHistory.recover, engine) if general else engine.recover
            outcomes.append(self.recovered(recover, engine, clientId, wanted))
            if known:
                self.assertEqual(engine._local.clients[clientId].recovering, 0)
                self.assertEqual(self.successResultOf(engine.subscriptions(clientId)), set(wanted))
            # The position reported for a fresh channel is the one its first publish counts from.
            engine.publish(kept(FRESH, "after"))
            self.assertEqual(self.successResultOf(engine.history(FRESH, None, 10)).epoch, "epoch001")
        self.assertEqual(list(outcomes[0].items()), list(outcomes[1].items()))

    def test_eachKindOfChannel(self) -> None:
        """Published to, never published to, without history: the same positions, in the same order."""
        self.assertSameAsGeneral({KEPT: None, FRESH: None, OFF: None})
        self.assertSameAsGeneral({OFF: None, FRESH: None})

    def test_positions(self) -> None:
        """The positions themselves: the channel's offset and epoch; 0 and a new epoch; none."""
        engine = self.engine()
        clientId = self.successResultOf(engine.createClient())
        outcomes = self.recovered(engine.recover, engine, clientId, {KEPT: None, FRESH: None, OFF: None})
        self.assertEqual(
            outcomes,
            {
                KEPT: Recovery(Position(2, "epoch000"), None),
                FRESH: Recovery(Position(0, "epoch001"), None),
                OFF: Recovery(None, None),
            },
        )

    def test_unknownClient(self) -> None:
        """A client the engine does not hold learns the positions all the same, as on the general path."""
        self.assertSameAsGeneral({KEPT: None, FRESH: None, OFF: None}, known=False)

    def test_resumesTakeTheGeneralPath(self) -> None:
        """A position asked for, or the latest message, goes through ``recoverLocally``."""
        calls: list[object] = []
        general = history.recoverLocally

        def recoverLocally(*args: Any) -> Any:
            calls.append(args[3])
            return general(*args)

        self.patch(history, "recoverLocally", recoverLocally)
        engine = self.engine()
        clientId = self.successResultOf(engine.createClient())
        outcomes = self.recovered(
            engine.recover, engine, clientId, {FRESH: None, KEPT: Position(1, "epoch000")}
        )
        self.assertEqual(outcomes[KEPT], Recovery(Position(2, "epoch000"), None))
        self.assertEqual(len(engine._local.clients[clientId].queue), 1)
        self.recovered(engine.recover, engine, clientId, {FRESH: None}, [FRESH])
        self.assertEqual(len(calls), 2)
        self.recovered(engine.recover, engine, clientId, {KEPT: None})
        self.assertEqual(len(calls), 2)

    def test_subscribeLater(self) -> None:
        """The positions are read once the subscription is made, when it is made later."""
        engine = self.engine()
        subscribed: defer.Deferred[None] = defer.Deferred()
        outcome = engine.recover("c", lambda: subscribed, {FRESH: None}, ())
        self.assertNoResult(outcome)
        self.assertEqual(len(engine._history), 1)
        subscribed.callback(None)
        self.assertEqual(self.successResultOf(outcome), {FRESH: Recovery(Position(0, "epoch001"), None)})

    def test_subscribeFails(self) -> None:
        """A subscription that fails, at once or later, fails the recovery; no position is made."""
        engine = self.engine()

        def raising() -> defer.Deferred[None]:
            raise ZeroDivisionError()

        self.failureResultOf(engine.recover("c", raising, {FRESH: None}, ()), ZeroDivisionError)
        self.failureResultOf(engine.recover("c", lambda: defer.fail(KeyError()), {FRESH: None}, ()), KeyError)
        later: defer.Deferred[None] = defer.Deferred()
        outcome = engine.recover("c", lambda: later, {FRESH: None}, ())
        later.errback(ValueError())
        self.failureResultOf(outcome, ValueError)
        self.assertEqual(len(engine._history), 1)
