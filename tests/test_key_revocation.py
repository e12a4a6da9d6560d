"""A key revoked, deleted or expired ends the subscriptions it granted, on every node (issue 18, defect 5).

Real servers and real websockets: one in-process node whose admin API revokes the key,
and two ``twistd pandapush`` processes on Redis (``tests/test_multinode.py``'s
``ClusterCase``), where the subscriber is on the node that did not revoke it.
"""

from __future__ import annotations

import json
import time
from base64 import b64encode
from typing import Any

import treq
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers

from pandapush.tokens import mintToken
from tests.support.bayeux import LPClient, WSClient
from tests.support.cluster import APP as CLUSTER_APP
from tests.support.cluster import KEY as CLUSTER_KEY
from tests.support.cluster import SECRET as CLUSTER_SECRET
from tests.support.cluster import ClusterCase, adminCall, createKey
from tests.support.inprocess import APP, KEY, SECRET, InProcessServer, channel
from tests.support.process import PandapushProcess
from tests.support.waiting import eventually, sleep

ADMIN = ("admin", "revocation-test-password")


def _notice(client: Any, channelName: str) -> dict[str, Any] | None:
    for reply in client.replies:
        if reply.get("channel") == "/meta/unsubscribe" and reply.get("subscription") == channelName:
            return reply  # type: ignore[no-any-return]
    return None


class OneNodeTests(TestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        self.server = InProcessServer(
            environ={"AUTH_METHOD": "basic", "ADMIN_USERNAME": ADMIN[0], "ADMIN_PASSWORD": ADMIN[1]}
        )
        await self.server.start()
        self.addCleanup(self.server.stop)
        self.clients: list[WSClient] = []
        self.addCleanup(self._closeClients)

    async def _closeClients(self) -> None:
        for client in self.clients:
            client.kill()
        await eventually(lambda: self.server.router.openSockets() == 0)

    async def ws(self) -> WSClient:
        client = await WSClient(self.server.url).start()
        self.clients.append(client)
        return client

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        response = await treq.request(
            method, f"{self.server.url}/admin/api{path}", json=body, auth=ADMIN, persistent=False
        )
        content = await response.content()
        self.assertEqual(response.code, 200, content)
        return json.loads(content) if content.startswith(b"{") else content

    async def publish(self, channelName: str, data: Any) -> None:
        auth = "Basic " + b64encode(f"{KEY}:{SECRET}".encode()).decode()
        response = await treq.post(
            f"{self.server.url}/channel{channelName}",
            json=data,
            headers=Headers({"Authorization": [auth]}),
            persistent=False,
        )
        self.assertEqual(response.code, 200, await response.content())

    async def test_revokedAndDeleted(self) -> None:
        """
        Subscriptions made with a key and with a token it signed (no ``exp``: it used to
        go on for good) end within a second of the key's revocation, each told with
        ``401:<channel>:Revoked key``, and receive nothing more; a deleted key's end with
        ``Could not find key``. Another key's subscriber is not touched.
        """
        key = await self.admin("POST", f"/application/{APP}/keys", {"purpose": "revocation"})
        room = channel("room", "private")
        withToken, withKey, bystander = await self.ws(), await self.ws(), await self.ws()
        token = mintToken(key["id"], key["secret"], room, sub=True)
        for client, auth in [
            (withToken, {"token": token}),
            (withKey, {"key": key["id"], "secret": key["secret"]}),
            (bystander, {"key": KEY, "secret": SECRET}),
        ]:
            reply = await client.call(
                {"channel": "/meta/subscribe", "subscription": room, "ext": {"auth": auth}}
            )
            self.assertTrue(reply["successful"], reply)
        await self.publish(room, {"n": 1})
        self.assertTrue(await eventually(lambda: all(len(c.messages) == 1 for c in self.clients)))

        await self.admin("POST", f"/application/{APP}/keys/{key['id']}/revoke", {})
        revoked = time.monotonic()
        self.assertTrue(
            await eventually(lambda: _notice(withToken, room) and _notice(withKey, room), timeout=3)
        )
        self.assertLess(time.monotonic() - revoked, 1.0)
        for client in (withToken, withKey):
            self.assertEqual(
                _notice(client, room),
                {
                    "channel": "/meta/unsubscribe",
                    "clientId": client.clientId,
                    "subscription": room,
                    "successful": False,
                    "error": f"401:{room}:Revoked key",
                },
            )
        await self.publish(room, {"n": 2})
        self.assertTrue(await eventually(lambda: len(bystander.messages) == 2))
        self.assertEqual([len(withToken.messages), len(withKey.messages)], [1, 1])
        self.assertIsNone(_notice(bystander, room))

        other = await self.admin("POST", f"/application/{APP}/keys", {"purpose": "deleted"})
        late = await self.ws()
        reply = await late.call(
            {
                "channel": "/meta/subscribe",
                "subscription": room,
                "ext": {"auth": {"key": other["id"], "secret": other["secret"]}},
            }
        )
        self.assertTrue(reply["successful"], reply)
        await self.admin("DELETE", f"/application/{APP}/keys/{other['id']}")
        self.assertTrue(await eventually(lambda: _notice(late, room) is not None, timeout=3))
        self.assertEqual(_notice(late, room)["error"], f"401:{room}:Could not find key")  # type: ignore[index]


class NoticedPoller(LPClient):
    """A long-poll client that keeps what its connects bring, the server's notices included."""

    async def _poll(self) -> None:
        while self.polling:
            replies = await self.post(
                [{"channel": "/meta/connect", "clientId": self.clientId, "connectionType": "long-polling"}]
            )
            self.messages.extend(r for r in replies if r.get("channel") != "/meta/connect")


async def publish(node: PandapushProcess, channelName: str, data: Any) -> None:
    response = await treq.post(
        f"{node.url}/channel{channelName}",
        json=data,
        auth=(CLUSTER_KEY, CLUSTER_SECRET),
        persistent=False,
        timeout=15,
    )
    assert response.code == 200, (response.code, await response.content())


class TwoNodeTests(ClusterCase):
    async def test_revokedOnAEndsSubscriptionsOnB(self) -> None:
        """
        A key revoked through node A's admin API ends, within a second, the subscriptions
        that node B granted with it (B hears of it through key sync over Redis), over a
        websocket and a long-poll; messages published afterwards reach neither.
        """
        a, b = await self.startNodes(2)
        key = await createKey(a, CLUSTER_APP)
        room = f"/{CLUSTER_APP}/private/room"
        token = mintToken(key["id"], key["secret"], room, sub=True)
        subscriber = await self.ws(b.url, name="subscriber")
        reply = await subscriber.subscribe(room, {"auth": {"token": token}})
        self.assertTrue(reply["successful"], reply)
        poller = await NoticedPoller(b.url).start()
        self.clients.append(poller)
        reply = await poller.call(
            {
                "channel": "/meta/subscribe",
                "subscription": room,
                "ext": {"auth": {"key": key["id"], "secret": key["secret"]}},
            }
        )
        self.assertTrue(reply["successful"], reply)
        await publish(a, room, {"n": 1})
        self.assertTrue(await eventually(lambda: len(subscriber.messages) == 1 and len(poller.messages) == 1))

        await adminCall(a, "POST", f"/application/{CLUSTER_APP}/keys/{key['id']}/revoke", {})
        revoked = time.monotonic()

        def ended(messages: list[dict[str, Any]]) -> bool:
            return any(
                m.get("channel") == "/meta/unsubscribe" and m.get("error") == f"401:{room}:Revoked key"
                for m in messages
            )

        self.assertTrue(await eventually(lambda: ended(subscriber.replies + subscriber.messages), timeout=3))
        self.assertLess(time.monotonic() - revoked, 1.0)
        self.assertTrue(await eventually(lambda: ended(poller.messages), timeout=3))
        self.assertLess(time.monotonic() - revoked, 1.5)
        await publish(a, room, {"n": 2})
        await sleep(0.5)  # it would have arrived by now
        self.assertEqual([m["data"] for m in subscriber.messages if m.get("channel") == room], [{"n": 1}])
        self.assertEqual([m["data"] for m in poller.messages if m.get("channel") == room], [{"n": 1}])
