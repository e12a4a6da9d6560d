"""
What a test's code logged: ``captureLogs(test)`` collects the events of ``twisted.logger``'s
global publisher until the test ends.

    logged = captureLogs(self)
    ...
    [warning] = logged.matching("lower case")   # by their log_format
    self.assertEqual(warning["names"], [...])
"""

from __future__ import annotations

from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

__all__ = ["LogCapture", "captureLogs"]


@implementer(ILogObserver)
class LogCapture:
    """An observer that keeps every event it is given."""

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        self.events.append(event)

    def matching(self, text: str) -> list[LogEvent]:
        """The events whose ``log_format`` contains ``text``."""
        return [e for e in self.events if text in (e.get("log_format") or "")]


def captureLogs(test: SynchronousTestCase) -> LogCapture:
    """Events logged from now until ``test`` ends (its cleanup removes the observer)."""
    capture = LogCapture()
    globalLogPublisher.addObserver(capture)
    test.addCleanup(globalLogPublisher.removeObserver, capture)
    return capture
