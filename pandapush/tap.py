"""``twistd pandapush``: options, and the service tree built from them."""

from __future__ import annotations

import os
from typing import Any

from twisted.application import strports
from twisted.application.service import IService, MultiService, Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python import usage

from pandapush.bayeux.router import BayeuxRouter
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
    """Owns the engine and router: answers held connects and closes the engine on stop."""

    _log = Logger()

    def __init__(self, engine: IEngine, router: BayeuxRouter, resource: BayeuxResource) -> None:
        self.engine = engine
        self.router = router
        self.resource = resource

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        self.router.close()
        self.resource.stop()
        return self.engine.close()


def makeService(options: Options, reactor: IReactorTime | None = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor  # type: ignore[assignment]
    assert reactor is not None

    engine = MemoryEngine(reactor, timeout=options["timeout"], expiry=options["client-expiry"])
    router = BayeuxRouter(engine, reactor, timeout=options["timeout"], interval=options["interval"])
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
    BayeuxService(engine, router, bayeux).setServiceParent(top)
    statistics.service.setServiceParent(top)
    for endpoint in options["listen"]:
        strports.service(endpoint, site).setServiceParent(top)
    # For tests and embedders: the pieces, without reaching into the tree.
    top.engine = engine  # type: ignore[attr-defined]
    top.router = router  # type: ignore[attr-defined]
    top.site = site  # type: ignore[attr-defined]
    top.statistics = statistics  # type: ignore[attr-defined]
    top.metrics = metrics  # type: ignore[attr-defined]
    return top
