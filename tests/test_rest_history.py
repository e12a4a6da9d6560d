"""``GET /apps/<appId>/history`` end to end: a real server, real HTTP, real publishers.

Authorized like a subscribe to the channel; every kind of bad input answered 400; on Redis
the history published through one node is read, the same, through another.
"""

from __future__ import annotations

from typing import Any

import treq

from pandapush.tokens import mintToken
from tests.support.inprocess import APP, KEY, SECRET, InProcessServer, channel
from tests.test_server_api import BASIC, APICase, RedisCase

NEWS = channel("news")
SECRETS = channel("secrets", "private")


class HistoryCase(APICase):
    async def publish(self, name: str, data: Any, server: InProcessServer | None = None) -> None:
        response = await treq.post(
            f"{(server or self.server).url}/channel{name}", json=data, auth=(KEY, SECRET), persistent=False
        )
        self.assertEqual(response.code, 200, await response.content())

    async def history(
        self, auth: str | None = None, server: InProcessServer | None = None, **query: str
    ) -> Any:
        return await self.read(query, auth, server)

    async def read(
        self, query: dict[str, str], auth: str | None = None, server: InProcessServer | None = None
    ) -> Any:
        return await self.call("GET", f"/apps/{APP}/history", auth=auth, query=query, server=server)


class RESTHistoryTests(HistoryCase):
    async def test_publicNeedsNoCredentials(self) -> None:
        """A public channel's history: its position and messages, oldest first, after since or the latest."""
        for n in range(1, 6):
            await self.publish(NEWS, {"n": n})
        code, _, answer = await self.history(channel=NEWS)
        self.assertEqual(code, 200, answer)
        self.assertEqual(answer["offset"], 5)
        self.assertIsInstance(answer["epoch"], str)
        self.assertEqual(answer["messages"], [{"offset": n, "data": {"n": n}} for n in range(1, 6)])
        _, _, after = await self.history(channel=NEWS, since="2")
        self.assertEqual([m["offset"] for m in after["messages"]], [3, 4, 5])
        _, _, latest = await self.history(channel=NEWS, limit="2")
        self.assertEqual([m["offset"] for m in latest["messages"]], [4, 5])
        _, _, first = await self.history(channel=NEWS, since="0", limit="1")
        self.assertEqual(first["messages"], [{"offset": 1, "data": {"n": 1}}])
        _, _, none = await self.history(channel=NEWS, since="5")
        self.assertEqual((none["offset"], none["messages"]), (5, []))

    async def test_epoch(self) -> None:
        """With the epoch of ``since``: the messages after it; another epoch is a 409 naming the current."""
        for n in range(1, 4):
            await self.publish(NEWS, n)
        _, _, first = await self.history(channel=NEWS)
        code, _, answer = await self.history(channel=NEWS, since="1", epoch=first["epoch"])
        self.assertEqual((code, [m["offset"] for m in answer["messages"]]), (200, [2, 3]))
        code, _, answer = await self.history(channel=NEWS, since="1", epoch="another1")
        self.assertEqual(code, 409, answer)
        self.assertEqual(answer["params"], [first["epoch"]])
        code, _, answer = await self.history(channel=NEWS, since="9", epoch=first["epoch"])
        self.assertEqual(code, 400, answer)
        self.assertIn("beyond the channel's last message (3)", answer["message"])
        code, _, answer = await self.history(channel=NEWS, since="1", epoch="e" * 65)
        self.assertEqual(code, 400, answer)

    async def test_idsKept(self) -> None:
        """A Bayeux publish's id is in its history entry; the position matches the delivered one."""
        client = await self.ws()
        await self.subscribe(client, NEWS)
        reply = await client.call(
            {"channel": NEWS, "data": "hi", "id": "m-1", "ext": {"auth": {"key": KEY, "secret": SECRET}}}
        )
        self.assertTrue(reply["successful"], reply)
        _, _, answer = await self.history(channel=NEWS)
        # The test client numbers its messages itself: the id is the one its reply echoes.
        self.assertEqual(answer["messages"], [{"offset": 1, "data": "hi", "id": reply["id"]}])

    async def test_privateLikeASubscribe(self) -> None:
        """A private channel: 401 without credentials; the key or a sub token reads it, a pub token not."""
        await self.publish(SECRETS, "s")
        code, _, _ = await self.history(channel=SECRETS)
        self.assertEqual(code, 401)
        code, _, answer = await self.history(auth=BASIC, channel=SECRETS)
        self.assertEqual((code, len(answer["messages"])), (200, 1))
        reader = "Bearer " + mintToken(KEY, SECRET, SECRETS, sub=True)
        code, _, answer = await self.history(auth=reader, channel=SECRETS)
        self.assertEqual((code, len(answer["messages"])), (200, 1))
        writer = "Bearer " + mintToken(KEY, SECRET, SECRETS, pub=True)
        code, _, answer = await self.history(auth=writer, channel=SECRETS)
        self.assertEqual(code, 403, answer)
        other = "Bearer " + mintToken(KEY, SECRET, channel("other", "private"), sub=True)
        code, _, answer = await self.history(auth=other, channel=SECRETS)
        self.assertEqual(code, 403, answer)
        code, _, answer = await self.history(auth="Basic " + "eDp5", channel=NEWS)
        self.assertEqual(code, 403, answer)

    async def test_badInput(self) -> None:
        """Each bad parameter is a 400 saying which; another application's channel 403; an unknown app 404."""
        cases: list[tuple[dict[str, str], int, str]] = [
            ({}, 400, "channel"),
            ({"channel": NEWS, "since": "-1"}, 400, "since"),
            ({"channel": NEWS, "since": "x"}, 400, "since"),
            ({"channel": NEWS, "since": "9" * 40}, 400, "since"),
            ({"channel": NEWS, "limit": "0"}, 400, "limit"),
            ({"channel": NEWS, "limit": "-3"}, 400, "limit"),
            ({"channel": NEWS, "limit": "1001"}, 400, "limit"),
            ({"channel": NEWS, "limit": "1e9"}, 400, "limit"),
            ({"channel": channel("*")}, 400, "channel"),
            ({"channel": "/nonsense"}, 400, "channel"),
            ({"channel": "/otherApp000000000001/public/x"}, 403, "not a channel of application"),
        ]
        for query, status, words in cases:
            code, _, answer = await self.read(query, BASIC)
            self.assertEqual(code, status, (query, answer))
            self.assertIn(words, answer["message"] + str(answer["params"]), (query, answer))
        code, _, answer = await self.call(
            "GET",
            "/apps/noSuchApp0000000000/history",
            auth=None,
            query={"channel": "/noSuchApp0000000000/public/x"},
        )
        self.assertEqual(code, 404, answer)


class RedisRESTHistoryTests(RedisCase, HistoryCase):
    async def test_sharedByNodes(self) -> None:
        """Published through both nodes, read through either: one history, the same answer."""
        for n in range(4):
            await self.publish(NEWS, n, server=self.server if n % 2 else self.other)
        _, _, onA = await self.history(channel=NEWS)
        _, _, onB = await self.history(channel=NEWS, server=self.other)
        self.assertEqual(onA, onB)
        self.assertEqual([m["data"] for m in onA["messages"]], [0, 1, 2, 3])
        self.assertEqual([m["offset"] for m in onA["messages"]], [1, 2, 3, 4])
