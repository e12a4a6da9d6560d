"""``/openapi.json`` against the code: every route documented and nothing else, real answers valid.

The document is written by hand (``pandapush/web/apps/openapi.py``); these tests are what
keeps it true: the routes of :data:`pandapush.web.apps.ROUTES` and the documented paths
must be the same set, with the same path parameters; every example must fit its schema;
and the answers of a real server, to good requests and bad ones, must fit the schema of
their status.
"""

from __future__ import annotations

import json
import re
from typing import Any

import treq
from twisted.trial.unittest import SynchronousTestCase

from pandapush.tokens import mintToken
from pandapush.web.apps import ROUTES
from pandapush.web.apps.openapi import REST_PUBLISH_PATH, document
from tests.support.inprocess import APP, KEY, SECRET, channel
from tests.support.schema import SchemaError, validate
from tests.test_server_api import BASIC, ROOM, APICase

METHODS = {"get", "post", "put", "delete", "patch"}


class DocumentTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.document = document()

    def test_routesAndPathsAreTheSame(self) -> None:
        """Every route is documented with its method, and every documented operation is a route."""
        routes = {(route.path, route.method.lower()) for route in ROUTES}
        documented = {
            (path, method)
            for path, item in self.document["paths"].items()
            for method in item
            if method in METHODS
        }
        self.assertEqual(documented - {(REST_PUBLISH_PATH, "post")}, routes)
        self.assertIn((REST_PUBLISH_PATH, "post"), documented)

    def test_pathParameters(self) -> None:
        """Each operation documents exactly the path's {parameters}, as required path parameters."""
        for path, item in self.document["paths"].items():
            wanted = set(re.findall(r"{(\w+)}", path))
            for method, operation in item.items():
                inPath = {p["name"] for p in operation.get("parameters", ()) if p["in"] == "path"}
                self.assertEqual(inPath, wanted, (path, method))
                self.assertTrue(all(p["required"] for p in operation["parameters"] if p["in"] == "path"))

    def test_examplesFitSchemas(self) -> None:
        """Every example of a request or an answer validates against its schema."""
        checked = 0
        for path, item in self.document["paths"].items():
            for method, operation in item.items():
                bodies = [operation.get("requestBody", {}), *operation["responses"].values()]
                for body in bodies:
                    for media in body.get("content", {}).values():
                        if "example" in media:
                            validate(media["example"], media["schema"], self.document, f"{method} {path}")
                            checked += 1
        self.assertGreaterEqual(checked, 9)

    def test_schemaCheckerCatchesMismatches(self) -> None:
        """The checker used here refuses what breaks a schema (so a pass means something)."""
        with self.assertRaises(SchemaError):
            validate({"occupied": True}, {"$ref": "#/components/schemas/Channel"}, self.document)
        with self.assertRaises(SchemaError):
            validate(
                {"channels": {"/a/public/b": {"subscription_count": -1}}},
                {"$ref": "#/components/schemas/Channels"},
                self.document,
            )
        with self.assertRaises(SchemaError):
            validate({"members": {}, "extra": 1}, {"$ref": "#/components/schemas/Members"}, self.document)


class LiveAnswersTests(APICase):
    """A real server's answers (and its /openapi.json) fit the document."""

    def check(self, method: str, path: str, status: int, answer: Any) -> None:
        doc = document()
        template = next(
            r.path
            for r in ROUTES
            if r.match(path.split("?")[0].strip("/").split("/")) is not None and r.method == method
        )
        response = doc["paths"][template][method.lower()]["responses"].get(str(status))
        self.assertIsNotNone(response, f"{method} {template} answered {status}, which is not documented")
        validate(
            answer, response["content"]["application/json"]["schema"], doc, f"{method} {template} {status}"
        )

    async def test_answersFitTheDocument(self) -> None:
        client = await self.ws()
        await self.subscribe(
            client, ROOM, {"token": mintToken(KEY, SECRET, ROOM, sub=True, presence={"id": "u1"})}
        )
        calls: list[tuple[str, str, Any, dict[str, str] | None, str | None]] = [
            ("POST", f"/apps/{APP}/events", {"channels": [channel("a")], "data": 1}, None, BASIC),
            (
                "POST",
                f"/apps/{APP}/batch_events",
                {"batch": [{"channel": channel("a"), "data": 1}]},
                None,
                BASIC,
            ),
            ("GET", f"/apps/{APP}/channels", None, None, BASIC),
            ("GET", f"/apps/{APP}/channel", None, {"name": ROOM}, BASIC),
            ("GET", f"/apps/{APP}/channel", None, {"name": channel("a")}, BASIC),
            ("GET", f"/apps/{APP}/members", None, {"channel": ROOM}, BASIC),
            ("POST", f"/apps/{APP}/events", {"channels": "x"}, None, BASIC),
            ("POST", f"/apps/{APP}/events", {"channels": [channel("a")], "data": 1}, None, None),
            ("GET", f"/apps/{APP}/members", None, {"channel": "/other/presence/x"}, BASIC),
            ("GET", "/apps/unknownApp000001/channels", None, None, BASIC),
            (
                "POST",
                f"/apps/{APP}/events",
                {"channels": [channel(f"{i}") for i in range(101)], "data": 1},
                None,
                BASIC,
            ),
        ]
        statuses = set()
        for method, path, body, query, auth in calls:
            code, _, answer = await self.call(method, path, body, auth=auth, query=query)
            statuses.add(code)
            self.check(method, path, code, answer)
        self.assertEqual(statuses, {200, 400, 401, 403, 404, 413})
        response = await treq.get(self.server.url + "/openapi.json", persistent=False)
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(await response.content()), json.loads(json.dumps(document())))
