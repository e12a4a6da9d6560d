"""Which clients are which user, and ending them on every node (``terminate_connections``).

A client is a user of an application when it subscribed to one of its channels as that
user: its presence id (a presence subscribe's token ``presence.id``), or the ``user``
claim of the token it subscribed with. :class:`UserConnections` remembers that on the
node that handled the subscribe, as an extension seeing successful subscribe replies
(tenancy has left ``presence`` and ``user`` in the context), and forgets it when the
client is destroyed here: a dictionary entry per client and user, nothing per message.

Ending a user's connections (:meth:`UserConnections.terminate`) is two broadcasts
(``IEngine.broadcast``, so every node of a Redis engine hears them):

1. ``terminate-user`` ``{app, user}``: every node looks the user up in its own index;
   a node that knows clients of it broadcasts
2. ``terminate-clients`` ``{clients}``: every node ends those it serves
   (``IRouter.terminate``: a held connect, long-poll or over a websocket, is answered
   with ``advice.reconnect: none``) and remembers them for a minute, answering any
   connect of theirs the same way wherever it lands; then the node that knew them
   destroys them in the engine (subscriptions end, presence members leave, sockets
   close). The destroy follows the broadcast on the same Redis connection, so every
   other node has heard which clients to refuse before their sockets close; the node
   that knew them ends its own before it broadcasts, since its own broadcast comes
   back on the subscriber connection, which can be later than the destroy.

A client is never told twice and the index never grows with messages. The clients a node
knows but another node destroyed (a long-poller that moved, an expiry) are forgotten here
at the next sweep (every :data:`SWEEP_INTERVAL` seconds, those the engine no longer has).
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from pandapush.bayeux.context import MessageContext
from pandapush.bayeux.message import SUBSCRIBE, subscriptionChannels
from pandapush.interfaces import IRouter, IScopedExtension
from pandapush.listeners import EngineListener

__all__ = ["SWEEP_INTERVAL", "UserConnections"]

Message = dict[str, Any]
User = tuple[str, str]

TERMINATE_USER = "terminate-user"
TERMINATE_CLIENTS = "terminate-clients"
#: Seconds between looks for clients destroyed on other nodes.
SWEEP_INTERVAL = 300.0


def _app(channel: str) -> str | None:
    parts = channel.split("/", 3)
    return parts[1] if len(parts) >= 4 and parts[1] else None


@implementer(IScopedExtension)
class UserConnections(EngineListener):
    """The clients of each (application, user) on this node, and ending them cluster-wide."""

    # What the hooks act on (IScopedExtension): the router skips them for the rest.
    incomingOn: frozenset[str] = frozenset()
    outgoingOn: frozenset[str] = frozenset({SUBSCRIBE})

    _log = Logger()

    def __init__(self, router: IRouter, clock: IReactorTime) -> None:
        self.router = router
        self.engine = router.engine
        self._clients: dict[User, set[str]] = {}
        self._users: dict[str, set[User]] = {}
        self.engine.addListener(self)
        self.engine.onBroadcast(TERMINATE_USER, self._terminateUser)
        self.engine.onBroadcast(TERMINATE_CLIENTS, self._terminateClients)
        #: Started with the server: forgets clients another node destroyed.
        self.service = TimerService(SWEEP_INTERVAL, self.sweep)
        self.service.clock = clock

    # IExtension

    def incoming(self, message: Message, context: MessageContext) -> Message:
        return message

    def outgoing(self, reply: Message, context: MessageContext) -> Message:
        if reply.get("channel") != "/meta/subscribe" or not reply.get("successful"):
            return reply
        clientId = reply.get("clientId")
        if not isinstance(clientId, str):
            return reply
        names: set[str] = set()
        presence = context.attributes.get("presence")
        if isinstance(presence, dict) and presence.get("id") is not None:
            names.add(str(presence["id"]))
        user = context.attributes.get("user")
        if isinstance(user, str):
            names.add(user)
        if names:
            for channel in subscriptionChannels(reply):
                app = _app(channel)
                if app is not None:
                    for name in names:
                        self._remember(clientId, (app, name))
        return reply

    def _remember(self, clientId: str, user: User) -> None:
        self._clients.setdefault(user, set()).add(clientId)
        self._users.setdefault(clientId, set()).add(user)

    # IEngineListener

    def clientDestroyed(self, clientId: str, reason: str) -> None:
        self._forget(clientId)

    def _forget(self, clientId: str) -> None:
        for user in self._users.pop(clientId, ()):
            clients = self._clients.get(user)
            if clients is not None:
                clients.discard(clientId)
                if not clients:
                    del self._clients[user]

    def clientsOf(self, appId: str, userId: str) -> set[str]:
        """This node's clients of the user (tests, diagnostics)."""
        return set(self._clients.get((appId, userId), ()))

    # terminating

    def terminate(self, appId: str, userId: str) -> defer.Deferred[None]:
        """Tell every node to end the user's clients; fires once that is sent."""
        return self.engine.broadcast(TERMINATE_USER, {"app": appId, "user": userId})

    def _terminateUser(self, data: Any) -> None:
        if not isinstance(data, dict):
            return
        clients = sorted(self._clients.get((str(data.get("app")), str(data.get("user"))), ()))
        if not clients:
            return
        self._log.info(
            "terminating {n} clients of user {user} of {app}",
            n=len(clients),
            user=data.get("user"),
            app=data.get("app"),
        )
        # This node ends its own clients now: its broadcast comes back on the subscriber
        # connection, which can be later than the reply to the PUBLISH that starts the destroy
        # below, and a socket closed by the destroy first is never told to stop.
        for clientId in clients:
            self.router.terminate(clientId)
        told = self.engine.broadcast(TERMINATE_CLIENTS, {"clients": clients})
        told.addErrback(lambda f: self._log.warn("could not tell the nodes: {e}", e=f.getErrorMessage()))
        told.addCallback(lambda _: self._destroy(clients))

    def _destroy(self, clients: list[str]) -> None:
        for clientId in clients:
            self._forget(clientId)
            self.engine.destroyClient(clientId, "terminated").addErrback(self._notEnded, clientId)

    def _notEnded(self, failure: Any, clientId: str) -> None:
        self._log.warn(
            "could not end {clientId}: {error}", clientId=clientId, error=failure.getErrorMessage()
        )

    def _terminateClients(self, data: Any) -> None:
        clients = data.get("clients") if isinstance(data, dict) else None
        if not isinstance(clients, list):
            return
        for clientId in clients:
            if isinstance(clientId, str):
                self.router.terminate(clientId)

    # forgetting clients destroyed elsewhere

    def sweep(self) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(self._sweep())

    async def _sweep(self) -> None:
        for clientId in list(self._users):
            try:
                exists = await self.engine.clientExists(clientId)
            except Exception:
                return  # the engine is unavailable: look again next time
            if not exists:
                self._forget(clientId)
