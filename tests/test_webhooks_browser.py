"""The console's webhook page in headless Chromium: add an endpoint, its deliveries, send again, delete."""

from __future__ import annotations

from typing import Any

from pandapush.storage.webhooks import DeliveryRecord
from tests.test_admin_ui_browser import AUDIT, ConsoleTestCase

NOW_MS = 1_800_000_000_000


class WebhookPageTests(ConsoleTestCase):
    async def test_webhook_page(self) -> None:
        appId, hookId = await self.onBrowser(self._add)
        server: Any = self.server
        outbox = server.service.storage.webhookOutbox()
        event = {"id": "ev_console1", "name": "channel_occupied", "channel": f"/{appId}/public/lobby"}
        failed = DeliveryRecord(
            "dl_failed", hookId, NOW_MS, "failed", 7, (event,), 500, "HTTP 500 from the receiver"
        )
        ok = DeliveryRecord("dl_ok", hookId, NOW_MS + 1000, "delivered", 1, (event,), 204)
        for record in (failed, ok):
            await outbox.recordDelivery(record, 50)
        await self.onBrowser(self._deliveries, appId, hookId)
        (again,) = await outbox.claim("test", 2 * NOW_MS, 1000, 10, set())
        self.assertEqual(
            (again.id, again.endpointId, again.name), ("ev_console1", hookId, "channel_occupied")
        )
        await self.onBrowser(self._delete, appId, hookId)

    def _add(self) -> tuple[str, str]:
        appId = self.newApp("Hooks")
        status, key = self.http.admin("POST", f"application/{appId}/keys", {"purpose": "webhooks"})
        assert status == 200, key
        page = self.page()
        p = page.page
        page.open(f"#/app/{appId}/webhooks")
        p.get_by_text("No webhooks yet").wait_for()
        self.assertEqual(p.get_by_role("link", name="Webhooks").get_attribute("aria-current"), "page")
        # Checked in the page first: not http(s).
        p.get_by_label("URL").fill("ftp://example.com/hook")
        p.get_by_role("button", name="Add webhook").click()
        p.get_by_text("A webhook URL is http:// or https://").wait_for()
        p.get_by_label("URL").fill("http://127.0.0.1:9/pandapush")
        p.get_by_label("Member removed").uncheck()
        p.get_by_label("Client event", exact=False).check()
        self.assertEqual(p.get_by_label("Signing key").input_value(), key["id"])
        p.get_by_role("button", name="Add webhook").click()
        row = p.locator("tr[data-webhook]")
        row.wait_for()
        self.assertIn("http://127.0.0.1:9/pandapush", row.inner_text())
        self.assertEqual(
            row.locator(".event-list li").all_inner_texts(),
            ["channel_occupied", "channel_vacated", "member_added", "client_event"],
        )
        self.assertEqual(p.evaluate(AUDIT), [])
        page.screenshot("20-webhooks")
        self.assertNoErrors(page)
        return appId, str(row.get_attribute("data-webhook"))

    def _deliveries(self, appId: str, hookId: str) -> None:
        page = self.page()
        p = page.page
        page.open(f"#/app/{appId}/webhooks")
        p.get_by_role("button", name="Deliveries of http://127.0.0.1:9/pandapush").click()
        rows = p.locator("tr[data-delivery]")
        rows.first.wait_for()
        self.assertEqual(rows.count(), 2)
        newest, oldest = rows.nth(0), rows.nth(1)
        self.assertEqual(newest.get_attribute("data-status"), "delivered")
        cells = oldest.locator("td").all_inner_texts()
        self.assertEqual(cells[:4], ["failed", "500", "7", "HTTP 500 from the receiver"])
        self.assertIn(f"channel_occupied /{appId}/public/lobby", cells[4])
        p.get_by_role("button", name="Send delivery dl_failed again").click()
        p.get_by_text("Queued 1 event again").wait_for()
        self.assertEqual(p.evaluate(AUDIT), [])
        page.screenshot("21-webhook-deliveries")
        self.assertNoErrors(page)

    def _delete(self, appId: str, hookId: str) -> None:
        page = self.page()
        p = page.page
        page.open(f"#/app/{appId}/webhooks")
        p.get_by_role("button", name="Delete webhook http://127.0.0.1:9/pandapush").click()
        p.get_by_role("dialog").get_by_role("button", name="Delete webhook").click()
        p.get_by_text("No webhooks yet").wait_for()
        status, found = self.http.admin("GET", f"application/{appId}/webhooks")
        self.assertEqual((status, found), (200, []))
        self.assertNoErrors(page)
