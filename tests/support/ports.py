"""Ports on 127.0.0.1: a free one, listening on one, and whether something answers on one."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.internet.protocol import ServerFactory

__all__ = ["freePort", "listenLocally", "portNumber", "reachable"]


def freePort(interface: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's pick for a bound, closed socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((interface, 0))
        port: int = s.getsockname()[1]
        return port


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a TCP connection to ``host:port`` is accepted (blocking: for set-up and polling only)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def listenLocally(factory: ServerFactory[Any], reactor: Any = None) -> IListeningPort:
    """``factory`` (a ``Site``...) listening on a free port of 127.0.0.1; ``portNumber`` says which."""
    tcp: IReactorTCP = reactor or _reactor
    return tcp.listenTCP(0, factory, interface="127.0.0.1")


def portNumber(port: IListeningPort) -> int:
    """The TCP port ``port`` listens on."""
    address = port.getHost()
    assert isinstance(address, IPv4Address), address
    return address.port
