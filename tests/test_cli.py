"""The ``pandapush`` command, run in-process against a temporary SQLite database (and once as a process)."""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Generator
from typing import Any

import jwt
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.server import Site

from pandapush import cli
from pandapush.auth.keysync import keysChannel
from pandapush.redis import RedisAddress, RedisSubscriber
from pandapush.storage import ids, migrations
from tests.support.ports import listenLocally, portNumber
from tests.support.waiting import eventually
from tests.test_publisher import RecordingChannelResource
from tests.test_storage import POSTGRES, postgresSchema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UTC = datetime.UTC
NOW = datetime.datetime(2030, 1, 1, tzinfo=UTC)


class CLITestCase(TestCase):
    """Runs the command with ``cli.run`` against a fresh SQLite file."""

    def setUp(self) -> None:
        self.path = os.path.join(os.path.abspath(self.mktemp()), "db.sqlite")
        self.environ = {"DATABASE": "sqlite", "DATABASE_PATH": self.path, "USER": "operator"}

    @inlineCallbacks
    def cli(self, *argv: str, status: int = 0) -> Generator[Deferred[Any], Any, str]:
        """Run ``pandapush argv...``; check the exit status; the output (stderr on failure)."""
        out, err = io.StringIO(), io.StringIO()
        code = yield cli.run(list(argv), environ=self.environ, out=out, err=err)
        self.assertEqual(code, status, f"pandapush {' '.join(argv)}: {err.getvalue()}")
        return out.getvalue() if status == 0 else err.getvalue()

    @inlineCallbacks
    def cliJSON(self, *argv: str) -> Generator[Deferred[Any], Any, Any]:
        output = yield self.cli(*argv, "--json")
        return json.loads(output)

    @inlineCallbacks
    def makeApp(self, name: str = "testapp", *admins: str) -> Generator[Deferred[Any], Any, dict[str, Any]]:
        extra = [a for admin in admins for a in ("--admin", admin)]
        app = yield self.cliJSON("app", "create", name, *extra)
        return app  # type: ignore[no-any-return]

    @inlineCallbacks
    def makeKey(self, appId: str, *extra: str) -> Generator[Deferred[Any], Any, dict[str, Any]]:
        key = yield self.cliJSON("key", "create", appId, *extra)
        return key  # type: ignore[no-any-return]


class MigrateCommandTests(CLITestCase):
    """``pandapush migrate``."""

    @inlineCallbacks
    def test_migrate(self) -> Generator[Deferred[Any], Any, None]:
        """The first run applies every version, the next applies none."""
        latest = migrations.latestVersion("sqlite")
        self.assertEqual(
            (yield self.cliJSON("migrate")), {"applied": list(range(1, latest + 1)), "version": latest}
        )
        self.assertEqual((yield self.cliJSON("migrate")), {"applied": [], "version": latest})
        self.assertIn("already current", (yield self.cli("migrate")))

    @inlineCallbacks
    def test_postgres(self) -> Generator[Deferred[Any], Any, None]:
        """On PostgreSQL other commands refuse an unmigrated schema until `pandapush migrate` ran."""
        schema, drop = postgresSchema()
        self.addCleanup(drop)
        self.environ = {
            "DATABASE": "postgres",
            "DATABASE_ADDRESS": str(POSTGRES["host"]),
            "DATABASE_PORT": str(POSTGRES["port"]),
            "DATABASE_USERNAME": "postgres",
            "DATABASE_NAME": "test",
        }
        error = yield self.cli("app", "list", "--database-schema", schema, status=1)
        self.assertIn("run `pandapush migrate`", error)
        applied = (yield self.cliJSON("--database-schema", schema, "migrate"))["applied"]
        self.assertEqual(applied, list(range(1, migrations.latestVersion("postgres") + 1)))
        app = yield self.cliJSON("app", "create", "pgapp", "--database-schema", schema)
        self.assertEqual(
            [a["id"] for a in (yield self.cliJSON("app", "list", "--database-schema", schema))], [app["id"]]
        )

    @inlineCallbacks
    def test_postgresSchemaCreated(self) -> Generator[Deferred[Any], Any, None]:
        """
        A DATABASE_SCHEMA that does not exist yet is created by `pandapush migrate` (it
        died with a psycopg2 traceback), and the server's commands then use it.
        """
        import psycopg2

        schema = "pandapush_test_new_" + secrets.token_hex(6)

        def drop() -> None:
            with psycopg2.connect(connect_timeout=5, **POSTGRES) as connection, connection.cursor() as cursor:
                cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

        self.addCleanup(drop)
        self.environ = {
            "DATABASE": "postgres",
            "DATABASE_ADDRESS": str(POSTGRES["host"]),
            "DATABASE_PORT": str(POSTGRES["port"]),
            "DATABASE_USERNAME": "postgres",
            "DATABASE_NAME": "test",
            "DATABASE_SCHEMA": schema,
        }
        error = yield self.cli("app", "list", status=1)
        self.assertIn("run `pandapush migrate`", error)
        result = yield self.cliJSON("migrate")
        self.assertEqual(result["applied"], list(range(1, migrations.latestVersion("postgres") + 1)))
        self.assertEqual((yield self.cliJSON("migrate"))["applied"], [])
        app = yield self.cliJSON("app", "create", "inNewSchema")
        with psycopg2.connect(connect_timeout=5, **POSTGRES) as connection, connection.cursor() as cursor:
            cursor.execute(f"SELECT name FROM {schema}.applications")
            self.assertEqual(cursor.fetchall(), [(app["name"],)])


class AppCommandTests(CLITestCase):
    """``pandapush app ...``."""

    @inlineCallbacks
    def test_createListShow(self) -> Generator[Deferred[Any], Any, None]:
        """Created applications are listed and shown, with admins and creator."""
        app = yield self.makeApp("testapp", "alice", "bob")
        self.assertTrue(ids.isApplicationId(app["id"]))
        self.assertEqual(
            (app["name"], app["admins"], app["created_by"]), ("testapp", ["alice", "bob"], "operator")
        )
        other = yield self.makeApp("other", "carol")
        self.assertEqual([a["id"] for a in (yield self.cliJSON("app", "list"))], [app["id"], other["id"]])
        self.assertEqual(
            [a["id"] for a in (yield self.cliJSON("app", "list", "--admin", "carol"))], [other["id"]]
        )
        shown = yield self.cliJSON("app", "show", app["id"])
        self.assertEqual((shown["name"], shown["keys"]), ("testapp", []))
        text = yield self.cli("app", "list")
        self.assertIn(app["id"], text)
        self.assertIn("admins: alice, bob", text)

    @inlineCallbacks
    def test_createdBy(self) -> Generator[Deferred[Any], Any, None]:
        """--created-by overrides $USER; --id asks for a given id."""
        app = yield self.cliJSON("app", "create", "x", "--created-by", "ci", "--id", "fRP0y2aVpYCKiW6PIFOK")
        self.assertEqual((app["id"], app["created_by"]), ("fRP0y2aVpYCKiW6PIFOK", "ci"))

    @inlineCallbacks
    def test_renameAndAdmins(self) -> Generator[Deferred[Any], Any, None]:
        """Rename, then add, remove and replace admins."""
        app = yield self.makeApp("old", "alice")
        self.assertEqual((yield self.cliJSON("app", "rename", app["id"], "new"))["name"], "new")
        changed = yield self.cliJSON("app", "admins", app["id"], "--add", "bob", "--remove", "alice")
        self.assertEqual(changed["admins"], ["bob"])
        replaced = yield self.cliJSON("app", "admins", app["id"], "--set", "x", "--set", "y")
        self.assertEqual(replaced["admins"], ["x", "y"])

    @inlineCallbacks
    def test_delete(self) -> Generator[Deferred[Any], Any, None]:
        """Deleting an application deletes its keys."""
        app = yield self.makeApp()
        key = yield self.makeKey(app["id"])
        yield self.cli("app", "delete", app["id"])
        self.assertEqual((yield self.cliJSON("app", "list")), [])
        self.assertIn("no key", (yield self.cli("key", "revoke", key["id"], status=1)))

    @inlineCallbacks
    def test_missing(self) -> Generator[Deferred[Any], Any, None]:
        """An unknown application is a clear error with status 1."""
        for argv in (("app", "show", "nope"), ("app", "delete", "nope"), ("app", "rename", "nope", "x")):
            self.assertEqual((yield self.cli(*argv, status=1)), "pandapush: error: no application nope\n")

    @inlineCallbacks
    def test_emptyName(self) -> Generator[Deferred[Any], Any, None]:
        """An empty name is refused."""
        self.assertIn("non-empty name", (yield self.cli("app", "create", "", status=1)))

    @inlineCallbacks
    def test_origins(self) -> Generator[Deferred[Any], Any, None]:
        """``app origins`` shows, replaces (normalised) and clears the list; non-origins are refused."""
        app = yield self.makeApp("web", "alice")
        self.assertEqual((yield self.cliJSON("app", "origins", app["id"])), [])
        changed = yield self.cliJSON(
            "app", "origins", app["id"], "https://B.example/", "http://localhost:8080"
        )
        self.assertEqual(changed["allowed_origins"], ["http://localhost:8080", "https://b.example"])
        self.assertEqual((yield self.cliJSON("app", "origins", app["id"])), changed["allowed_origins"])
        self.assertIn(
            "allowed origins: http://localhost:8080, https://b.example", (yield self.cli("app", "list"))
        )
        self.assertIn("not an origin", (yield self.cli("app", "origins", app["id"], "b.example", status=1)))
        self.assertIn(
            "not both", (yield self.cli("app", "origins", app["id"], "https://x.y", "--clear", status=1))
        )
        cleared = yield self.cliJSON("app", "origins", app["id"], "--clear")
        self.assertEqual(cleared["allowed_origins"], [])
        self.assertIn("no application", (yield self.cli("app", "origins", "nosuchapp0000000000x", status=1)))


class AppHistoryCommandTests(CLITestCase):
    """``pandapush app history``."""

    @inlineCallbacks
    def test_history(self) -> Generator[Deferred[Any], Any, None]:
        """Shows, sets (one limit at a time or both), sets back, and refuses limits out of range."""
        app = yield self.makeApp("web", "alice")
        self.assertEqual((yield self.cliJSON("app", "history", app["id"])), {"size": None, "ttl": None})
        changed = yield self.cliJSON("app", "history", app["id"], "--size", "500")
        self.assertEqual(changed["history"], {"size": 500, "ttl": None})
        changed = yield self.cliJSON("app", "history", app["id"], "--ttl", "60")
        self.assertEqual(changed["history"], {"size": 500, "ttl": 60.0})
        self.assertIn("messages per channel 500, kept 60 s", (yield self.cli("app", "show", app["id"])))
        self.assertIn("history off", (yield self.cli("app", "history", app["id"], "--size", "0")))
        back = yield self.cliJSON("app", "history", app["id"], "--default")
        self.assertEqual(back["history"], {"size": None, "ttl": None})
        self.assertIn(
            "from 0 to 10000", (yield self.cli("app", "history", app["id"], "--size", "-1", status=1))
        )
        self.assertIn(
            "from 1 to 86400", (yield self.cli("app", "history", app["id"], "--ttl", "0", status=1))
        )
        self.assertIn("a number", (yield self.cli("app", "history", app["id"], "--size", "lots", status=1)))
        self.assertIn(
            "not both", (yield self.cli("app", "history", app["id"], "--size", "1", "--default", status=1))
        )
        self.assertIn("no application", (yield self.cli("app", "history", "nosuchapp0000000000x", status=1)))


class KeyCommandTests(CLITestCase):
    """``pandapush key ...``."""

    @inlineCallbacks
    def test_createPrintsSecretOnce(self) -> Generator[Deferred[Any], Any, None]:
        """The secret is printed at creation and appears in no listing."""
        app = yield self.makeApp()
        text = yield self.cli("key", "create", app["id"], "--purpose", "server")
        secret = text.split("secret:")[1].split()[0]
        self.assertEqual(len(secret), 40)
        keys = yield self.cliJSON("key", "list", app["id"])
        self.assertEqual([k["purpose"] for k in keys], ["server"])
        self.assertNotIn("secret", keys[0])
        for argv in (("key", "list", app["id"]), ("app", "show", app["id"]), ("show",)):
            self.assertNotIn(secret, (yield self.cli(*argv)))
            self.assertNotIn(secret, (yield self.cli(*argv, "--json")))

    @inlineCallbacks
    def test_expires(self) -> Generator[Deferred[Any], Any, None]:
        """--expires takes a date or a duration."""
        app = yield self.makeApp()
        key = yield self.makeKey(app["id"], "--expires", "2027-01-01")
        self.assertEqual(key["expires"], "2027-01-01T00:00:00.000Z")
        key = yield self.makeKey(app["id"], "--expires", "30d")
        expires = datetime.datetime.fromisoformat(key["expires"].replace("Z", "+00:00"))
        delta = expires - datetime.datetime.now(UTC)
        self.assertTrue(datetime.timedelta(days=29, hours=23) < delta <= datetime.timedelta(days=30))
        self.assertIn(
            "not a duration or a date",
            (yield self.cli("key", "create", app["id"], "--expires", "soon", status=1)),
        )

    @inlineCallbacks
    def test_revokeAndDelete(self) -> Generator[Deferred[Any], Any, None]:
        """A revoked key is listed as revoked; a deleted one is gone."""
        app = yield self.makeApp()
        key = yield self.makeKey(app["id"])
        revoked = yield self.cliJSON("key", "revoke", key["id"])
        self.assertTrue(revoked["revoked"])
        self.assertIsNotNone(revoked["revoked_at"])
        self.assertIn("REVOKED", (yield self.cli("key", "list", app["id"])))
        yield self.cli("key", "delete", key["id"])
        self.assertEqual((yield self.cliJSON("key", "list", app["id"])), [])
        self.assertIn("no key", (yield self.cli("key", "delete", key["id"], status=1)))

    @inlineCallbacks
    def test_missingApp(self) -> Generator[Deferred[Any], Any, None]:
        """Keys for an unknown application are refused."""
        self.assertIn("no application", (yield self.cli("key", "create", "nope", status=1)))
        self.assertIn("no application", (yield self.cli("key", "list", "nope", status=1)))


class TokenCommandTests(CLITestCase):
    """``pandapush token`` and ``genToken`` sign with the key's secret from the database."""

    @inlineCallbacks
    def test_token(self) -> Generator[Deferred[Any], Any, None]:
        """Claims as asked, signed HS256 with the key's secret."""
        app = yield self.makeApp()
        key = yield self.makeKey(app["id"])
        channel = f"/{app['id']}/presence/room"
        token = (
            yield self.cli(
                "token",
                key["id"],
                "--channel",
                channel,
                "--sub",
                "--presence",
                '{"id": "user1"}',
                "--expires",
                "1h",
                "--user",
                "user1",
            )
        ).strip()
        claims = jwt.decode(token, key["secret"], algorithms=["HS256"], options={"verify_sub": False})
        self.assertEqual(
            {k: claims[k] for k in ("keyId", "channel", "pub", "sub", "presence", "user")},
            {
                "keyId": key["id"],
                "channel": channel,
                "pub": False,
                "sub": True,
                "presence": {"id": "user1"},
                "user": "user1",
            },
        )
        self.assertTrue(0 < claims["exp"] - datetime.datetime.now(UTC).timestamp() <= 3600)

    @inlineCallbacks
    def test_refusals(self) -> Generator[Deferred[Any], Any, None]:
        """Unknown, revoked and expired keys, and bad presence JSON, are refused."""
        app = yield self.makeApp()
        key = yield self.makeKey(app["id"])
        channel = f"/{app['id']}/private/x"
        self.assertIn(
            "no key", (yield self.cli("token", "PSIDxxxxxxxxxxxxxxxx", "--channel", channel, status=1))
        )
        self.assertIn(
            "not JSON",
            (yield self.cli("token", key["id"], "--channel", channel, "--presence", "{", status=1)),
        )
        self.assertIn(
            "'id'", (yield self.cli("token", key["id"], "--channel", channel, "--presence", "{}", status=1))
        )
        yield self.cli("key", "revoke", key["id"])
        self.assertIn("revoked", (yield self.cli("token", key["id"], "--channel", channel, status=1)))
        expired = yield self.makeKey(app["id"], "--expires", "2020-01-01")
        self.assertIn("expired", (yield self.cli("token", expired["id"], "--channel", channel, status=1)))

    @inlineCallbacks
    def test_genToken(self) -> Generator[Deferred[Any], Any, None]:
        """Upstream's genToken: app, key, channel (relative or full), -p -s -e."""
        app = yield self.makeApp()
        key = yield self.makeKey(app["id"])
        token = (
            yield self.cli("genToken", app["id"], key["id"], "private/foo", "-p", "-s", "-e", "P1H")
        ).strip()
        claims = jwt.decode(token, key["secret"], algorithms=["HS256"], options={"verify_sub": False})
        self.assertEqual(
            (claims["channel"], claims["pub"], claims["sub"]), (f"/{app['id']}/private/foo", True, True)
        )
        full = (yield self.cli("genToken", app["id"], key["id"], f"/{app['id']}/public/x")).strip()
        self.assertEqual(
            jwt.decode(full, key["secret"], algorithms=["HS256"], options={"verify_sub": False})["channel"],
            f"/{app['id']}/public/x",
        )
        other = yield self.makeApp("other")
        self.assertIn(
            "belongs to", (yield self.cli("genToken", other["id"], key["id"], "public/x", status=1))
        )

    @inlineCallbacks
    def test_channelsThatCannotExist(self) -> Generator[Deferred[Any], Any, None]:
        """
        A channel no server accepts (the tenancy rules of ``auth/rules.py``, the Bayeux
        grammar) is refused with status 1, naming the channel and what a channel is,
        and no token is printed: issue 19.
        """
        app = yield self.makeApp()
        key = yield self.makeKey(app["id"])
        a = app["id"]
        for channel in (
            f"/{a}/privat/a",
            f"/{a}/private",
            f"/{a}/**",
            f"/{a}/private/a/**/b",
            f"/{a}/private/a b",
            f"/{a}/private/a//b",
            f"/{a}/public/x/",
            f"/{a}/private/a.b",
            f"{a}/private/x",
            "/meta/subscribe",
        ):
            out, err = io.StringIO(), io.StringIO()
            code = yield cli.run(["token", key["id"], "--channel", channel, "--sub"], self.environ, out, err)
            self.assertEqual((code, out.getvalue()), (1, ""), channel)
            self.assertTrue(err.getvalue().startswith("pandapush: error: "), err.getvalue())
            self.assertIn(repr(channel), err.getvalue())
        error = yield self.cli("token", key["id"], "--channel", f"/{a}/privat/a", status=1)
        self.assertIn("'privat' is not a channel type (meta, presence, private or public)", error)
        error = yield self.cli("genToken", a, key["id"], "privat/a", "-s", status=1)
        self.assertIn(repr(f"/{a}/privat/a"), error)

    @inlineCallbacks
    def test_otherApplicationsChannel(self) -> Generator[Deferred[Any], Any, None]:
        """
        A channel of another application than the key's is refused (servers would
        refuse the token: the key is not found in that application); the key's own
        channels, wildcards and meta channels included, are not.
        """
        app = yield self.makeApp()
        other = yield self.makeApp("other")
        key = yield self.makeKey(app["id"])
        error = yield self.cli(
            "token", key["id"], "--channel", f"/{other['id']}/private/a", "--sub", status=1
        )
        self.assertIn(f"key {key['id']} belongs to application {app['id']}, not {other['id']}", error)
        for channel in ("private/a/**", "public/*", "presence/room", "meta/statistics", "private/a-b_c~d"):
            token = (
                yield self.cli("token", key["id"], "--channel", f"/{app['id']}/{channel}", "--sub")
            ).strip()
            claims = jwt.decode(token, key["secret"], algorithms=["HS256"], options={"verify_sub": False})
            self.assertEqual(claims["channel"], f"/{app['id']}/{channel}")


class WebhookCommandTests(CLITestCase):
    """``pandapush webhook``."""

    @inlineCallbacks
    def test_createListDelete(self) -> Generator[Deferred[Any], Any, None]:
        """The operator's endpoints may reach private addresses; bad URLs, events and keys are refused."""
        app = yield self.makeApp()
        key = yield self.makeKey(app["id"])
        made = yield self.cliJSON(
            "webhook",
            "create",
            app["id"],
            "--url",
            "http://10.0.0.5:8080/hook",
            "--events",
            "member_added,channel_occupied",
            "--key",
            key["id"],
        )
        self.assertEqual(
            {k: made[k] for k in ("url", "events", "key_id", "allow_private")},
            {
                "url": "http://10.0.0.5:8080/hook",
                "events": ["channel_occupied", "member_added"],
                "key_id": key["id"],
                "allow_private": True,
            },
        )
        self.assertEqual((yield self.cliJSON("webhook", "list", app["id"])), [made])
        self.assertIn(made["id"], (yield self.cli("webhook", "list", app["id"])))
        for args, words in [
            (
                ("--url", "ftp://x/", "--events", "channel_occupied", "--key", key["id"]),
                "http:// or https://",
            ),
            (("--url", "http://x/", "--events", "often", "--key", key["id"]), "unknown events often"),
            (("--url", "http://x/", "--events", "channel_occupied", "--key", "PSIDnope"), "no key PSIDnope"),
        ]:
            self.assertIn(words, (yield self.cli("webhook", "create", app["id"], *args, status=1)))
        yield self.cli("webhook", "delete", made["id"])
        self.assertEqual((yield self.cliJSON("webhook", "list", app["id"])), [])
        self.assertIn("no webhook", (yield self.cli("webhook", "delete", made["id"], status=1)))


class UpstreamAliasTests(CLITestCase):
    """``add``, ``addKey`` and ``show`` as upstream's server/cli.js had them."""

    @inlineCallbacks
    def test_addAddKeyShow(self) -> Generator[Deferred[Any], Any, None]:
        """add <name> <user>; addKey <app> <user> <purpose> -e P1Y; show lists both."""
        app = yield self.cliJSON("add", "testapp", "alice")
        self.assertEqual((app["admins"], app["created_by"]), (["alice"], "alice"))
        key = yield self.cliJSON("addKey", app["id"], "alice", "server", "-e", "P1Y")
        self.assertEqual((key["purpose"], key["created_by"]), ("server", "alice"))
        self.assertIn("secret", key)
        shown = yield self.cliJSON("show")
        self.assertEqual([(a["id"], [k["id"] for k in a["keys"]]) for a in shown], [(app["id"], [key["id"]])])
        self.assertIn("no application", (yield self.cli("addKey", "nope", "alice", "x", status=1)))


class PublishCommandTests(CLITestCase):
    """``pandapush publish`` over real HTTP, to a stand-in for the server."""

    def serve(self, resource: RecordingChannelResource) -> str:
        port = listenLocally(Site(resource))
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{portNumber(port)}"

    @inlineCallbacks
    def test_publishWithKey(self) -> Generator[Deferred[Any], Any, None]:
        """The message goes as JSON with Basic auth to /channel/<channel>."""
        resource = RecordingChannelResource()
        url = self.serve(resource)
        output = yield self.cli(
            "publish",
            "/app/public/messages",
            '{"foo": "bar"}',
            "--url",
            url,
            "--key",
            "PSIDk",
            "--secret",
            "s",
        )
        self.assertIn("published", output)
        [request] = resource.requests
        self.assertEqual(
            (request["path"], json.loads(request["body"])), (b"/channel/app/public/messages", {"foo": "bar"})
        )

    @inlineCallbacks
    def test_publishSecretFromDatabase(self) -> Generator[Deferred[Any], Any, None]:
        """With --key alone, the secret is read from the database."""
        app = yield self.makeApp()
        key = yield self.makeKey(app["id"])
        resource = RecordingChannelResource()
        self.environ["PANDAPUSH_URL"] = self.serve(resource)
        yield self.cli("publish", f"/{app['id']}/public/x", "[1]", "--key", key["id"])
        import base64

        auth = base64.b64decode(resource.requests[0]["authorization"].split()[1]).decode()
        self.assertEqual(auth, f"{key['id']}:{key['secret']}")

    @inlineCallbacks
    def test_publishRefused(self) -> Generator[Deferred[Any], Any, None]:
        """A refusal prints the server's message and exits 1."""
        body = json.dumps({"code": 403, "params": [], "message": "Invalid secret"}).encode()
        url = self.serve(RecordingChannelResource(403, body))
        error = yield self.cli(
            "publish", "/a/public/x", "{}", "--url", url, "--key", "k", "--secret", "s", status=1
        )
        self.assertIn("HTTP 403: Invalid secret", error)

    @inlineCallbacks
    def test_badInput(self) -> Generator[Deferred[Any], Any, None]:
        """A message that is not JSON, or no credentials, is refused before any request."""
        self.assertIn(
            "not JSON",
            (yield self.cli("publish", "/a/public/x", "{", "--key", "k", "--secret", "s", status=1)),
        )
        self.assertIn("--key", (yield self.cli("publish", "/a/public/x", "{}", status=1)))

    @inlineCallbacks
    def test_bodiesTheServerAccepts(self) -> Generator[Deferred[Any], Any, None]:
        """
        The message is read as the server's REST endpoint reads a body: upstream's
        README sends ``{text:"hi"}`` (bare keys), and a form ``a=1&a=2&b=`` arrives as
        an object (issue 19). What goes over the wire is JSON.
        """
        resource = RecordingChannelResource()
        url = self.serve(resource)
        for message, expected in (
            ('{text:"hi"}', {"text": "hi"}),
            ('{a:1, b:{c:"x:y, d:z"}}', {"a": 1, "b": {"c": "x:y, d:z"}}),
            ("a=1&a=2&b=", {"a": ["1", "2"], "b": ""}),
            ('{"foo": "bar"}', {"foo": "bar"}),
            ('"just a string"', "just a string"),
        ):
            yield self.cli("publish", "/app/public/x", message, "--url", url, "--key", "k", "--secret", "s")
            self.assertEqual(json.loads(resource.requests[-1]["body"]), expected, message)
            self.assertEqual(resource.requests[-1]["contentType"], b"application/json")

    @inlineCallbacks
    def test_bodiesTheServerRefuses(self) -> Generator[Deferred[Any], Any, None]:
        """What the server would answer 400 is refused here, with its reason and no request."""
        resource = RecordingChannelResource()
        url = self.serve(resource)
        for message in ("", "  ", "hello", "{text:hi}", "[1,", "NaN"):
            error = yield self.cli(
                "publish", "/app/public/x", message, "--url", url, "--key", "k", "--secret", "s", status=1
            )
            self.assertIn("pandapush: error: the message", error)
        self.assertEqual(resource.requests, [])


class ParserTests(TestCase):
    """Arguments, help and durations."""

    def subcommands(self) -> list[list[str]]:
        parser = cli.buildParser()
        found: list[list[str]] = []

        def walk(p: Any, prefix: list[str]) -> None:
            for action in p._actions:
                if action.__class__.__name__ == "_SubParsersAction":
                    for name, child in action.choices.items():
                        found.append([*prefix, name])
                        walk(child, [*prefix, name])

        walk(parser, [])
        return found

    def test_helpEverywhere(self) -> None:
        """--help works on the command and every subcommand."""
        commands = self.subcommands()
        for wanted in (
            ["migrate"],
            ["app", "create"],
            ["key", "revoke"],
            ["token"],
            ["publish"],
            ["genToken"],
        ):
            self.assertIn(wanted, commands)
        for argv in [[], *commands]:
            if argv == ["serve"]:
                continue  # its --help is the server's: test_serveHelp
            out = io.StringIO()
            with contextlib.redirect_stdout(out), self.assertRaises(SystemExit) as exited:
                cli.buildParser().parse_args([*argv, "--help"])
            self.assertEqual(exited.exception.code, 0)
            self.assertIn("usage: pandapush", out.getvalue())

    def test_serveHelp(self) -> None:
        """`pandapush serve --help` lists the server's options; `pandapush --help` points there."""
        out = io.StringIO()
        self.patch(sys, "argv", list(sys.argv))
        with contextlib.redirect_stdout(out), self.assertRaises(SystemExit) as exited:
            cli.main(["serve", "--help"])
        self.assertEqual(exited.exception.code, 0)
        self.assertIn("--listen=", out.getvalue())
        self.assertIn("--listen", cli.buildParser().format_help())

    def test_globalOptionsEitherSide(self) -> None:
        """Database options and --json work before or after the subcommand."""
        before = cli.buildParser().parse_args(["--database-path", "a.db", "--json", "app", "list"])
        after = cli.buildParser().parse_args(["app", "list", "--database-path", "a.db", "--json"])
        for args in (before, after):
            self.assertEqual((args.database_path, args.json), ("a.db", True))

    def test_durations(self) -> None:
        """Short forms and upstream's ISO 8601 forms."""
        hour = datetime.timedelta(hours=1)
        for text, expected in (
            ("1h", hour),
            ("PT1H", hour),
            ("P1H", hour),
            ("90s", datetime.timedelta(seconds=90)),
            ("15m", datetime.timedelta(minutes=15)),
            ("30d", datetime.timedelta(days=30)),
            ("2w", datetime.timedelta(days=14)),
            ("1y", datetime.timedelta(days=365)),
            ("P1Y", datetime.timedelta(days=365)),
            ("P1M", datetime.timedelta(days=30)),
            ("P1DT2H", datetime.timedelta(days=1, hours=2)),
        ):
            self.assertEqual(cli.parseDuration(text), expected, text)
        for bad in ("", "P", "PT", "1", "h", "0s", "-1h", "P1X"):
            self.assertRaises(ValueError, cli.parseDuration, bad)

    def test_expiry(self) -> None:
        """Expiry: never, a duration from now, a date (UTC unless it says otherwise)."""
        self.assertIsNone(cli.parseExpiry(None, NOW))
        self.assertIsNone(cli.parseExpiry("never", NOW))
        self.assertEqual(cli.parseExpiry("1d", NOW), NOW + datetime.timedelta(days=1))
        self.assertEqual(cli.parseExpiry("2031-02-03", NOW), datetime.datetime(2031, 2, 3, tzinfo=UTC))
        self.assertEqual(
            cli.parseExpiry("2031-02-03T04:00:00-02:00", NOW), datetime.datetime(2031, 2, 3, 6, tzinfo=UTC)
        )
        self.assertRaises(ValueError, cli.parseExpiry, "tomorrow", NOW)


class ProcessTests(TestCase):
    """The command as a real process, through ``python -m pandapush.cli`` and ``main()``."""

    def run_cli(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        environ = {**os.environ, "PYTHONPATH": ROOT, "DATABASE": "sqlite", "DATABASE_PATH": self.path}
        return subprocess.run(
            [sys.executable, "-m", "pandapush.cli", *argv],
            env=environ,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def test_smoke(self) -> None:
        """Create an application and a key, list them, and fail cleanly on an unknown id."""
        self.path = os.path.join(os.path.abspath(self.mktemp()), "db.sqlite")
        app = json.loads(self.run_cli("app", "create", "smoke", "--json").stdout)
        key = json.loads(self.run_cli("key", "create", app["id"], "--json").stdout)
        listed = json.loads(self.run_cli("--json", "key", "list", app["id"]).stdout)
        self.assertEqual([k["id"] for k in listed], [key["id"]])
        failed = self.run_cli("app", "show", "nope", check=False)
        self.assertEqual((failed.returncode, failed.stderr), (1, "pandapush: error: no application nope\n"))
        usage = self.run_cli("app", check=False)
        self.assertEqual(usage.returncode, 2)

    def test_serve(self) -> None:
        """`pandapush serve --listen ...` runs the server in the foreground until stopped."""
        import signal
        import socket
        import time
        import urllib.request

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        environ = {**os.environ, "PYTHONPATH": ROOT, "AUTH_METHOD": "none"}
        command = [sys.executable, "-m", "pandapush.cli", "--database", "memory", "serve"]
        server = subprocess.Popen(
            [*command, "--listen", f"tcp:{port}:interface=127.0.0.1"],
            env=environ,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health_check.json", timeout=2) as r:
                        self.assertIn("version", json.loads(r.read()))
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        finally:
            server.send_signal(signal.SIGTERM)
            output, _ = server.communicate(timeout=30)
        self.assertIn(server.returncode, (0, -signal.SIGTERM), output)
        self.assertFalse(os.path.exists(os.path.join(workdir, "twistd.pid")))


class AgainstServerTests(CLITestCase):
    """The command beside a real server (``twistd pandapush``) on the same SQLite file."""

    async def test_tokenOpensChannelAndPublishArrives(self) -> None:
        """
        A token the command mints opens the channel on the server, and upstream's
        ``{text:"hi"}`` published by the command reaches the subscriber as an object.
        """
        from tests.support.bayeux import WSClient
        from tests.support.process import PandapushProcess

        app = await self.makeApp()
        key = await self.makeKey(app["id"])
        server = await PandapushProcess.started(self, env={"DATABASE": "sqlite", "DATABASE_PATH": self.path})
        channel = f"/{app['id']}/private/room"
        token = (await self.cli("token", key["id"], "--channel", f"/{app['id']}/private/**", "--sub")).strip()
        client = await WSClient(server.url).start()
        self.addCleanup(client.kill)
        reply = await client.call(
            {"channel": "/meta/subscribe", "subscription": channel, "ext": {"auth": {"token": token}}}
        )
        self.assertTrue(reply["successful"], reply)
        output = await self.cli("publish", channel, '{text:"hi"}', "--url", server.url, "--key", key["id"])
        self.assertIn("published", output)
        self.assertTrue(await eventually(lambda: client.messages, timeout=5), server.log())
        self.assertEqual([(m["channel"], m["data"]) for m in client.messages], [(channel, {"text": "hi"})])


class KeyBroadcastTests(CLITestCase):
    """
    With REDIS_HOSTS the command PUBLISHes its key changes on ``<namespace>:keys`` as the
    admin API's KeySync does, so running servers act at once (issue 5). Needs the Redis
    on 127.0.0.1:6379; the end-to-end proof against real servers is in
    ``tests/test_multinode.py`` (``CommandLineKeyChangeTests``).
    """

    async def setUp(self) -> None:  # type: ignore[override]
        from tests.support.redis import redisReachable

        super().setUp()
        if not redisReachable():
            if os.environ.get("CI"):
                self.fail("Redis is not running on 127.0.0.1:6379 and CI is set")
            raise SkipTest("Redis is not running on 127.0.0.1:6379")
        self.namespace = f"pp-test-{uuid.uuid4().hex}"
        self.environ.update({"REDIS_HOSTS": "127.0.0.1:6379", "REDIS_NAMESPACE": self.namespace})
        self.heard: list[dict[str, Any]] = []
        self.subscriber = RedisSubscriber(
            reactor, RedisAddress("127.0.0.1", 6379), lambda _, m: self.heard.append(json.loads(m))
        )
        self.addCleanup(self.subscriber.close)
        await self.subscriber.subscribe(keysChannel(self.namespace))

    async def run_(self, *argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = await cli.run(list(argv), environ=environ or self.environ, out=out, err=err)
        return code, out.getvalue(), err.getvalue()

    async def heardSoon(self, count: int) -> list[dict[str, Any]]:
        self.assertTrue(await eventually(lambda: len(self.heard) >= count, timeout=2), self.heard)
        return self.heard

    async def test_keyChangesPublished(self) -> None:
        """key create, revoke and delete name the key; app delete names the application."""
        app = await self.makeApp()
        key = await self.makeKey(app["id"])
        await self.cli("key", "revoke", key["id"])
        await self.cli("key", "delete", key["id"])
        await self.cli("app", "delete", app["id"])
        heard = await self.heardSoon(4)
        self.assertEqual(
            [(m["key"], m["app"]) for m in heard],
            [(key["id"], None), (key["id"], None), (key["id"], None), (None, app["id"])],
        )
        senders = {m["node"] for m in heard}
        self.assertEqual(len(senders), 4, "each run is a sender of its own, never a node's id")
        self.assertTrue(all(s.startswith("cli-") for s in senders), senders)

    async def test_originsPublished(self) -> None:
        """``app origins`` tells running servers to forget the application (its cached origin list)."""
        app = await self.makeApp()
        await self.cli("app", "origins", app["id"], "https://a.example")
        heard = await self.heardSoon(1)
        self.assertEqual([(m["key"], m["app"]) for m in heard], [(None, app["id"])])

    async def test_keySyncAppliesIt(self) -> None:
        """A running node's KeySync forgets the key the command revoked (the message is its own format)."""
        from pandapush.auth.keycache import KeyCache
        from pandapush.auth.keysync import KeySync
        from tests.test_auth_keysync import _key, _Storage

        app = await self.makeApp()
        key = await self.makeKey(app["id"])
        storage = _Storage()
        storage.keys[key["id"]] = _key(key["id"], app["id"])
        cache = KeyCache(storage, reactor)
        sync = KeySync(reactor, cache, "127.0.0.1:6379", self.namespace)
        sync.startService()
        self.addCleanup(sync.stopService)
        await sync.subscribed
        await cache.get(key["id"])
        self.assertTrue(cache.peek(key["id"])[0])
        code, _, err = await self.run_("key", "revoke", key["id"])
        self.assertEqual((code, err), (0, ""), "two listeners heard it: no note")
        self.assertTrue(await eventually(lambda: not cache.peek(key["id"])[0], timeout=1))
        self.assertEqual(sync.received, 1)

    async def test_options(self) -> None:
        """--redis-hosts and --redis-namespace, before or after the subcommand, win over the environment."""
        app = await self.makeApp()
        key = await self.makeKey(app["id"])
        await self.heardSoon(1)
        elsewhere = {**self.environ, "REDIS_HOSTS": "", "REDIS_NAMESPACE": "not-this-one"}
        options = ["--redis-hosts", "127.0.0.1:6379", "--redis-namespace", self.namespace]
        code, _, _ = await self.run_(*options, "key", "revoke", key["id"], environ=elsewhere)
        self.assertEqual(code, 0)
        code, _, _ = await self.run_("key", "delete", key["id"], *options, environ=elsewhere)
        self.assertEqual(code, 0)
        heard = await self.heardSoon(3)
        self.assertEqual([m["key"] for m in heard], [key["id"]] * 3)

    async def test_nobodyListening(self) -> None:
        """A namespace no server uses: the change is published to nobody, and the command says so."""
        app = await self.makeApp()
        key = await self.makeKey(app["id"])
        environ = {**self.environ, "REDIS_NAMESPACE": self.namespace + "-other"}
        code, out, err = await self.run_("key", "revoke", key["id"], environ=environ)
        self.assertEqual(code, 0, err)
        self.assertIn("revoked key", out)
        self.assertIn("no running server heard it", err)

    async def test_redisUnreachable(self) -> None:
        """Redis down: the key is revoked all the same, a warning names the delay, the status is 0."""
        from tests.support.ports import freePort

        app = await self.makeApp()
        key = await self.makeKey(app["id"])
        environ = {**self.environ, "REDIS_HOSTS": f"127.0.0.1:{freePort()}"}
        started = reactor.seconds()
        code, out, err = await self.run_("key", "revoke", key["id"], environ=environ)
        self.assertEqual(code, 0, err)
        self.assertLess(reactor.seconds() - started, 5, "bounded by the command timeout")
        self.assertIn(f"revoked key {key['id']}", out)
        self.assertIn("pandapush: warning: could not tell running servers", err)
        self.assertIn("within their key cache TTL (60 s)", err)
        listed = await self.cliJSON("key", "list", app["id"])
        self.assertTrue(listed[0]["revoked"])

    async def test_withoutRedis(self) -> None:
        """No REDIS_HOSTS: nothing is published; a revocation says how long servers may accept the key."""
        app = await self.makeApp()
        key = await self.makeKey(app["id"])
        await self.heardSoon(1)
        environ = {k: v for k, v in self.environ.items() if not k.startswith("REDIS_")}
        code, _, err = await self.run_("key", "revoke", key["id"], environ=environ)
        self.assertEqual(code, 0, err)
        self.assertIn("note: running servers notice within their key cache TTL", err)
        code, _, err = await self.run_("key", "create", app["id"], environ=environ)
        self.assertEqual((code, err), (0, ""), "a new key needs no note")
        await eventually(lambda: False, timeout=0.3)
        self.assertEqual(len(self.heard), 1)

    async def test_badRedisHosts(self) -> None:
        """A malformed REDIS_HOSTS is refused before the key is touched."""
        app = await self.makeApp()
        key = await self.makeKey(app["id"])
        environ = {**self.environ, "REDIS_HOSTS": "127.0.0.1:notaport"}
        code, _, err = await self.run_("key", "revoke", key["id"], environ=environ)
        self.assertEqual(code, 1)
        self.assertIn("REDIS_HOSTS", err)
        listed = await self.cliJSON("key", "list", app["id"])
        self.assertFalse(listed[0]["revoked"])
        # Commands that change no key do not care.
        code, _, err = await self.run_("key", "list", app["id"], environ=environ)
        self.assertEqual(code, 0, err)
