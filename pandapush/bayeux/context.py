"""What the router and its extensions know about where a message came from."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred

__all__ = ["MessageContext"]


class MessageContext:
    """
    Per-message facts from the transport, and a scratch space for extensions.

    ``transport`` names the connection type the message arrived on
    (``long-polling``, ``websocket``, ``rest``, ...). ``headers`` are the HTTP
    request's headers (lower-cased names), ``remoteAddress`` the peer's address.
    ``attributes`` is where extensions keep state between their ``incoming`` and
    ``outgoing`` hooks for the same message; it is never sent anywhere.
    ``trusted`` marks messages the server itself generated (presence
    announcements, meta events); extensions let them through.
    ``lost``, when the transport can tell, fires once the connection that should
    carry the replies is gone (a long-poll request whose client hung up), so a
    held ``/meta/connect`` stops holding messages for nobody. A transport may give
    ``lostOf`` instead, which makes that Deferred the first time ``lost`` is read:
    a long-polling request answered at once (all but held connects) never needs one.
    ``connection``, when the transport can tell, stands for the TCP connection the
    message came over (the same object for every request of one keep-alive HTTP
    connection): what the clients-per-connection limit counts by.
    """

    __slots__ = (
        "_lost",
        "_lostOf",
        "attributes",
        "connection",
        "headers",
        "remoteAddress",
        "transport",
        "trusted",
    )

    def __init__(
        self,
        transport: str,
        headers: Mapping[str, str] | None = None,
        remoteAddress: str | None = None,
        trusted: bool = False,
        lost: Deferred[None] | None = None,
        connection: Hashable | None = None,
        lostOf: Callable[[], Deferred[None]] | None = None,
    ) -> None:
        self.transport = transport
        self.connection = connection
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        self.remoteAddress = remoteAddress
        self.trusted = trusted
        self._lost = lost
        self._lostOf = lostOf
        self.attributes: dict[str, Any] = {}

    @property
    def lost(self) -> Deferred[None] | None:
        lost = self._lost
        if lost is None and self._lostOf is not None:
            lost = self._lost = self._lostOf()
        return lost

    @lost.setter
    def lost(self, lost: Deferred[None] | None) -> None:
        self._lost = lost

    @property
    def origin(self) -> str | None:
        """
        The browser origin the message came from, lower-cased: the connection's
        ``Origin`` header (websockets and cross-origin requests always carry one); for
        callback-polling, whose script tags send none, the origin of the ``Referer``.
        None when neither tells (not a browser page, or one hiding its referrer).
        """
        origin = self.headers.get("origin")
        if origin:
            return origin.strip().lower().rstrip("/")
        if self.transport == "callback-polling":
            referer = self.headers.get("referer")
            if referer:
                try:
                    parts = urlsplit(referer.strip())
                except ValueError:
                    return None
                host = parts.netloc.rpartition("@")[2]
                if parts.scheme and host:
                    return f"{parts.scheme}://{host}".lower()
        return None

    def forMessage(self) -> MessageContext:
        """A fresh context for the next message of the same connection/batch."""
        return MessageContext(
            self.transport,
            self.headers,
            self.remoteAddress,
            self.trusted,
            self._lost,
            self.connection,
            self._lostOf,
        )
