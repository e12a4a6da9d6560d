"""The server's configuration: built once, from the command line and the environment.

:meth:`Configuration.fromOptions` is the one place that reads them. Each subsystem
keeps its own settings class and its own environment names (upstream's, where
upstream had them): :class:`~pandapush.storage.StorageConfig` (``DATABASE*``),
:class:`~pandapush.auth.TenancyConfig` (``AUTH_METHOD``, ``ADMIN_*``...),
:class:`~pandapush.engines.EngineConfig` and the engine's factory (``ENGINE``,
``REDIS_*``), the router's :class:`~pandapush.router.Limits` and the tenant
:class:`~pandapush.extensions.limitconfig.LimitSettings` (``PANDAPUSH_MAX_*``); this module
builds them all, options winning over variables, and adds what belongs to no
subsystem: where to listen (``PORT``), ``--workers`` (``WORKERS``) and which worker
this process is (``PANDAPUSH_WORKER``, set by the parent), the ``DEV_*`` key to seed,
the release the health check reports (``PANDAPUSH_REV``, ``PANDAPUSH_BUILT``).

Anything that cannot work is a :class:`ConfigurationError`, a usage error naming the
option or variable: ``twistd pandapush`` refuses it before anything starts.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from twisted.python import usage

from pandapush.auth.config import TenancyConfig
from pandapush.auth.throttle import parseTrustedProxies
from pandapush.engines import EngineConfig, EngineConfigError, IEngineFactory, chooseEngine, findEngineFactory
from pandapush.extensions.limitconfig import LimitSettings
from pandapush.logs import FORMATS as LOG_FORMATS
from pandapush.router import Limits
from pandapush.storage import StorageConfig
from pandapush.storage._common import normalOrigins
from pandapush.webhooks.config import WebhookConfig

__all__ = [
    "FIRST_INHERITED_FD",
    "SHAREABLE_ENDPOINTS",
    "WORKER_VARIABLE",
    "Configuration",
    "ConfigurationError",
    "DevelopmentKey",
    "EngineChoiceError",
    "Release",
    "WorkerSpec",
    "formatListeners",
    "parseListeners",
    "resolveWorkerCount",
]

#: Set by the parent in the environment of each worker it starts (see :class:`WorkerSpec`).
WORKER_VARIABLE = "PANDAPUSH_WORKER"

#: Inherited listening sockets start after stdin, stdout and stderr.
FIRST_INHERITED_FD = 3

#: Endpoint types whose sockets can be shared (``adoptStreamPort`` takes plain TCP).
SHAREABLE_ENDPOINTS = ("tcp", "tcp6")


class ConfigurationError(usage.UsageError):
    """A setting that cannot work; the message names the option or variable."""


class EngineChoiceError(ConfigurationError, EngineConfigError):
    """
    No engine of that name, or its plugin is broken: a usage error on the command
    line, and the :class:`~pandapush.engines.EngineConfigError` that
    :func:`~pandapush.engines.makeEngine` raises for the same reason to code that
    builds servers itself.
    """


def resolveWorkerCount(requested: int) -> int:
    """
    ``0`` means one worker per CPU this process may run on: its CPU affinity where
    the system tells (a container pinned to 2 of 64 cores gets 2), else
    ``os.cpu_count()``, else 1.
    """
    if requested != 0:
        return requested
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        try:
            return max(1, len(affinity(0)))
        except OSError:
            pass
    return os.cpu_count() or 1


def formatListeners(listeners: Sequence[tuple[int, socket.AddressFamily]]) -> str:
    """``3:AF_INET,4:AF_INET6``: inherited listening sockets, as :class:`WorkerSpec` writes them."""
    return ",".join(f"{fd}:{family.name}" for fd, family in listeners)


def parseListeners(text: str) -> tuple[tuple[int, socket.AddressFamily], ...]:
    """The inverse of :func:`formatListeners`; ``ValueError`` for anything else."""
    listeners = []
    for item in filter(None, text.split(",")):
        fd, _, family = item.partition(":")
        if family not in ("AF_INET", "AF_INET6"):
            raise ValueError(f"unsupported address family {family!r} in {item!r}")
        listeners.append((int(fd), socket.AddressFamily[family]))
    return tuple(listeners)


@dataclass(frozen=True)
class WorkerSpec:
    """
    Which of ``--workers N`` this process is: its index, the listening sockets it
    inherited, to adopt instead of binding ``--listen``, and the directory of the
    processes' metrics sockets (:mod:`pandapush.workers.metrics`). The parent
    (:class:`~pandapush.workers.pool.WorkerPool`) writes it in ``PANDAPUSH_WORKER``
    (``index=1 count=3 listeners=3:AF_INET,4:AF_INET6 metrics=/tmp/pandapush-metrics-x``,
    the directory percent-encoded); nobody else should.
    """

    index: int
    count: int
    #: ``(file descriptor, address family)`` of each inherited listening socket.
    listeners: tuple[tuple[int, socket.AddressFamily], ...] = field(default=())
    metrics: str | None = None

    def format(self) -> str:
        text = f"index={self.index} count={self.count} listeners={formatListeners(self.listeners)}"
        return text if self.metrics is None else f"{text} metrics={quote(self.metrics)}"

    @classmethod
    def parse(cls, text: str) -> WorkerSpec:
        """The inverse of :meth:`format`; ``ValueError`` for anything else."""
        fields = dict(item.partition("=")[::2] for item in text.split())
        if set(fields) - {"metrics"} != {"index", "count", "listeners"}:
            raise ValueError(f"expected index=, count=, listeners= and metrics=, not {text!r}")
        index, count = int(fields["index"]), int(fields["count"])
        if not 0 < index < count:
            raise ValueError(f"worker index {index} out of 1..{count - 1}")
        metrics = unquote(fields["metrics"]) if fields.get("metrics") else None
        return cls(index, count, parseListeners(fields["listeners"]), metrics)


@dataclass(frozen=True)
class DevelopmentKey:
    """Upstream's ``DEV_APPLICATION_ID`` + ``DEV_KEY_ID`` + ``DEV_KEY_SECRET``: seeded at start."""

    applicationId: str
    keyId: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class Release:
    """What ``/health_check.json`` says was deployed (``PANDAPUSH_REV``, ``PANDAPUSH_BUILT``)."""

    rev: str = "dev"
    built: str | None = None  # None: when this process started


def nonNegative(kind: type) -> Any:
    """An option's coercion: ``kind`` of the text, refused when it is below zero."""

    def parse(value: str) -> Any:
        number = kind(value)
        if number < 0:
            raise ValueError(f"{value} is negative")
        return number

    parse.coerceDoc = "Must be a non-negative number."  # type: ignore[attr-defined]
    return parse


@dataclass(frozen=True)
class Configuration:
    """Everything ``makeService`` needs to know, resolved and checked."""

    #: Endpoint descriptions to listen on (``--listen``; default ``tcp:$PORT``, else ``tcp:3000``).
    listen: tuple[str, ...]
    storage: StorageConfig
    tenancy: TenancyConfig
    #: The engine's name (``--engine``, ``ENGINE``; Redis hosts imply ``redis``) and factory.
    engineName: str
    engineFactory: IEngineFactory
    engine: EngineConfig
    #: Seconds a long-poll ``/meta/connect`` is held; advised pause between connects.
    timeout: float
    interval: float
    #: What one client may ask of the router (sizes, subscriptions, clients per connection).
    limits: Limits
    #: Publishes per key, clients per application.
    tenantLimits: LimitSettings
    maxBodySize: int
    #: Browser origins allowed across origins; None: any.
    allowedOrigins: tuple[str, ...] | None
    jsonp: bool
    accessLog: bool
    #: ``--log-format``: ``text`` (twistd's) or ``json`` (:mod:`pandapush.logs`).
    logFormat: str
    presenceMaxMembers: int
    presenceMaxData: int
    webhooks: WebhookConfig
    statsInterval: float
    #: Seconds between handing the allocator's free memory back (0: never).
    trimInterval: float
    shutdownGrace: float
    #: ``PANDAPUSH_UNREADY_GRACE``: seconds between SIGTERM and closing the ports, while
    #: ``/ready`` answers 503 so load balancers stop sending new traffic first (0: none).
    unreadyGrace: float
    #: Processes serving the ports (this one included), resolved (``0``: one per CPU).
    workers: int
    reusePort: bool
    #: Set in the processes the parent of ``--workers`` starts.
    worker: WorkerSpec | None
    developmentKey: DevelopmentKey | None
    release: Release
    #: The ``pandapush`` options as written, which the workers are given.
    argv: tuple[str, ...]
    environ: Mapping[str, str] = field(repr=False, compare=False)

    @property
    def workerIndex(self) -> int:
        """0 in the process ``twistd`` started, 1..N-1 in the workers it started."""
        return self.worker.index if self.worker is not None else 0

    @property
    def processes(self) -> int:
        """How many processes serve the ports (in a worker: as many as its parent said)."""
        return self.worker.count if self.worker is not None else self.workers

    @property
    def redisHosts(self) -> str | None:
        return self.engine.redisHosts

    @property
    def redis(self) -> tuple[list[Any], str]:
        """
        The Redis engine's shards (``RedisAddress``es: ``REDIS_HOSTS`` or found through
        Sentinel) and namespace, for what keeps state beside it (key sync, the webhook
        outbox, cluster limits); on another engine, the default Redis.
        """
        engine = self.engine if self.engineName == "redis" else EngineConfig()
        return engine.redisShards(), self.engine.redisNamespace

    @classmethod
    def fromOptions(cls, options: Mapping[str, Any], environ: Mapping[str, str]) -> Configuration:
        """
        From ``twistd pandapush`` options (a :class:`pandapush.tap.Options`, or any
        mapping of its long option names) and ``environ``. Raises
        :class:`ConfigurationError` for anything that cannot work.
        """
        env = dict(environ)
        listen = tuple(options.get("listen") or [f"tcp:{env.get('PORT', '3000')}"])
        origins = options.get("allowed-origins")
        if isinstance(origins, str):
            origins = [o.strip() for o in origins.split(",") if o.strip()]
        if origins is not None:
            # As an application's list is kept: browsers send the scheme and host in
            # lower case and leave a default port out, so "https://App.example:443"
            # written by an operator would otherwise match nothing, silently.
            try:
                origins = normalOrigins(origins)
            except ValueError as e:
                raise ConfigurationError(f"--allowed-origins: {e}") from None
        storage = _storage(options, env)
        tenancy = _tenancy(options, env)
        engineName, engineFactory = _engine(options, env)
        try:
            tenantLimits = LimitSettings.fromOptions(options, env)
            webhooks = WebhookConfig.fromOptions(options, env)
        except ValueError as e:
            raise ConfigurationError(str(e)) from None
        if tenantLimits.cluster and not engineFactory.shared:
            raise ConfigurationError(
                "--cluster-limits (or PANDAPUSH_CLUSTER_LIMITS) needs the Redis engine (--redis-hosts "
                "or REDIS_HOSTS): the nodes count the limits together in Redis"
            )
        timeout = options.get("timeout", 30.0)
        reusePort = bool(options.get("reuse-port"))
        return cls(
            listen=listen,
            storage=storage,
            tenancy=tenancy,
            engineName=engineName,
            engineFactory=engineFactory,
            engine=EngineConfig(
                timeout=timeout,
                clientExpiry=options.get("client-expiry", 10.0),
                historySize=options.get("history-size", 100),
                historyTtl=options.get("history-ttl", 300.0),
                redisHosts=options.get("redis-hosts") or env.get("REDIS_HOSTS"),
                redisNamespace=options.get("redis-namespace") or env.get("REDIS_NAMESPACE", "pandapush"),
                environ=env,
                redisSentinels=_redisSentinels(options, env)[0],
                redisSentinelMasters=_redisSentinels(options, env)[1],
            ),
            timeout=timeout,
            interval=options.get("interval", 0.0),
            limits=Limits(
                maxMessageSize=options.get("max-message-size", 64 * 1024),
                maxChannelLength=options.get("max-channel-length", 200),
                maxSubscriptions=options.get("max-subscriptions", 128),
                maxClientsPerConnection=tenantLimits.maxClientsPerConnection,
            ),
            tenantLimits=tenantLimits,
            maxBodySize=options.get("max-body-size", 1024 * 1024),
            allowedOrigins=None if origins is None else tuple(origins),
            jsonp=not options.get("no-jsonp"),
            accessLog=bool(options.get("access-log")),
            logFormat=_logFormat(options, env),
            presenceMaxMembers=options.get("presence-max-members", 100),
            presenceMaxData=options.get("presence-max-data", 1024),
            webhooks=webhooks,
            statsInterval=options.get("stats-interval", 5.0),
            trimInterval=options.get("trim-interval", 60.0),
            shutdownGrace=options.get("shutdown-grace", 5.0),
            unreadyGrace=_seconds(env, "PANDAPUSH_UNREADY_GRACE"),
            workers=_workers(options, env, engineFactory, storage, listen, reusePort),
            reusePort=reusePort,
            worker=_worker(env),
            developmentKey=_developmentKey(env),
            release=Release(env.get("PANDAPUSH_REV", "dev"), env.get("PANDAPUSH_BUILT")),
            argv=tuple(getattr(options, "argv", ())),
            environ=env,
        )


def _seconds(env: Mapping[str, str], name: str) -> float:
    text = env.get(name) or "0"
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ConfigurationError(f"{name} must be a number of seconds, not {text!r}")
    return seconds


def _storage(options: Mapping[str, Any], env: Mapping[str, str]) -> StorageConfig:
    try:
        storage = StorageConfig.fromEnvironment(env)
    except ValueError as e:
        raise ConfigurationError(f"DATABASE_*: {e}") from None
    if options.get("database"):
        storage = storage.replace(database=options["database"])
    if options.get("database-path"):
        storage = storage.replace(path=options["database-path"])
    return storage


def _tenancy(options: Mapping[str, Any], env: Mapping[str, str]) -> TenancyConfig:
    overrides: dict[str, Any] = {"maxBodySize": options.get("max-body-size", 1024 * 1024)}
    if options.get("trusted-proxies") is not None:
        overrides["trustedProxies"] = tuple(options["trusted-proxies"].split(","))
    try:
        tenancy = TenancyConfig.fromEnvironment(env, **overrides)
        parseTrustedProxies(tenancy.trustedProxies)
    except ValueError as e:
        raise ConfigurationError(str(e)) from None
    return tenancy


def _redisSentinels(options: Mapping[str, Any], env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """``--redis-sentinels`` and ``--redis-sentinel-masters`` (or their variables)."""
    return (
        options.get("redis-sentinels") or env.get("REDIS_SENTINELS") or None,
        options.get("redis-sentinel-masters") or env.get("REDIS_SENTINEL_MASTERS") or None,
    )


def _engine(options: Mapping[str, Any], env: Mapping[str, str]) -> tuple[str, IEngineFactory]:
    """The chosen engine must exist (and its plugin be sound) before anything starts."""
    hosts = options.get("redis-hosts") or env.get("REDIS_HOSTS")
    sentinels, masters = _redisSentinels(options, env)
    name = chooseEngine(options.get("engine") or env.get("ENGINE"), hosts or sentinels or masters)
    if name == "memory" and (options.get("redis-hosts") or options.get("redis-sentinels")):
        raise ConfigurationError(
            "--redis-hosts (or --redis-sentinels) names the Redis engine's shards: it does not apply "
            "with --engine memory"
        )
    if name == "redis":
        try:
            named = EngineConfig(redisHosts=hosts, redisSentinels=sentinels, redisSentinelMasters=masters)
            named.redisShards()
        except ValueError as e:
            raise ConfigurationError(f"REDIS_HOSTS / REDIS_SENTINELS: {e}") from None
    try:
        return name, findEngineFactory(name)
    except EngineConfigError as e:
        raise EngineChoiceError(f"--engine (or ENGINE): {e}") from None


def _logFormat(options: Mapping[str, Any], env: Mapping[str, str]) -> str:
    value = options.get("log-format") or env.get("PANDAPUSH_LOG_FORMAT") or "text"
    if value not in LOG_FORMATS:
        raise ConfigurationError(
            f"--log-format (or PANDAPUSH_LOG_FORMAT) is one of {', '.join(LOG_FORMATS)}, not {value!r}"
        )
    return value


def _worker(env: Mapping[str, str]) -> WorkerSpec | None:
    text = env.get(WORKER_VARIABLE)
    if not text:
        return None
    try:
        return WorkerSpec.parse(text)
    except ValueError as e:
        raise ConfigurationError(f"{WORKER_VARIABLE} (set by the parent of --workers only): {e}") from None


def _developmentKey(env: Mapping[str, str]) -> DevelopmentKey | None:
    appId, keyId, secret = (env.get(n) for n in ("DEV_APPLICATION_ID", "DEV_KEY_ID", "DEV_KEY_SECRET"))
    if not (appId and keyId and secret):
        return None
    return DevelopmentKey(appId, keyId, secret)


def _workers(
    options: Mapping[str, Any],
    env: Mapping[str, str],
    engine: IEngineFactory,
    storage: StorageConfig,
    listen: Sequence[str],
    reusePort: bool,
) -> int:
    """``--workers`` (or ``WORKERS``) resolved, once checked against everything it needs."""
    value = options.get("workers")
    requested = str(value) if value is not None else env.get("WORKERS") or "1"
    try:
        workers = int(requested)
        if workers < 0:
            raise ValueError(requested)
    except ValueError:
        raise ConfigurationError(
            f"--workers (or WORKERS) must be a whole number >= 0, not {requested!r}"
        ) from None
    resolved = resolveWorkerCount(workers)
    if reusePort and not sys.platform.startswith("linux"):
        raise ConfigurationError(
            "--reuse-port needs Linux (elsewhere SO_REUSEPORT does not spread connections)"
        )
    if workers == 1:
        if reusePort:
            raise ConfigurationError("--reuse-port only applies with --workers N (N > 1)")
        return resolved
    # Refused even when 0 resolves to a single CPU: the same flags must not
    # work on one machine and fail on the next.
    if not engine.shared:
        raise ConfigurationError(
            f"--workers {requested} needs the Redis engine (--redis-hosts or REDIS_HOSTS): each "
            "worker is a node of its own, and nodes share clients and messages only through Redis"
        )
    if storage.database == "memory":
        raise ConfigurationError(
            "--workers needs a storage shared by every process (sqlite or postgres): "
            "with DATABASE=memory each worker would have applications and keys of its own"
        )
    for endpoint in listen:
        if endpoint.split(":", 1)[0] not in SHAREABLE_ENDPOINTS:
            raise ConfigurationError(
                f"--workers shares only tcp: listeners, not {endpoint!r}: terminate TLS in front "
                "of pandapush (a load balancer or proxy), or run without --workers"
            )
    return resolved
