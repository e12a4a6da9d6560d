"""
``pandapush.redis.health``: an outage of a Redis server told once, its end once, whatever
the number of connections and failed calls in between (on a Clock: the timing is the point).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pandapush.redis.health import RedisHealth
from tests.support.logs import captureLogs


class RedisHealthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.health = RedisHealth(self.clock, "redis.example:6379")
        self.logged = captureLogs(self)
        self.a, self.b = object(), object()

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
        """The end is told once, when the last failing connection works again, with the outage's length."""
        self.health.failed(self.a, "Connection refused")
        self.health.failed(self.b, "Connection refused")
        self.clock.advance(12.5)
        self.health.recovered(self.a)
        self.assertEqual(self.logged.matching("available again"), [])
        self.assertFalse(self.health.ok)
        self.health.recovered(self.b)
        self.health.recovered(self.b)
        [event] = self.logged.matching("available again")
        self.assertEqual(event["seconds"], 12.5)
        self.assertEqual(self.health.status(), {"status": "ok"})

    def test_closedConnectionForgotten(self) -> None:
        """A connection closed while failing no longer holds the server as unavailable (nor logs its end)."""
        self.health.failed(self.a, "Connection refused")
        self.health.forget(self.a)
        self.assertTrue(self.health.ok)
        self.assertEqual(self.health.status(), {"status": "ok"})
        self.assertEqual(self.logged.matching("available again"), [])
