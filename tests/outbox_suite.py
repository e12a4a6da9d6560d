"""The webhook outbox contract (:class:`~pandapush.storage.webhooks.IWebhookOutbox`), run on every outbox.

A concrete test case mixes :class:`OutboxTestsMixin` into a ``TestCase`` and gives
``makeOutbox()`` (a Deferred of a fresh, empty outbox, or the outbox itself): the memory
outbox, SQLite, PostgreSQL (``tests/test_webhook_storage.py``) and Redis
(``tests/test_webhooks_redis.py``) all pass the same tests.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from zope.interface.verify import verifyObject

from pandapush.storage.webhooks import DeliveryRecord, IWebhookOutbox, WebhookEvent

if TYPE_CHECKING:
    from twisted.trial.unittest import TestCase

    _Base = TestCase
else:
    _Base = object

__all__ = ["OutboxTestsMixin", "event"]

NOW = 1_800_000_000_000
_ids = itertools.count()


def event(
    name: str = "channel_occupied",
    channel: str = "/app/public/a",
    endpoint: str = "WH1",
    due: int = NOW,
    user: str | None = None,
    data: Any = None,
) -> WebhookEvent:
    return WebhookEvent(
        id=f"ev_{next(_ids)}",
        endpointId=endpoint,
        appId="app",
        channel=channel,
        name=name,
        createdMs=NOW,
        dueMs=due,
        userId=user,
        data=data,
    )


class OutboxTestsMixin(_Base):
    outbox: Any

    def makeOutbox(self) -> Any:
        raise NotImplementedError

    async def setUp(self) -> None:  # type: ignore[override]
        self.outbox = await defer.maybeDeferred(self.makeOutbox)

    async def claim(
        self, owner: str = "n1", now: int = NOW, lease: int = 30_000, limit: int = 100, exclude: Any = ()
    ) -> list[WebhookEvent]:
        return list(await self.outbox.claim(owner, now, lease, limit, set(exclude)))

    def ids(self, events: list[WebhookEvent]) -> list[str]:
        return [e.id for e in events]

    def test_provides(self) -> None:
        """The outbox provides IWebhookOutbox."""
        self.assertTrue(verifyObject(IWebhookOutbox, self.outbox))

    async def test_inOrderAndLeased(self) -> None:
        """A claim takes due events in the order written; a leased one is leased to one node until it ends."""
        written = [
            event(channel="/app/public/a"),
            event(channel="/app/public/b"),
            event(channel="/app/public/a", name="channel_vacated"),
        ]
        self.assertEqual(await self.outbox.add(written, NOW), 3)
        claimed = await self.claim("n1")
        self.assertEqual(self.ids(claimed), self.ids(written))
        self.assertTrue(all(e.seq > 0 for e in claimed))
        self.assertEqual([e.seq for e in claimed], sorted(e.seq for e in claimed))
        self.assertEqual(await self.claim("n2", NOW + 29_000), [])
        again = await self.claim("n2", NOW + 30_001)
        self.assertEqual(self.ids(again), self.ids(written))
        self.assertEqual(await self.outbox.waiting(), 3)

    async def test_oneBatchPerChannel(self) -> None:
        """A channel with events in flight gives no more; other channels carry on."""
        first = event(channel="/app/public/a")
        await self.outbox.add([first], NOW)
        (first,) = await self.claim("n1")
        later = [event(channel="/app/public/a", name="channel_vacated"), event(channel="/app/public/b")]
        await self.outbox.add(later, NOW)
        self.assertEqual(self.ids(await self.claim("n2")), [later[1].id])
        await self.outbox.delivered("n1", [first])
        self.assertEqual(self.ids(await self.claim("n2")), [later[0].id])

    async def test_notDueHoldsTheChannel(self) -> None:
        """An event not due yet holds back its channel's later events (order), not other channels'."""
        slow = event(name="member_removed", user="u1", due=NOW + 3000)
        quick = event(name="member_added", user="u2")
        other = event(channel="/app/public/b")
        await self.outbox.add([slow, quick, other], NOW)
        self.assertEqual(self.ids(await self.claim()), [other.id])
        self.assertEqual(self.ids(await self.claim(now=NOW + 3000)), [slow.id, quick.id])

    async def test_debounce(self) -> None:
        """
        occupied cancels a waiting vacated of its channel, member_added a waiting member_removed
        of its member: neither is sent. Another member, another channel, or a vacated already
        in flight is left alone.
        """
        await self.outbox.add([event(name="channel_vacated", due=NOW + 3000)], NOW)
        self.assertEqual(await self.outbox.add([event(name="channel_occupied")], NOW + 1000), 0)
        self.assertEqual(await self.outbox.waiting(), 0)
        await self.outbox.add([event(name="member_removed", user="u1", due=NOW + 3000)], NOW)
        self.assertEqual(await self.outbox.add([event(name="member_added", user="u2")], NOW), 1)
        self.assertEqual(await self.outbox.add([event(name="member_added", user="u1")], NOW), 0)
        self.assertEqual(
            await self.outbox.add([event(name="channel_occupied", channel="/app/public/z")], NOW), 1
        )
        self.assertEqual(await self.outbox.waiting(), 2)
        vacated = event(name="channel_vacated", channel="/app/public/v", due=NOW + 3000)
        await self.outbox.add([vacated], NOW)
        self.assertIn(vacated.id, self.ids(await self.claim(now=NOW + 3000)))
        self.assertEqual(
            await self.outbox.add([event(name="channel_occupied", channel="/app/public/v")], NOW + 3001), 1
        )

    async def test_deliveredRescheduledDiscarded(self) -> None:
        """Only the lease holder removes or reschedules; a reschedule counts an attempt, keeps the error."""
        one, two = event(channel="/app/public/1"), event(channel="/app/public/2")
        await self.outbox.add([one, two], NOW)
        one, two = await self.claim("n1")
        await self.outbox.delivered("n2", [one])
        await self.outbox.reschedule("n2", [two], NOW + 5, "not mine")
        self.assertEqual(await self.outbox.waiting(), 2)
        await self.outbox.delivered("n1", [one])
        await self.outbox.reschedule("n1", [two], NOW + 5000, "HTTP 500")
        self.assertEqual(await self.outbox.waiting(), 1)
        self.assertEqual(await self.claim("n3", NOW + 4999), [])
        (again,) = await self.claim("n3", NOW + 5000)
        self.assertEqual((again.id, again.attempts, again.lastError), (two.id, 1, "HTTP 500"))
        await self.outbox.discard("n3", [again])
        self.assertEqual(await self.outbox.waiting(), 0)

    async def test_excludeAndLimit(self) -> None:
        """Endpoints can be left out of a claim, and a claim takes at most ``limit`` events."""
        events = [event(endpoint="WH1", channel=f"/app/public/{i}") for i in range(3)] + [
            event(endpoint="WH2")
        ]
        await self.outbox.add(events, NOW)
        self.assertEqual(self.ids(await self.claim(exclude={"WH1"})), [events[3].id])
        self.assertEqual(self.ids(await self.claim(limit=2)), self.ids(events[:2]))

    async def test_eventsKeepTheirData(self) -> None:
        """A client event's data comes back as written (nesting, non-ASCII), with its user."""
        data = {"text": "h\u00e9llo \u2603", "n": [1, 2.5, None, True]}
        await self.outbox.add([event(name="client_event", data=data, user="u1")], NOW)
        (claimed,) = await self.claim()
        self.assertEqual(
            (claimed.data, claimed.userId, claimed.name, claimed.appId), (data, "u1", "client_event", "app")
        )
        self.assertEqual(
            claimed.payload(),
            {
                "id": claimed.id,
                "name": "client_event",
                "channel": "/app/public/a",
                "user_id": "u1",
                "data": data,
            },
        )

    async def test_deliveries(self) -> None:
        """Deliveries per endpoint, newest first, past ``keep`` dropped; forgetting an endpoint drops all."""
        for i in range(4):
            record = DeliveryRecord(f"dl_{i}", "WH1", NOW + i, "delivered", 1, ({"id": f"ev_{i}"},), 200)
            await self.outbox.recordDelivery(record, 3)
        await self.outbox.recordDelivery(
            DeliveryRecord("dl_x", "WH2", NOW, "failed", 3, (), None, "timed out"), 3
        )
        found = await self.outbox.deliveries("WH1")
        self.assertEqual([d.id for d in found], ["dl_3", "dl_2", "dl_1"])
        self.assertEqual(
            (found[0].status, found[0].httpStatus, found[0].events), ("delivered", 200, ({"id": "ev_3"},))
        )
        (failed,) = await self.outbox.deliveries("WH2")
        self.assertEqual(
            (failed.status, failed.httpStatus, failed.error, failed.attempts),
            ("failed", None, "timed out", 3),
        )
        await self.outbox.add([event(endpoint="WH1"), event(endpoint="WH2")], NOW)
        await self.outbox.forgetEndpoint("WH1")
        self.assertEqual(await self.outbox.deliveries("WH1"), [])
        self.assertEqual([e.endpointId for e in await self.claim()], ["WH2"])
