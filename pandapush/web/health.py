"""
What a load balancer, an orchestrator and an operator ask of a node: is it alive, may
it have traffic, how are its dependencies.

Three answers, none of which waits for anything slow (each reads state the node already
has; the database is pinged in the background at most every ``probeInterval`` seconds):

- ``GET /live``: 200 while the reactor runs. A liveness probe (Kubernetes'
  ``livenessProbe``, the image's ``HEALTHCHECK``) restarts a node that fails it, so it
  fails only when restarting would help: a node whose Redis or database is down is not
  helped by a restart.
- ``GET /ready``: 200 ``{"ready": true}``, or 503 ``{"ready": false, "reasons": [...]}``
  while the node is draining (SIGTERM: it is going away) or its engine cannot reach Redis
  (its clients' subscriptions, queues and presence live there: another node serves them
  better). A readiness probe or load balancer sends no new traffic meanwhile. A database
  outage does not make a node unready: it still delivers and publishes with the keys it
  has cached, and every node shares the database, so taking them all out would help no one.
- ``GET /health_check.json``: 200 always (upstream's URL; monitors alert on its body):
  the version, ``rev`` and ``built``, ``ready`` and why not, and each dependency with its
  status: ``storage`` (``ok``, or ``unavailable`` with ``since`` and ``reason``) and, on
  the Redis engine, ``redis`` (``ok`` or ``unavailable`` with the ``error`` and each
  shard's status).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

import pandapush
from pandapush.bayeux import json

__all__ = ["HealthApp"]


class HealthApp:
    """
    ``/live``, ``/ready`` and ``/health_check.json`` (see the module docstring), from
    ``storage`` (its ``status()`` and ``ping()`` when it has them), ``engine`` (its
    ``health()``) and ``draining`` (true once the node is going away). ``extra`` adds
    fields to the health check (with ``--workers``: which process answered).
    """

    app = Klein()
    probeInterval = 5.0

    def __init__(
        self,
        extra: dict[str, Any] | None = None,
        storage: Any = None,
        clock: IReactorTime | None = None,
        rev: str = "dev",
        built: str | None = None,
        engine: Any = None,
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        status = getattr(storage, "status", None)
        self._storageStatus: Callable[[], dict[str, Any]] | None = status if callable(status) else None
        ping = getattr(storage, "ping", None)
        self._ping: Callable[[], Deferred[Any]] | None = ping if callable(ping) else None
        self._hasStorage = storage is not None
        self._engine = engine
        self._draining = draining
        self._clock = clock
        self._lastProbe: float | None = None
        self._fields: dict[str, Any] = {
            "version": pandapush.__version__,
            "rev": rev,
            "built": built or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            # e.g. which of --workers answered
            **(extra or {}),
        }

    @app.route("/live", methods=["GET", "HEAD"])
    def live(self, request: IRequest) -> bytes:
        return _json(request, 200, {"live": True})

    @app.route("/ready", methods=["GET", "HEAD"])
    def ready(self, request: IRequest) -> bytes:
        reasons = self._notReady(self._redis())
        if reasons:
            return _json(request, 503, {"ready": False, "reasons": reasons})
        return _json(request, 200, {"ready": True})

    @app.route("/health_check.json", methods=["GET", "HEAD"])
    def health(self, request: IRequest) -> bytes:
        redis = self._redis()
        reasons = self._notReady(redis)
        body: dict[str, Any] = {**self._fields, "ready": not reasons}
        if reasons:
            body["reasons"] = reasons
        if self._hasStorage:
            self._probe()
            body["storage"] = (
                self._storageStatus() if self._storageStatus is not None else {"status": "unknown"}
            )
        if redis is not None:
            body["redis"] = redis
        return _json(request, 200, body)

    def _redis(self) -> dict[str, Any] | None:
        """The engine's view of Redis (None: the engine uses none)."""
        if self._engine is None:
            return None
        health = self._engine.health()
        if "redis" not in health:
            return None
        return {key: value for key, value in health.items() if key != "redis"}

    def _notReady(self, redis: dict[str, Any] | None) -> list[str]:
        reasons = []
        if self._draining():
            reasons.append("draining: this node is shutting down")
        if redis is not None and redis.get("status") != "ok":
            reasons.append(f"redis unavailable: {redis.get('error') or 'no connection'}")
        return reasons

    def _probe(self) -> None:
        if self._ping is None:
            return
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor  # type: ignore[assignment]
        assert self._clock is not None
        now = self._clock.seconds()
        if self._lastProbe is not None and now - self._lastProbe < self.probeInterval:
            return
        self._lastProbe = now
        # Its outcome lands in status(); a failure is the outage status() reports.
        self._ping().addErrback(lambda _: None)


def _json(request: IRequest, code: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-cache")
    return json.dumps(body)
