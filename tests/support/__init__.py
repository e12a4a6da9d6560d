"""
What the tests share: servers to test against, clients to test with, and the waiting in between.

Servers
    :mod:`tests.support.inprocess`  a real pandapush on a real port inside the test's own reactor
                                    (``InProcessServer``; with the admin console and Basic auth:
                                    ``InProcessServer.withConsole()``).
    :mod:`tests.support.process`    a real ``python -m twisted pandapush`` child process
                                    (``PandapushProcess``): restarts, signals, several nodes.
    :mod:`tests.support.cluster`    several such processes on one Redis (``ClusterCase``).
    :mod:`tests.support.redis`      the machine's Redis (``requireRedis``, ``deleteNamespace``) and
                                    throw-away redis-servers of a test's own (``RedisProcess``).
    :mod:`tests.support.postgres`   a throw-away PostgreSQL of a test's own (``OwnPostgres``).
    :mod:`tests.support.tenancy`    the tenancy pieces wired as makeService wires them, no server.

Deployment (issue 19: the image, Compose, systemd and nginx, run without their engines)
    :mod:`tests.support.container`  the container image built and run without a container engine.
    :mod:`tests.support.compose`    ``docker-compose.yml`` read as Compose would.
    :mod:`tests.support.systemd`    the systemd unit read and run as systemd would
                                    (:mod:`tests.support.unitexec` applies its sandbox).
    :mod:`tests.support.nginx`      Debian's nginx in front of nodes, with the example config.
    :mod:`tests.support.deploy`     what those tests do alike over real sockets.

Clients
    :mod:`tests.support.bayeux`     small Bayeux clients over real sockets (``WSClient``, ``LPClient``).
    :mod:`tests.support.failover`   clients that move between nodes as real ones behind a balancer do
                                    (``FailoverWS``, ``AlternatingPoller``, ``FailoverPoller``).
    :mod:`tests.support.node`       Node scripts of ``tests/node`` (the real Faye client) as child processes.
    :mod:`tests.support.browser`    headless Chromium through Playwright (``BrowserThread``, ``PageServer``).
    :mod:`tests.support.console`    the ``/admin`` console in that browser (``ConsolePage``, ``Http``).
    :mod:`tests.support.sdks`       what the server libraries' tests share (``SDKEndToEnd``).

Fakes and small things
    :mod:`tests.support.auth`       keys and tokens for the auth unit tests (``FakeKeyStore``, ``token``).
    :mod:`tests.support.http`       ``stubTreq``: treq's calls answered by a resource in memory;
                                    ``FakeRequest``: one request handed straight to a resource.
    :mod:`tests.support.logs`       ``captureLogs``: what a test's code logged.
    :mod:`tests.support.waiting`    ``sleep`` and ``eventually`` on the reactor.
    :mod:`tests.support.ports`      ``freePort``, ``listenLocally``/``portNumber``, ``reachable``.
    :mod:`tests.support.requirements` skip a test whose tool is missing (or fail, under ``run-tests``).

``bench/`` imports from here too (its fault and fuzz runs use the same processes and clients).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["REPO_ROOT"]

#: The checkout's root (its ``pandapush`` package and ``twisted/plugins`` dropin are the ones tested).
REPO_ROOT = Path(__file__).resolve().parents[2]
