"""
The container image, built and run on this machine without a container engine.

No registry is reachable here and ``docker``/``podman run`` do not work, so the image
is made from Debian's packages: ``mmdebstrap`` builds a minimal bookworm with Python
(the base, standing in for ``python:3.11-slim-bookworm``), ``buildah`` imports it and
builds the repository's ``Dockerfile`` on it (``--isolation chroot``), and
``buildah run --isolation chroot`` runs the image's command in its root file system
on the host's network, where the tests reach it on 127.0.0.1.

Both are cached between runs (CI reruns on the same machine take seconds):

- the base: ``<cache>/base-<key>.tar`` and the buildah image
  ``localhost/pandapush-test-base:<key>``, keyed by a hash of the recipe;
- the image: ``localhost/pandapush-test:<key>``, keyed by a hash of the build
  context (what ``.dockerignore`` lets in) and the base; buildah's layer cache keeps
  the dependency layer while only the code changes.

``<cache>`` is ``$PANDAPUSH_TEST_CACHE`` or ``/var/cache/pandapush-test``: outside the
checkout, kept across runs. Delete it (and ``buildah rmi`` the images) to start over.
It also holds the systemd test's venv, so it may not be under /tmp, /var/tmp or a home
directory, which that unit's sandbox hides (:func:`tests.support.systemd.systemVenv`).

Everything needs root (mmdebstrap's and buildah's root mode, which is how CI runs).
Missing tools or no root skip the tests, or fail them under ``PANDAPUSH_E2E_REQUIRED=1``
(set by ``run-tests``).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twisted.internet import defer, error
from twisted.internet import reactor as _reactor
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest

from tests.support import REPO_ROOT
from tests.support.process import PandapushProcess, ServerFailedError
from tests.support.requirements import missing
from tests.support.waiting import sleep

__all__ = [
    "CACHE_DIR",
    "STALE_AFTER",
    "CacheLock",
    "ContainerServer",
    "Image",
    "baseImage",
    "buildah",
    "builtImage",
    "missing",
    "outsideEnvironment",
    "requireRoot",
    "requireTools",
    "run",
]

CACHE_DIR = Path(os.environ.get("PANDAPUSH_TEST_CACHE", "/var/cache/pandapush-test"))

#: The base: what python:3.11-slim-bookworm gives the Dockerfile (python3 with venv
#: and pip, CA certificates, useradd), from Debian's own packages.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
#: Bumped when the recipe changes in a way its arguments do not show.
BASE_RECIPE_VERSION = "1"
BASE_REPOSITORY = "localhost/pandapush-test-base"
IMAGE_REPOSITORY = "localhost/pandapush-test"

#: What the build context holds (mirrors .dockerignore), for the image's cache key.
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "LICENSE")
CONTEXT_DIRECTORIES = ("pandapush", "twisted", "deploy/docker")


def requireRoot() -> None:
    if os.geteuid() != 0:
        missing("needs root (as CI runs)")


def requireTools(*names: str) -> dict[str, str]:
    """Each tool's path; skip (or fail) naming the Debian packages to install."""
    found: dict[str, str] = {}
    for name in names:
        path = shutil.which(name)
        if path is None and os.access(f"/usr/sbin/{name}", os.X_OK):
            path = f"/usr/sbin/{name}"  # not on a non-root PATH
        if path is None:
            missing(f"{name} is not installed (apt-get install {' '.join(names)}; run-tests does)")
            raise AssertionError("unreachable")
        found[name] = path
    return found


class _Collect(ProcessProtocol):
    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: defer.Deferred[int | None] = defer.Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        code: int | None = 0
        if isinstance(reason.value, error.ProcessTerminated):
            code = reason.value.exitCode
            if code is None:
                code = -(reason.value.signal or 0)
        self.ended.callback(code)


#: What would point another Python, or its pip, at the tests' own: trial's workers (``-j``)
#: get the parent's whole sys.path as PYTHONPATH, and the rest redirect where pip installs.
_PYTHON_LEAKS = (
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
    "PIP_TARGET",
    "PIP_PREFIX",
    "PIP_ROOT",
    "PIP_USER",
)


def outsideEnvironment() -> dict[str, str]:
    """
    This process's environment without what ties a Python to the tests' (:data:`_PYTHON_LEAKS`):
    for another Python, its venv and pip (else pip sees the tests' packages as installed,
    and leaves them out of the venv it fills). pip's own settings (index, certificates) stay.
    """
    return {name: value for name, value in os.environ.items() if name not in _PYTHON_LEAKS}


async def run(
    *argv: str, timeout: float = 300.0, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> tuple[int | None, str]:
    """
    Run a command without blocking the reactor: (exit code, stdout and stderr), killed at
    ``timeout``. Its environment is ``env``, else this process's.
    """
    protocol = _Collect()
    environment = dict(os.environ if env is None else env)
    transport = IReactorProcess(_reactor).spawnProcess(
        protocol, argv[0], list(argv), env=environment, path=str(cwd) if cwd else None
    )

    def kill() -> None:
        protocol.output += f"\n[killed after {timeout}s]".encode()
        try:
            transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass

    timer = _reactor.callLater(timeout, kill)  # type: ignore[attr-defined]
    code = await protocol.ended
    if timer.active():
        timer.cancel()
    return code, protocol.output.decode("utf-8", "replace")


async def buildah(*args: str, timeout: float = 300.0) -> str:
    """``buildah <args>``'s output; a non-zero exit is an AssertionError with it."""
    code, output = await run("buildah", *args, timeout=timeout)
    if code != 0:
        raise AssertionError(f"buildah {' '.join(args)} exited {code}:\n{output[-4000:]}")
    return output


class CacheLock:
    """An exclusive lock on a file in the cache, waited for without blocking the reactor."""

    def __init__(self, name: str) -> None:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        self.path = CACHE_DIR / f"{name}.lock"
        self.fd: int | None = None

    async def __aenter__(self) -> CacheLock:
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                await sleep(0.5)

    async def __aexit__(self, *exc: object) -> None:
        assert self.fd is not None
        os.close(self.fd)  # releases the lock
        self.fd = None


async def _imageExists(reference: str) -> bool:
    code, _ = await run("buildah", "inspect", "--type", "image", reference, timeout=60)
    return code == 0


def _baseKey() -> str:
    recipe = json.dumps(
        {
            "version": BASE_RECIPE_VERSION,
            "suite": BASE_SUITE,
            "variant": "minbase",
            "include": BASE_PACKAGES,
            "arch": os.uname().machine,
        },
        sort_keys=True,
    )
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


async def baseImage() -> str:
    """The base image's reference, made (mmdebstrap, then buildah) unless cached."""
    key = _baseKey()
    reference = f"{BASE_REPOSITORY}:{key}"
    async with CacheLock("base"):
        if await _imageExists(reference):
            return reference
        tarball = CACHE_DIR / f"base-{key}.tar"
        if not tarball.exists():
            # mmdebstrap picks the format by the name: keep ".tar" at the end.
            partial = tarball.with_suffix(".partial.tar")
            partial.unlink(missing_ok=True)
            code, output = await run(
                "mmdebstrap",
                "--variant=minbase",
                "--include=" + ",".join(BASE_PACKAGES),
                BASE_SUITE,
                str(partial),
                timeout=900,
            )
            if code != 0:
                partial.unlink(missing_ok=True)
                raise AssertionError(f"mmdebstrap exited {code}:\n{output[-4000:]}")
            partial.rename(tarball)
        # A tarball of a root file system is no image yet: add it to an empty one.
        container = (await buildah("from", "scratch")).strip().splitlines()[-1]
        try:
            await buildah("add", container, str(tarball), "/", timeout=600)
            await buildah(
                "config",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--cmd",
                "/bin/sh",
                container,
            )
            await buildah("commit", "--rm", container, reference, timeout=600)
        except BaseException:
            await run("buildah", "rm", container, timeout=60)
            raise
        for old in CACHE_DIR.glob("base-*.tar"):
            if old != tarball:
                old.unlink(missing_ok=True)
        return reference


def _contextHash(base: str) -> str:
    digest = hashlib.sha256(base.encode())
    paths = [REPO_ROOT / name for name in CONTEXT_FILES]
    for directory in CONTEXT_DIRECTORIES:
        for root, dirs, files in os.walk(REPO_ROOT / directory):
            dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", "node_modules"))
            paths += [Path(root) / f for f in sorted(files) if not f.endswith(".pyc") and f != "dropin.cache"]
    for path in paths:
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0")
        digest.update(path.read_bytes() if path.exists() else b"<missing>")
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _pipBuildArgs() -> list[str]:
    """
    The package index this machine uses, when it is not PyPI: ``PIP_INDEX_URL`` /
    ``PIP_EXTRA_INDEX_URL`` over http(s) (a file:// index is not in the build).
    """
    args: list[str] = []
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        urls = [u for u in os.environ.get(name, "").split() if u.startswith(("http://", "https://"))]
        if urls:
            args += ["--build-arg", f"{name}={' '.join(urls)}"]
    return args


class Image:
    """A built image: its reference and its configuration (``buildah inspect``)."""

    def __init__(self, reference: str, revision: str, config: dict[str, Any], buildLog: str) -> None:
        self.reference = reference
        self.revision = revision
        self.config = config
        self.buildLog = buildLog

    @property
    def command(self) -> list[str]:
        return [*(self.config.get("Entrypoint") or []), *(self.config.get("Cmd") or [])]

    @property
    def environment(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config.get("Env") or [])

    @property
    def healthcheck(self) -> list[str]:
        """The HEALTHCHECK command as argv (``CMD`` form) or a shell line (``CMD-SHELL``)."""
        test = (self.config.get("Healthcheck") or {}).get("Test") or []
        if test[:1] == ["CMD"]:
            return list(test[1:])
        if test[:1] == ["CMD-SHELL"]:
            return ["/bin/sh", "-c", test[1]]
        return []


_built: Image | None = None
_failed: str | None = None


async def builtImage() -> Image:
    """The repository's Dockerfile built on the Debian base (once per test run; cached by content)."""
    global _built, _failed
    requireRoot()
    requireTools("buildah", "mmdebstrap")
    if _built is not None:
        return _built
    if _failed is not None:
        raise AssertionError(_failed)
    try:
        base = await baseImage()
        key = _contextHash(base)
        reference = f"{IMAGE_REPOSITORY}:{key}"
        revision = f"test-{key}"
        log = "(cached)"
        async with CacheLock("image"):
            if not await _imageExists(reference):
                volumes: list[str] = []
                if os.path.isdir("/etc/ssl/certs"):
                    # pip inside the build trusts what this machine trusts (a TLS-inspecting
                    # proxy's authority, say): the host's certificates, read-only.
                    volumes = ["-v", "/etc/ssl/certs:/etc/ssl/certs:ro"]
                log = await buildah(
                    "bud",
                    "--isolation",
                    "chroot",
                    "--layers",
                    # Docker's format: OCI image configs have no HEALTHCHECK.
                    "--format",
                    "docker",
                    "--pull-never",
                    "--build-arg",
                    f"BASE_IMAGE={base}",
                    "--build-arg",
                    f"PANDAPUSH_REV={revision}",
                    *_pipBuildArgs(),
                    *volumes,
                    "--tag",
                    reference,
                    "--file",
                    str(REPO_ROOT / "Dockerfile"),
                    str(REPO_ROOT),
                    timeout=900,
                )
                await _removeStale(reference)
        inspected = json.loads(await buildah("inspect", "--type", "image", reference, timeout=60))
        _built = Image(reference, revision, inspected["Docker"]["config"], log)
        return _built
    except SkipTest:
        raise
    except BaseException as e:
        _failed = f"building the image failed: {e}"
        raise


#: What another test run (another checkout on this machine) may still be using is
#: kept: only images, venvs and containers older than this are removed.
STALE_AFTER = 3 * 3600.0


async def _removeStale(keep: str) -> None:
    """
    Earlier builds' images (each holds a copy of the venv; buildah's layer cache
    stays), and containers left by test runs that died (their pid is gone).
    """
    code, output = await run("buildah", "images", "--json", timeout=60)
    for image in json.loads(output or "[]") if code == 0 else []:
        names = [n for n in image.get("names") or [] if n.startswith(IMAGE_REPOSITORY + ":") and n != keep]
        if names and time.time() - float(image.get("created") or 0) > STALE_AFTER:
            for name in names:
                await run("buildah", "rmi", name, timeout=120)  # in use by a container: kept
    code, output = await run("buildah", "containers", "--format", "{{.ContainerName}}", timeout=60)
    for name in output.split() if code == 0 else []:
        found = re.fullmatch(r"pandapush-test-(\d+)-\d+", name)
        if found and not os.path.exists(f"/proc/{found.group(1)}"):
            await run("buildah", "rm", name, timeout=120)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The parent pid is the 2nd field after the parenthesised command name.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        children = _children(todo.pop())
        out += children
        todo += children
    return out


def processIds(pid: int) -> tuple[int, int]:
    """A process's real and effective user id."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            real, effective = line.split()[1:3]
            return int(real), int(effective)
    raise AssertionError(f"no Uid in /proc/{pid}/status")


class ContainerServer(PandapushProcess):
    """
    The image's command in a fresh container (``buildah from`` + ``buildah run``), as a
    ``PandapushProcess``: started until ``/health_check.json`` answers, its output kept.

    Differences from ``docker run``, all on purpose: the server is told to listen on
    127.0.0.1 (``--listen`` appended to the image's command; with chroot isolation the
    container shares the host's network, and nothing should listen on every interface
    for a test), and ``volume`` (a host directory) is bind-mounted on ``/data`` in place
    of the image's anonymous volume (``buildah config --volume /data-``: buildah 1.28
    mounts the image's own volume over a ``-v`` on the same path). ``stop()`` sends
    SIGTERM to the container's main process, as ``docker stop`` does.
    """

    startTimeout = 60.0
    sourceOnPath = False

    def __init__(self, image: Image, volume: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(env=env)
        self.image = image
        self.volume = volume
        self.container: str | None = None
        self.rootfs: str | None = None

    @classmethod
    async def created(cls, testCase: Any, image: Image, volume: Path, env: dict[str, str]) -> ContainerServer:
        server = cls(image, volume, env)
        testCase.addCleanup(server.remove)
        testCase.addCleanup(server.stop)
        name = f"pandapush-test-{os.getpid()}-{server.port}"
        server.container = (await buildah("from", "--pull-never", "--name", name, image.reference)).split()[
            -1
        ]
        await buildah("config", "--volume", "/data-", server.container)
        return server

    def containerEnvironment(self) -> dict[str, str]:
        return {"PORT": str(self.port), **self.env}

    def command(self) -> list[str]:
        assert self.container is not None
        options: list[str] = []
        for name, value in self.containerEnvironment().items():
            options += ["-e", f"{name}={value}"]
        return [
            shutil.which("buildah") or "buildah",
            "run",
            "--isolation",
            "chroot",
            *options,
            "-v",
            f"{self.volume}:/data",
            self.container,
            "--",
            *self.image.command,
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
        ]

    def childEnvironment(self) -> dict[str, str]:
        return dict(os.environ)  # buildah's own; the container's is given with -e

    async def exec(self, *argv: str, env: dict[str, str] | None = None) -> tuple[int | None, str]:
        """Another process in the same container (as its user, with its environment)."""
        assert self.container is not None
        options: list[str] = []
        for name, value in {**self.containerEnvironment(), **(env or {})}.items():
            options += ["-e", f"{name}={value}"]
        return await run(
            "buildah", "run", "--isolation", "chroot", *options, self.container, "--", *argv, timeout=60
        )

    def serverPid(self) -> int:
        """The container's main process: the first one that is not buildah's own."""
        transport = self._transport
        assert transport is not None and transport.pid is not None
        for pid in descendants(transport.pid):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if command and not os.path.basename(command[0]).startswith(b"buildah"):
                return pid
        raise AssertionError(f"no server process under buildah run ({transport.pid}):\n{self.log()}")

    async def stop(self, sig: int = signal.SIGTERM) -> int | None:
        protocol = self._protocol
        if protocol is None or protocol.hasEnded:
            return protocol.exitCode if protocol is not None else None
        try:
            os.kill(self.serverPid(), sig)
        except (AssertionError, ProcessLookupError):
            pass  # already on its way out: the wait below (and SIGKILL) still apply
        timer = self.reactor.callLater(self.stopTimeout, self._kill, self._transport)
        code = await protocol.whenEnded()
        if timer.active():
            timer.cancel()
        return code

    async def mount(self) -> Path:
        """The container's root file system (``buildah mount``), unmounted by ``remove``."""
        assert self.container is not None
        if self.rootfs is None:
            self.rootfs = (await buildah("mount", self.container)).strip().splitlines()[-1]
        return Path(self.rootfs)

    async def remove(self) -> None:
        if self.container is not None:
            if self.running:
                raise ServerFailedError("remove() while running")
            await run("buildah", "rm", self.container, timeout=120)
            self.container = None
            self.rootfs = None
