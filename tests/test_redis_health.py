"""
``pandapush.redis.health``: an outage of a Redis server told once, its end once, whatever
the number of connections and failed calls in between (on a Clock: the timing is the point).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pandapush.redis.health import RECOVERY_GRACE, RedisHealth
from tests.support.logs import captureLogs


class RedisHealthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.health = RedisHealth(self.clock, "redis.example:6379")
        self.logged = captureLogs(self)
        self.a, self.b = object(), object()
        self.health.add(self.a)
        self.health.add(self.b)

    def test_outageLoggedOnceWithItsCause(self) -> None:
        """The first failure logs the outage and its cause; further ones, of any connection, nothing."""
        self.health.failed(self.a, "Connection refused")
        for _ in range(100):
            self.health.failed(self.a, "no answer within 2.0s")
            self.health.failed(self.b, "no answer within 2.0s")
        [event] = self.logged.matching("unavailable")
        self.assertEqual(event["cause"], "Connection refused")
        self.assertFalse(self.health.ok)
        self.clock.advance(3)
        self.assertEqual(
            self.health.status(),
            {"status": "unavailable", "error": "Connection refused", "seconds": 3.0},
        )

    def test_recoveryLoggedOnceWhenEveryConnectionWorks(self) -> None:
        """
        The end is told once, when the last failing connection has worked for the grace,
        with the outage's length; the status is ok from the moment it works.
        """
        self.health.failed(self.a, "Connection refused")
        self.health.failed(self.b, "Connection refused")
        self.clock.advance(12.5)
        self.health.recovered(self.a)
        self.assertFalse(self.health.ok)
        self.health.recovered(self.b)
        self.health.recovered(self.b)
        self.assertEqual(self.health.status(), {"status": "ok"})
        self.clock.advance(RECOVERY_GRACE - 0.1)
        self.assertEqual(self.logged.matching("available again"), [])
        self.clock.advance(0.1)
        [event] = self.logged.matching("available again")
        self.assertEqual(event["seconds"], 12.5)

    def test_flappingIsOneOutage(self) -> None:
        """Failing again within the grace continues the outage: one line for it, one for its end."""
        for _ in range(5):
            self.health.failed(self.a, "no answer within 2.0s")
            self.clock.advance(1)
            self.health.recovered(self.a)
            self.clock.advance(1)
        self.clock.advance(RECOVERY_GRACE)
        self.assertEqual(len(self.logged.matching("unavailable")), 1)
        [event] = self.logged.matching("available again")
        self.assertEqual(event["seconds"], 9.0)
        self.health.failed(self.a, "Connection refused")
        self.assertEqual(len(self.logged.matching("unavailable")), 2)

    def test_closedConnectionForgotten(self) -> None:
        """A connection closed while failing no longer holds the server as unavailable (nor logs its end)."""
        self.health.failed(self.a, "Connection refused")
        self.health.forget(self.a)
        self.assertTrue(self.health.ok)
        self.assertEqual(self.health.status(), {"status": "ok"})
        self.assertEqual(self.logged.matching("available again"), [])

    def test_closingEverythingLeavesNoTimer(self) -> None:
        """Every connection closed during the grace: the end is told then, and no timer is left."""
        self.health.failed(self.a, "Connection refused")
        self.clock.advance(2)
        self.health.recovered(self.a)
        self.health.forget(self.a)
        self.health.forget(self.b)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        [event] = self.logged.matching("available again")
        self.assertEqual(event["seconds"], 2.0)
