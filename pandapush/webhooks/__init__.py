"""Webhooks: pandapush calls an application's backend when its channels and members change.

- :mod:`~pandapush.webhooks.addresses`: URLs, and the addresses only root admins may reach;
- :mod:`~pandapush.webhooks.endpoints`: each application's endpoints, cached;
- :mod:`~pandapush.webhooks.events`: engine events (and browsers' token publishes) written to the outbox;
- :mod:`~pandapush.webhooks.sender`: claiming, signing, sending, retrying, on every node;
- :mod:`~pandapush.webhooks.http`: one request, to an address checked as it connects;
- :mod:`~pandapush.webhooks.redisoutbox`: the outbox in Redis (with the Redis engine);
  the database's is the storage's (:mod:`pandapush.storage.webhooks`);
- :mod:`~pandapush.webhooks.config`: the settings.

:func:`makeWebhooks` puts them together for ``makeService``. docs/webhooks.md is the user's view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pandapush.auth.keycache import KeyCache
from pandapush.storage.webhooks import IWebhookOutbox, IWebhookStorage
from pandapush.webhooks.addresses import AddressPolicy, Resolver, reactorResolver
from pandapush.webhooks.config import WebhookConfig
from pandapush.webhooks.endpoints import WebhookEndpoints
from pandapush.webhooks.events import WebhookEvents
from pandapush.webhooks.http import WebhookPoster
from pandapush.webhooks.sender import WebhookSender

if TYPE_CHECKING:
    from pandapush.redis import RedisAddress

__all__ = ["WebhookConfig", "Webhooks", "makeWebhooks"]


@dataclass
class Webhooks:
    """A server's webhooks; ``outbox`` (and what needs it) is None without a place to keep events."""

    policy: AddressPolicy
    resolve: Resolver
    outbox: IWebhookOutbox | None = None
    endpoints: WebhookEndpoints | None = None
    events: WebhookEvents | None = None
    sender: WebhookSender | None = None


def makeWebhooks(
    config: WebhookConfig,
    storage: Any,
    keys: KeyCache,
    reactor: Any,
    redis: tuple[str | Sequence[RedisAddress], str] | None = None,
    owner: str | None = None,
) -> Webhooks:
    """
    ``redis``: ``(shards, namespace)`` when the engine is Redis, whose first shard
    then keeps the outbox; else the storage keeps it (if it can: ``IWebhookStorage``).
    ``owner`` names this node in its leases (the engine's node id).
    """
    policy = AddressPolicy(config.allowNetworks)
    resolve = reactorResolver(reactor)
    webhooks = Webhooks(policy, resolve)
    if not IWebhookStorage.providedBy(storage):
        return webhooks
    if redis is not None:
        # Imported only with the Redis engine, as the engine itself is.
        from pandapush.redis import RedisShard, parseRedisHosts
        from pandapush.webhooks.redisoutbox import RedisOutbox

        hosts, namespace = redis
        shards = parseRedisHosts(hosts) if isinstance(hosts, str) else list(hosts)
        webhooks.outbox = RedisOutbox(RedisShard(reactor, shards[0]), namespace)
    else:
        webhooks.outbox = storage.webhookOutbox()
    assert webhooks.outbox is not None
    webhooks.endpoints = WebhookEndpoints(storage, reactor, keys)
    poster = WebhookPoster(reactor, policy, resolve, config.timeout)
    sender = WebhookSender(webhooks.outbox, webhooks.endpoints, keys, poster, config, reactor, owner)
    webhooks.sender = sender
    webhooks.events = WebhookEvents(webhooks.outbox, webhooks.endpoints, reactor, config, written=sender.wake)
    return webhooks
