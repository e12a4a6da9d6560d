"""Webhook endpoints in every storage, and the outbox suite on the memory, SQLite and PostgreSQL outboxes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from pandapush.storage.errors import NoSuchApplicationError, NoSuchWebhookError
from pandapush.storage.memoryoutbox import MemoryOutbox
from pandapush.storage.webhooks import IWebhookStorage
from tests import test_storage
from tests.outbox_suite import NOW, OutboxTestsMixin, event
from tests.test_storage import FakeTime

if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object


class WebhookStorageTestsMixin(_Base):
    """What every IWebhookStorage does; ``storageCase`` makes the storage (a storage suite's case)."""

    storageCase: Any
    storage: Any

    async def setUp(self) -> None:  # type: ignore[override]
        self.time = FakeTime()
        self.storage = await self.storageCase.makeStorage(self, self.time)

    def test_providesIWebhookStorage(self) -> None:
        """The backend provides IWebhookStorage."""
        self.assertTrue(verifyObject(IWebhookStorage, self.storage))

    async def test_webhooks(self) -> None:
        """Created, listed oldest first, found, deleted; events kept in their canonical order."""
        app = await self.storage.createApplication("a", "alice")
        other = await self.storage.createApplication("b", "bob")
        one = await self.storage.createWebhook(
            app.id, "https://example.com/hook", ["member_added", "channel_occupied"], "PSIDk", "alice"
        )
        self.time.advance(1)
        two = await self.storage.createWebhook(
            app.id, "http://10.0.0.1/h", ["client_event"], "PSIDk", "root", allowPrivate=True
        )
        await self.storage.createWebhook(
            other.id, "https://example.org/", ["channel_vacated"], "PSIDo", "bob"
        )
        self.assertEqual(one.events, ("channel_occupied", "member_added"))
        self.assertEqual((one.allow_private, two.allow_private), (False, True))
        self.assertTrue(one.id.startswith("WH") and one.id != two.id)
        self.assertEqual(await self.storage.listWebhooks(app.id), [one, two])
        self.assertEqual(await self.storage.getWebhook(two.id), two)
        self.assertEqual(one.publicDict()["events"], ["channel_occupied", "member_added"])
        await self.storage.deleteWebhook(one.id)
        self.assertEqual(await self.storage.listWebhooks(app.id), [two])
        await self.assertFailure(self.storage.deleteWebhook(one.id), NoSuchWebhookError)
        await self.assertFailure(
            self.storage.createWebhook("nosuch", "https://x/", ["channel_occupied"], "K", "a"),
            NoSuchApplicationError,
        )
        await self.assertFailure(
            self.storage.createWebhook(app.id, "https://x/", ["nonsense"], "K", "a"), ValueError
        )

    async def test_deletedWithTheApplication(self) -> None:
        """Deleting an application deletes its endpoints, their waiting events and deliveries."""
        app = await self.storage.createApplication("a", "alice")
        hook = await self.storage.createWebhook(
            app.id, "https://example.com/", ["channel_occupied"], "K", "alice"
        )
        outbox = self.storage.webhookOutbox()
        await outbox.add([event(endpoint=hook.id)], NOW)
        await self.storage.deleteApplication(app.id)
        self.assertEqual(await self.storage.getWebhook(hook.id), None)
        self.assertEqual(await outbox.waiting(), 0)


class MemoryWebhookStorageTests(WebhookStorageTestsMixin, TestCase):
    storageCase = test_storage.MemoryStorageTests


class SQLiteWebhookStorageTests(WebhookStorageTestsMixin, TestCase):
    storageCase = test_storage.SQLiteStorageTests


class PostgresWebhookStorageTests(WebhookStorageTestsMixin, TestCase):
    storageCase = test_storage.PostgresStorageTests


class MemoryOutboxTests(OutboxTestsMixin, TestCase):
    def makeOutbox(self) -> Any:
        return MemoryOutbox()


class _StorageOutbox(OutboxTestsMixin):
    storageCase: Any

    async def makeOutbox(self) -> Any:
        storage = await self.storageCase.makeStorage(self, FakeTime())
        return storage.webhookOutbox()


class SQLiteOutboxTests(_StorageOutbox, TestCase):
    storageCase = test_storage.SQLiteStorageTests


class PostgresOutboxTests(_StorageOutbox, TestCase):
    storageCase = test_storage.PostgresStorageTests
