"""
The generated admin password (no ADMIN_PASSWORD configured): made by the first node on a
database, kept there as a hash so every node on it agrees, shown once by that node.
It used to live in ``localdata/admin-password`` beside wherever a node started, so two
nodes on one PostgreSQL made two passwords, and every start printed it again.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import stat
from pathlib import Path
from typing import Any

import treq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pandapush.auth.admin import GeneratedAdminPassword, hashPassword, passwordMatches
from pandapush.auth.config import TenancyConfig
from pandapush.storage.memory import MemoryStorage
from pandapush.storage.settings import ADMIN_PASSWORD_SETTING
from pandapush.web.adminauth import AdminAuthority, adminLoginBanner, adminLoginInfo, makeAdminAuthority
from tests.support.process import PandapushProcess
from tests.test_admin_api import AdminHarness, basic
from tests.test_cli import CLITestCase
from tests.test_startup import _postgres
from tests.test_storage import postgresSchema

PASSWORD_LINE = re.compile(r"user: admin {2}password: (\S+)")


class GeneratedPasswordTests(SynchronousTestCase):
    def authority(
        self, storage: Any, dataDir: str | None = None, clock: Clock | None = None
    ) -> AdminAuthority:
        config = TenancyConfig(dataDir=dataDir or os.path.join(self.mktemp(), "localdata"))
        authority = makeAdminAuthority(config, clock=clock or Clock(), storage=storage)
        self.successResultOf(defer.Deferred.fromCoroutine(authority.prepare()))
        return authority

    def status(self, authority: AdminAuthority, user: str, password: str) -> int:
        h = AdminHarness(authority=authority)
        d = h.treq.get("http://localhost/admin/api/info", headers=basic(user, password))
        h.treq.flush()
        return int(self.successResultOf(d).code)

    def test_sharedByNodesShownOnce(self) -> None:
        """
        The first node on a storage makes the password and shows it; the storage keeps a
        hash of it, never the text; a second node (another data directory) accepts the
        same password and does not show it; no file is written.
        """
        storage = MemoryStorage()
        first = self.authority(storage)
        info = adminLoginInfo(first, "http://localhost:3000/")
        assert info is not None
        password = info["password"]
        self.assertIsInstance(password, str)
        self.assertGreaterEqual(len(password), 24)
        banner = adminLoginBanner(first, "http://localhost:3000")
        assert banner is not None
        self.assertIn(f"user: admin  password: {password}", banner)
        stored = self.successResultOf(storage.getSetting(ADMIN_PASSWORD_SETTING))
        assert stored is not None
        self.assertNotIn(password, stored)
        self.assertTrue(passwordMatches(password, stored))

        secondDir = os.path.join(self.mktemp(), "localdata")
        second = self.authority(storage, secondDir)
        again = adminLoginInfo(second, "http://x")
        assert again is not None
        self.assertIsNone(again["password"])
        secondBanner = adminLoginBanner(second, "http://x")
        assert secondBanner is not None
        self.assertNotIn(password, secondBanner)
        self.assertIn("shown at the first start", secondBanner)
        for node in (first, second):
            self.assertEqual(self.status(node, "admin", password), 200)
            self.assertEqual(self.status(node, "admin", password + "x"), 401)
            self.assertEqual(self.status(node, "root", password), 401)
        self.assertFalse(os.path.exists(secondDir))

    def test_earlierFileCarriesOn(self) -> None:
        """An admin-password file of an earlier version becomes the database's password, not shown."""
        dataDir = self.mktemp()
        os.makedirs(dataDir)
        Path(dataDir, "admin-password").write_text("the-old-password\n")
        storage = MemoryStorage()
        authority = self.authority(storage, dataDir)
        info = adminLoginInfo(authority, "http://x")
        assert info is not None
        self.assertIsNone(info["password"])
        self.assertEqual(self.status(authority, "admin", "the-old-password"), 200)
        other = self.authority(storage)
        self.assertEqual(self.status(other, "admin", "the-old-password"), 200)

    def test_newPasswordReachesRunningNodes(self) -> None:
        """
        A password made anew in the database (`pandapush admin-password`) is taken by a
        running node at a failed login, at most every refreshInterval seconds.
        """
        storage = MemoryStorage()
        clock = Clock()
        authority = self.authority(storage, clock=clock)
        self.successResultOf(storage.setSetting(ADMIN_PASSWORD_SETTING, hashPassword("brand-new")))
        self.assertEqual(self.status(authority, "admin", "brand-new"), 401, "read again too soon")
        clock.advance(GeneratedAdminPassword.refreshInterval)
        self.assertEqual(self.status(authority, "admin", "brand-new"), 200)

    def test_storageWithoutSettings(self) -> None:
        """A storage without settings (a plugin's) keeps the earlier way: a 0600 file, shown when made."""
        dataDir = os.path.join(self.mktemp(), "localdata")
        authority = self.authority(None, dataDir)
        info = adminLoginInfo(authority, "http://x")
        assert info is not None
        path = os.path.join(dataDir, "admin-password")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(Path(path).read_text().strip(), info["password"])
        self.assertEqual(info["where"], path)
        self.assertEqual(self.status(authority, "admin", info["password"]), 200)
        again = adminLoginInfo(self.authority(None, dataDir), "http://x")
        assert again is not None
        self.assertIsNone(again["password"])


class SharedPasswordProcessTests(TestCase):
    """Two real nodes on one PostgreSQL, started from two directories, no admin password configured."""

    async def test_twoNodesOnePassword(self) -> None:
        """
        The first node shows a password once; the second node, and the first once
        restarted, show none; both accept the one password.
        """
        schema, drop = postgresSchema()
        self.addCleanup(drop)
        env = {**_postgres(schema), "DATABASE_MIGRATE": "yes", "AUTH_METHOD": "basic"}
        first = await PandapushProcess.started(self, env=env)
        found = PASSWORD_LINE.findall(first.log())
        self.assertEqual(len(found), 1, first.log())
        password = found[0]
        second = await PandapushProcess.started(self, env=env)
        self.assertNotEqual(first.directory(), second.directory())
        self.assertEqual(PASSWORD_LINE.findall(second.log()), [], second.log())
        self.assertNotIn(password, second.log())
        await first.restart()
        self.assertEqual(PASSWORD_LINE.findall(first.log()), [password], first.log())
        for node in (first, second):
            response = await treq.get(
                node.url + "/admin/api/info", auth=("admin", password), persistent=False, timeout=5
            )
            await response.content()
            self.assertEqual(response.code, 200, node.log())
            response = await treq.get(
                node.url + "/admin/api/info", auth=("admin", "not-it"), persistent=False, timeout=5
            )
            await response.content()
            self.assertEqual(response.code, 401)
        for node in (first, second):
            self.assertFalse((node.directory() / "localdata" / "admin-password").exists())


class AdminPasswordCommandTests(CLITestCase):
    async def test_newPassword(self) -> None:
        """`pandapush admin-password` stores the hash of a new password and prints the password once."""
        result = await self.cliJSON("admin-password")
        with contextlib.closing(sqlite3.connect(self.path)) as database:
            (stored,) = database.execute(
                "SELECT value FROM settings WHERE name = ?", (ADMIN_PASSWORD_SETTING,)
            )
        self.assertNotIn(result["password"], stored[0])
        self.assertTrue(passwordMatches(result["password"], stored[0]))
        other = await self.cliJSON("admin-password")
        self.assertNotEqual(other["password"], result["password"])
