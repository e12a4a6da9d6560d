"""The engines' local subscription index: ``matching`` against the union over ``expand``."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pandapush.bayeux.channel import expand
from pandapush.engines.local import LocalClient, LocalClients, SubscriptionIndex


def expected(
    index: SubscriptionIndex[LocalClient], channel: str, exclude: LocalClient | None
) -> set[LocalClient]:
    """What ``matching`` answers by definition: the subscribers of every key ``expand`` gives."""
    found: set[LocalClient] = set()
    for key in expand(channel):
        found |= index.subscribers(key) or set()
    found.discard(exclude)  # type: ignore[arg-type]
    return found


class SubscriptionIndexTests(TestCase):
    def setUp(self) -> None:
        self.index: SubscriptionIndex[LocalClient] = SubscriptionIndex()
        self.clients = [LocalClient(f"c{i}") for i in range(8)]

    def matching(self, channel: str, exclude: LocalClient | None = None) -> set[LocalClient]:
        return set(self.index.matching(channel, exclude))

    def test_wildcardsElsewhere(self) -> None:
        """Wildcards in other applications or channel types leave a private channel to its own subscribers."""
        own, other, public = self.clients[:3]
        self.index.add(own, "/app/private/u/1")
        self.index.add(other, "/other/**")
        self.index.add(public, "/app/public/*")
        self.assertEqual(self.matching("/app/private/u/1"), {own})
        self.assertEqual(self.matching("/app/private/u/2"), set())
        self.assertEqual(self.matching("/app/public/x"), {public})
        self.assertEqual(self.matching("/other/a/b/c"), {other})

    def test_wildcardsAbove(self) -> None:
        """Every wildcard above a channel still matches it, ``*`` only one segment deeper."""
        own, one, many, everything, root = self.clients[:5]
        self.index.add(own, "/app/private/u/1")
        self.index.add(one, "/app/private/u/*")
        self.index.add(many, "/app/**")
        self.assertEqual(self.matching("/app/private/u/1"), {own, one, many})
        self.assertEqual(self.matching("/app/private/u/1/deeper"), {many})
        self.index.add(everything, "/**")
        self.index.add(root, "/*")
        self.assertEqual(self.matching("/app"), {everything, root})
        self.assertEqual(self.matching("/app/private/u/1", exclude=own), {one, many, everything})

    def test_wildcardGone(self) -> None:
        """Once the last subscriber of a wildcard leaves, it matches nothing any more."""
        own, many = self.clients[:2]
        self.index.add(own, "/app/private/u/1")
        self.index.add(many, "/app/private/**")
        self.index.add(own, "/app/private/**")
        self.index.remove(many, "/app/private/**")
        self.assertEqual(self.matching("/app/private/u/1"), {own})
        self.index.remove(own, "/app/private/**")
        self.assertEqual(self.matching("/app/private/u/2"), set())
        self.index.add(many, "/app/private/u/*")
        self.assertEqual(self.matching("/app/private/u/2"), {many})

    def test_manyWildcardPlaces(self) -> None:
        """Wildcards in more places than are checked one by one still match exactly."""
        for i in range(20):
            self.index.add(self.clients[i % 8], f"/app/private/u{i}/**")
        self.assertEqual(self.matching("/app/private/u3/x"), {self.clients[3]})
        self.assertEqual(self.matching("/app/private/u33/x"), set())
        for i in range(20):
            self.index.remove(self.clients[i % 8], f"/app/private/u{i}/**")
        self.assertEqual(self.matching("/app/private/u3/x"), set())

    def test_sameAsExpand(self) -> None:
        """
        Random subscriptions and unsubscriptions (wildcards, empty segments, names
        without a leading slash) and random channels: ``matching`` always answers the
        union over ``expand``, with or without a client excluded.
        """
        rnd = random.Random(17)
        segments = ["a", "b", "c", "", "*", "**"]

        def name(wildcard: bool) -> str:
            parts = [rnd.choice(segments[:4]) for _ in range(rnd.randint(0, 5))]
            if wildcard and rnd.random() < 0.6:
                parts.append(rnd.choice(["*", "**"]))
            return ("/" if rnd.random() < 0.95 else "") + "/".join(parts)

        for _ in range(500):
            index: SubscriptionIndex[LocalClient] = SubscriptionIndex()
            subscriptions: list[tuple[LocalClient, str]] = []
            for _ in range(rnd.randint(0, 12)):
                client, key = rnd.choice(self.clients), name(True)
                index.add(client, key)
                subscriptions.append((client, key))
            for _ in range(rnd.randint(0, 6)):
                if subscriptions:
                    client, key = subscriptions.pop(rnd.randrange(len(subscriptions)))
                    if (client, key) not in subscriptions:
                        index.remove(client, key)
            for _ in range(20):
                channel = name(False)
                exclude = rnd.choice([*self.clients, None])
                self.assertEqual(
                    set(index.matching(channel, exclude)),
                    expected(index, channel, exclude),
                    (channel, subscriptions),
                )


class FlushNowTests(TestCase):
    """``LocalClients.flushNow``: the turn's flush at once, only when it waits for no delay."""

    def queued(self, flushDelay: float) -> tuple[Any, list[list[Any]], Clock]:
        from pandapush.bayeux.delivery import Delivery

        clock = Clock()
        local: LocalClients[LocalClient] = LocalClients(
            clock, lambda c: None, lambda c: None, flushDelay=flushDelay
        )
        client = local.add(LocalClient("c"))
        batches: list[list[Any]] = []

        class Sink:
            persistent = True

            def deliver(self, deliveries: Any) -> None:
                batches.append(list(deliveries))

        client.sink = Sink()  # type: ignore[assignment]
        local.enqueue([client], Delivery("/a/b", b"{}"))
        return local, batches, clock

    def test_noDelay(self) -> None:
        """The memory engine's flush (no delay) runs at once, and not again at the end of the turn."""
        local, batches, clock = self.queued(0)
        local.flushNow()
        self.assertEqual(len(batches), 1)
        self.assertFalse(local.flushPending)
        clock.advance(0)
        self.assertEqual(len(batches), 1)

    def test_callKept(self) -> None:
        """
        The turn's call outlives a flushNow: what queues after it in the same turn goes out
        at the end of the turn through that call (none is made per read), once.
        """
        from pandapush.bayeux.delivery import Delivery

        local, batches, clock = self.queued(0)
        local.flushNow()
        (client,) = local.values()
        local.enqueue([client], Delivery("/a/b", b"[1]"))
        self.assertTrue(local.flushPending)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        local.flushNow()
        self.assertFalse(local.flushPending)
        local.enqueue([client], Delivery("/a/b", b"[2]"))
        clock.advance(0)
        self.assertEqual([[d.payload for d in batch] for batch in batches], [[b"{}"], [b"[1]"], [b"[2]"]])
        self.assertFalse(local.flushPending)
        self.assertEqual(clock.getDelayedCalls(), [])
        local.flushNow()
        self.assertEqual(len(batches), 3)

    def test_windowKept(self) -> None:
        """The Redis engine's (a window over several reads) is left to its timer."""
        local, batches, clock = self.queued(0.002)
        local.flushNow()
        self.assertEqual(batches, [])
        clock.advance(0.002)
        self.assertEqual(len(batches), 1)

    def test_nothingQueued(self) -> None:
        clock = Clock()
        local: LocalClients[LocalClient] = LocalClients(clock, lambda c: None, lambda c: None)
        local.flushNow()
        self.assertEqual(clock.getDelayedCalls(), [])
