"""
``/admin`` and ``/admin/ui/*``: the console's files, served by :class:`AdminUIResource`
under the admin API's own authority, over real HTTP from an in-process server.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import treq
from twisted.internet import defer
from twisted.trial.unittest import TestCase

from pandapush.web.adminui import ADMIN_STATIC_DIR, AdminUIResource
from tests.support.inprocess import ADMIN_PASSWORD, ADMIN_USER, InProcessServer

AUTH = {b"Authorization": [b"Basic " + base64.b64encode(f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode())]}
WRONG = {b"Authorization": [b"Basic " + base64.b64encode(f"{ADMIN_USER}:nope".encode())]}


class _Refusing:
    """An authority that knows nobody and answers with a marker."""

    def authenticate(self, request: Any) -> Any:
        return defer.succeed(None)

    def challenge(self, request: Any) -> bytes:
        request.setResponseCode(418)
        return b"no"


class FileForTests(TestCase):
    """Which request paths name which files (no server needed)."""

    def setUp(self) -> None:
        self.ui = AdminUIResource(_Refusing())

    def test_index(self) -> None:
        for path in (b"/admin", b"/admin/"):
            self.assertEqual(self.ui.fileFor(path), ADMIN_STATIC_DIR / "index.html")

    def test_ui_files(self) -> None:
        self.assertEqual(self.ui.fileFor(b"/admin/ui/main.js"), ADMIN_STATIC_DIR / "ui" / "main.js")
        self.assertEqual(
            self.ui.fileFor(b"/admin/ui/views/keys.js"), ADMIN_STATIC_DIR / "ui" / "views" / "keys.js"
        )

    def test_nothing_outside(self) -> None:
        for path in (
            b"/admin/ui/../index.html",
            b"/admin/ui/../../adminui.py",
            b"/admin/ui/%2e%2e/index.html",
            b"/admin/ui/.hidden",
            b"/admin/ui/",
            b"/admin/ui/views",
            b"/admin/ui//main.js",
            b"/admin/ui/missing.js",
            b"/admin/index.html",
            b"/admin/api/info",
            b"/adminx",
            b"/admin/ui/\xff.js",
        ):
            self.assertIsNone(self.ui.fileFor(path), path)

    def test_every_shipped_file_is_reachable(self) -> None:
        """Every file of ``ui/`` has a content type and a URL (nothing ships unusable)."""
        from pandapush.web.adminui import CONTENT_TYPES

        for file in (ADMIN_STATIC_DIR / "ui").rglob("*"):
            if file.is_file():
                self.assertIn(file.suffix, CONTENT_TYPES, file)
                url = b"/admin/ui/" + str(file.relative_to(ADMIN_STATIC_DIR / "ui")).encode()
                self.assertEqual(self.ui.fileFor(url), file)


class ServedTests(TestCase):
    """Over HTTP, mounted the way the server mounts it (API first, console for the rest)."""

    async def _start(self) -> InProcessServer:
        server = InProcessServer.withConsole()
        await server.start()
        self.addCleanup(server.stop)
        return server

    def setUp(self) -> Any:
        async def start() -> None:
            self.server = await self._start()

        return defer.Deferred.fromCoroutine(start())

    async def get(self, path: str, headers: Any = None, method: str = "GET") -> Any:
        response = await treq.request(method, self.server.url + path, headers=headers, persistent=False)
        body = await response.content()
        return response, body

    async def test_login_required_everywhere(self) -> None:
        """Without (or with wrong) credentials: the authority's Basic challenge, no content."""
        for path in ("/admin", "/admin/", "/admin/ui/main.js", "/admin/ui/admin.css", "/admin/ui/nope"):
            for headers in (None, WRONG):
                response, body = await self.get(path, headers)
                self.assertEqual(response.code, 401, path)
                self.assertIn(b"Basic", response.headers.getRawHeaders(b"www-authenticate")[0])
                self.assertNotIn(b"<script", body)

    async def test_index(self) -> None:
        for path in ("/admin", "/admin/"):
            response, body = await self.get(path, AUTH)
            self.assertEqual(response.code, 200)
            self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/html; charset=utf-8"])
            self.assertIn(b'<script type="module" src="/admin/ui/main.js">', body)
            csp = response.headers.getRawHeaders(b"content-security-policy")[0]
            self.assertIn(b"script-src 'self'", csp)
            self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"no-cache"])
            self.assertEqual(response.headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"])

    async def test_content_types(self) -> None:
        expected = {
            "/admin/ui/main.js": b"text/javascript; charset=utf-8",
            "/admin/ui/views/console.js": b"text/javascript; charset=utf-8",
            "/admin/ui/admin.css": b"text/css; charset=utf-8",
            "/admin/ui/favicon.svg": b"image/svg+xml",
        }
        for path, contentType in expected.items():
            response, body = await self.get(path, AUTH)
            self.assertEqual(response.code, 200, path)
            self.assertEqual(response.headers.getRawHeaders(b"content-type"), [contentType], path)
            local = ADMIN_STATIC_DIR / "ui" / path.removeprefix("/admin/ui/")
            self.assertEqual(body, Path(local).read_bytes())

    async def test_etag_revalidation(self) -> None:
        response, body = await self.get("/admin/ui/main.js", AUTH)
        [etag] = response.headers.getRawHeaders(b"etag")
        again, empty = await self.get("/admin/ui/main.js", {**AUTH, b"If-None-Match": [etag]})
        self.assertEqual(again.code, 304)
        self.assertEqual(empty, b"")
        other, body2 = await self.get("/admin/ui/main.js", {**AUTH, b"If-None-Match": [b'"stale"']})
        self.assertEqual(other.code, 200)
        self.assertEqual(body2, body)

    async def test_head(self) -> None:
        response, body = await self.get("/admin/ui/admin.css", AUTH, method="HEAD")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"")
        size = (ADMIN_STATIC_DIR / "ui" / "admin.css").stat().st_size
        self.assertEqual(response.headers.getRawHeaders(b"content-length"), [str(size).encode()])

    async def test_not_found_and_not_allowed(self) -> None:
        for path in ("/admin/ui/nope.js", "/admin/ui/../../adminui.py", "/admin/elsewhere"):
            response, _ = await self.get(path, AUTH)
            self.assertEqual(response.code, 404, path)
        response, _ = await self.get("/admin/", AUTH, method="POST")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders(b"allow"), [b"GET, HEAD"])

    async def test_api_still_answers(self) -> None:
        """The API keeps ``/admin/api/...``; its 404s stay JSON."""
        response, body = await self.get("/admin/api/info", AUTH)
        self.assertEqual(response.code, 200)
        self.assertIn(b'"username":"admin"', body.replace(b" ", b""))
        for path in ("/admin/api/nothing", "/admin/api"):
            response, body = await self.get(path, AUTH)
            self.assertEqual(response.code, 404, path)
            self.assertIn(b"application/json", response.headers.getRawHeaders(b"content-type")[0])
        # Only the api segment goes to the API: /admin/apix is the console's (and unknown).
        response, body = await self.get("/admin/apix", AUTH)
        self.assertEqual((response.code, body), (404, b"Not found\n"))


class AuthorityFailureTests(TestCase):
    """An authority that fails is a 500, not a hung request or a served file."""

    async def test_failure(self) -> None:
        class Broken:
            def authenticate(self, request: Any) -> Any:
                return defer.fail(RuntimeError("backend down"))

            def challenge(self, request: Any) -> bytes:
                raise AssertionError("not reached")

        from twisted.web.test.requesthelper import DummyRequest

        ui = AdminUIResource(Broken())
        request = DummyRequest([b"admin"])
        request.path = b"/admin/"  # type: ignore[attr-defined]
        finished = request.notifyFinish()
        ui.render(request)
        await finished
        self.assertEqual(request.responseCode, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_refused(self) -> None:
        from twisted.web.test.requesthelper import DummyRequest

        ui = AdminUIResource(_Refusing())
        request = DummyRequest([b"admin"])
        request.path = b"/admin/ui/main.js"  # type: ignore[attr-defined]
        finished = request.notifyFinish()
        ui.render(request)
        await finished
        self.assertEqual(request.responseCode, 418)
        self.assertEqual(b"".join(request.written), b"no")
