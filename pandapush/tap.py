"""``twistd pandapush``: the options, and the server :func:`makeService` builds from them.

:func:`makeService` reads top to bottom, as the server is put together: the
configuration (:mod:`pandapush.config`, built once when the options are parsed),
the storage, the engine, the router with its extensions in one ordered list, the
HTTP site, and the services that start and stop it all (:mod:`pandapush.services`).
Nothing is configured after it is built, and nothing sets attributes on another
module's objects: each piece is given what it needs when it is made.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from pandapush import _process
from pandapush._process import ProcessStatus, failProcess, foregroundWithoutPidfile, oneLineFailures
from pandapush.auth.apphistory import AppHistoryLimits
from pandapush.auth.checkers import ChannelAuthority
from pandapush.auth.keycache import KeyCache, KeyUsageFlusher
from pandapush.auth.origins import AppOrigins, OriginExtension
from pandapush.auth.tenancy import TenancyExtension
from pandapush.auth.throttle import parseTrustedProxies
from pandapush.config import Configuration, nonNegative
from pandapush.engines import DEFAULT_REDIS_HOSTS, EngineConfigError, IEngineFactory, makeEngine
from pandapush.extensions.acknowledge import Acknowledgements
from pandapush.extensions.expiry import SubscriptionExpiry
from pandapush.extensions.limitconfig import makeTenantLimits
from pandapush.extensions.limits import LimitsExtension
from pandapush.extensions.metrics import Metrics
from pandapush.extensions.presence import PresenceExtension
from pandapush.extensions.statistics import Statistics
from pandapush.extensions.users import UserConnections
from pandapush.interfaces import IEngine, IExtension
from pandapush.logs import jsonLogFor
from pandapush.router import BayeuxRouter
from pandapush.services import EXPECTED_START_FAILURES, BayeuxService, OpenFileLimit, Server, StorageService
from pandapush.storage import makeStorage
from pandapush.transports.http import OriginPolicy
from pandapush.transports.resource import BayeuxResource
from pandapush.web.admin import AdminApp
from pandapush.web.adminauth import adminLoginBanner, makeAdminAuthority
from pandapush.web.adminui import adminResource
from pandapush.web.apps import ROUTES as API_ROUTES
from pandapush.web.apps import APIServices, ServerAPI
from pandapush.web.apps.openapi import OpenAPIResource
from pandapush.web.clientjs import ClientScriptResource
from pandapush.web.connections import AddressLimit
from pandapush.web.http import ProxyTrust
from pandapush.web.pages import FrontPage
from pandapush.web.publish import PublishApp
from pandapush.web.site import HealthApp, PandapushRoot, makeSite
from pandapush.web.webhooks import WebhookAdmin
from pandapush.webhooks import makeWebhooks
from pandapush.workers.child import WorkerChild
from pandapush.workers.collector import TRIM_INTERVAL, MemoryTrim, tuneOnceListening
from pandapush.workers.metrics import MachineMetricsResource, machineMetrics
from pandapush.workers.pool import WorkerPool
from pandapush.workers.sockets import listenerServices

__all__ = ["Options", "makeService"]

#: The options' coercion for numbers that may not be negative.
_positive = nonNegative


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
        [
            "cluster-limits",
            None,
            "Count --max-publish-rate and --max-connections-per-app (and the anonymous budget) "
            "across every node and worker through Redis, not per process (Redis engine only). "
            "[default: $PANDAPUSH_CLUSTER_LIMITS]",
        ],
    ]

    optParameters = [
        [
            "log-format",
            None,
            None,
            "text (twistd's lines) or json (one JSON object a line, for log collectors), written "
            "where twistd writes its log. [default: $PANDAPUSH_LOG_FORMAT or text]",
        ],
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
        ["history-size", None, 100, "Messages a channel keeps for resuming (0: none).", _positive(int)],
        ["history-ttl", None, 300.0, "Seconds a channel keeps a message for resuming.", _positive(float)],
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
            "Clients using one application's channels with its key or a token it signed, on this "
            "node (0: unlimited). [default: $PANDAPUSH_MAX_CONNECTIONS_PER_APP or 10000]",
            _positive(int),
        ],
        [
            "max-anonymous-connections-per-app",
            None,
            None,
            "Clients using one application's channels without its credentials (public subscribes "
            "without a key or token), on this node; they never take the places of --max-connections-"
            "per-app, which counts clients with the application's key or tokens (0: unlimited). "
            "[default: $PANDAPUSH_MAX_ANONYMOUS_CONNECTIONS_PER_APP or --max-connections-per-app]",
            _positive(int),
        ],
        [
            "max-clients-per-connection",
            None,
            None,
            "Live clients one websocket or keep-alive HTTP connection may handshake (0: unlimited). "
            "[default: $PANDAPUSH_MAX_CLIENTS_PER_CONNECTION or 4]",
            _positive(int),
        ],
        [
            "max-connections-per-address",
            None,
            None,
            "Open connections per client address (an IPv6 one by its /64), on this process; "
            "--trusted-proxies are not counted (0: unlimited). "
            "[default: $PANDAPUSH_MAX_CONNECTIONS_PER_ADDRESS or 256]",
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
        ["redis-sentinels", None, None, "Or Redis Sentinels (host:port,...). [default: $REDIS_SENTINELS]"],
        ["redis-sentinel-masters", None, None, "Their shards' names. [default: $REDIS_SENTINEL_MASTERS]"],
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
        ["trim-interval", None, TRIM_INTERVAL, "Seconds between returning free memory.", _positive(float)],
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
            "webhook-allow-networks",
            None,
            None,
            "Comma-separated networks (10.0.0.0/8) every admin's webhooks may reach; otherwise only root "
            "admins' webhooks reach loopback, private and link-local addresses. "
            "[default: $PANDAPUSH_WEBHOOK_ALLOW_NETWORKS or none]",
        ],
        [
            "webhook-max-age",
            None,
            None,
            "Seconds a webhook event is retried before it is given up. "
            "[default: $PANDAPUSH_WEBHOOK_MAX_AGE or 86400]",
            _positive(float),
        ],
        [
            "allowed-origins",
            None,
            None,
            "Comma-separated browser origins allowed across origins (CORS, websocket), e.g. "
            "https://app.example.com; null (sandboxed iframes, file:// pages) only if listed. "
            "[default: any origin]",
        ],
        [
            "trusted-proxies",
            None,
            None,
            "Comma-separated proxy addresses or networks (10.0.0.0/8) whose X-Forwarded-For names "
            "the client, for the admin login throttle. [default: $PANDAPUSH_TRUSTED_PROXIES or none]",
        ],
    ]

    #: Whether the server this builds is its process's (run by twistd, twist or a .tac,
    #: rather than embedded in a test): then a failure to start is the process's exit status.
    ownsProcess = False
    #: twistd's options when it runs this (the parent of ours, or found by a .tac).
    runnerOptions: Any = None

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
        # Everything read and checked here, once: a setting that cannot work is a
        # usage error before anything starts.
        self.configuration = Configuration.fromOptions(self, os.environ)
        self["workers"] = self.configuration.workers
        # twistd and twist make us a subcommand: their options are our parent.
        runner = getattr(self, "parent", None)
        if runner is not None:
            self.ownsProcess, self.runnerOptions = True, runner
            foregroundWithoutPidfile(runner)

    @property
    def engineFactory(self) -> IEngineFactory:
        """The chosen engine's factory."""
        return self.configuration.engineFactory


@oneLineFailures(*EXPECTED_START_FAILURES, EngineConfigError, usage.UsageError)
def makeService(options: Options, reactor: Any = None, environ: Mapping[str, str] | None = None) -> Server:
    """
    The whole server as one service tree, from parsed ``options`` and the
    environment they were parsed in (``environ`` instead: tests). In a process
    started by ``--workers`` (``PANDAPUSH_WORKER`` in its environment) the
    listening sockets are the inherited ones, adopted, and no workers are started.
    """
    if reactor is None:
        from twisted.internet import reactor
    config = options.configuration if environ is None else Configuration.fromOptions(options, environ)
    tenancy = config.tenancy

    # Storage and engine, each chosen by name and imported only when chosen (on the
    # memory engine nothing Redis is loaded). The storage starts in StorageService.
    storage = makeStorage(config.storage)
    engine: IEngine = makeEngine(config.engineName, reactor, config.engine)

    # The router, and what its extensions need. Engine listeners and publish observers
    # are called in the order they register here.
    router = BayeuxRouter(
        engine, reactor, timeout=config.timeout, interval=config.interval, limits=config.limits
    )
    workerHeaders = {"X-Pandapush-Worker": str(config.workerIndex)} if config.processes > 1 else {}
    # --trusted-proxies: whose X-Forwarded-For names the client, and whose connections
    # carry many clients (not counted as one client's).
    proxies = ProxyTrust(parseTrustedProxies(tenancy.trustedProxies))
    bayeux = BayeuxResource(
        router,
        reactor,
        maxMessageSize=config.maxBodySize,
        origins=OriginPolicy(config.allowedOrigins, onRefused=router.limitRefused),
        jsonp=config.jsonp,
        handshakeHeaders=workerHeaders,
        proxies=proxies.trusts,
    )
    statistics = Statistics(router, reactor, interval=config.statsInterval)
    keys = KeyCache(storage, reactor, ttl=tenancy.keyCacheTTL, negativeTTL=tenancy.negativeKeyCacheTTL)
    authority = ChannelAuthority(keys, reactor, leeway=tenancy.tokenLeeway)
    limits = config.tenantLimits
    # One bucket per key for Bayeux and REST publishes alike, and the clients per
    # application; with --cluster-limits counted by every node together in Redis.
    tenantLimits = makeTenantLimits(
        limits,
        engine,
        reactor,
        router.limitRefused,
        redis=config.redis,
    )
    publishes, connections = tenantLimits.publishes, tenantLimits.connections
    presence = PresenceExtension(
        router, maxMembers=config.presenceMaxMembers, maxDataSize=config.presenceMaxData
    )
    # Subscriptions end with their token or key: at an expiry, or as soon as the key cache
    # hears the key was revoked or deleted (on any node, through key sync).
    expiry = SubscriptionExpiry(router, reactor, leeway=tenancy.tokenLeeway, keys=keys)
    users = UserConnections(router, reactor)
    # CometD's acknowledgements: a client's batches are forgotten once it has not connected
    # here for longer than a held connect and its expiry together (it moved, or it is gone).
    acknowledgements = Acknowledgements(
        router, reactor, idle=2 * (config.timeout + config.engine.clientExpiry)
    )
    # Webhook events wait in an outbox: Redis's with the Redis engine, else the storage's.
    webhooks = makeWebhooks(
        config.webhooks,
        storage,
        keys,
        reactor,
        redis=config.redis if config.engineName == "redis" else None,
        owner=getattr(engine, "nodeId", None),
    )
    if webhooks.events is not None:
        engine.addListener(webhooks.events)
    metrics = Metrics(router, bayeux, rev=config.release.rev)
    metrics.registry.register(connections)  # type: ignore[arg-type]
    if webhooks.sender is not None:
        metrics.registry.register(webhooks.sender)  # type: ignore[arg-type]
    machine = machineMetrics(reactor, metrics.registry, config)

    # The extensions, in the one order that works. Incoming messages pass them first
    # to last: tenancy checks the credentials and leaves the key id, the token's
    # presence object and its expiry in context.attributes for the others; the
    # application's allowed origins next (tenancy has named the application); the
    # tenant limits need tenancy's key id, and come before presence so that a refused
    # subscribe joins nobody; presence joins the subscribers it is given; expiry,
    # after presence, sees the subscribe replies presence let through, and so does the
    # index of users' clients; webhooks' client events need tenancy's verdict; CometD's
    # acknowledgements see only connects that every check let through; the error
    # counter, last, counts error replies as the client will see them.
    extensions: list[IExtension] = [
        TenancyExtension(authority),
        OriginExtension(AppOrigins(storage, reactor, keys, ttl=tenancy.keyCacheTTL)),
        LimitsExtension(engine, connections, publishes),
        presence,
        expiry,
        users,
        *([webhooks.events] if webhooks.events is not None else []),
        acknowledgements,
        metrics.errorCounter,
    ]
    for extension in extensions:
        router.addExtension(extension)

    # The HTTP site: /push, the REST publish and the server API (/apps, /openapi.json),
    # the admin API and console, /metrics, the browser client, the health check.
    adminAuthority = makeAdminAuthority(tenancy, clock=reactor, storage=storage)
    if adminAuthority.throttle is not None:
        adminAuthority.throttle.addRefusalObserver(lambda: metrics.refusals.labels(limit="admin_login").inc())
    adminApp = AdminApp(storage, adminAuthority, keys, reactor, tenancy, statistics.cluster)
    webhookAdmin = WebhookAdmin(
        adminApp, storage, webhooks.outbox, keys, webhooks.policy, webhooks.resolve, reactor
    )
    publishApp = PublishApp(
        authority,
        router.publishNow,
        reactor,
        maxBodySize=tenancy.maxBodySize,
        publishTimeout=tenancy.publishTimeout,
        rateLimiter=publishes,
    )
    serverAPI = ServerAPI(
        APIServices(
            authority,
            router,
            engine,
            storage,
            reactor,
            rateLimiter=publishes,
            publishTimeout=tenancy.publishTimeout,
            extra={"users": users},
        ),
        API_ROUTES,
    )
    health = HealthApp(
        # Which process answered: with --workers, operators (and tests) can tell.
        {"worker": config.workerIndex, "workers": config.processes, "pid": os.getpid()}
        if config.processes > 1
        else None,
        storage=storage,
        rev=config.release.rev,
        built=config.release.built,
        engine=engine,
        draining=lambda: router.draining or server.unready,
    )
    scripts = ClientScriptResource()
    root = PandapushRoot(
        bayeux,
        health.app.resource(),
        {
            b"metrics": MachineMetricsResource(machine.gather) if machine is not None else metrics.resource,
            b"channel": publishApp.resource(),
            b"apps": serverAPI,
            b"openapi.json": OpenAPIResource(),
            b"admin": adminResource(adminApp, adminAuthority, webhookAdmin),
            b"client.js": scripts,
            b"client.mjs": scripts,
            b"client.d.ts": scripts,
            b"": FrontPage(),
        },
    )
    site = makeSite(
        root,
        maxBodySize=config.maxBodySize,
        headers={k.encode(): v.encode() for k, v in workerHeaders.items()},
        accessLog=config.accessLog,
        requestDone=metrics.requestDone,
        addressLimit=AddressLimit(
            reactor, limits.maxConnectionsPerAddress, proxies.trusts, onRefused=router.limitRefused
        ),
        onRefused=router.limitRefused,
    )

    # The services. They start in this order; they stop all at once, the storage
    # closing after the last (PandapushService). The ports listen once the storage
    # is ready (StorageService); the workers start once the ports listen.
    # Run by twistd, twist or the .tac: a server that cannot start stops, exiting non-zero;
    # the process (not a worker) tells systemd and twistd when it serves or cannot start.
    onFailure = failProcess(reactor) if options.ownsProcess else None
    status = ProcessStatus(options.runnerOptions) if options.ownsProcess and config.worker is None else None
    storageService = StorageService(
        storage,
        reactor,
        config.developmentKey,
        banner=lambda url: adminLoginBanner(adminAuthority, url),
        workerIndex=config.worker.index if config.worker is not None else None,
        # The generated admin password is the database's, shared by every node on it;
        # each application's history limits are the engine's before the first publish.
        prepare=[adminAuthority.prepare, AppHistoryLimits(storage, keys, engine).prepare],
        onFailure=onFailure,
        status=status,
    )
    for listener in listenerServices(config, reactor, site):
        listener.setServiceParent(storageService)
    keysync = None
    if config.engineName == "redis":
        # Key revocations on any node reach every node's key cache.
        from pandapush.auth.keysync import KeySync

        keysync = KeySync(
            reactor,
            keys,
            *config.redis,
            nodeId=getattr(engine, "nodeId", None),
        )
    workers = None
    if config.worker is None and config.workers > 1:
        # Started once this process listens: storage migrated, DEV_* seeded and the
        # admin password written once, before any worker looks for them.
        workers = WorkerPool(
            reactor,
            config.workers,
            config.argv,
            storageService.listening,
            grace=config.shutdownGrace,
            reusePort=config.reusePort,
            onFailure=onFailure or (lambda: None),
            metrics=(lambda: machine.directory) if machine is not None else None,
        )
    elif config.worker is None and options.ownsProcess:
        # Serving alone: a worker's collector settings too (pandapush.workers.collector).
        tuneOnceListening(storageService.listening)
    server = Server(
        configuration=config,
        storage=storage,
        engine=engine,
        router=router,
        bayeux=bayeux,
        site=site,
        statistics=statistics,
        metrics=metrics,
        keys=keys,
        adminAuthority=adminAuthority,
        adminApp=adminApp,
        ready=storageService.ready,
        keysync=keysync,
        workers=workers,
        webhooks=webhooks.sender,
        unreadyGrace=config.unreadyGrace,
        clock=reactor,
        logObserver=jsonLogFor(config, getattr(options, "parent", None) or _process.twistdOptions()),
    )
    services: list[IService | None] = [
        OpenFileLimit(reactor),
        MemoryTrim(config.trimInterval, reactor) if config.trimInterval > 0 else None,
        BayeuxService(
            engine,
            router,
            bayeux,
            reactor,
            grace=config.shutdownGrace,
            sharedEngine=bool(config.engineFactory.shared),
            status=status,
        ),
        statistics.service,
        KeyUsageFlusher(keys, tenancy.usageFlushInterval),
        expiry,  # stopped with the server: no timer left behind
        users.service,
        acknowledgements.service,
        machine,
        webhooks.sender,
        keysync,
        # Before the ports listen: its first heartbeat is queued ahead of any admission.
        tenantLimits.service,
        storageService,
        workers,
        # In a worker: leaves when the parent does; SIGTERM stops it once.
        WorkerChild(reactor, config.worker.index) if config.worker is not None else None,
    ]
    for service in services:
        if service is not None:
            service.setServiceParent(server)
    return server
