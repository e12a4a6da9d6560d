"""``GET /client.js``: the resource serving the browser client, over StubTreq (no sockets).

It is tested mounted on ``PandapushRoot`` exactly as ``tap.py`` mounts it, so what passes
here is what a browser gets from the real site. The client's behaviour is tested in a
real browser by ``tests.test_clientjs_browser``.
"""

from __future__ import annotations

import gzip
from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.trial.unittest import TestCase
from twisted.web.client import readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import NoResource, Resource

from pandapush.web.clientjs import STATIC_DIR, ClientScriptResource
from pandapush.web.site import PandapushRoot
from tests.support.http import stubTreq

BASE = "http://pandapush.test"


class ClientScriptTests(TestCase):
    def setUp(self) -> None:
        self.resource = ClientScriptResource()
        root = PandapushRoot(
            Resource(),
            NoResource(),
            {b"client.js": self.resource, b"client.mjs": self.resource, b"client.d.ts": self.resource},
        )
        self.root = root
        self.source = (STATIC_DIR / "client.js").read_bytes()

    async def get(self, path: str, method: str = "GET", **headers: str) -> tuple[Any, bytes]:
        """A raw request (treq would add ``Accept-Encoding: gzip`` and decode the body itself)."""
        agent = RequestTraversalAgent(self.root)
        response = await agent.request(
            method.encode("ascii"),
            (BASE + path).encode("ascii"),
            Headers({k.replace("_", "-"): [v] for k, v in headers.items()}),
        )
        body = await readBody(response)
        agent.flush()
        return response, body

    def header(self, response: Any, name: str) -> str | None:
        values = response.headers.getRawHeaders(name)
        return values[0] if values else None

    async def test_servesTheClient(self) -> None:
        response, body = await self.get("/client.js")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, self.source)
        self.assertEqual(self.header(response, "content-type"), "application/javascript; charset=utf-8")
        self.assertEqual(self.header(response, "access-control-allow-origin"), "*")
        self.assertEqual(self.header(response, "cache-control"), "public, max-age=300")
        self.assertEqual(self.header(response, "etag"), f'"{self.resource.version()}"')
        self.assertEqual(self.header(response, "x-content-type-options"), "nosniff")
        self.assertEqual(response.length, len(self.source))
        self.assertIn(b"Pandapush", body)

    async def test_moduleForm(self) -> None:
        response, body = await self.get("/client.mjs")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.header(response, "content-type"), "application/javascript; charset=utf-8")
        self.assertEqual(self.header(response, "access-control-allow-origin"), "*")
        self.assertIn(b"import './client.js'", body)

    async def test_typeDeclarations(self) -> None:
        response, body = await self.get("/client.d.ts")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.header(response, "content-type"), "text/plain; charset=utf-8")
        self.assertIn(b"class Client", body)

    async def test_etagRevalidation(self) -> None:
        first, _ = await self.get("/client.js")
        etag = self.header(first, "etag")
        assert etag is not None
        for value in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            response, body = await self.get("/client.js", if_none_match=value)
            self.assertEqual((response.code, body), (304, b""), value)
            self.assertEqual(self.header(response, "etag"), etag)
        response, body = await self.get("/client.js", if_none_match='"stale"')
        self.assertEqual((response.code, body), (200, self.source))

    async def test_lastModified(self) -> None:
        first, _ = await self.get("/client.js")
        lastModified = self.header(first, "last-modified")
        assert lastModified is not None
        response, _ = await self.get("/client.js", if_modified_since=lastModified)
        self.assertEqual(response.code, 304)
        # If-None-Match wins over If-Modified-Since.
        response, _ = await self.get("/client.js", if_modified_since=lastModified, if_none_match='"x"')
        self.assertEqual(response.code, 200)

    async def test_gzip(self) -> None:
        response, body = await self.get("/client.js", accept_encoding="gzip, deflate, br")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.header(response, "content-encoding"), "gzip")
        self.assertEqual(self.header(response, "vary"), "Accept-Encoding")
        self.assertEqual(gzip.decompress(body), self.source)
        self.assertLess(len(body), len(self.source) / 2)
        etag = self.header(response, "etag")
        self.assertNotEqual(etag, f'"{self.resource.version()}"')
        again, _ = await self.get("/client.js", accept_encoding="gzip", if_none_match=etag or "")
        self.assertEqual(again.code, 304)
        plain, body = await self.get("/client.js", accept_encoding="gzip;q=0")
        self.assertIsNone(self.header(plain, "content-encoding"))
        self.assertEqual(body, self.source)
        odd, body = await self.get("/client.js", accept_encoding="gzip;q=nonsense")
        self.assertEqual((odd.code, body), (200, self.source))

    async def test_versionedUrlIsImmutable(self) -> None:
        response, _ = await self.get(f"/client.js?v={self.resource.version()}")
        self.assertEqual(self.header(response, "cache-control"), "public, max-age=31536000, immutable")
        response, _ = await self.get("/client.js?v=old")
        self.assertEqual(self.header(response, "cache-control"), "public, max-age=300")

    async def test_head(self) -> None:
        response, body = await self.get("/client.js", method="HEAD")
        self.assertEqual((response.code, body), (200, b""))
        self.assertEqual(self.header(response, "etag"), f'"{self.resource.version()}"')

    async def test_otherMethodsAndPaths(self) -> None:
        response, _ = await self.get("/client.js", method="POST")
        self.assertEqual(response.code, 405)
        self.assertEqual(self.header(response, "allow"), "GET, HEAD, OPTIONS")
        response, _ = await self.get("/client.js", method="OPTIONS")
        self.assertEqual(response.code, 204)
        self.assertEqual(self.header(response, "access-control-allow-origin"), "*")
        response, _ = await self.get("/client.js/extra")
        self.assertEqual(response.code, 404)

    async def test_directChild(self) -> None:
        """Also works with ``putChild`` (Twisted's usual tree), where the path is consumed."""
        root = Resource()
        root.putChild(b"client.js", self.resource)
        response = await stubTreq(root).get(BASE + "/client.js")
        self.assertEqual(response.code, 200)
        self.assertEqual(await response.content(), self.source)
