"""
A PostgreSQL server of a test's own, to stop and start under traffic.

The machine's PostgreSQL on 5432 is shared (other tests, other people): a fault test
must never stop it. ``OwnPostgres`` runs ``initdb`` into a temporary directory and
``pg_ctl start`` on a free port of 127.0.0.1, with its socket in that directory too.
PostgreSQL refuses to run as root, so as root every command runs as the ``postgres``
user (``runuser``) and the directory is handed to it.

Everything is asynchronous (``getProcessOutputAndValue``): the reactor keeps serving
the test's clients while the server starts and stops.

    postgres = await OwnPostgres.started(self)   # skips when the binaries are missing
    await postgres.stop()                        # pg_ctl stop -m immediate: as a crash
    await postgres.start()                       # crash recovery, same port and data
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import tempfile
from pathlib import Path

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.ports import freePort

__all__ = ["OwnPostgres", "postgresBinaries"]

SUPERUSER = "postgres"


def postgresBinaries() -> Path | None:
    """The ``bin`` directory of the newest PostgreSQL installed (Debian layout), or None."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")]
    if not found:
        onPath = shutil.which("pg_ctl")
        return Path(onPath).parent if onPath else None
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


class OwnPostgres:
    """One throw-away PostgreSQL cluster on ``127.0.0.1:<port>`` (user ``postgres``, trust auth)."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.port = freePort()
        self.directory = Path(tempfile.mkdtemp(prefix="pandapush-pg-"))
        self.data = self.directory / "data"
        self.logFile = self.directory / "postgres.log"
        self.running = False
        self._asRoot = os.geteuid() == 0
        if self._asRoot:
            account = pwd.getpwnam(SUPERUSER)
            os.chown(self.directory, account.pw_uid, account.pw_gid)

    @classmethod
    async def started(cls, testCase: TestCase) -> OwnPostgres:
        """A running server for ``testCase``, removed in its cleanup; SkipTest without PostgreSQL."""
        binaries = postgresBinaries()
        if binaries is None or not (binaries / "initdb").exists():
            raise SkipTest("PostgreSQL binaries (initdb, pg_ctl) are not installed")
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(SUPERUSER)
            except KeyError:
                raise SkipTest("running as root and there is no postgres user to run PostgreSQL as") from None
        server = cls(binaries)
        testCase.addCleanup(server.remove)
        await server.initdb()
        await server.start()
        return server

    def _command(self, program: str, *args: str) -> tuple[str, list[str]]:
        argv = [str(self.binaries / program), *args]
        if self._asRoot:
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            return runuser, [runuser, "-u", SUPERUSER, "--", *argv]
        return argv[0], argv

    async def _run(self, program: str, *args: str) -> str:
        executable, argv = self._command(program, *args)
        out, err, code = await getProcessOutputAndValue(
            executable, argv[1:], env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"}, path="/"
        )
        text = (out + err).decode("utf-8", "replace")
        if code != 0:
            raise AssertionError(f"{program} {' '.join(args)} failed ({code}):\n{text}\n{self.log()}")
        return text

    async def initdb(self) -> None:
        # -N: no fsync; a test cluster need not survive a power cut.
        await self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", SUPERUSER, "-N", "-E", "UTF8", "--no-locale"
        )

    async def start(self) -> None:
        """Start (again, after :meth:`stop`: crash recovery) and wait until it accepts connections."""
        # fsync off is safe here: a crash of PostgreSQL alone (stop -m immediate) keeps what the
        # OS was given. synchronous_commit must stay on: with it off, the last commits sit in
        # PostgreSQL's own WAL buffers and an immediate stop loses them (seen as the test's
        # application gone after the restart).
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c full_page_writes=off"
        )
        await self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.logFile), "-w", "-t", "30", "-o", options, "start"
        )
        self.running = True

    async def stop(self, mode: str = "immediate") -> None:
        """``pg_ctl stop -m immediate`` by default: connections die as in a crash."""
        await self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    async def remove(self) -> None:
        if self.running:
            try:
                await self.stop()
            except AssertionError:
                pass
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.logFile.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def environment(self) -> dict[str, str]:
        """pandapush's storage settings for this server (its ``postgres`` database, migrated at start)."""
        return {
            "DATABASE": "postgres",
            "DATABASE_ADDRESS": "127.0.0.1",
            "DATABASE_PORT": str(self.port),
            "DATABASE_USERNAME": SUPERUSER,
            "DATABASE_NAME": "postgres",
            "DATABASE_MIGRATE": "yes",
        }
