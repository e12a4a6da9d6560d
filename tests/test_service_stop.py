"""The order in which the server's service tree stops (``pandapush.services.PandapushService``)."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from pandapush.services import PandapushService


class _RecordingStorage:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def close(self) -> defer.Deferred[None]:
        self.events.append("storage closed")
        return defer.succeed(None)


class _SlowToStop(Service):
    """Stands for the key usage flusher: its last write finishes after stopService returns."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.finishing: defer.Deferred[None] = defer.Deferred()

    def stopService(self) -> Any:
        super().stopService()
        self.events.append("flush started")
        return self.finishing.addCallback(lambda _: self.events.append("flush written"))


class PandapushServiceTests(SynchronousTestCase):
    def test_storageClosesAfterEveryChild(self) -> None:
        """The storage is closed only once every child has stopped, not while one still writes."""
        events: list[str] = []
        storage: Any = _RecordingStorage(events)  # only close() is called
        top = PandapushService(storage)
        flusher = _SlowToStop(events)
        flusher.setServiceParent(top)
        top.startService()
        stopped = top.stopService()
        self.assertEqual(events, ["flush started"])
        self.assertNoResult(stopped)
        flusher.finishing.callback(None)
        self.assertEqual(events, ["flush started", "flush written", "storage closed"])
        self.successResultOf(stopped)
