"""Per-application statistics and the meta channels that carry them.

``/<app>/meta/statistics`` receives the application's figures every few seconds;
``/<app>/meta/channels`` receives an event when one of its channels gains its
first subscriber or loses its last, and when presence members come and go, so a
server can follow occupancy without polling (Pusher calls these
``channel_occupied``, ``channel_vacated``, ``member_added``, ``member_removed``).

Everything is counted from engine events and once per published message, never
per recipient. The meta channel's figures are this node's (``node`` in the message);
the admin console's are the cluster's (:meth:`Statistics.cluster`): every node
broadcasts its figures at each interval (``IEngine.broadcast``), every node keeps the
latest it heard from each, and the sum is taken over the nodes heard from lately, with
the channels in use counted by the engine itself (a channel with subscribers on two
nodes is one channel).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections import Counter, defaultdict
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from pandapush.interfaces import EngineUnavailableError, IRouter
from pandapush.listeners import EngineListener

__all__ = ["AppStatistics", "Statistics", "appOf"]

#: Figures a node broadcasts at each interval, summed by the others.
TOPIC = "statistics"
#: How many channels' applications :meth:`Statistics.published` remembers (then it starts again).
MAX_CHANNELS = 16384
_UNSEEN = object()
_SUMMED = (
    "connections",
    "subscriptions",
    "published",
    "delivered",
    "published_per_second",
    "delivered_per_second",
)

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
        # Tells this node's broadcasts from others' (several servers may share a process: tests).
        self._id = secrets.token_hex(8)
        self.apps: dict[str, AppStatistics] = defaultdict(AppStatistics)
        # channel -> the application its publishes count for (None: none); see published.
        self._channelApps: dict[str, str | None] = {}
        # clientId -> how many subscriptions it has in each app: a client counts
        # as one connection of an app while it has any.
        self._clientApps: dict[str, Counter[str]] = {}
        self._lastTotals: dict[str, tuple[int, int]] = {}
        self._lastTime = reactor.seconds()
        # node's id -> (when heard, {app: figures}): the nodes' latest broadcasts.
        self._nodes: dict[str, tuple[float, dict[str, Any]]] = {}
        router.engine.onBroadcast(TOPIC, self._heard)
        self.service = TimerService(interval, self.publishStatistics)
        self.service.clock = reactor
        router.engine.addListener(self)
        router.addPublishObserver(self.published)

    # counting

    def published(self, channel: str, recipients: int) -> None:
        # This runs for every message published, mostly to the same channels: the
        # application each counts for is remembered (the split was ~0.7 µs a publish).
        app = self._channelApps.get(channel, _UNSEEN)
        if app is _UNSEEN:
            app = self._countedApp(channel)
        if app is not None:
            stats = self.apps[app]  # type: ignore[index]
            stats.published += 1
            stats.delivered += recipients

    def _countedApp(self, channel: str) -> str | None:
        """The application a publish to ``channel`` counts for (appOf, not meta), remembered."""
        parts = channel.split("/", 3)
        app = None
        if len(parts) >= 4 and parts[1] and parts[2] in _APP_TYPES and parts[2] != "meta":
            app = parts[1]
        if len(self._channelApps) >= MAX_CHANNELS:
            self._channelApps.clear()
        self._channelApps[channel] = app
        return app

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

    def cluster(self, app: str) -> Deferred[dict[str, Any]]:
        """
        The application's figures over every node: this node's now, the others' as they
        last broadcast them (within three intervals), and the channels in use as the
        engine counts them. ``nodes`` says how many nodes were summed.
        """
        now = self.reactor.seconds()
        reports = [self.snapshot(app)]
        for node, (heard, apps) in list(self._nodes.items()):
            if now - heard > 3 * self.interval:
                del self._nodes[node]
            elif node != self._id and app in apps:
                reports.append(apps[app])
        figures: dict[str, Any] = {name: sum(r.get(name, 0) for r in reports) for name in _SUMMED}
        for name in ("published_per_second", "delivered_per_second"):
            figures[name] = round(figures[name], 3)
        figures.update(node=self.node, nodes=1 + len([n for n in self._nodes if n != self._id]))
        d = self.router.engine.occupiedChannels(app, f"/{app}/")

        def channels(found: dict[str, Any]) -> dict[str, Any]:
            return {**figures, "channels": len(found)}

        return d.addCallback(channels)

    def _heard(self, report: Any) -> None:
        if isinstance(report, dict) and isinstance(report.get("apps"), dict) and report.get("id"):
            self._nodes[str(report["id"])] = (self.reactor.seconds(), report["apps"])

    def publishStatistics(self) -> None:
        """Send each active application its figures, then start a new rate window."""
        reports: dict[str, Any] = {}
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
            reports[app] = {name: report[name] for name in _SUMMED}
        self.router.engine.broadcast(TOPIC, {"id": self._id, "node": self.node, "apps": reports}).addErrback(
            self._notShared
        )
        self._lastTotals = {app: (s.published, s.delivered) for app, s in self.apps.items()}
        self._lastTime = self.reactor.seconds()

    def _notShared(self, failure: Failure) -> None:
        # The engine logs its own outage once: not a line a second here while it lasts.
        level = self._log.debug if failure.check(EngineUnavailableError) else self._log.warn
        level("could not share statistics: {error}", error=failure.getErrorMessage())

    def _event(self, app: str, event: dict[str, Any]) -> None:
        self._send(f"/{app}/meta/channels", event)

    def _send(self, channel: str, data: dict[str, Any]) -> None:
        d = self.router.publish(channel, data)
        d.addErrback(self._eventFailed, channel)

    def _eventFailed(self, failure: Failure, channel: str) -> None:
        if failure.check(EngineUnavailableError):
            self._log.debug("meta event on {channel} not sent: {error}", channel=channel, error=failure.value)
        else:
            self._log.failure("meta event on {channel} failed", failure, channel=channel)
