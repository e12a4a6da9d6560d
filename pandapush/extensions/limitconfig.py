"""What the per-tenant limits are (:class:`LimitSettings`, from options and environment) and making them.

:func:`makeTenantLimits` builds the limiters of :mod:`pandapush.extensions.limits` from the
settings, per node or counted across nodes through Redis (``--cluster-limits``,
:mod:`pandapush.extensions.clusterlimits`, imported only then).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import IService
from twisted.internet.interfaces import IReactorTime

from pandapush.extensions.limits import (
    DEFAULT_MAX_CLIENTS_PER_CONNECTION,
    DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    DEFAULT_MAX_CONNECTIONS_PER_APP,
    DEFAULT_MAX_PUBLISH_RATE,
    AppConnectionLimiter,
    PublishRate,
    PublishRateLimiter,
)
from pandapush.interfaces import IEngine

__all__ = ["LimitSettings", "TenantLimits", "makeTenantLimits"]


def _setting(value: Any, environ: Mapping[str, str], name: str, default: float, kind: type) -> Any:
    """An option's value, else the environment's ``name``, else ``default``."""
    if value is None:
        text = environ.get(name)
        if not text:
            return kind(default)
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{name} must be a number, not {text!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {value!r}")
    return kind(value)


@dataclass(frozen=True)
class LimitSettings:
    """
    The limits of this module, ``--max-clients-per-connection`` and
    ``--max-connections-per-address``, resolved (by
    :meth:`pandapush.config.Configuration.fromOptions`, through :meth:`fromOptions`).
    """

    maxPublishRate: float = DEFAULT_MAX_PUBLISH_RATE
    maxPublishBurst: float | None = None  # None: twice the rate
    maxConnectionsPerApp: int = DEFAULT_MAX_CONNECTIONS_PER_APP
    #: None: the same as ``maxConnectionsPerApp``.
    maxAnonymousConnectionsPerApp: int | None = None
    maxClientsPerConnection: int = DEFAULT_MAX_CLIENTS_PER_CONNECTION
    #: Open connections per client address (``pandapush.web.connections``).
    maxConnectionsPerAddress: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
    #: ``--cluster-limits``: the publish rate and the clients per application counted
    #: across nodes through Redis (:mod:`pandapush.extensions.clusterlimits`).
    cluster: bool = False

    @classmethod
    def fromOptions(
        cls, options: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> LimitSettings:
        """From ``twistd pandapush`` options, falling back to ``PANDAPUSH_*`` variables."""
        env = os.environ if environ is None else environ
        burst = options.get("max-publish-burst")
        if burst is None and env.get("PANDAPUSH_MAX_PUBLISH_BURST"):
            burst = _setting(None, env, "PANDAPUSH_MAX_PUBLISH_BURST", 0, float)
        return cls(
            maxPublishRate=_setting(
                options.get("max-publish-rate"),
                env,
                "PANDAPUSH_MAX_PUBLISH_RATE",
                DEFAULT_MAX_PUBLISH_RATE,
                float,
            ),
            maxPublishBurst=float(burst) if burst else None,
            maxConnectionsPerApp=_setting(
                options.get("max-connections-per-app"),
                env,
                "PANDAPUSH_MAX_CONNECTIONS_PER_APP",
                DEFAULT_MAX_CONNECTIONS_PER_APP,
                int,
            ),
            maxAnonymousConnectionsPerApp=(
                None
                if options.get("max-anonymous-connections-per-app") is None
                and not env.get("PANDAPUSH_MAX_ANONYMOUS_CONNECTIONS_PER_APP")
                else _setting(
                    options.get("max-anonymous-connections-per-app"),
                    env,
                    "PANDAPUSH_MAX_ANONYMOUS_CONNECTIONS_PER_APP",
                    DEFAULT_MAX_CONNECTIONS_PER_APP,
                    int,
                )
            ),
            maxClientsPerConnection=_setting(
                options.get("max-clients-per-connection"),
                env,
                "PANDAPUSH_MAX_CLIENTS_PER_CONNECTION",
                DEFAULT_MAX_CLIENTS_PER_CONNECTION,
                int,
            ),
            maxConnectionsPerAddress=_setting(
                options.get("max-connections-per-address"),
                env,
                "PANDAPUSH_MAX_CONNECTIONS_PER_ADDRESS",
                DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
                int,
            ),
            cluster=bool(options.get("cluster-limits"))
            or env.get("PANDAPUSH_CLUSTER_LIMITS", "").lower() in ("1", "true", "yes", "on"),
        )


@dataclass(frozen=True)
class TenantLimits:
    """The limiters :func:`makeTenantLimits` made, and the service the cluster-wide ones need."""

    publishes: PublishRate
    connections: AppConnectionLimiter
    #: ``--cluster-limits``: their Redis side (``ClusterLimits``), a child of the server.
    service: IService | None = None


def makeTenantLimits(
    settings: LimitSettings,
    engine: IEngine,
    clock: IReactorTime,
    onRefused: Callable[[str], None],
    redis: tuple[str | Sequence[Any], str],
) -> TenantLimits:
    """
    The per-key publish rate and the clients per application, per node, or with
    ``settings.cluster`` counted across nodes on ``redis`` (shards, namespace): then the
    per-node rate stays as the fallback while Redis does not answer. Imported only then,
    so a server without it loads nothing of Redis for its limits.
    """
    local = PublishRateLimiter(clock, settings.maxPublishRate, settings.maxPublishBurst, onRefused=onRefused)
    budgets: dict[str, Any] = {
        "onRefused": onRefused,
        "maxAnonymousPerApp": settings.maxAnonymousConnectionsPerApp,
    }
    if not settings.cluster:
        connections = AppConnectionLimiter(engine, clock, settings.maxConnectionsPerApp, **budgets)
        return TenantLimits(local, connections)
    from pandapush.extensions.clusterlimits import ClusterConnectionLimiter, ClusterLimits, ClusterPublishRate
    from pandapush.redis import parseRedisHosts

    hosts, namespace = redis
    nodeId = getattr(engine, "nodeId", None) or os.urandom(8).hex()
    shards = parseRedisHosts(hosts) if isinstance(hosts, str) else list(hosts)
    cluster = ClusterLimits(clock, shards[0], namespace, nodeId)
    shared = ClusterConnectionLimiter(engine, clock, cluster, settings.maxConnectionsPerApp, **budgets)
    return TenantLimits(ClusterPublishRate(cluster, local, clock), shared, cluster)
