"""``/admin/api/application/<id>/webhooks`` through the admin resource, as the server mounts it."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from pandapush.web.adminui import adminResource
from pandapush.web.webhooks import MAX_WEBHOOKS, WebhookAdmin
from pandapush.webhooks.addresses import AddressPolicy, parseNetworks
from tests.outbox_suite import NOW, event
from tests.support.http import stubTreq
from tests.test_admin_api import ALICE, BOB, ROOT, AdminHarness, basic

#: What the fake resolver answers: a public-looking name that is private, and honest ones.
NAMES = {
    "hooks.example.com": ["93.184.216.34"],
    "sneaky.example.com": ["93.184.216.34", "10.1.2.3"],
    "metadata.example.com": ["169.254.169.254"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
    "office.example.com": ["192.168.1.10"],
}


def resolve(host: str, port: int) -> Deferred[list[str]]:
    if host not in NAMES:
        return defer.fail(OSError(f"no such name {host}"))
    return defer.succeed(NAMES[host])


class WebhookAdminTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = AdminHarness()
        storage = self.h.storage
        self.outbox = storage.webhookOutbox()
        self.hooks = WebhookAdmin(
            self.h.app,
            storage,
            self.outbox,
            self.h.keys,
            AddressPolicy(parseNetworks("192.168.1.0/24")),
            resolve,
            self.h.clock,
        )
        self.invalidated: list[str | None] = []
        self.h.keys.addApplicationObserver(self.invalidated.append)
        self.treq = stubTreq(adminResource(self.h.app, self.h.authority, self.hooks))
        self.app = self.successResultOf(storage.createApplication("a", "alice", admins=["alice"]))
        self.key = self.successResultOf(storage.createKey(self.app.id, "alice"))
        self.base = f"/admin/api/application/{self.app.id}/webhooks"

    def request(
        self, method: str, path: str, who: tuple[str, str] = ALICE, body: Any = None
    ) -> tuple[int, Any]:
        headers = dict(basic(*who))
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["data"] = body if isinstance(body, bytes) else json.dumps(body)
            headers[b"Content-Type"] = [b"application/json"]
        d = self.treq.request(method, "http://localhost" + path, headers=headers, **kwargs)
        self.treq.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(response.content())
        try:
            return response.code, json.loads(content)
        except ValueError:
            return response.code, content

    def create(
        self, url: str, who: tuple[str, str] = ALICE, events: Any = ("channel_occupied",)
    ) -> tuple[int, Any]:
        return self.request(
            "POST", self.base, who, {"url": url, "events": list(events), "keyId": self.key.id}
        )

    def test_createListDelete(self) -> None:
        """An admin of the application creates, lists and deletes; every change reaches endpoint caches."""
        code, made = self.create(
            "https://hooks.example.com/pandapush", events=["member_added", "channel_vacated"]
        )
        self.assertEqual(code, 201, made)
        self.assertEqual(
            {k: made[k] for k in ("url", "events", "key_id", "created_by", "allow_private")},
            {
                "url": "https://hooks.example.com/pandapush",
                "events": ["channel_vacated", "member_added"],
                "key_id": self.key.id,
                "created_by": "alice",
                "allow_private": False,
            },
        )
        self.assertEqual(self.request("GET", self.base), (200, [made]))
        self.assertEqual(self.request("GET", self.base, BOB)[0], 404)
        self.assertEqual(self.request("DELETE", f"{self.base}/{made['id']}", BOB)[0], 404)
        self.assertEqual(self.request("DELETE", f"{self.base}/{made['id']}"), (200, b"OK"))
        self.assertEqual(self.request("GET", self.base), (200, []))
        self.assertEqual(self.request("DELETE", f"{self.base}/{made['id']}")[0], 404)
        self.assertEqual(self.invalidated, [self.app.id, self.app.id])

    def test_badInput(self) -> None:
        """Not http(s), no host, credentials in the URL, unknown events, another app's key: 400 saying why."""
        other = self.successResultOf(self.h.storage.createApplication("b", "bob", admins=["bob"]))
        foreign = self.successResultOf(self.h.storage.createKey(other.id, "bob"))
        cases = [
            (
                {"url": "ftp://hooks.example.com/", "events": ["channel_occupied"]},
                "A webhook URL is http:// or https://",
            ),
            ({"url": "javascript:alert(1)", "events": ["channel_occupied"]}, "http:// or https://"),
            ({"url": "https:///x", "events": ["channel_occupied"]}, "url has no host"),
            (
                {"url": "https://u:p@hooks.example.com/", "events": ["channel_occupied"]},
                "user name or password",
            ),
            ({"url": "https://hooks.example.com/", "events": ["sometimes"]}, "unknown events sometimes"),
            ({"url": "https://hooks.example.com/", "events": []}, "events must be a non-empty list"),
            (
                {"url": "https://hooks.example.com/", "events": ["channel_occupied"], "keyId": foreign.id},
                "keyId must be a key of this application",
            ),
            ({"url": "https://nowhere.example.com/", "events": ["channel_occupied"]}, "cannot be resolved"),
        ]
        for body, words in cases:
            body.setdefault("keyId", self.key.id)
            code, answer = self.request("POST", self.base, ALICE, body)
            self.assertEqual(code, 400, (body, answer))
            self.assertIn(words, answer["message"])
        code, answer = self.request("POST", self.base, ALICE, b"not json")  # type: ignore[arg-type]
        self.assertEqual(code, 400)

    def test_privateAddressesAreRootsOnly(self) -> None:
        """
        An admin who is not root cannot aim at loopback, private, metadata or mapped addresses,
        even behind a public-looking name; root can; an operator-allowed network is open to all.
        """
        for url, words in [
            ("http://127.0.0.1:8080/", "127.0.0.1 is loopback"),
            ("http://[::1]/", "::1 is loopback"),
            ("http://10.0.0.7/", "10.0.0.7 is private"),
            ("http://100.64.1.1/", "shared (CGNAT)"),
            ("http://sneaky.example.com/", "sneaky.example.com resolves to 10.1.2.3 is private"),
            ("http://metadata.example.com/", "the cloud metadata service"),
            ("http://[fd00:ec2::254]/", "the cloud metadata service"),
            ("http://mapped.example.com/", "::ffff:127.0.0.1 is loopback"),
            ("http://0.0.0.0/", "unspecified"),
        ]:
            code, answer = self.create(url)
            self.assertEqual(code, 400, (url, answer))
            self.assertIn(words, answer["message"])
            self.assertIn("only a root admin", answer["message"])
        self.assertEqual(self.create("http://office.example.com/hook")[0], 201)
        self.assertEqual(self.create("http://192.168.1.20/hook")[0], 201)
        code, made = self.create("http://127.0.0.1:8080/", ROOT)
        self.assertEqual((code, made["allow_private"]), (201, True))

    def test_limit(self) -> None:
        """An application has at most MAX_WEBHOOKS endpoints."""
        for _ in range(MAX_WEBHOOKS):
            self.assertEqual(self.create("https://hooks.example.com/")[0], 201)
        code, answer = self.create("https://hooks.example.com/")
        self.assertEqual(
            (code, answer["message"]), (400, f"An application has at most {MAX_WEBHOOKS} webhooks")
        )

    def test_deliveriesAndResend(self) -> None:
        """Recent deliveries are listed; resending one puts its events (same ids) back in the outbox."""
        from pandapush.storage.webhooks import DeliveryRecord

        _, made = self.create("https://hooks.example.com/")
        hookId = made["id"]
        sent = event(endpoint=hookId, channel=f"/{self.app.id}/public/a").payload()
        record = DeliveryRecord("dl_1", hookId, NOW, "failed", 7, (sent,), 500, "HTTP 500")
        self.successResultOf(self.outbox.recordDelivery(record, 50))
        code, found = self.request("GET", f"{self.base}/{hookId}/deliveries")
        self.assertEqual((code, found), (200, [record.publicDict()]))
        self.assertEqual(self.request("GET", f"{self.base}/{hookId}/deliveries", BOB)[0], 404)
        code, answer = self.request("POST", f"{self.base}/{hookId}/deliveries/dl_1/resend", ALICE, {})
        self.assertEqual((code, answer), (200, {"resent": 1}))
        (again,) = self.successResultOf(self.outbox.claim("n", 2_000_000_000_000, 1000, 10, set()))
        self.assertEqual((again.id, again.endpointId, again.channel), (sent["id"], hookId, sent["channel"]))
        self.assertEqual(
            self.request("POST", f"{self.base}/{hookId}/deliveries/nope/resend", ALICE, {})[0], 404
        )
