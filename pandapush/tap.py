"""``twistd pandapush``: options, and the service tree built from them."""

from __future__ import annotations

import os
from typing import Any

from twisted.application import strports
from twisted.application.service import IService, MultiService, Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python import usage

from pandapush.bayeux.router import BayeuxRouter, Limits
from pandapush.engines.memory import MemoryEngine
from pandapush.interfaces import IEngine
from pandapush.metrics import Metrics
from pandapush.presence import PresenceExtension
from pandapush.stats import Statistics
from pandapush.transports._http import OriginPolicy
from pandapush.transports.resource import BayeuxResource
from pandapush.web.site import HealthApp, PandapushRoot, makeSite

__all__ = ["BayeuxService", "Options", "makeService"]


def _positive(kind: type) -> Any:
    def parse(value: str) -> Any:
        number = kind(value)
        if number < 0:
            raise ValueError(f"{value} is negative")
        return number

    parse.coerceDoc = "Must be a non-negative number."  # type: ignore[attr-defined]
    return parse


class Options(usage.Options):
    """Command-line options. Every default can also come from the environment (upstream's names)."""

    synopsis = "[options]"
    longdesc = (
        "Runs pandapush: a multi-tenant publish/subscribe server speaking Bayeux (Faye/CometD) over "
        "long-polling, cross-origin long-polling, JSONP, websocket and event streams, all at /push."
    )

    optFlags = [
        ["no-jsonp", None, "Refuse callback-polling (JSONP) requests."],
        ["access-log", None, "Log every HTTP request (off by default: long-polling makes many)."],
    ]

    optParameters = [
        [
            "listen",
            "l",
            None,
            "Endpoint to listen on, e.g. tcp:3000, tcp:3000:interface=127.0.0.1, "
            "ssl:443:privateKey=key.pem:certKey=cert.pem. Repeat for several. "
            "[default: tcp:$PORT or tcp:3000]",
        ],
        ["timeout", "t", 30.0, "Seconds a long-poll /meta/connect is held open.", _positive(float)],
        ["interval", None, 0.0, "Seconds clients are advised to wait between connects.", _positive(float)],
        [
            "client-expiry",
            None,
            10.0,
            "Seconds a client survives without an open connection (between long-polls) before it "
            "is forgotten and its presence ends.",
            _positive(float),
        ],
        [
            "max-body-size",
            None,
            1024 * 1024,
            "Largest HTTP request body or websocket message accepted, in bytes.",
            _positive(int),
        ],
        [
            "max-message-size",
            None,
            64 * 1024,
            "Largest published message (as delivered, in bytes) over Bayeux or REST.",
            _positive(int),
        ],
        ["max-channel-length", None, 200, "Longest channel name, in characters.", _positive(int)],
        ["max-subscriptions", None, 128, "Most subscriptions one client may hold.", _positive(int)],
        [
            "shutdown-grace",
            None,
            5.0,
            "On SIGTERM, seconds to wait for clients to be told to reconnect before exiting.",
            _positive(float),
        ],
        [
            "stats-interval",
            None,
            5.0,
            "Seconds between statistics on /<app>/meta/statistics.",
            _positive(float),
        ],
        ["presence-max-members", None, 100, "Most members on one presence channel.", _positive(int)],
        ["presence-max-data", None, 1024, "Largest presence object from a token, in bytes.", _positive(int)],
        [
            "allowed-origins",
            None,
            None,
            "Comma-separated browser origins allowed across origins (CORS, websocket), e.g. "
            "https://app.example.com. [default: any origin]",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [f"tcp:{os.environ.get('PORT', '3000')}"]
        if self["allowed-origins"] is not None:
            self["allowed-origins"] = [o.strip() for o in self["allowed-origins"].split(",") if o.strip()]


class BayeuxService(Service):
    """
    Owns the engine and router. On stop (SIGTERM) it drains: the listening ports
    have already closed (they are later siblings, stopped first), held connects
    are answered with reconnect advice, sockets are closed with 1001, and the
    engine closes once they are gone or ``grace`` seconds have passed.
    """

    _log = Logger()

    def __init__(
        self,
        engine: IEngine,
        router: BayeuxRouter,
        resource: BayeuxResource,
        reactor: IReactorTime,
        grace: float = 5.0,
        sharedEngine: bool = False,
    ) -> None:
        self.engine = engine
        self.router = router
        self.resource = resource
        self.reactor = reactor
        self.grace = grace
        self.sharedEngine = sharedEngine

    async def _drain(self) -> None:
        self.router.drain("retry" if self.sharedEngine else "handshake")
        self.resource.stop()
        deadline = self.reactor.seconds() + self.grace
        while self.router.openSockets() and self.reactor.seconds() < deadline:
            await deferLater(self.reactor, 0.05, lambda: None)
        self._log.info("drained; {left} sockets still open", left=self.router.openSockets())
        await self.engine.close()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.Deferred.fromCoroutine(self._drain())


def makeService(options: Options, reactor: IReactorTime | None = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor  # type: ignore[assignment]
    assert reactor is not None

    engine = MemoryEngine(reactor, timeout=options["timeout"], expiry=options["client-expiry"])
    limits = Limits(
        maxMessageSize=options["max-message-size"],
        maxChannelLength=options["max-channel-length"],
        maxSubscriptions=options["max-subscriptions"],
    )
    router = BayeuxRouter(
        engine, reactor, timeout=options["timeout"], interval=options["interval"], limits=limits
    )
    bayeux = BayeuxResource(
        router,
        reactor,
        maxMessageSize=options["max-body-size"],
        origins=OriginPolicy(options["allowed-origins"]),
        jsonp=not options["no-jsonp"],
    )
    presence = PresenceExtension(
        router, maxMembers=options["presence-max-members"], maxDataSize=options["presence-max-data"]
    )
    router.addExtension(presence)
    statistics = Statistics(router, reactor, interval=options["stats-interval"])
    metrics = Metrics(router, bayeux)

    root = PandapushRoot(bayeux, HealthApp().app.resource(), {b"metrics": metrics.resource})
    site = makeSite(root, maxBodySize=options["max-body-size"])
    accessLog = site.log

    def log(request: Any) -> None:
        metrics.requestDone(request)
        if options["access-log"]:
            accessLog(request)

    site.log = log  # type: ignore[method-assign]

    top = MultiService()
    top.setName("pandapush")
    BayeuxService(engine, router, bayeux, reactor, grace=options["shutdown-grace"]).setServiceParent(top)
    statistics.service.setServiceParent(top)
    for endpoint in options["listen"]:
        strports.service(endpoint, site).setServiceParent(top)
    # For tests and embedders: the pieces, without reaching into the tree.
    top.engine = engine  # type: ignore[attr-defined]
    top.router = router  # type: ignore[attr-defined]
    top.site = site  # type: ignore[attr-defined]
    top.bayeux = bayeux  # type: ignore[attr-defined]
    top.statistics = statistics  # type: ignore[attr-defined]
    top.metrics = metrics  # type: ignore[attr-defined]
    return top
