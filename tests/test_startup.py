"""
Starting a server as an operator does, in processes of its own: what it says and how it
exits when it cannot start (a supervisor restarts on a non-zero status only), the pid file
twistd no longer leaves in the working directory, the scheme it announces, ``GET /``.
"""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

import treq
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from pandapush.bayeux import json
from tests.support import REPO_ROOT
from tests.support.inprocess import InProcessServer
from tests.support.ports import freePort
from tests.support.process import PandapushProcess
from tests.support.redis import requireRedis
from tests.support.waiting import sleep
from tests.test_storage import POSTGRES, postgresSchema

MEMORY = {"DATABASE": "memory", "AUTH_METHOD": "none"}


def assertOneLineFailure(test: TestCase, server: PandapushProcess, code: int | None, reason: str) -> None:
    """Exit status 1, ``reason`` on the "could not start" line, and no traceback anywhere."""
    log = server.log()
    test.assertEqual(code, 1, log)
    lines = [line for line in server.output if "pandapush could not start" in line]
    test.assertEqual(len(lines), 1, log)
    test.assertIn(reason, lines[0])
    test.assertNotIn("Traceback", log)


class StartFailureTests(TestCase):
    """A server that cannot start exits non-zero, saying why in one line (it exited 0)."""

    async def test_portInUse(self) -> None:
        """Another process holds the port: status 1, "Couldn't listen on 127.0.0.1:<port>"."""
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = PandapushProcess(env=MEMORY, port=port)
        self.addCleanup(server.removeScratch)
        code = await server.runUntilExit()
        assertOneLineFailure(self, server, code, f"Couldn't listen on 127.0.0.1:{port}")

    async def test_pandapushServe(self) -> None:
        """`pandapush serve` (twistd in the foreground, under the command) exits 1 the same way."""
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        server = ServeCommand(env=MEMORY, port=holder.getsockname()[1])
        self.addCleanup(server.removeScratch)
        code = await server.runUntilExit()
        assertOneLineFailure(self, server, code, "Couldn't listen on")

    async def test_schemaNotMigrated(self) -> None:
        """PostgreSQL with an empty schema: status 1, and the line says to run `pandapush migrate`."""
        schema, drop = postgresSchema()
        self.addCleanup(drop)
        server = PandapushProcess(env={**MEMORY, **_postgres(schema)})
        self.addCleanup(server.removeScratch)
        code = await server.runUntilExit()
        assertOneLineFailure(self, server, code, "run `pandapush migrate`")

    async def test_databaseUnreachable(self) -> None:
        """Nothing listens where the database should be: status 1, one line naming the outage."""
        env = {**MEMORY, **_postgres("public"), "DATABASE_PORT": str(freePort())}
        server = PandapushProcess(env=env)
        self.addCleanup(server.removeScratch)
        code = await server.runUntilExit()
        assertOneLineFailure(self, server, code, "storage unavailable: connection to server at")

    async def test_unusableSettings(self) -> None:
        """
        Settings found unusable while the server is built (an unknown AUTH_METHOD, under
        twist; an unknown DATABASE, under twistd): status 1 and one line, no traceback.
        """
        server = PandapushProcess(env={**MEMORY, "AUTH_METHOD": "nosuch"})
        self.addCleanup(server.removeScratch)
        code = await server.runUntilExit()
        assertOneLineFailure(self, server, code, "unknown AUTH_METHOD 'nosuch'")
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        twistd = TwistdServer(directory, env={**MEMORY, "DATABASE": "nosuch"})
        code = await twistd.runUntilExit()
        assertOneLineFailure(self, twistd, code, "unknown storage backend DATABASE='nosuch'")

    async def test_unexpectedFailure(self) -> None:
        """
        A failure nobody foresaw (an SQLite file where a directory cannot be made) still
        exits non-zero; its traceback is logged, as it is what a bug report needs.
        """
        blocker = Path(self.mktemp()).absolute()
        blocker.write_text("a file, not a directory")
        env = {**MEMORY, "DATABASE": "sqlite", "DATABASE_PATH": str(blocker / "db.sqlite")}
        server = PandapushProcess(env=env)
        self.addCleanup(server.removeScratch)
        code = await server.runUntilExit()
        self.assertEqual(code, 1, server.log())
        self.assertIn("pandapush could not start", server.log())

    async def test_workersCannotStart(self) -> None:
        """
        With --workers 2, a worker that exits before it ever served stops the parent with
        status 1 (it was restarted forever while the parent served alone).
        """
        redis = requireRedis()
        sitePackages = Path(self.mktemp()).absolute()
        sitePackages.mkdir()
        # The worker dies as its interpreter starts; the parent (no PANDAPUSH_WORKER) does not.
        (sitePackages / "sitecustomize.py").write_text(
            "import os, sys\n"
            "if os.environ.get('PANDAPUSH_WORKER'):\n"
            "    sys.stderr.write('this worker cannot start\\n')\n"
            "    sys.stderr.flush()\n"
            "    os._exit(3)\n"
        )
        env = {
            "AUTH_METHOD": "none",
            "DATABASE": "sqlite",
            "REDIS_HOSTS": f"{redis.host}:{redis.port}",
            "REDIS_NAMESPACE": "pandapush-test-startup-" + os.urandom(4).hex(),
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(sitePackages)]),
        }
        server = PandapushProcess("--workers", "2", env=env)
        self.addCleanup(server.removeScratch)
        code = await server.runUntilExit()
        log = server.log()
        self.assertEqual(code, 1, log)
        self.assertIn("worker 1", log)
        self.assertIn("could not start (status 3", log)
        self.assertIn("this worker cannot start", log)
        self.assertNotIn("Traceback", log)


class ServeCommand(PandapushProcess):
    """``pandapush serve --listen ...``."""

    def command(self) -> list[str]:
        listen = f"tcp:{self.port}:interface=127.0.0.1"
        return [sys.executable, "-m", "pandapush.cli", "serve", "--listen", listen, *self.args]


def _postgres(schema: str) -> dict[str, str]:
    return {
        "DATABASE": "postgres",
        "DATABASE_ADDRESS": str(POSTGRES["host"]),
        "DATABASE_PORT": str(POSTGRES["port"]),
        "DATABASE_USERNAME": str(POSTGRES["user"]),
        "DATABASE_NAME": str(POSTGRES["dbname"]),
        "DATABASE_SCHEMA": schema,
    }


#: ``twistd`` from this interpreter's Twisted.
TWISTD = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()",
]


class TwistdServer(PandapushProcess):
    """``twistd <twistdArgs> -n pandapush --listen ...`` (or ``-ny pandapush.tac``) in ``directory``."""

    def __init__(self, directory: Path, *twistdArgs: str, tac: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.workingDirectory = directory
        self.twistdArgs = list(twistdArgs)
        self.tac = tac
        if tac:
            self.env["PANDAPUSH_ARGS"] = f"--listen tcp:{self.port}:interface=127.0.0.1"

    def command(self) -> list[str]:
        if self.tac:
            return [*TWISTD, *self.twistdArgs, "-ny", "pandapush.tac"]
        return [
            *TWISTD,
            *self.twistdArgs,
            "-n",
            "pandapush",
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
        ]


class PidfileTests(TestCase):
    """twistd in the foreground writes no twistd.pid unless --pidfile asks for one."""

    def checkout(self) -> Path:
        directory = Path(tempfile.mkdtemp(prefix="pandapush-checkout-"))
        self.addCleanup(shutil.rmtree, directory, True)
        shutil.copy(REPO_ROOT / "pandapush.tac", directory / "pandapush.tac")
        return directory

    async def test_twoForegroundServersFromOneDirectory(self) -> None:
        """`twistd -n pandapush` twice from one directory: both run, and no twistd.pid is left there."""
        directory = self.checkout()
        for _ in range(2):
            server = TwistdServer(directory, env=MEMORY)
            self.addCleanup(server.stop)
            await server.start()
            self.assertFalse((directory / "twistd.pid").exists(), server.log())

    async def test_tacTwice(self) -> None:
        """`twistd -ny pandapush.tac` twice from the same checkout: both run; no twistd.pid."""
        directory = self.checkout()
        servers = [TwistdServer(directory, tac=True, env=MEMORY) for _ in range(2)]
        for server in servers:
            self.addCleanup(server.stop)
            await server.start()
        self.assertEqual(sorted(p.name for p in directory.iterdir()), ["pandapush.tac"])

    async def test_pidfileWhenAsked(self) -> None:
        """--pidfile still writes one (and twistd removes it when it stops)."""
        directory = self.checkout()
        server = TwistdServer(directory, "--pidfile", "twistd.pid", env=MEMORY)
        self.addCleanup(server.stop)
        await server.start()
        self.assertEqual((directory / "twistd.pid").read_text().strip(), str(server.pid))
        # twistd ends itself with the signal it stopped for, as Twisted does.
        self.assertEqual(await server.stop(), -signal.SIGTERM, server.log())
        self.assertFalse((directory / "twistd.pid").exists())


class NotifyTests(TestCase):
    """systemd's Type=notify: the server says READY=1 once it serves, STOPPING=1 when it drains."""

    def notifySocket(self) -> socket.socket:
        directory = Path(tempfile.mkdtemp(prefix="pandapush-notify-"))
        self.addCleanup(shutil.rmtree, directory, True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(str(directory / "notify"))
        sock.setblocking(False)
        return sock

    async def received(self, sock: socket.socket, text: str, server: PandapushProcess) -> list[str]:
        """The datagrams received until one holds ``text`` (within 10 s)."""
        messages: list[str] = []
        for _ in range(200):
            try:
                messages.append(sock.recv(4096).decode())
            except BlockingIOError:
                if any(text in m for m in messages):
                    return messages
                await sleep(0.05)
        self.fail(f"no {text!r} in {messages}:\n{server.log()}")

    async def test_readyThenStopping(self) -> None:
        """READY=1 comes once the server answers; STOPPING=1 at SIGTERM, before it exits."""
        sock = self.notifySocket()
        server = await PandapushProcess.started(self, env={**MEMORY, "NOTIFY_SOCKET": sock.getsockname()})
        messages = await self.received(sock, "READY=1", server)
        self.assertEqual(len([m for m in messages if "READY=1" in m]), 1, messages)
        self.assertIn("STATUS=serving", messages[-1])
        await server.stop()
        self.assertIn("STOPPING=1", (await self.received(sock, "STOPPING=1", server))[-1])

    async def test_failureStatus(self) -> None:
        """A server that cannot start never says READY=1; its STATUS says why."""
        sock = self.notifySocket()
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        env = {**MEMORY, "NOTIFY_SOCKET": sock.getsockname()}
        server = PandapushProcess(env=env, port=holder.getsockname()[1])
        self.addCleanup(server.removeScratch)
        self.assertEqual(await server.runUntilExit(), 1)
        messages = await self.received(sock, "STATUS=could not start", server)
        self.assertFalse([m for m in messages if "READY=1" in m], messages)
        (status,) = [m for m in messages if "STATUS=could not start" in m]
        self.assertIn("Couldn't listen on", status)


class DaemonTests(TestCase):
    """
    twistd without -n: its first process exits with the daemon's word, given once the
    server serves or cannot start (it exited 0 as soon as the daemon had forked).
    """

    async def twistd(self, directory: Path, port: int) -> tuple[int, str]:
        env = {
            **os.environ,
            **MEMORY,
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        args = ["--pidfile", "twistd.pid", "--logfile", "twistd.log", "pandapush"]
        args += ["--listen", f"tcp:{port}:interface=127.0.0.1"]
        out, err, code = await getProcessOutputAndValue(
            TWISTD[0], [*TWISTD[1:], *args], env=env, path=str(directory)
        )
        return int(code), (out + err).decode("utf-8", "replace")

    def directory(self) -> Path:
        directory = Path(tempfile.mkdtemp(prefix="pandapush-daemon-"))
        self.addCleanup(shutil.rmtree, directory, True)
        return directory

    async def test_daemonServes(self) -> None:
        """Status 0 once the daemon listens: /ready answers at once; SIGTERM (pid file) stops it."""
        directory = self.directory()
        port = freePort()
        code, output = await self.twistd(directory, port)
        self.assertEqual(code, 0, output)
        pid = int((directory / "twistd.pid").read_text())
        self.addCleanup(_killQuietly, pid)
        response = await treq.get(f"http://127.0.0.1:{port}/ready", persistent=False, timeout=5)
        await response.content()
        self.assertEqual(response.code, 200)
        os.kill(pid, signal.SIGTERM)
        for _ in range(200):
            if not (directory / "twistd.pid").exists():
                break
            await sleep(0.05)
        self.assertFalse((directory / "twistd.pid").exists(), (directory / "twistd.log").read_text())

    async def test_daemonCannotStart(self) -> None:
        """A port in use: `twistd pandapush` exits 1 saying why (it exited 0)."""
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        directory = self.directory()
        code, output = await self.twistd(directory, holder.getsockname()[1])
        self.assertEqual(code, 1, output)
        self.assertIn("Couldn't listen on", output)
        log = (directory / "twistd.log").read_text()
        self.assertIn("pandapush could not start", log)
        self.assertNotIn("Traceback", log)


def _killQuietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


class TLSServer(PandapushProcess):
    """Listening with ``ssl:`` on a self-signed certificate made for the test."""

    def command(self) -> list[str]:
        directory = self.directory()
        key, cert = _selfSigned(directory)
        listen = f"ssl:{self.port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        return [
            sys.executable,
            "-m",
            "twisted",
            "--log-format",
            "text",
            "pandapush",
            "--listen",
            listen,
            *self.args,
        ]


def _selfSigned(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    keyPath, certPath = directory / "key.pem", directory / "cert.pem"
    keyPath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    certPath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return keyPath, certPath


class AnnouncedURLTests(TestCase):
    async def test_sslSaysHTTPS(self) -> None:
        """With --listen ssl:... the start line says https:// (it said http://)."""
        server = TLSServer(env=MEMORY)
        self.addCleanup(server.removeScratch)
        self.addCleanup(server.stop)
        server.launch()
        line = await server.waitForLine("listening at")
        self.assertIn(f"listening at https://127.0.0.1:{server.port}/push", line)

    async def test_tcpSaysHTTP(self) -> None:
        """And tcp: still says http://."""
        server = await PandapushProcess.started(self, env=MEMORY)
        line = await server.waitForLine("listening at")
        self.assertIn(f"listening at http://127.0.0.1:{server.port}/push", line)


class FrontPageTests(TestCase):
    async def test_rootPointsTheWay(self) -> None:
        """`GET /` is a page linking /push, /client.js, /admin and the docs (it was a bare 404)."""
        server = await InProcessServer.started(self)
        response = await treq.get(server.url + "/", persistent=False)
        body = (await response.content()).decode()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"), [b"text/html; charset=utf-8"])
        for path in (
            "/push",
            "/client.js",
            "/admin",
            "/openapi.json",
            "/health_check.json",
            "/ready",
            "/live",
        ):
            self.assertIn(f'href="{path}"', body)
        self.assertIn("docs/", body)
        response = await treq.get(server.url + "//elsewhere", persistent=False)
        await response.content()
        self.assertEqual(response.code, 404)
        response = await treq.get(server.url + "/health_check.json", persistent=False)
        self.assertIn("version", json.loads(await response.content()))
