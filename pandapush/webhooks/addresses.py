"""Where a webhook may go: URLs, and the addresses only root admins may reach.

Application admins are not the operator: a webhook must not let one of them make the
server send requests into the operator's own network. An endpoint made by an admin who
is not root (:attr:`Webhook.allow_private` false) may only reach **global unicast**
addresses: not loopback, private (10/8, 172.16/12, 192.168/16, ULA fc00::/7), link-local
(169.254/16 with the cloud metadata service 169.254.169.254, fe80::/10), CGNAT
(100.64/10), multicast, unspecified, reserved or documentation ranges, nor IPv4 carried
in IPv6 (mapped ``::ffff:10.0.0.1``, 6to4, Teredo) that is one of those; AWS's IPv6
metadata address fd00:ec2::254 is a ULA. The operator may allow networks for everyone
(``--webhook-allow-networks``).

The address is checked when the server connects, on what the name resolves to then, every
address of the answer (:mod:`pandapush.webhooks.http` connects to the one it checked), so a
name that resolved to a public address when the endpoint was made and to 127.0.0.1 later
(DNS rebinding) is refused. Creating an endpoint checks once too, for a clear error early.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IResolutionReceiver
from zope.interface import implementer

__all__ = [
    "AddressPolicy",
    "IPAddress",
    "Resolver",
    "WebhookURL",
    "checkURL",
    "parseNetworks",
    "reactorResolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``resolve(host, port)``: the addresses (text) the name has now.
Resolver = Callable[[str, int], Deferred[list[str]]]

MAX_URL = 2000
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


@dataclass(frozen=True)
class WebhookURL:
    url: str
    scheme: str
    host: str
    port: int


def checkURL(url: Any) -> WebhookURL:
    """``url`` as a webhook target; ``ValueError`` saying what is wrong with it."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("url is required: http://... or https://...")
    url = url.strip()
    if len(url) > MAX_URL:
        raise ValueError(f"url is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ValueError(f"url cannot be read: {error}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"A webhook URL is http:// or https://, not {parts.scheme or 'without a scheme'}")
    if not parts.hostname:
        raise ValueError("url has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("url must not hold a user name or password: requests are signed instead")
    if any(c.isspace() for c in url):
        raise ValueError("url must not contain spaces")
    scheme = parts.scheme.lower()
    return WebhookURL(url, scheme, parts.hostname, port or (443 if scheme == "https" else 80))


def parseNetworks(text: str | Sequence[str] | None) -> tuple[Network, ...]:
    """``10.0.0.0/8,fd00::/8``: networks; ``ValueError`` for anything else."""
    if not text:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    networks = []
    for item in (i.strip() for i in items):
        if item:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"not a network: {item!r} (use e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def _embedded(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        carried = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if carried is not None:
            return carried
    return address


def _kind(address: IPAddress) -> str | None:
    """What makes the address one only root may reach, or None for a global unicast address."""
    if address in _METADATA:
        return "the cloud metadata service"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "shared (CGNAT)"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "reserved"
    return None


class AddressPolicy:
    """What an endpoint may reach: global addresses, the operator's ``allowed`` networks; root's: any."""

    def __init__(self, allowed: Sequence[Network] = ()) -> None:
        self.allowed = tuple(allowed)

    def refusal(self, text: str, allowPrivate: bool) -> str | None:
        """Why ``text`` (an address) may not be reached by this endpoint, or None if it may."""
        try:
            address: IPAddress = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            return f"{text} is not an IP address"
        if allowPrivate or any(address in network for network in self.allowed):
            return None
        carried = _embedded(address)
        kind = _kind(carried) if carried is not address else _kind(address)
        if kind is None:
            return None
        return f"{text} is {kind}: only a root admin's webhooks may reach it"

    def literal(self, host: str) -> str | None:
        """The host if it is an IP address (brackets off), else None."""
        try:
            return str(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            return None


@implementer(IResolutionReceiver)
class _Collect:
    def __init__(self) -> None:
        self.done: Deferred[list[str]] = Deferred()
        self.found: list[str] = []

    def resolutionBegan(self, resolution: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        self.found.append(address.host)

    def resolutionComplete(self) -> None:
        self.done.callback(list(dict.fromkeys(self.found)))


def reactorResolver(reactor: Any) -> Resolver:
    """A :data:`Resolver` asking the reactor's name resolver (the system's, in a thread)."""

    def resolve(host: str, port: int) -> Deferred[list[str]]:
        receiver = _Collect()
        try:
            reactor.nameResolver.resolveHostName(receiver, host, port)
        except Exception:
            return defer.fail()
        return receiver.done

    return resolve
