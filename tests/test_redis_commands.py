"""
``pandapush.redis.commands``: one timer bounds every command in flight on a connection
(on a Clock: the timing is the point), and scripts are hashed once.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pandapush.redis.commands import Deadlines, scriptHash


class DeadlinesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.deadlines = Deadlines(self.clock, 2.0)

    def command(self) -> tuple[defer.Deferred[Any], list[Any]]:
        d: defer.Deferred[Any] = defer.Deferred()
        d.addBoth(self.deadlines.add(d, self.clock.seconds()))
        outcome: list[Any] = []
        d.addBoth(outcome.append)
        return d, outcome

    def test_onlyUnansweredCommandsCancelled(self) -> None:
        """Past its deadline, a command not answered is cancelled; an answered one is left alone."""
        first, firstOutcome = self.command()
        self.clock.advance(1)
        _second, secondOutcome = self.command()
        first.callback("answered")
        self.clock.advance(1.5)  # past the first's deadline only
        self.assertEqual(firstOutcome, ["answered"])
        self.assertEqual(secondOutcome, [])
        self.clock.advance(0.5)
        [failure] = secondOutcome
        self.assertTrue(failure.check(defer.CancelledError))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_oneTimerForManyCommands(self) -> None:
        """A thousand commands in flight make one timer, gone once its deadline passed."""
        commands = [self.command() for _ in range(1000)]
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        for d, _ in commands:
            d.callback(None)
        self.clock.advance(2)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual([outcome for _, outcome in commands], [[None]] * 1000)

    def test_waitingResultStillBounded(self) -> None:
        """A command whose result waits on another (a script sent again) is bounded as a whole."""
        d, outcome = self.command()
        inner: defer.Deferred[Any] = defer.Deferred()
        d.callback(None)  # the callbacks before ours return ``inner``: d waits for it
        self.assertEqual(outcome, [None])
        d2: defer.Deferred[Any] = defer.Deferred()
        d2.addCallback(lambda _: inner)
        d2.addBoth(self.deadlines.add(d2, self.clock.seconds()))
        outcome2: list[Any] = []
        d2.addBoth(outcome2.append)
        d2.callback(None)
        self.clock.advance(2)
        [failure] = outcome2
        self.assertTrue(failure.check(defer.CancelledError))

    def test_close(self) -> None:
        """Closing stops the timer."""
        self.command()
        self.deadlines.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ScriptHashTests(SynchronousTestCase):
    def test_sha1(self) -> None:
        """The hash Redis knows the script by (EVALSHA)."""
        script = "return 1"
        self.assertEqual(scriptHash(script), hashlib.sha1(b"return 1").hexdigest())
        self.assertIs(scriptHash(script), scriptHash(script))
