"""Per-application statistics and the meta channels that carry them.

``/<app>/meta/statistics`` receives the application's figures every few seconds;
``/<app>/meta/channels`` receives an event when one of its channels gains its
first subscriber or loses its last, and when presence members come and go, so a
server can follow occupancy without polling (Pusher calls these
``channel_occupied``, ``channel_vacated``, ``member_added``, ``member_removed``).

Everything is counted from engine events and once per published message, never
per recipient. Figures are this node's; with several nodes each publishes its own
(``node`` in the message) until they are aggregated through the engine.
"""

from __future__ import annotations

import os
import socket
from collections import Counter, defaultdict
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pandapush.interfaces import IRouter
from pandapush.listeners import EngineListener

__all__ = ["AppStatistics", "Statistics", "appOf"]

_APP_TYPES = frozenset(["public", "private", "presence", "meta"])


def appOf(channel: str) -> str | None:
    """The application id of a tenancy channel ``/<app>/<type>/...``, else None."""
    parts = channel.split("/", 3)
    if len(parts) >= 4 and parts[2] in _APP_TYPES and parts[1]:
        return parts[1]
    return None


def _isMeta(channel: str) -> bool:
    parts = channel.split("/", 3)
    return len(parts) >= 3 and parts[2] == "meta"


class AppStatistics:
    __slots__ = ("channels", "connections", "delivered", "published", "subscriptions")

    def __init__(self) -> None:
        self.connections = 0
        self.subscriptions = 0
        self.channels = 0
        self.published = 0
        self.delivered = 0

    def isIdle(self) -> bool:
        return not (self.connections or self.subscriptions or self.channels)


class Statistics(EngineListener):
    """
    Follows the engine and the router to keep per-application figures, and
    publishes them (and occupancy events) on the applications' meta channels.
    """

    _log = Logger()

    def __init__(self, router: IRouter, reactor: IReactorTime, interval: float = 5.0) -> None:
        self.router = router
        self.reactor = reactor
        self.interval = interval
        self.node = f"{socket.gethostname()}:{os.getpid()}"
        self.apps: dict[str, AppStatistics] = defaultdict(AppStatistics)
        # clientId -> how many subscriptions it has in each app: a client counts
        # as one connection of an app while it has any.
        self._clientApps: dict[str, Counter[str]] = {}
        self._lastTotals: dict[str, tuple[int, int]] = {}
        self._lastTime = reactor.seconds()
        self.service = TimerService(interval, self.publishStatistics)
        self.service.clock = reactor
        router.engine.addListener(self)
        router.addPublishObserver(self.published)

    # counting

    def published(self, channel: str, recipients: int) -> None:
        app = appOf(channel)
        if app is not None and not _isMeta(channel):
            stats = self.apps[app]
            stats.published += 1
            stats.delivered += recipients

    def subscribed(self, clientId: str, channel: str) -> None:
        app = appOf(channel)
        if app is None:
            return
        stats = self.apps[app]
        stats.subscriptions += 1
        counts = self._clientApps.setdefault(clientId, Counter())
        counts[app] += 1
        if counts[app] == 1:
            stats.connections += 1

    def unsubscribed(self, clientId: str, channel: str) -> None:
        app = appOf(channel)
        if app is None:
            return
        stats = self.apps[app]
        stats.subscriptions -= 1
        counts = self._clientApps.get(clientId)
        if counts is None:
            return
        counts[app] -= 1
        if counts[app] <= 0:
            del counts[app]
            stats.connections -= 1
        if not counts:
            del self._clientApps[clientId]

    def clientDestroyed(self, clientId: str, reason: str) -> None:
        self._clientApps.pop(clientId, None)

    def channelOccupied(self, channel: str) -> None:
        app = appOf(channel)
        if app is not None:
            self.apps[app].channels += 1
            if not _isMeta(channel) and not channel.endswith("*"):
                self._event(app, {"event": "channel_occupied", "channel": channel})

    def channelVacated(self, channel: str) -> None:
        app = appOf(channel)
        if app is not None:
            self.apps[app].channels -= 1
            if not _isMeta(channel) and not channel.endswith("*"):
                self._event(app, {"event": "channel_vacated", "channel": channel})

    def memberJoined(self, channel: str, memberId: str, data: Any, clientId: str) -> None:
        app = appOf(channel)
        if app is not None:
            self._event(app, {"event": "member_added", "channel": channel, "member": memberId, "data": data})

    def memberLeft(self, channel: str, memberId: str) -> None:
        app = appOf(channel)
        if app is not None:
            self._event(app, {"event": "member_removed", "channel": channel, "member": memberId})

    # reporting

    def snapshot(self, app: str) -> dict[str, Any]:
        """The application's current figures (rates over the last reporting interval)."""
        stats = self.apps.get(app) or AppStatistics()
        published, delivered = self._lastTotals.get(app, (0, 0))
        elapsed = max(self.reactor.seconds() - self._lastTime, 1e-9)
        return {
            "node": self.node,
            "connections": stats.connections,
            "subscriptions": stats.subscriptions,
            "channels": stats.channels,
            "published": stats.published,
            "delivered": stats.delivered,
            "published_per_second": round((stats.published - published) / elapsed, 3),
            "delivered_per_second": round((stats.delivered - delivered) / elapsed, 3),
        }

    def publishStatistics(self) -> None:
        """Send each active application its figures, then start a new rate window."""
        for app in list(self.apps):
            stats = self.apps[app]
            report = self.snapshot(app)
            if stats.isIdle() and report["published_per_second"] == 0:
                if app not in self._lastTotals or self._lastTotals[app] == (stats.published, stats.delivered):
                    # Nothing happening and nothing to say: forget it.
                    del self.apps[app]
                    self._lastTotals.pop(app, None)
                    continue
            self._send(f"/{app}/meta/statistics", report)
        self._lastTotals = {app: (s.published, s.delivered) for app, s in self.apps.items()}
        self._lastTime = self.reactor.seconds()

    def _event(self, app: str, event: dict[str, Any]) -> None:
        self._send(f"/{app}/meta/channels", event)

    def _send(self, channel: str, data: dict[str, Any]) -> None:
        d = self.router.publish(channel, data)
        d.addErrback(lambda f: self._log.failure("meta event on {channel} failed", f, channel=channel))
