"""``twistd pandapush``: options, and the service tree built from them."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from twisted.application import strports
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet import defer
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python import usage

from pandapush import __version__
from pandapush.auth import Tenancy, TenancyConfig, makeTenancy
from pandapush.engines import (
    DEFAULT_REDIS_HOSTS,
    EngineConfig,
    EngineConfigError,
    IEngineFactory,
    chooseEngine,
    findEngineFactory,
    makeEngine,
)
from pandapush.extensions.expiry import SubscriptionExpiry
from pandapush.extensions.limits import LimitSettings, installLimits
from pandapush.extensions.metrics import Metrics
from pandapush.extensions.presence import PresenceExtension
from pandapush.extensions.statistics import Statistics
from pandapush.interfaces import IEngine, IRouter
from pandapush.router import BayeuxRouter, Limits
from pandapush.storage import StorageConfig, makeStorage
from pandapush.transports.http import OriginPolicy
from pandapush.transports.resource import BayeuxResource
from pandapush.web.adminui import adminResource
from pandapush.web.clientjs import ClientScriptResource
from pandapush.web.site import HealthApp, PandapushRoot, makeSite
from pandapush.workers import (
    SHAREABLE_ENDPOINTS,
    ReusePortEndpoint,
    WorkerPool,
    WorkerSpec,
    resolveWorkerCount,
)

__all__ = ["BayeuxService", "Options", "PandapushService", "makeService"]


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
        [
            "reuse-port",
            None,
            "With --workers, on Linux: a listening socket per worker (SO_REUSEPORT), new connections "
            "spread evenly by the kernel, instead of one shared socket the first idle worker takes from.",
        ],
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
            "max-publish-rate",
            None,
            None,
            "Publishes per second per key, over Bayeux and REST (0: unlimited). "
            "[default: $PANDAPUSH_MAX_PUBLISH_RATE or 1000]",
            _positive(float),
        ],
        [
            "max-publish-burst",
            None,
            None,
            "Publishes a key may make at once before --max-publish-rate applies. "
            "[default: $PANDAPUSH_MAX_PUBLISH_BURST or twice the rate]",
            _positive(float),
        ],
        [
            "max-connections-per-app",
            None,
            None,
            "Clients using one application's channels at once, on this node (0: unlimited). "
            "[default: $PANDAPUSH_MAX_CONNECTIONS_PER_APP or 10000]",
            _positive(int),
        ],
        [
            "max-clients-per-connection",
            None,
            None,
            "Live clients one websocket (or one HTTP batch) may handshake (0: unlimited). "
            "[default: $PANDAPUSH_MAX_CLIENTS_PER_CONNECTION or 4]",
            _positive(int),
        ],
        [
            "database",
            None,
            None,
            "Storage backend: sqlite, postgres, memory, or a plugin's name. [default: $DATABASE or sqlite]",
        ],
        ["database-path", None, None, "SQLite file. [default: $DATABASE_PATH or localdata/db.sqlite]"],
        [
            "engine",
            None,
            None,
            "Where clients, subscriptions and queues live: memory (this process only) or redis "
            "(shared through Redis, so several processes and machines serve as one), or a plugin's "
            "name. [default: $ENGINE; without it, redis when --redis-hosts or $REDIS_HOSTS is given, "
            "else memory]",
        ],
        [
            "redis-hosts",
            None,
            None,
            "The Redis engine's shards (host:port[/db],...); giving them chooses that engine unless "
            f"--engine says otherwise. [default: $REDIS_HOSTS; with --engine redis and none given, "
            f"{DEFAULT_REDIS_HOSTS}]",
        ],
        [
            "redis-namespace",
            None,
            None,
            "Prefix of every Redis key. [default: $REDIS_NAMESPACE or pandapush]",
        ],
        [
            "workers",
            None,
            None,
            "Processes serving the same ports on this machine, for more than one core: this one "
            "and N-1 workers it starts and restarts (0: one per CPU). Needs the Redis engine. "
            "[default: $WORKERS or 1]",
        ],
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
        [
            "trusted-proxies",
            None,
            None,
            "Comma-separated proxy addresses or networks (10.0.0.0/8) whose X-Forwarded-For names "
            "the client, for the admin login throttle. [default: $PANDAPUSH_TRUSTED_PROXIES or none]",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        # Kept for --workers: the workers parse the very same options.
        self.argv = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [f"tcp:{os.environ.get('PORT', '3000')}"]
        if self["allowed-origins"] is not None:
            self["allowed-origins"] = [o.strip() for o in self["allowed-origins"].split(",") if o.strip()]
        self.engineFactory = self._checkEngine()
        self._checkWorkers()

    def _checkEngine(self) -> IEngineFactory:
        """The chosen engine must exist (and its plugin be sound) before anything starts."""
        name = engineName(self, os.environ)
        if name == "memory" and self["redis-hosts"]:
            raise usage.UsageError(
                "--redis-hosts names the Redis engine's shards: it does not apply with --engine memory"
            )
        try:
            return findEngineFactory(name)
        except EngineConfigError as e:
            raise usage.UsageError(f"--engine (or ENGINE): {e}") from None

    def _checkWorkers(self) -> None:
        requested = self["workers"] if self["workers"] is not None else os.environ.get("WORKERS") or "1"
        try:
            workers = int(requested)
            if workers < 0:
                raise ValueError(requested)
        except ValueError:
            raise usage.UsageError(
                f"--workers (or WORKERS) must be a whole number >= 0, not {requested!r}"
            ) from None
        self["workers"] = resolveWorkerCount(workers)
        if self["reuse-port"] and not sys.platform.startswith("linux"):
            raise usage.UsageError(
                "--reuse-port needs Linux (elsewhere SO_REUSEPORT does not spread connections)"
            )
        if workers == 1:
            if self["reuse-port"]:
                raise usage.UsageError("--reuse-port only applies with --workers N (N > 1)")
            return
        # Refused even when 0 resolves to a single CPU: the same flags must not
        # work on one machine and fail on the next.
        if not self.engineFactory.shared:
            raise usage.UsageError(
                f"--workers {requested} needs the Redis engine (--redis-hosts or REDIS_HOSTS): each "
                "worker is a node of its own, and nodes share clients and messages only through Redis"
            )
        if (self["database"] or os.environ.get("DATABASE")) == "memory":
            raise usage.UsageError(
                "--workers needs a storage shared by every process (sqlite or postgres): "
                "with DATABASE=memory each worker would have applications and keys of its own"
            )
        for endpoint in self["listen"]:
            if endpoint.split(":", 1)[0] not in SHAREABLE_ENDPOINTS:
                raise usage.UsageError(
                    f"--workers shares only tcp: listeners, not {endpoint!r}: terminate TLS in front "
                    "of pandapush (a load balancer or proxy), or run without --workers"
                )


def engineName(options: Options, environ: dict[str, str] | Any) -> str:
    """The engine ``options`` and ``environ`` choose (``--engine``, ``ENGINE``, ``REDIS_HOSTS``)."""
    return chooseEngine(
        options["engine"] or environ.get("ENGINE"), options["redis-hosts"] or environ.get("REDIS_HOSTS")
    )


class BayeuxService(Service):
    """
    Owns the engine and router. On stop (SIGTERM) it drains: the listening ports
    have already closed (they are later siblings, stopped first), held connects
    are answered with reconnect advice, sockets are closed with 1001, and the
    engine closes once they are gone or ``grace`` seconds have passed. A shared
    (Redis) engine also stays open while other nodes claim its clients (see
    ``claimSettle``), so that what is published to them meanwhile is handed over.
    """

    _log = Logger()

    def __init__(
        self,
        engine: IEngine,
        router: IRouter,
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

    #: With a shared engine, how long the drain goes on waiting for this node's clients
    #: to be claimed by other nodes once none has been for that long: clients told to
    #: reconnect come back within milliseconds, and one that never will (a closed laptop)
    #: should not hold the node for the whole grace.
    claimSettle = 1.0

    def _ownedClients(self) -> int:
        """Clients this node still owns (only a shared engine's can move elsewhere)."""
        if not self.sharedEngine:
            return 0
        return int(self.engine.statistics().get("clients", 0))

    async def _drain(self) -> None:
        self.router.drain("retry" if self.sharedEngine else "handshake")
        self.resource.stop()
        clock = self.reactor
        deadline = clock.seconds() + self.grace
        while self.router.openSockets() and clock.seconds() < deadline:
            await deferLater(clock, 0.05, lambda: None)
        # Shared engine: each client carries on through another node, which claims it
        # from this one and is handed what was queued here meanwhile, in order. Until
        # this engine closes it stays subscribed for its clients, so nothing published
        # to them in between is lost; after, a message published to a client that no
        # node has claimed yet reaches nobody (pub/sub is at-most-once).
        owned = self._ownedClients()
        lastClaim = clock.seconds()
        while owned and clock.seconds() < deadline and clock.seconds() - lastClaim < self.claimSettle:
            await deferLater(clock, 0.05, lambda: None)
            left = self._ownedClients()
            if left < owned:
                lastClaim = clock.seconds()
            owned = left
        self._log.info(
            "drained; {left} sockets still open, {owned} clients not claimed by other nodes",
            left=self.router.openSockets(),
            owned=owned,
        )
        await self.engine.close()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.Deferred.fromCoroutine(self._drain())


class StorageService(MultiService):
    """
    Starts the storage (SQLite migrates itself; PostgreSQL checks its schema),
    seeds the ``DEV_*`` application and key, then starts its children (the
    listening ports), so no request arrives before the storage can answer it.
    If the storage cannot start, the process stops with the reason logged.
    """

    _log = Logger()

    def __init__(
        self,
        storage: Any,
        tenancy: Tenancy,
        reactor: Any,
        environ: dict[str, str],
        worker: WorkerSpec | None = None,
    ) -> None:
        super().__init__()
        self.storage = storage
        self.tenancy = tenancy
        self.reactor = reactor
        self.environ = environ
        self.worker = worker
        self.ready: defer.Deferred[None] = defer.Deferred()
        #: Fires with the listening ports once they listen (what --workers shares).
        self.listening: defer.Deferred[list[IListeningPort]] = defer.Deferred()

    def privilegedStartService(self) -> None:
        # Not passed on to the ports: they would bind before the storage is ready.
        # (So a port below 1024 needs the process to keep the right to bind it.)
        Service.privilegedStartService(self)

    def startService(self) -> None:
        Service.startService(self)
        d = defer.Deferred.fromCoroutine(self._start())
        d.addErrback(self._failed)

    async def _start(self) -> None:
        await self.storage.start()
        await seedDevelopmentKey(self.storage, self.environ)
        for child in self:
            child.startService()
        ports = [getattr(c, "_waitingForPort", None) for c in self]
        listening = [await p for p in ports if p is not None]
        for port in listening:
            host = port.getHost()
            url = f"http://{'localhost' if host.host in ('0.0.0.0', '::') else host.host}:{host.port}"
            if self.worker is not None:
                # The parent has said where it listens and what the admin password is.
                self._log.info("worker {index} serving {url}/push", index=self.worker.index, url=url)
                continue
            self._log.info("pandapush {version} listening at {url}/push", version=__version__, url=url)
            banner = self.tenancy.loginBanner(url)
            if banner:
                self._log.info("{banner}", banner=banner)
        self.listening.callback(listening)
        self.ready.callback(None)

    def _failed(self, failure: Any) -> None:
        self._log.failure("pandapush could not start", failure)
        if not self.listening.called:
            self.listening.errback(failure)
        if not self.ready.called:
            self.ready.errback(failure)
        if getattr(self.reactor, "running", False):
            self.reactor.stop()


class PandapushService(MultiService):
    """
    The whole server. Its children stop together (a MultiService stops them all at
    once), and the storage closes only once every one of them has: some still write
    while stopping (the key usage flusher's last flush), and a write sent to a
    closed storage was never answered, which left the process hanging on SIGTERM.
    """

    def __init__(self, storage: Any) -> None:
        super().__init__()
        self.storage = storage

    def stopService(self) -> defer.Deferred[None]:
        d = defer.maybeDeferred(super().stopService)
        d.addBoth(lambda _: self.storage.close())
        return d


def markWorker(site: Any, bayeux: BayeuxResource, index: int) -> None:
    """
    ``X-Pandapush-Worker: <index>`` on every HTTP answer and websocket handshake of
    this process, so an operator (or a test) sees which worker served a request.
    """
    value = str(index).encode()
    base = site.requestFactory

    class WorkerRequest(base):  # type: ignore[misc, valid-type]
        def process(self) -> None:
            self.setHeader(b"X-Pandapush-Worker", value)
            super().process()

    site.requestFactory = WorkerRequest
    factory = bayeux.websocketFactory
    factory.headers = {**(factory.headers or {}), "X-Pandapush-Worker": str(index)}


async def seedDevelopmentKey(storage: Any, environ: dict[str, str]) -> None:
    """
    Upstream's ``DEV_APPLICATION_ID`` + ``DEV_KEY_ID`` + ``DEV_KEY_SECRET``: make
    sure that application and key exist, so a development setup starts ready.
    """
    appId, keyId, secret = (environ.get(n) for n in ("DEV_APPLICATION_ID", "DEV_KEY_ID", "DEV_KEY_SECRET"))
    if not (appId and keyId and secret):
        return
    if await storage.getApplication(appId) is None:
        await storage.createApplication("development", "DEV_APPLICATION_ID", applicationId=appId)
    if await storage.getKey(keyId) is None:
        await storage.createKey(appId, "DEV_KEY_ID", purpose="development", keyId=keyId, secret=secret)


def makeService(
    options: Options,
    reactor: IReactorTime | None = None,
    environ: dict[str, str] | None = None,
    worker: WorkerSpec | None = None,
) -> IService:
    """
    The whole server as one service tree. ``environ`` replaces ``os.environ``
    (tests). ``worker`` is given in the processes ``--workers`` starts
    (``python -m pandapush.workers``): they adopt the listening sockets they
    inherited instead of binding ``--listen``, and start no workers themselves.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor  # type: ignore[assignment]
    assert reactor is not None
    environ = dict(os.environ if environ is None else environ)

    engineChoice = engineName(options, environ)
    redisHosts = options["redis-hosts"] or environ.get("REDIS_HOSTS")
    redisNamespace = options["redis-namespace"] or environ.get("REDIS_NAMESPACE", "pandapush")
    # Each engine's module is imported only when chosen: on memory nothing Redis is loaded.
    engineConfig = EngineConfig(
        timeout=options["timeout"],
        clientExpiry=options["client-expiry"],
        redisHosts=redisHosts,
        redisNamespace=redisNamespace,
        environ=environ,
    )
    engine: IEngine = makeEngine(engineChoice, reactor, engineConfig)
    sharedEngine = bool(findEngineFactory(engineChoice).shared)
    limitSettings = LimitSettings.fromOptions(options, environ)
    limits = Limits(
        maxMessageSize=options["max-message-size"],
        maxChannelLength=options["max-channel-length"],
        maxSubscriptions=options["max-subscriptions"],
        maxClientsPerConnection=limitSettings.maxClientsPerConnection,
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
    statistics = Statistics(router, reactor, interval=options["stats-interval"])

    storageConfig = StorageConfig.fromEnvironment(environ)
    if options["database"]:
        storageConfig = storageConfig.replace(database=options["database"])
    if options["database-path"]:
        storageConfig = storageConfig.replace(path=options["database-path"])
    storage = makeStorage(storageConfig)
    tenancyOverrides: dict[str, Any] = {"maxBodySize": options["max-body-size"]}
    if options["trusted-proxies"] is not None:
        tenancyOverrides["trustedProxies"] = tuple(options["trusted-proxies"].split(","))
    tenancy = makeTenancy(
        storage,
        TenancyConfig.fromEnvironment(environ, **tenancyOverrides),
        router.publish,
        reactor,
        statistics=statistics.snapshot,
    )
    # Tenancy first: presence reads the presence object it verified from the token;
    # each application's allowed origins between them, so a refused subscribe joins nobody.
    router.addExtension(tenancy.extension)
    router.addExtension(tenancy.originExtension)
    # After tenancy (it names the key), before presence (a refused subscribe joins nobody).
    tenantLimits = installLimits(router, tenancy.publishApp, limitSettings, reactor)
    router.addExtension(
        PresenceExtension(
            router, maxMembers=options["presence-max-members"], maxDataSize=options["presence-max-data"]
        )
    )
    # After presence: it sees the subscribe replies presence let through.
    expiry = SubscriptionExpiry(router, reactor, leeway=tenancy.config.tokenLeeway)
    router.addExtension(expiry)
    expiry.setServiceParent(tenancy.service)  # stopped with the server: no timer left behind
    metrics = Metrics(router, bayeux)
    metrics.registry.register(tenantLimits.connections)  # type: ignore[arg-type]
    if tenancy.adminAuthority.throttle is not None:
        tenancy.adminAuthority.throttle.addRefusalObserver(
            lambda: metrics.refusals.labels(limit="admin_login").inc()
        )

    workers = worker.count if worker is not None else options["workers"] or 1
    index = worker.index if worker is not None else 0
    scripts = ClientScriptResource()
    root = PandapushRoot(
        bayeux,
        # Which process answered: with --workers, operators (and tests) can tell.
        HealthApp(
            {"worker": index, "workers": workers, "pid": os.getpid()} if workers > 1 else None,
            storage=storage,
        ).app.resource(),
        {
            b"metrics": metrics.resource,
            b"channel": tenancy.publishApp.resource(),
            b"admin": adminResource(tenancy),
            b"client.js": scripts,
            b"client.mjs": scripts,
            b"client.d.ts": scripts,
        },
    )
    site = makeSite(root, maxBodySize=options["max-body-size"])
    accessLog = site.log

    def log(request: Any) -> None:
        metrics.requestDone(request)
        if options["access-log"]:
            accessLog(request)

    site.log = log  # type: ignore[method-assign]
    if workers > 1:
        markWorker(site, bayeux, index)

    top = PandapushService(storage)
    top.setName("pandapush")
    BayeuxService(
        engine, router, bayeux, reactor, grace=options["shutdown-grace"], sharedEngine=sharedEngine
    ).setServiceParent(top)
    statistics.service.setServiceParent(top)
    tenancy.service.setServiceParent(top)
    if engineChoice == "redis":
        # Key revocations on any node reach every node's key cache (pandapush.auth.keysync).
        from pandapush.auth.keysync import KeySync

        top.keysync = KeySync(  # type: ignore[attr-defined]
            reactor,
            tenancy.keys,
            redisHosts or DEFAULT_REDIS_HOSTS,
            redisNamespace,
            nodeId=getattr(engine, "nodeId", None),
        )
        top.keysync.setServiceParent(top)  # type: ignore[attr-defined]
    storageService = StorageService(storage, tenancy, reactor, environ, worker=worker)
    storageService.setServiceParent(top)
    reusePort = bool(options.get("reuse-port")) and worker is None and workers > 1
    if worker is None:
        for endpoint in options["listen"]:
            if reusePort:
                listener = ReusePortEndpoint(reactor, endpoint)
                StreamServerEndpointService(listener, site).setServiceParent(storageService)
            else:
                strports.service(endpoint, site).setServiceParent(storageService)
    else:
        for fd, family in worker.listeners:
            StreamServerEndpointService(
                AdoptedStreamServerEndpoint(reactor, fd, family), site
            ).setServiceParent(storageService)
    if worker is None and workers > 1:
        # Started once this process listens: storage migrated, DEV_* seeded and the
        # admin password written once, before any worker looks for them.
        top.workers = WorkerPool(  # type: ignore[attr-defined]
            reactor,
            workers,
            getattr(options, "argv", []),
            storageService.listening,
            grace=options["shutdown-grace"],
            reusePort=reusePort,
        )
        top.workers.setServiceParent(top)  # type: ignore[attr-defined]
    # For tests and embedders: the pieces, without reaching into the tree.
    top.engine = engine  # type: ignore[attr-defined]
    top.router = router  # type: ignore[attr-defined]
    top.site = site  # type: ignore[attr-defined]
    top.bayeux = bayeux  # type: ignore[attr-defined]
    top.statistics = statistics  # type: ignore[attr-defined]
    top.metrics = metrics  # type: ignore[attr-defined]
    top.storage = storage  # type: ignore[attr-defined]
    top.tenancy = tenancy  # type: ignore[attr-defined]
    top.ready = storageService.ready  # type: ignore[attr-defined]
    return top
