"""
The systemd unit, ``deploy/systemd/pandapush.service``, and its environment file.

systemd is not PID 1 here (nor in CI), so the unit is never started by systemd.
What is tested instead: ``systemd-analyze verify`` accepts it and ``systemd-analyze
security --offline`` rates its sandbox; its settings are the ones the deployment
docs promise; and its ``ExecStart=`` line, expanded with its environment as systemd
would, runs from a venv of Debian's Python as an unprivileged user with the unit's
working directory, file limit and file-system sandbox (emulated in a private mount
namespace: ``tests/support/unitexec.py`` says what is and is not) and serves a
publish to a subscriber, writing only in its data directory.
"""

from __future__ import annotations

import os
import pwd
import re
import resource
import shutil
import signal
import tempfile
from pathlib import Path

from twisted.python import usage
from twisted.trial.unittest import TestCase

from tests.support.container import requireRoot, requireTools, run
from tests.support.deploy import (
    createAppAndKey,
    environmentNamesRead,
    generatedAdminCredentials,
    publishReachesSubscriber,
    request,
    serverOptions,
)
from tests.support.ports import freePort
from tests.support.systemd import (
    ENV_EXAMPLE_PATH,
    UNIT_PATH,
    UnitProcess,
    expandCommand,
    parseEnvironmentFile,
    parseUnit,
    systemVenv,
    unitEnvironment,
    value,
    values,
)

#: Variables the deployment files set that pandapush itself does not read, and why.
NOT_PANDAPUSH = {
    "PYTHONUNBUFFERED": "Python's: log lines reach the journal at once",
    "PYTHONDONTWRITEBYTECODE": "Python's: the install is read-only to the service",
    "PANDAPUSH_ARGS": "the unit's own (and pandapush.tac's): the server's options",
}

#: A test user that exists on any Debian machine (the unit's User=pandapush is made
#: by the install steps, which a test should not do to the machine).
TEST_USER, TEST_GROUP = "nobody", "nogroup"


def _canRaiseLimits() -> bool:
    """Whether this process has CAP_SYS_RESOURCE (capability 24), as systemd would."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << 24))
    return False


class UnitFileTests(TestCase):
    def setUp(self) -> None:
        self.unit = parseUnit(UNIT_PATH.read_text())

    def service(self, key: str) -> str | None:
        return value(self.unit, "Service", key)

    def test_supervision(self) -> None:
        """
        systemd supervises the process itself (no daemonising, no pid file), knows when
        it serves, restarts it when it fails, gives it time to drain on stop, and many file descriptors.
        """
        # The server notifies READY=1 once it listens (tests/test_startup.py NotifyTests).
        self.assertEqual((self.service("Type"), self.service("NotifyAccess")), ("notify", "main"))
        self.assertEqual(self.service("Restart"), "on-failure")
        self.assertIsNone(self.service("PIDFile"))
        command = expandCommand(self.service("ExecStart") or "", unitEnvironment(self.unit, {}))
        self.assertEqual(command[:4], ["/opt/pandapush/bin/twistd", "--nodaemon", "--pidfile=", "pandapush"])
        limit = int((self.service("LimitNOFILE") or "0").split(":")[0])
        self.assertGreaterEqual(limit, 65536)
        # The drain (--shutdown-grace, 5 s by default) fits in the stop timeout.
        stopTimeout = int((self.service("TimeoutStopSec") or "90").rstrip("s"))
        self.assertGreater(stopTimeout, serverOptions(command[4:])["shutdown-grace"] + 10)
        self.assertEqual(value(self.unit, "Install", "WantedBy"), "multi-user.target")

    def test_hardening(self) -> None:
        """A user of its own, no new privileges, a read-only system but its data directory."""
        self.assertNotIn(self.service("User"), (None, "root", "0"))
        self.assertEqual(self.service("NoNewPrivileges"), "yes")
        self.assertEqual(self.service("ProtectSystem"), "strict")
        self.assertEqual(self.service("ProtectHome"), "yes")
        self.assertEqual(self.service("PrivateTmp"), "yes")
        self.assertEqual(self.service("CapabilityBoundingSet"), "")
        env = unitEnvironment(self.unit, {})
        dataDir = env["PANDAPUSH_DATA_DIR"]
        writable = " ".join(values(self.unit, "Service", "ReadWritePaths")).split()
        self.assertIn(dataDir, writable)
        self.assertEqual(os.path.dirname(env["DATABASE_PATH"]), dataDir)
        self.assertEqual(self.service("WorkingDirectory"), dataDir)
        self.assertEqual("/var/lib/" + (self.service("StateDirectory") or ""), dataDir)

    def test_environment(self) -> None:
        """
        Its settings come from an EnvironmentFile, which may be missing; every variable
        the unit and the example file name is one pandapush reads (or is listed in
        NOT_PANDAPUSH), and the server options parse.
        """
        files = values(self.unit, "Service", "EnvironmentFile")
        self.assertEqual(files, ["-/etc/pandapush/pandapush.env"])
        example = ENV_EXAMPLE_PATH.read_text()
        # The example's commented-out settings too: each would be read if uncommented.
        uncommented = "\n".join(re.sub(r"^#(?=[A-Z_]+=)", "", line) for line in example.splitlines())
        settings = {**unitEnvironment(self.unit, {}), **parseEnvironmentFile(uncommented)}
        known = environmentNamesRead()
        unknown = sorted(n for n in settings if n not in known and n not in NOT_PANDAPUSH)
        self.assertEqual(unknown, [], "set in the unit or its example file, read by nobody")
        for name in ("AUTH_METHOD", "ADMIN_USERNAME", "DATABASE", "REDIS_HOSTS", "PANDAPUSH_ARGS"):
            self.assertIn(name, settings)
        for args in (unitEnvironment(self.unit, {})["PANDAPUSH_ARGS"], settings["PANDAPUSH_ARGS"]):
            try:
                serverOptions(args.split())
            except usage.UsageError as e:
                self.fail(f"PANDAPUSH_ARGS={args!r} refused: {e}")

    async def test_systemdAnalyze(self) -> None:
        """``systemd-analyze verify`` finds nothing to say; ``security --offline`` rates it OK."""
        tools = requireTools("systemd-analyze")
        venv = await systemVenv()
        directory = Path(tempfile.mkdtemp(prefix="pandapush-unit-"))
        self.addCleanup(shutil.rmtree, directory, True)
        # verify checks that ExecStart's program exists: point it at a real install.
        unit = directory / "pandapush.service"
        unit.write_text(UNIT_PATH.read_text().replace("/opt/pandapush", str(venv)))
        code, output = await run(tools["systemd-analyze"], "verify", str(unit), timeout=120)
        self.assertEqual((code, output.strip()), (0, ""))
        code, output = await run(
            tools["systemd-analyze"], "security", "--offline=yes", str(unit), timeout=120
        )
        self.assertEqual(code, 0, output)
        found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
        self.assertIsNotNone(found, output)
        assert found is not None
        # 10 is an unprotected service; systemd calls below 2 "OK" ("SAFE" is mostly
        # what needs no network at all).
        self.assertLess(float(found.group(1)), 2.0, output)


class UnitRunTests(TestCase):
    timeout = 900  # the first run makes the venv (pip over the network)

    async def test_execStartServesAsTheUnit(self) -> None:
        """
        ``ExecStart=`` with the unit's environment and the shipped environment file,
        run as its user in its sandbox: it serves a REST publish to a websocket
        subscriber, as that user, with no pid file, writing only its data directory;
        SIGTERM stops it the way systemd counts as clean.
        """
        requireRoot()
        requireTools("unshare", "mount")
        venv = await systemVenv()
        account = pwd.getpwnam(TEST_USER)
        # Stands in for /var/lib/pandapush (StateDirectory=): outside /tmp, which the
        # unit's PrivateTmp= replaces.
        dataDir = Path(tempfile.mkdtemp(prefix="pandapush-state-", dir="/var/lib"))
        self.addCleanup(shutil.rmtree, dataDir, True)
        os.chown(dataDir, account.pw_uid, account.pw_gid)
        dataDir.chmod(0o750)
        port = freePort()

        # What differs from an installed unit, and nothing else; each must match.
        replacements = {
            "/opt/pandapush": str(venv),
            "/var/lib/pandapush": str(dataDir),
            "StateDirectory=pandapush": f"StateDirectory={dataDir.name}",
            "tcp:3000:": f"tcp:{port}:",
            "PORT=3000": f"PORT={port}",
            "User=pandapush": f"User={TEST_USER}",
            "Group=pandapush": f"Group={TEST_GROUP}",
        }
        text = UNIT_PATH.read_text()
        for old, new in replacements.items():
            self.assertIn(old, text, "the unit changed: update this test's replacements")
            text = text.replace(old, new)
        unit = parseUnit(text)
        env = unitEnvironment(unit, {"/etc/pandapush/pandapush.env": str(ENV_EXAMPLE_PATH)})
        argv = expandCommand(value(unit, "Service", "ExecStart") or "", env)
        self.assertEqual(argv[0], str(venv / "bin" / "twistd"))
        self.assertIn(f"tcp:{port}:interface=127.0.0.1", argv)

        server = UnitProcess(unit, argv, env, port)
        self.addCleanup(server.removeScratch)
        self.addCleanup(server.stop)
        await server.start()

        pid = server._transport.pid  # unshare and unitexec exec: the server has this pid
        status = Path(f"/proc/{pid}/status").read_text()
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.M)
        assert uids is not None
        self.assertEqual((int(uids[1]), int(uids[2])), (account.pw_uid, account.pw_uid))
        self.assertRegex(status, r"(?m)^NoNewPrivs:\s+1$")
        # LimitNOFILE=65536, or as much as root may set where it lacks CAP_SYS_RESOURCE.
        _, hardLimit = resource.getrlimit(resource.RLIMIT_NOFILE)
        expected = 65536 if hardLimit >= 65536 or _canRaiseLimits() else hardLimit
        self.assertRegex(
            Path(f"/proc/{pid}/limits").read_text(), rf"Max open files\s+{expected}\s+{expected}"
        )

        # The environment file shipped leaves the admin password to the server.
        admin = generatedAdminCredentials(server.log())
        self.assertIsNotNone(admin, f"no generated admin password in the log:\n{server.log()}")
        assert admin is not None
        appId, key = await createAppAndKey(server.url, admin)
        delivered, details = await publishReachesSubscriber(server.url, server.url, appId, key)
        self.assertTrue(delivered, f"{details}\n{server.log()}")
        health = await request("GET", server.url + "/health_check.json")
        self.assertEqual(health.code, 200)

        code = await server.stop()
        # Killed by SIGTERM after its drain is what twistd does: systemd counts it clean.
        self.assertIn(code, (0, -signal.SIGTERM), server.log())
        self.assertIn("Server Shut Down.", server.log())
        written = sorted(p.name for p in dataDir.iterdir())
        self.assertIn("db.sqlite", written)
        self.assertNotIn("twistd.pid", written)
        # Read-only everywhere else: the log shows no write refused (e.g. Twisted's
        # plugin cache, which the venv's install step wrote).
        self.assertNotIn("Unable to write", server.log())
