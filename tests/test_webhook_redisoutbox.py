"""The outbox suite on the Redis outbox, in a namespace of its own on the test Redis."""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from pandapush.redis import RedisShard
from pandapush.webhooks.redisoutbox import RedisOutbox
from tests.outbox_suite import OutboxTestsMixin
from tests.support.redis import deleteNamespace, requireRedis


class RedisOutboxTests(OutboxTestsMixin, TestCase):
    def makeOutbox(self) -> Any:
        address = requireRedis()
        namespace = f"pp-test-{uuid.uuid4().hex}"
        shard = RedisShard(reactor, address)
        self.addCleanup(shard.close)
        self.addCleanup(deleteNamespace, [address], namespace)
        return RedisOutbox(shard, namespace)
