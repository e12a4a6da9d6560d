"""PostgreSQL stopped under traffic, end to end (issue 7).

A real ``twistd pandapush`` on a PostgreSQL of the test's own (``tests/support/postgres.py``:
``initdb`` into a temporary directory, a free port; the machine's PostgreSQL on 5432 is never
touched), with subscribers over a websocket and long-polling. PostgreSQL is stopped as in a
crash (``pg_ctl stop -m immediate``) and started again, and pandapush is not restarted.

What is pinned, and why these answers:

- keys already in the cache keep working, for REST and Bayeux, even past the cache TTL
  (a stale key is used as last read while the database cannot say otherwise), so
  delivery and publishing survive a database outage;
- the admin API answers ``503`` with ``Retry-After`` and a JSON error naming the
  problem, at once (no hang, no 500, no traceback);
- a key that is not cached gets ``503`` (REST) / ``503::Storage unavailable...``
  (Bayeux): not ``401``/``403 Could not find key``, which would tell a client its good
  key is bad, and not ``500``, since nothing is broken in pandapush;
- ``/health_check.json`` stays 200 and says ``"storage": {"status": "unavailable"}``;
- key usage counted during the outage is written once the database is back, and the
  outage is logged once (its end too), without tracebacks;
- the admin API works again as soon as PostgreSQL is back, first request included.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.trial.unittest import TestCase

from pandapush.tokens import mintToken
from tests.support.bayeux import LPClient, WSClient
from tests.support.postgres import OwnPostgres
from tests.support.process import PandapushProcess
from tests.support.waiting import eventually, sleep

ADMIN = ("admin", "faults-admin-password")


class _Response:
    def __init__(self, code: int, headers: Any, body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


class PostgresStoppedTests(TestCase):
    timeout = 120

    async def _request(
        self, method: str, url: str, body: Any = None, auth: tuple[str, str] | None = None
    ) -> _Response:
        headers: dict[bytes | str, bytes | str] = {b"Content-Type": b"application/json"}
        response = await treq.request(
            method,
            url,
            data=None if body is None else json.dumps(body).encode(),
            headers=headers,
            auth=auth,
            persistent=False,
            timeout=15,
        )
        return _Response(response.code, response.headers, await response.content())

    async def _admin(self, method: str, path: str, body: Any = None) -> _Response:
        return await self._request(method, self.server.url + path, body, ADMIN)

    async def _publish(self, channel: str, data: Any, auth: tuple[str, str]) -> _Response:
        return await self._request("POST", self.server.url + "/channel" + channel, data, auth)

    def _assertUnavailable(self, response: _Response) -> None:
        self.assertEqual(response.code, 503, response.body)
        body = response.json()
        self.assertEqual(body["code"], 503)
        self.assertIn("Storage unavailable", body["message"])

    async def test_stoppedUnderTraffic(self) -> None:
        """
        PostgreSQL stopped: cached keys keep publishing and subscribers keep receiving; the
        admin API and uncached keys answer 503; the health check says so; nothing is lost
        and everything works again when PostgreSQL is back, without restarting pandapush.
        """
        postgres = await OwnPostgres.started(self)
        self.server = await PandapushProcess.started(
            self,
            "--timeout",
            "5",
            env={
                **postgres.environment(),
                "AUTH_METHOD": "basic",
                "ADMIN_USERNAME": ADMIN[0],
                "ADMIN_PASSWORD": ADMIN[1],
                # Short, so the outage outlasts cache entries and sees a usage flush fail.
                "PANDAPUSH_KEY_CACHE_TTL": "2",
                "PANDAPUSH_USAGE_FLUSH_INTERVAL": "1",
            },
        )
        created = await self._admin("POST", "/admin/api/applications", {"name": "faults"})
        self.assertEqual(created.code, 201, created.body)
        appId = created.json()["id"]
        key = (
            await self._admin("POST", f"/admin/api/application/{appId}/keys", {"purpose": "server"})
        ).json()
        spare = (
            await self._admin("POST", f"/admin/api/application/{appId}/keys", {"purpose": "spare"})
        ).json()
        keyAuth = (key["id"], key["secret"])
        channel = f"/{appId}/private/orders"
        token = mintToken(key["id"], key["secret"], channel, pub=True, sub=True, expiresIn=600)
        spareToken = mintToken(spare["id"], spare["secret"], channel, sub=True, expiresIn=600)

        ws = await WSClient(self.server.url).start()
        self.addCleanup(lambda: ws.protocol.transport.loseConnection())
        poller = await LPClient(self.server.url).start()
        self.addCleanup(poller.stop)
        subscribe = {"channel": "/meta/subscribe", "subscription": channel, "ext": {"auth": {"token": token}}}
        self.assertTrue((await ws.call(subscribe))["successful"])
        self.assertTrue((await poller.call(subscribe))["successful"])
        uses = 2

        sent: list[str] = []

        async def publishRest(text: str) -> None:
            response = await self._publish(channel, {"text": text}, keyAuth)
            self.assertEqual(response.code, 200, response.body)
            sent.append(text)

        async def publishBayeux(text: str) -> None:
            reply = await ws.call(
                {"channel": channel, "data": {"text": text}, "ext": {"auth": {"token": token}}}
            )
            self.assertTrue(reply["successful"], reply)
            sent.append(text)

        def received(client: WSClient | LPClient) -> list[str]:
            return [m["data"]["text"] for m in client.messages if m.get("channel") == channel]

        async def allReceived() -> None:
            for client in (ws, poller):

                def gotAll(client: WSClient | LPClient = client) -> bool:
                    return received(client) == sent

                self.assertTrue(
                    await eventually(gotAll, 5),
                    f"{type(client).__name__} got {received(client)}, expected {sent}",
                )

        await publishRest("before, REST")
        await publishBayeux("before, Bayeux")
        uses += 2
        await allReceived()

        await postgres.stop()

        await publishRest("down, REST")
        await publishBayeux("down, Bayeux")
        await sleep(2.5)  # past the cache TTL: the stale entry is what we have
        await publishRest("down past the TTL, REST")
        await publishBayeux("down past the TTL, Bayeux")
        uses += 4
        await allReceived()

        for method, path, body in [
            ("GET", "/admin/api/applications", None),
            ("GET", f"/admin/api/application/{appId}", None),
            ("POST", f"/admin/api/application/{appId}/keys", {"purpose": "during the outage"}),
            ("POST", f"/admin/api/application/{appId}/keys/{key['id']}/revoke", {}),
        ]:
            response = await self._admin(method, path, body)
            self._assertUnavailable(response)
            self.assertEqual(response.header("Retry-After"), "5")

        # A key the cache never saw: 503, not "Could not find key".
        self._assertUnavailable(
            await self._publish(channel, {"text": "spare"}, (spare["id"], spare["secret"]))
        )
        self._assertUnavailable(
            await self._publish(channel, {"text": "nobody"}, ("PSIDdoesnotexist0000", "x"))
        )
        refused = await WSClient(self.server.url).start()
        self.addCleanup(lambda: refused.protocol.transport.loseConnection())
        reply = await refused.call(
            {"channel": "/meta/subscribe", "subscription": channel, "ext": {"auth": {"token": spareToken}}}
        )
        self.assertFalse(reply["successful"])
        self.assertEqual(reply["error"], "503::Storage unavailable; try again later")

        health = await self._request("GET", self.server.url + "/health_check.json")
        self.assertEqual(health.code, 200)
        self.assertEqual(health.json()["storage"]["status"], "unavailable")
        await sleep(1.5)  # a usage flush fails meanwhile; the uses are kept

        await postgres.start()

        # The first request after the restart works: the pool's dead connection is replaced.
        again = await self._admin("GET", f"/admin/api/application/{appId}")
        self.assertEqual(again.code, 200, again.body)
        health = await self._request("GET", self.server.url + "/health_check.json")
        self.assertEqual(health.json()["storage"], {"status": "ok"})
        self.assertEqual(
            (await self._publish(channel, {"text": "spare"}, (spare["id"], spare["secret"]))).code, 200
        )
        sent.append("spare")
        await publishRest("after")
        uses += 1
        await allReceived()

        async def useCount() -> int:
            keys = (await self._admin("GET", f"/admin/api/application/{appId}/keys")).json()
            return int(next(k for k in keys if k["id"] == key["id"])["use_count"])

        counts: list[int] = []
        for _ in range(50):
            counts.append(await useCount())
            if counts[-1] >= uses:
                break
            await sleep(0.2)
        self.assertEqual(counts[-1], uses, "every use counted once, those of the outage included")

        log = self.server.log()
        self.assertNotIn("Traceback", log)
        self.assertNotIn("Rollback failed", log)
        self.assertEqual(log.count("postgres unavailable ("), 1, log)
        self.assertEqual(log.count("postgres answers again"), 1, log)
        self.assertEqual(log.count("could not record key usage"), 1, log)
