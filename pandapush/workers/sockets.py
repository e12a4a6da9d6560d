"""The listening sockets of ``--workers``: shared, adopted, or one per worker (``SO_REUSEPORT``).

Which one a process uses is :func:`listenerServices`' choice, from the configuration:
a worker adopts the sockets it inherited (``PANDAPUSH_WORKER`` names them); the parent
binds ``--listen`` as usual, or, with ``--reuse-port``, a ``SO_REUSEPORT`` socket of its
own (:class:`ReusePortEndpoint`), and makes one more for each worker it starts
(:func:`reusePortSocket`). Why one shared socket by default is in :mod:`pandapush.workers`.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.abstract import isIPv6Address
from twisted.internet.endpoints import (
    AdoptedStreamServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
)
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from pandapush.config import Configuration

__all__ = [
    "LISTEN_BACKLOG",
    "EndpointListener",
    "ReusePortEndpoint",
    "isTLS",
    "listenerServices",
    "reusePortSocket",
    "withBacklog",
]

#: The accept queue a listener asks for unless its endpoint names ``backlog=``. Twisted's
#: default is 50: when more clients connect at once than the reactor accepts in a turn
#: (every client reconnecting after a deploy), the kernel drops their SYNs
#: (``ListenOverflows`` in ``nstat``) and each waits the SYN retransmission, 1 s then 3 s...
#: A 3,000-client storm with 200 in flight ran at a third of Faye's setup rate that way
#: (Node's default is 511). Linux caps it at ``net.core.somaxconn`` (4096 since 5.4); a
#: queued connection costs kernel memory only while it waits.
LISTEN_BACKLOG = 4096

#: Endpoint types whose listeners take ``backlog=`` (``systemd:`` and adopted sockets
#: were already listening: their queue is whoever created them's business).
_BACKLOG_TYPES = ("tcp", "tcp6", "ssl", "unix")


def withBacklog(description: str, backlog: int = LISTEN_BACKLOG) -> str:
    """``description`` (a ``--listen`` endpoint) with ``backlog=`` added when it takes one and names none."""
    kind, _, rest = description.partition(":")
    if kind not in _BACKLOG_TYPES or not rest:
        return description
    if any(part.startswith("backlog=") for part in rest.split(":")):
        return description
    return f"{description}:backlog={backlog}"


def reusePortSocket(family: socket.AddressFamily, interface: str, port: int, backlog: int) -> socket.socket:
    """A listening socket bound with ``SO_REUSEPORT``, so that others bound alike share its port."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As twisted.internet.tcp.Port does: restarting must not wait for TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((interface, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """
    ``tcp:``/``tcp6:`` as Twisted parses them, listening on a ``SO_REUSEPORT``
    socket (``--workers`` with ``--reuse-port``: the parent's own listener).
    """

    def __init__(self, reactor: Any, description: str) -> None:
        parsed = serverFromString(reactor, description)
        if not isinstance(parsed, TCP4ServerEndpoint | TCP6ServerEndpoint):
            raise ValueError(f"--reuse-port needs a tcp: or tcp6: endpoint, not {description!r}")
        self.reactor = reactor
        # Twisted keeps these private; they have not changed in a decade.
        self.port: int = parsed._port
        self.backlog: int = parsed._backlog
        self.interface: str = parsed._interface
        ipv6 = isinstance(parsed, TCP6ServerEndpoint) or isIPv6Address(self.interface)
        self.family = socket.AF_INET6 if ipv6 else socket.AF_INET

    def listen(self, factory: Any) -> defer.Deferred[IListeningPort]:
        try:
            sock = reusePortSocket(self.family, self.interface, self.port, self.backlog)
            try:
                port = self.reactor.adoptStreamPort(sock.fileno(), self.family, factory)
            finally:
                sock.close()  # adoptStreamPort kept a duplicate
        except OSError as reason:
            return defer.fail(error.CannotListenError(self.interface, self.port, reason))
        return defer.succeed(port)


class EndpointListener(Service):
    """
    Listens with ``endpoint`` for ``factory`` once started, and stops listening when
    stopped. ``listening`` fires with the port, or fails with why it could not listen:
    reporting that is its owner's (``StorageService``: one line, and the process exits
    non-zero). Twisted's ``StreamServerEndpointService`` logs the failure as a traceback
    itself and then fires with None, which left a server that could not listen running,
    listening nowhere.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, factory: IProtocolFactory, description: str) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.description = description
        self.listening: defer.Deferred[IListeningPort] | None = None
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        self.listening = self.endpoint.listen(self.factory)
        self.listening.addCallback(self._listened)

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        return port

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            stopped: defer.Deferred[None] = defer.maybeDeferred(port.stopListening)  # type: ignore[call-overload]
            return stopped
        if self.listening is not None and not self.listening.called:
            self.listening.cancel()
        return None


def isTLS(port: IListeningPort) -> bool:
    """Whether ``port`` speaks TLS (an ``ssl:`` endpoint's port wraps its factory in one)."""
    return isinstance(getattr(port, "factory", None), TLSMemoryBIOFactory)


def listenerServices(
    config: Configuration, reactor: Any, factory: IProtocolFactory
) -> list[EndpointListener]:
    """
    A service listening for ``factory`` on each of ``config``'s endpoints: the
    inherited sockets, adopted, in a worker; a ``SO_REUSEPORT`` socket of its own
    with ``--reuse-port``; else ``--listen`` as ``strports`` parses it.
    """
    if config.worker is not None:
        return [
            EndpointListener(
                AdoptedStreamServerEndpoint(reactor, fd, family), factory, f"inherited socket {fd}"
            )
            for fd, family in config.worker.listeners
        ]
    if config.reusePort:
        return [
            EndpointListener(ReusePortEndpoint(reactor, withBacklog(endpoint)), factory, endpoint)
            for endpoint in config.listen
        ]
    return [
        EndpointListener(serverFromString(reactor, withBacklog(endpoint)), factory, endpoint)
        for endpoint in config.listen
    ]
