"""The long-lived parts of a server, as ``twisted.application`` services.

``pandapush.tap.makeService`` builds the pieces and hangs them under one
:class:`PandapushService`; the classes here only start and stop what they are given:

- :class:`BayeuxService`: the engine and router; drains on stop (SIGTERM);
- :class:`StorageService`: starts the storage, seeds the ``DEV_*`` key, then starts the
  listening ports (its children), so no request arrives before the storage can answer;
- :class:`OpenFileLimit`: raises the process's soft limit of open files to its hard limit;
- :class:`PandapushService`: the whole tree, closing the storage once every child has
  stopped; :class:`Server`, what ``makeService`` returns, is one that also holds the
  pieces (``.engine``, ``.router``...) for tests and embedders.

In the layering this sits above ``web`` (it holds the site and the admin apps) and
``workers`` (the parent's pool is one of the pieces), below ``tap``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from twisted.application.service import MultiService, Service
from twisted.internet import defer, error
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from pandapush import __version__
from pandapush._process import ProcessStatus
from pandapush.auth.admin import AdminAuthError
from pandapush.auth.keycache import KeyCache
from pandapush.config import Configuration, DevelopmentKey
from pandapush.extensions.metrics import Metrics
from pandapush.extensions.statistics import Statistics
from pandapush.interfaces import IEngine, IRouter
from pandapush.storage.errors import StorageError
from pandapush.storage.interfaces import IStorage
from pandapush.transports.resource import BayeuxResource
from pandapush.web.admin import AdminApp
from pandapush.web.adminauth import AdminAuthority
from pandapush.web.site import PandapushSite
from pandapush.workers.pool import READY_FIELD, WorkerPool
from pandapush.workers.sockets import EndpointListener, isTLS

if TYPE_CHECKING:
    # Only for its type: importing it loads the Redis client, which a server on the
    # memory engine never does.
    from pandapush.auth.keysync import KeySync
    from pandapush.webhooks.sender import WebhookSender

__all__ = [
    "EXPECTED_START_FAILURES",
    "BayeuxService",
    "OpenFileLimit",
    "PandapushService",
    "Server",
    "StorageService",
    "seedDevelopmentKey",
]


class OpenFileLimit(Service):
    """
    Raises this process's soft limit of open files (``RLIMIT_NOFILE``) to its hard limit
    when it starts, and logs both. Every client holds a socket, and the soft limit is
    often 1,024 while the hard one allows far more (systemd gives services 524,288):
    nothing is gained by refusing connections below a limit the process may raise
    itself. An unlimited hard limit is taken as the kernel's ``nr_open``. Not raised
    past 1,024 under the select() reactor, which cannot watch descriptors beyond that.
    """

    _log = Logger()

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def startService(self) -> None:
        super().startService()
        try:
            import resource
        except ImportError:  # not a POSIX system
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = _nrOpen() if hard == resource.RLIM_INFINITY else hard
        if type(self.reactor).__name__ == "SelectReactor":
            target = min(target, 1024)
        if soft == resource.RLIM_INFINITY or soft >= target:
            self._log.info("open files: limit {soft} (hard limit {hard})", soft=soft, hard=hard)
            return
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as reason:
            self._log.warn(
                "open files: limit {soft}, could not raise it to {target}: {reason}",
                soft=soft,
                target=target,
                reason=reason,
            )
            return
        self._log.info("open files: limit raised from {soft} to {target}", soft=soft, target=target)


def _nrOpen() -> int:
    """The most descriptors a Linux process may have; elsewhere a common ceiling."""
    try:
        with open("/proc/sys/fs/nr_open") as limit:
            return int(limit.read())
    except (OSError, ValueError):
        return 1_048_576


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
        status: ProcessStatus | None = None,
    ) -> None:
        self.engine = engine
        self.router = router
        self.resource = resource
        self.reactor = reactor
        self.grace = grace
        self.sharedEngine = sharedEngine
        self.status = status or ProcessStatus()

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
        self.status.stopping()
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


async def seedDevelopmentKey(storage: IStorage, key: DevelopmentKey | None) -> None:
    """
    Upstream's ``DEV_APPLICATION_ID`` + ``DEV_KEY_ID`` + ``DEV_KEY_SECRET``: make
    sure that application and key exist, so a development setup starts ready.
    """
    if key is None:
        return
    if await storage.getApplication(key.applicationId) is None:
        await storage.createApplication("development", "DEV_APPLICATION_ID", applicationId=key.applicationId)
    if await storage.getKey(key.keyId) is None:
        await storage.createKey(
            key.applicationId, "DEV_KEY_ID", purpose="development", keyId=key.keyId, secret=key.secret
        )


class StorageService(MultiService):
    """
    Starts the storage (SQLite migrates itself; PostgreSQL checks its schema),
    seeds the ``DEV_*`` application and key, runs ``prepare`` (what needs the storage
    before the first request: the generated admin password), then starts its children
    (the listening ports), so no request arrives before the storage can answer it.

    If any of that fails, the reason is logged (one line for the failures an operator
    is expected to fix: a port in use, a schema to migrate, a database unreachable; a
    traceback for anything else), ``ready`` and ``listening`` fail, and ``onFailure``
    is called (by default it stops the reactor; a server that owns its process also
    makes it exit non-zero, see :func:`pandapush._process.setExitStatus`).

    ``banner`` gives the line to log, once listening, for a newcomer to log in to
    ``/admin`` (None: nothing to say). A worker (``workerIndex`` not None) logs only
    where it serves, marked for its parent (:data:`~pandapush.workers.pool.READY_FIELD`):
    its parent has said where it listens and what the admin password is.
    """

    _log = Logger()

    def __init__(
        self,
        storage: IStorage,
        reactor: Any,
        developmentKey: DevelopmentKey | None = None,
        banner: Callable[[str], str | None] = lambda url: None,
        workerIndex: int | None = None,
        prepare: Sequence[Callable[[], Awaitable[object]]] = (),
        onFailure: Callable[[], object] | None = None,
        status: ProcessStatus | None = None,
    ) -> None:
        super().__init__()
        self.storage = storage
        self.reactor = reactor
        self.developmentKey = developmentKey
        self.banner = banner
        self.workerIndex = workerIndex
        self.prepare = list(prepare)
        self.onFailure = onFailure if onFailure is not None else self._stopReactor
        #: Tells systemd (``Type=notify``) and a daemonizing twistd when this node serves.
        self.status = status or ProcessStatus()
        self.ready: defer.Deferred[None] = defer.Deferred()
        #: Fires with the listening ports once they listen (what --workers shares).
        self.listening: defer.Deferred[list[IListeningPort]] = defer.Deferred()
        if onFailure is not None:
            # A failure is its owner's (the process's) to act on: nothing else waits for these.
            self.ready.addErrback(lambda _: None)
            self.listening.addErrback(lambda _: None)

    def privilegedStartService(self) -> None:
        # Not passed on to the ports: they would bind before the storage is ready.
        # (So a port below 1024 needs the process to keep the right to bind it.)
        Service.privilegedStartService(self)
        # twistd has just forked, if it daemonizes: its parent waits for our word.
        self.status.takeStatusPipe()

    def startService(self) -> None:
        Service.startService(self)
        d = defer.Deferred.fromCoroutine(self._start())
        d.addErrback(self._failed)

    async def _start(self) -> None:
        await self.storage.start()
        await seedDevelopmentKey(self.storage, self.developmentKey)
        for step in self.prepare:
            await step()
        listeners = [child for child in self if isinstance(child, EndpointListener)]
        for child in self:
            child.startService()
        results = await defer.DeferredList(
            [listener.listening for listener in listeners if listener.listening is not None],
            consumeErrors=True,
        )
        for ok, result in results:
            if not ok:
                cast(Failure, result).raiseException()
        listening = [cast(IListeningPort, port) for _, port in results]
        for port in listening:
            self._announce(port)
        if self.workerIndex is None:
            self.status.ready(f"serving ({len(listening)} listening ports)")
        self.listening.callback(listening)
        self.ready.callback(None)

    def _announce(self, port: IListeningPort) -> None:
        host = port.getHost()
        name = getattr(host, "host", "localhost")
        scheme = "https" if isTLS(port) else "http"
        url = f"{scheme}://{'localhost' if name in ('0.0.0.0', '::') else name}:{getattr(host, 'port', '')}"
        if self.workerIndex is not None:
            self._log.info(
                "worker {index} serving {url}/push", index=self.workerIndex, url=url, **{READY_FIELD: True}
            )
            return
        self._log.info("pandapush {version} listening at {url}/push", version=__version__, url=url)
        banner = self.banner(url)
        if banner:
            self._log.info("{banner}", banner=banner)

    def _failed(self, failure: Failure) -> None:
        if failure.check(*EXPECTED_START_FAILURES):
            # Nothing a traceback would add: what to fix is in the message.
            self._log.error(
                "pandapush could not start: {reason}", reason=_oneLine(cast(BaseException, failure.value))
            )
        else:
            self._log.failure("pandapush could not start", failure)
        self.status.failed(_oneLine(cast(BaseException, failure.value)))
        if not self.listening.called:
            self.listening.errback(failure)
        if not self.ready.called:
            self.ready.errback(failure)
        self.onFailure()

    def _stopReactor(self) -> None:
        if getattr(self.reactor, "running", False):
            self.reactor.stop()


#: Start-up failures an operator is expected to fix, reported in one line.
EXPECTED_START_FAILURES: tuple[type[BaseException], ...] = (
    error.CannotListenError,
    StorageError,
    AdminAuthError,
)


def _oneLine(reason: BaseException) -> str:
    text = " ".join(str(reason).split())
    return text or type(reason).__name__


class PandapushService(MultiService):
    """
    A server's service tree. Its children stop together (a MultiService stops them
    all at once), and the storage closes only once every one of them has: some still
    write while stopping (the key usage flusher's last flush), and a write sent to a
    closed storage was never answered, which left the process hanging on SIGTERM.

    From the stop on, ``unready`` is true (``/ready`` answers 503). With an
    ``unreadyGrace``, the children stop only that many seconds later, the node serving
    meanwhile as before: a load balancer (or Kubernetes, which sends SIGTERM as it
    removes the endpoint) sees the 503 and stops sending new traffic before the ports
    close and the clients are told to reconnect elsewhere.
    """

    _log = Logger()

    def __init__(
        self, storage: IStorage, unreadyGrace: float = 0.0, clock: IReactorTime | None = None
    ) -> None:
        super().__init__()
        self.setName("pandapush")
        self.storage = storage
        self.unreadyGrace = unreadyGrace
        self.clock = clock
        self.unready = False

    def stopService(self) -> defer.Deferred[None]:
        self.unready = True
        if self.unreadyGrace > 0 and self.clock is not None:
            self._log.info("unready: closing in {grace:g}s", grace=self.unreadyGrace)
            d = deferLater(self.clock, self.unreadyGrace, lambda: None)
            d.addCallback(lambda _: MultiService.stopService(self))
        else:
            d = defer.maybeDeferred(super().stopService)
        d.addBoth(lambda _: self.storage.close())
        return d


class Server(PandapushService):
    """
    What ``makeService`` returns: the service tree, and the pieces it was built from,
    for tests and embedders to reach without walking the tree. ``ready`` fires once
    the server listens; ``keysync`` is None unless the engine is Redis, ``workers``
    unless this process started workers.
    """

    def __init__(
        self,
        *,
        configuration: Configuration,
        storage: IStorage,
        engine: IEngine,
        router: IRouter,
        bayeux: BayeuxResource,
        site: PandapushSite,
        statistics: Statistics,
        metrics: Metrics,
        keys: KeyCache,
        adminAuthority: AdminAuthority,
        adminApp: AdminApp,
        ready: defer.Deferred[None],
        keysync: KeySync | None = None,
        workers: WorkerPool | None = None,
        webhooks: WebhookSender | None = None,
        logObserver: ILogObserver | None = None,
        unreadyGrace: float = 0.0,
        clock: IReactorTime | None = None,
    ) -> None:
        super().__init__(storage, unreadyGrace, clock)
        self.configuration = configuration
        self.engine = engine
        self.router = router
        self.bayeux = bayeux
        self.site = site
        self.statistics = statistics
        self.metrics = metrics
        self.keys = keys
        self.adminAuthority = adminAuthority
        self.adminApp = adminApp
        self.ready = ready
        self.keysync = keysync
        self.workers = workers
        #: Sends this node's share of webhook events (None without a place to keep them).
        self.webhooks = webhooks
        #: ``--log-format json``'s observer, for the application this is added to.
        self.logObserver = logObserver

    def setServiceParent(self, parent: Any) -> None:
        # twistd logs to the application's ILogObserver component when it has one (and
        # --logger does not say otherwise); it starts logging after this, before running.
        if self.logObserver is not None and isinstance(parent, Componentized):
            if parent.getComponent(ILogObserver) is None:
                parent.setComponent(ILogObserver, self.logObserver)
        super().setServiceParent(parent)
