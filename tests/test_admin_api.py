"""The admin API and admin auth through ``treq.testing.StubTreq``, on the memory storage."""

from __future__ import annotations

import base64
import os
from typing import Any

import jwt
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from pandapush.auth.admin import AdminPasswordChecker
from pandapush.auth.checkers import ChannelAuthority
from pandapush.auth.config import Environment, TenancyConfig, parseEnvironments
from pandapush.auth.keycache import KeyCache
from pandapush.auth.rules import SUBSCRIBE, Allowed
from pandapush.bayeux import json
from pandapush.storage.memory import MemoryStorage
from pandapush.web.admin import AdminApp
from pandapush.web.adminauth import (
    AdminAuthority,
    BasicAdminAuth,
    ClosedAdminAuth,
    IAdminAuth,
    adminLoginInfo,
    makeAdminAuthority,
)
from tests.support.http import stubTreq

ROOT = ("root", "rootpass")
ALICE = ("alice", "alicepass")
BOB = ("bob", "bobpass")


def basic(user: str, password: str) -> dict[bytes, list[bytes]]:
    return {b"Authorization": [b"Basic " + base64.b64encode(f"{user}:{password}".encode())]}


class AdminHarness:
    def __init__(self, config: TenancyConfig | None = None, authority: AdminAuthority | None = None) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.storage = MemoryStorage()
        self.keys = KeyCache(self.storage, self.clock)
        self.config = config or TenancyConfig(
            environments=(
                Environment("prod", "https://pp.example.com"),
                Environment("beta", "http://localhost"),
            )
        )
        checkers = [AdminPasswordChecker(dict([ROOT, ALICE, BOB]))]
        self.authority = authority or AdminAuthority(BasicAdminAuth(checkers), rootAdmins={"root"})
        self.app = AdminApp(self.storage, self.authority, self.keys, self.clock, self.config)
        self.treq = stubTreq(self.app.resource())


class AdminAPITests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = AdminHarness()

    def request(
        self, method: str, path: str, who: tuple[str, str] | None = ROOT, body: Any = None, **kwargs: Any
    ) -> tuple[int, Any, bytes]:
        headers = dict(kwargs.pop("headers", {}))
        if who is not None:
            headers.update(basic(*who))
        if body is not None:
            kwargs["data"] = json.dumps(body)
            headers.setdefault(b"Content-Type", [b"application/json"])
        d = self.h.treq.request(method, "http://localhost" + path, headers=headers, **kwargs)
        self.h.treq.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(response.content())
        return response.code, response.headers, content

    def json(self, method: str, path: str, who: tuple[str, str] | None = ROOT, body: Any = None) -> Any:
        code, _, content = self.request(method, path, who, body)
        self.assertIn(code, (200, 201), content)
        return json.loads(content)

    def createApp(self, who: tuple[str, str] = ROOT, name: str = "testapp") -> str:
        code, _, content = self.request("POST", "/admin/api/applications", who, {"name": name})
        self.assertEqual(code, 201)
        return json.loads(content)["id"]  # type: ignore[no-any-return]

    def test_authRequired(self) -> None:
        """Every admin URL, the page included, wants a login: 401 with a Basic challenge."""
        for path in ["/admin", "/admin/", "/admin/apps/x", "/admin/api/info", "/admin/api/applications"]:
            code, headers, _ = self.request("GET", path, who=None)
            self.assertEqual(code, 401, path)
            self.assertIn(b"Basic", headers.getRawHeaders(b"WWW-Authenticate")[0])
        code, _, _ = self.request("GET", "/admin/api/info", who=("root", "wrong"))
        self.assertEqual(code, 401)

    def test_page(self) -> None:
        code, headers, content = self.request("GET", "/admin")
        self.assertEqual(code, 200)
        self.assertIn(b"text/html", headers.getRawHeaders(b"Content-Type")[0])
        self.assertIn(b"pandapush admin", content)

    def test_info(self) -> None:
        """Info names the user, the environments and which one this is (by host)."""
        info = self.json("GET", "/admin/api/info")
        self.assertEqual(info["username"], "root")
        self.assertEqual(
            info["environments"],
            [{"name": "prod", "url": "https://pp.example.com"}, {"name": "beta", "url": "http://localhost"}],
        )
        self.assertEqual(info["environment"], "beta")
        self.assertIn("version", info)

    def test_createAndShow(self) -> None:
        """Create an app (201), see it listed and shown with keys (no secrets) and admins."""
        code, _, content = self.request("POST", "/admin/api/applications", body={"name": "testapp"})
        self.assertEqual(code, 201)
        created = json.loads(content)
        self.assertEqual(set(created), {"id", "name", "created_by", "created_at"})
        self.assertEqual((created["name"], created["created_by"]), ("testapp", "root"))
        appId = created["id"]
        self.assertEqual(len(appId), 20)
        self.assertEqual([a["id"] for a in self.json("GET", "/admin/api/applications")], [appId])
        key = self.json("POST", f"/admin/api/application/{appId}/keys", body={"purpose": "test"})
        self.assertTrue(key["id"].startswith("PSID"))
        self.assertTrue(key["secret"])
        shown = self.json("GET", f"/admin/api/application/{appId}")
        self.assertEqual(shown["admins"], ["root"])
        self.assertEqual([k["id"] for k in shown["keys"]], [key["id"]])
        self.assertNotIn("secret", shown["keys"][0])
        listed = self.json("GET", f"/admin/api/application/{appId}/keys")
        self.assertNotIn("secret", listed[0])
        self.assertNotIn(key["secret"].encode(), self.request("GET", f"/admin/api/application/{appId}")[2])

    def test_notFound(self) -> None:
        code, _, content = self.request("GET", "/admin/api/application/nope")
        self.assertEqual(code, 404)
        self.assertEqual(json.loads(content)["message"], "Not found")
        code, _, _ = self.request("GET", "/admin/api/nothing/here")
        self.assertEqual(code, 404)

    def test_badBodies(self) -> None:
        """Missing names, bad JSON, and non-JSON content types (CSRF) are 400s."""
        self.assertEqual(self.request("POST", "/admin/api/applications", body={})[0], 400)
        self.assertEqual(
            self.request(
                "POST",
                "/admin/api/applications",
                data=b"name=x",
                headers={b"Content-Type": [b"application/x-www-form-urlencoded"]},
            )[0],
            400,
        )
        self.assertEqual(
            self.request(
                "POST",
                "/admin/api/applications",
                data=b"{nope",
                headers={b"Content-Type": [b"application/json"]},
            )[0],
            400,
        )
        appId = self.createApp()
        code, _, content = self.request(
            "POST", f"/admin/api/application/{appId}/keys", body={"expires": "soon"}
        )
        self.assertEqual(code, 400)
        self.assertIn(b"expires", content)

    def test_updateAndScoping(self) -> None:
        """A non-root admin sees and changes only the apps they administer."""
        aliceApp = self.createApp(ALICE, "alice's")
        rootApp = self.createApp(ROOT, "root's")
        self.assertEqual([a["id"] for a in self.json("GET", "/admin/api/applications", ALICE)], [aliceApp])
        self.assertEqual(len(self.json("GET", "/admin/api/applications", ROOT)), 2)
        for method, path, body in [
            ("GET", f"/admin/api/application/{rootApp}", None),
            ("POST", f"/admin/api/application/{rootApp}", {"name": "x"}),
            ("DELETE", f"/admin/api/application/{rootApp}", None),
            ("POST", f"/admin/api/application/{rootApp}/keys", {}),
            ("GET", f"/admin/api/application/{rootApp}/keys", None),
            ("POST", f"/admin/api/application/{rootApp}/token", {"channel": f"/{rootApp}/private/a"}),
        ]:
            self.assertEqual(self.request(method, path, ALICE, body)[0], 404, (method, path))
        self.assertEqual(self.request("GET", f"/admin/api/application/{aliceApp}", BOB)[0], 404)
        # Alice adds Bob; the change is atomic (name and admins together).
        self.assertEqual(
            self.json(
                "POST",
                f"/admin/api/application/{aliceApp}",
                ALICE,
                {"name": "shared", "admins": ["alice", "bob"]},
            ),
            {"id": aliceApp},
        )
        shown = self.json("GET", f"/admin/api/application/{aliceApp}", BOB)
        self.assertEqual((shown["name"], shown["admins"]), ("shared", ["alice", "bob"]))
        self.assertEqual(
            self.request("POST", f"/admin/api/application/{aliceApp}", BOB, {"admins": "bob"})[0], 400
        )

    def test_deleteApplicationStopsKeysAtOnce(self) -> None:
        """Deleting an app invalidates its cached keys: the next check fails."""
        appId = self.createApp()
        key = self.json("POST", f"/admin/api/application/{appId}/keys", body={})
        authority = ChannelAuthority(self.h.keys, self.h.clock)
        auth = {"key": key["id"], "secret": key["secret"]}
        self.assertEqual(
            self.successResultOf(authority.authorize(SUBSCRIBE, f"/{appId}/private/a", auth)),
            Allowed(key["id"]),
        )
        code, _, content = self.request("DELETE", f"/admin/api/application/{appId}")
        self.assertEqual((code, content), (200, b"OK"))
        self.failureResultOf(authority.authorize(SUBSCRIBE, f"/{appId}/private/a", auth))
        self.assertEqual(self.request("GET", f"/admin/api/application/{appId}")[0], 404)

    def test_revokeAtOnce(self) -> None:
        """A revoked key is refused on the very next check, though it was cached."""
        appId = self.createApp()
        key = self.json("POST", f"/admin/api/application/{appId}/keys", body={})
        authority = ChannelAuthority(self.h.keys, self.h.clock)
        auth = {"key": key["id"], "secret": key["secret"]}
        self.successResultOf(authority.authorize(SUBSCRIBE, f"/{appId}/private/a", auth))
        revoked = self.json("POST", f"/admin/api/application/{appId}/keys/{key['id']}/revoke", body={})
        self.assertTrue(revoked["revoked"])
        self.assertNotIn("secret", revoked)
        failure = self.failureResultOf(authority.authorize(SUBSCRIBE, f"/{appId}/private/a", auth))
        self.assertEqual(failure.value.refusal.text, "Revoked key")
        code, _, _ = self.request("POST", f"/admin/api/application/{appId}/keys/PSIDnope/revoke", body={})
        self.assertEqual(code, 404)

    def test_deleteKey(self) -> None:
        appId = self.createApp()
        key = self.json("POST", f"/admin/api/application/{appId}/keys", body={})
        authority = ChannelAuthority(self.h.keys, self.h.clock)
        auth = {"key": key["id"], "secret": key["secret"]}
        self.successResultOf(authority.authorize(SUBSCRIBE, f"/{appId}/private/a", auth))
        self.assertEqual(self.request("DELETE", f"/admin/api/application/{appId}/keys/{key['id']}")[0], 200)
        failure = self.failureResultOf(authority.authorize(SUBSCRIBE, f"/{appId}/private/a", auth))
        self.assertEqual(failure.value.refusal.text, "Could not find key")

    def test_keyFromAnotherApp(self) -> None:
        """A key id of another application is ``could not find key`` here."""
        a, b = self.createApp(), self.createApp(name="b")
        key = self.json("POST", f"/admin/api/application/{a}/keys", body={})
        code, _, content = self.request(
            "POST", f"/admin/api/application/{b}/keys/{key['id']}/token", body={"channel": f"/{b}/private/x"}
        )
        self.assertEqual(code, 404)
        self.assertEqual(json.loads(content)["message"], "could not find key")

    def test_consoleToken(self) -> None:
        """A token minted in the console is signed by a "web console" key and works."""
        appId = self.createApp()
        channel = f"/{appId}/presence/room"
        body = {"channel": channel, "sub": True, "presence": {"id": "u1"}}
        minted = self.json("POST", f"/admin/api/application/{appId}/token", body=body)["token"]
        claims = jwt.decode(minted, options={"verify_signature": False})
        self.assertEqual(claims["channel"], channel)
        self.assertEqual(claims["exp"], 1_800_000_000 + 3600)
        keys = self.json("GET", f"/admin/api/application/{appId}/keys")
        self.assertEqual([k["purpose"] for k in keys], ["web console"])
        self.assertEqual(claims["keyId"], keys[0]["id"])
        # A second token reuses the same key.
        self.json("POST", f"/admin/api/application/{appId}/token", body=body)
        self.assertEqual(len(self.json("GET", f"/admin/api/application/{appId}/keys")), 1)
        authority = ChannelAuthority(self.h.keys, self.h.clock)
        allowed = self.successResultOf(authority.authorize(SUBSCRIBE, channel, {"token": minted}))
        self.assertEqual(allowed.presence, {"id": "u1"})

    def test_keyToken(self) -> None:
        appId = self.createApp()
        key = self.json("POST", f"/admin/api/application/{appId}/keys", body={})
        minted = self.json(
            "POST",
            f"/admin/api/application/{appId}/keys/{key['id']}/token",
            body={"channel": f"/{appId}/private/a", "pub": True},
        )["token"]
        self.assertEqual(jwt.decode(minted, key["secret"], algorithms=["HS256"])["keyId"], key["id"])
        code, _, content = self.request(
            "POST",
            f"/admin/api/application/{appId}/keys/PSIDnope/token",
            body={"channel": f"/{appId}/private/a"},
        )
        self.assertEqual((code, json.loads(content)["message"]), (404, "could not find key"))
        code, _, _ = self.request(
            "POST", f"/admin/api/application/{appId}/token", body={"channel": "/other/private/a"}
        )
        self.assertEqual(code, 400)


class AdminAuthTests(SynchronousTestCase):
    def test_interfaces(self) -> None:
        verifyObject(ICredentialsChecker, AdminPasswordChecker({"a": "b"}))
        verifyObject(IAdminAuth, BasicAdminAuth([]))
        verifyObject(IAdminAuth, ClosedAdminAuth())

    def test_configured(self) -> None:
        """README's docker command: AUTH_METHOD=basic ADMIN_USERNAME=admin ADMIN_PASSWORD=password."""
        config = TenancyConfig.fromEnvironment(
            {
                "AUTH_METHOD": "basic",
                "ADMIN_USERNAME": "admin",
                "ADMIN_PASSWORD": "password",
                "ROOT_ADMINS": "x, y",
            },
            dataDir=self.mktemp(),
        )
        authority = makeAdminAuthority(config)
        self.assertFalse(os.path.exists(config.dataDir))
        self.assertEqual(authority.rootAdmins, {"admin", "x", "y"})
        info = adminLoginInfo(authority, "http://h")
        assert info is not None
        self.assertIsNone(info["password"])
        h = AdminHarness(authority=authority)
        d = h.treq.get("http://localhost/admin/api/info", headers=basic("admin", "password"))
        h.treq.flush()
        self.assertEqual(self.successResultOf(d).code, 200)
        d = h.treq.get("http://localhost/admin/api/info", headers=basic("admin", "passwore"))
        h.treq.flush()
        self.assertEqual(self.successResultOf(d).code, 401)

    def test_none(self) -> None:
        """AUTH_METHOD=none closes the admin area."""
        authority = makeAdminAuthority(TenancyConfig(authMethod="none"))
        h = AdminHarness(authority=authority)
        d = h.treq.get("http://localhost/admin/api/info", headers=basic("admin", "password"))
        h.treq.flush()
        self.assertEqual(self.successResultOf(d).code, 403)
        self.assertIsNone(adminLoginInfo(authority, "http://h"))

    def test_environments(self) -> None:
        self.assertEqual(
            parseEnvironments("prod,https://a;beta,http://b;;junk"),
            (Environment("prod", "https://a"), Environment("beta", "http://b")),
        )


class AdminStatsTests(SynchronousTestCase):
    def test_stats(self) -> None:
        """Per-app statistics come from the provider, for apps the admin may see."""
        h = AdminHarness()
        h.app.statistics = lambda appId: {"app": appId, "connections": 3}
        app = self.successResultOf(h.storage.createApplication("x", "alice", admins=["alice"]))
        d = h.treq.get(f"http://localhost/admin/api/application/{app.id}/stats", headers=basic(*ALICE))
        h.treq.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(
            json.loads(self.successResultOf(response.content())), {"app": app.id, "connections": 3}
        )
        d = h.treq.get(f"http://localhost/admin/api/application/{app.id}/stats", headers=basic(*BOB))
        h.treq.flush()
        self.assertEqual(self.successResultOf(d).code, 404)


class TenancyConfigTests(SynchronousTestCase):
    def test_fromEnvironment(self) -> None:
        """Upstream's variable names, and the data directory following DATABASE_PATH."""
        config = TenancyConfig.fromEnvironment(
            {
                "AUTH_METHOD": "Basic",
                "ROOT_ADMINS": "a,b",
                "ENVIRONMENTS": "prod,https://p",
                "DATABASE_PATH": "/data/db.sqlite",
            }
        )
        self.assertEqual(config.authMethod, "basic")
        self.assertEqual(config.rootAdmins, {"a", "b"})
        self.assertEqual(config.environments, (Environment("prod", "https://p"),))
        self.assertEqual(config.dataDir, "/data")
        self.assertEqual(TenancyConfig.fromEnvironment({}).dataDir, "localdata")
        self.assertEqual(TenancyConfig.fromEnvironment({"PANDAPUSH_DATA_DIR": "/x"}).dataDir, "/x")
        self.assertNotIn(
            "password", repr(TenancyConfig(adminPassword="password")).replace("adminPassword", "")
        )


class AdminUIDelegationTests(SynchronousTestCase):
    def test_ui(self) -> None:
        """Given a console resource, /admin and its files go to it; the API stays here."""
        from twisted.web.resource import Resource

        seen: list[bytes] = []

        class Console(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                seen.append(request.path)
                return b"console"

        h = AdminHarness()
        h.app.ui = Console()
        for path in ("/admin", "/admin/", "/admin/ui/app.js"):
            d = h.treq.get("http://localhost" + path)
            h.treq.flush()
            response = self.successResultOf(d)
            self.assertEqual(self.successResultOf(response.content()), b"console", path)
        self.assertEqual(seen, [b"/admin", b"/admin/", b"/admin/ui/app.js"])
        d = h.treq.get("http://localhost/admin/api/info")
        h.treq.flush()
        self.assertEqual(self.successResultOf(d).code, 401)
