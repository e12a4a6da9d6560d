"""Ports on 127.0.0.1: a free one to listen on, and whether something answers on one."""

from __future__ import annotations

import socket

__all__ = ["freePort", "reachable"]


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
