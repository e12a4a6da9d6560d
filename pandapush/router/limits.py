"""What one client may ask of the router, and who hears when a limit refuses something.

These limits are about one message or one client (sizes, subscriptions, clients per
connection). Limits that must know whose key or application a message is for (publishes
per key, clients per application) sit beside tenancy, in ``pandapush.extensions.limits``, and report
their refusals here too.
"""

from __future__ import annotations

from collections.abc import Callable

from pandapush.bayeux import channel as channels
from pandapush.bayeux.errors import BayeuxError
from pandapush.bayeux.message import Message, Reply, fail

__all__ = ["Limits", "Refusals", "channelRefusal", "tooLong"]


class Limits:
    """
    What one client may ask of the router. Defaults are in the range Pusher and
    Centrifugo users know: 64 KiB messages, 200-character channel names, 128
    subscriptions per client.

    ``maxClientsPerConnection`` bounds the clients one connection may create: live
    clients handshaken over one websocket, and handshakes in one HTTP batch (0:
    unlimited). A Faye or CometD client needs one; a few more cover a client that
    handshakes again while its old session has not expired yet.
    """

    def __init__(
        self,
        maxMessageSize: int = 64 * 1024,
        maxChannelLength: int = 200,
        maxSubscriptions: int = 128,
        maxClientsPerConnection: int = 4,
    ):
        self.maxMessageSize = maxMessageSize
        self.maxChannelLength = maxChannelLength
        self.maxSubscriptions = maxSubscriptions
        self.maxClientsPerConnection = maxClientsPerConnection


class Refusals:
    """Tells observers (metrics) the name of the limit each time one refuses a message."""

    def __init__(self) -> None:
        self._observers: list[Callable[[str], None]] = []

    def addObserver(self, observer: Callable[[str], None]) -> None:
        self._observers.append(observer)

    def report(self, limit: str) -> None:
        for observer in self._observers:
            observer(limit)

    def refuse(self, reply: Message, limit: str, error: BayeuxError) -> list[Reply]:
        """``reply`` refused with ``error`` by ``limit``, reported."""
        self.report(limit)
        return [fail(reply, error)]


def tooLong(channel: str, limit: int) -> BayeuxError:
    return BayeuxError(405, [channel[:limit] + "..."], f"Channel name longer than {limit} characters")


def channelRefusal(channel: str, limits: Limits) -> tuple[str, BayeuxError] | None:
    """
    The limit ``channel`` is over (its label and the error that names it), or None.

    Every channel a client or the server itself publishes or subscribes to comes
    through here before anything else looks at it: an engine expands a channel into
    one key per segment (:func:`~pandapush.bayeux.channel.expand`), so both its length
    and its depth must be bounded on every path, REST and the server's own included.
    """
    maxLength = limits.maxChannelLength
    if len(channel) > maxLength:
        return "channel_length", tooLong(channel, maxLength)
    if channels.depth(channel) > channels.MAX_DEPTH:
        return "channel_depth", BayeuxError(
            405, [channel], f"Channel name deeper than {channels.MAX_DEPTH} segments"
        )
    return None
