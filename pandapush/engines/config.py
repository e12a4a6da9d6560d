"""What an engine is made from: :class:`EngineConfig`, and the error for a bad choice."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["DEFAULT_REDIS_HOSTS", "EngineConfig", "EngineConfigError"]

#: The Redis the ``redis`` engine uses when chosen without ``REDIS_HOSTS``.
DEFAULT_REDIS_HOSTS = "127.0.0.1:6379"


class EngineConfigError(ValueError):
    """The engine asked for is unknown, or its plugin is broken: the server cannot start."""


@dataclass(frozen=True)
class EngineConfig:
    """
    The settings every engine is made from. ``redisHosts``/``redisNamespace`` are the
    Redis engine's (``REDIS_HOSTS``, ``REDIS_NAMESPACE``); a third-party engine reads
    its own settings from ``environ``.
    """

    #: Seconds a long-poll ``/meta/connect`` is held (``--timeout``).
    timeout: float = 30.0
    #: Seconds a client survives without a connection (``--client-expiry``).
    clientExpiry: float = 10.0
    #: Messages each channel keeps, and for how many seconds (``--history-size``,
    #: ``--history-ttl``); an application's own settings override them.
    historySize: int = 100
    historyTtl: float = 300.0
    redisHosts: str | None = None
    redisNamespace: str = "pandapush"
    environ: Mapping[str, str] = field(default_factory=dict)
