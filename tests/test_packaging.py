"""
Packaging: what a user gets from ``pip install .`` in a fresh environment.

The twistd plugin lives in ``twisted/plugins/`` beside the package; a packaging mistake
(the dropin left out of the wheel, a ``twisted/__init__.py`` shipped over Twisted's own, an
editable install that hides the dropin) passes every in-tree test and still leaves users
with ``twistd: Unknown command: pandapush``. So these tests install a copy of the source
tree (the files git knows about, tracked or new, never build artifacts) into a new venv
and use it from a directory far from the checkout, with no PYTHONPATH.

The venv is built once for the module (about half a minute with pip's cache). Set
``PANDAPUSH_SKIP_PACKAGING=1`` to skip these tests when offline.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from tests.support import REPO_ROOT
from tests.support.process import PandapushProcess


@dataclass
class Installed:
    root: Path  # a scratch directory: the source copy, the venv, a neutral cwd
    venv: Path
    source: Path
    cwd: Path

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name


_installed: Installed | None = None
_failure: str | None = None


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    # Nothing from the checkout may leak in: the installed copy alone must do.
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return env


async def _run(*command: str | Path, cwd: Path) -> tuple[str, int]:
    out, err, code = await getProcessOutputAndValue(
        str(command[0]), [str(c) for c in command[1:]], env=_environment(), path=str(cwd), reactor=reactor
    )
    text = out.decode("utf-8", "replace") + err.decode("utf-8", "replace")
    return text, code


def _copySourceTree(destination: Path) -> None:
    """The files git tracks or would track (untracked but not ignored), as a clone would have them."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listing.decode().split("\0")):
        source = REPO_ROOT / name
        if source.is_symlink() or not source.is_file():
            continue  # deleted in the work tree, or a lock file
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


async def installed() -> Installed:
    """The fresh environment with pandapush installed, built on first use."""
    global _installed, _failure
    if os.environ.get("PANDAPUSH_SKIP_PACKAGING") == "1":
        raise SkipTest("PANDAPUSH_SKIP_PACKAGING=1")
    if _installed is not None:
        return _installed
    if _failure is not None:
        raise AssertionError(_failure)

    root = Path(tempfile.mkdtemp(prefix="pandapush-packaging-"))
    atexit.register(shutil.rmtree, root, True)
    here = Installed(root=root, venv=root / "venv", source=root / "src", cwd=root / "elsewhere")
    here.cwd.mkdir()
    _copySourceTree(here.source)
    steps: list[tuple[str | Path, ...]] = [
        (sys.executable, "-m", "venv", here.venv),
        # A real build: pip's isolated build environment, as users get.
        (here.bin("python"), "-m", "pip", "install", "--no-input", here.source),
    ]
    for step in steps:
        output, code = await _run(*step, cwd=here.cwd)
        if code != 0:
            _failure = f"{' '.join(map(str, step))} exited {code}:\n{output}"
            raise AssertionError(_failure)
    _installed = here
    return here


_editable: Installed | None = None


async def editable() -> Installed:
    """
    A second venv with a plain ``pip install -e`` of the same copy (setuptools' default
    editable mode, not run-tests' compat), built on first use.
    """
    global _editable
    if _editable is not None:
        return _editable
    env = await installed()
    here = Installed(root=env.root, venv=env.root / "editable-venv", source=env.source, cwd=env.cwd)
    for step in [
        (sys.executable, "-m", "venv", here.venv),
        (here.bin("python"), "-m", "pip", "install", "--no-input", "-e", here.source),
    ]:
        output, code = await _run(*step, cwd=here.cwd)
        if code != 0:
            raise AssertionError(f"{' '.join(map(str, step))} exited {code}:\n{output}")
    _editable = here
    return here


class InstalledServer(PandapushProcess):
    """``twistd -n pandapush`` from the fresh venv, run outside the checkout."""

    sourceOnPath = False

    def __init__(self, env: Installed, *args: str) -> None:
        super().__init__(*args)
        self.installedEnv = env
        self.workingDirectory = env.cwd

    def command(self) -> list[str]:
        return [
            str(self.installedEnv.bin("twistd")),
            "--nodaemon",
            "--pidfile=",
            "pandapush",
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
            *self.args,
        ]


class PackagingTests(TestCase):
    timeout = 900

    async def test_twistdPluginListsOptions(self) -> None:
        """After ``pip install .``, ``twistd pandapush --help`` works and lists --listen and --timeout."""
        env = await installed()
        output, code = await _run(env.bin("twistd"), "pandapush", "--help", cwd=env.cwd)
        self.assertEqual(code, 0, output)
        self.assertIn("Usage: twistd [options] pandapush [options]", output)
        for option in ("--listen=", "--timeout="):
            self.assertIn(option, output)

    async def test_dropinOnlyInWheel(self) -> None:
        """
        The install ships the one-statement dropin and never a ``twisted/__init__.py``
        or ``twisted/plugins/__init__.py`` that would shadow Twisted's own.
        """
        env = await installed()
        output, code = await _run(
            env.bin("python"),
            "-c",
            "import importlib.metadata as m; print('\\n'.join(str(f) for f in m.files('pandapush')))",
            cwd=env.cwd,
        )
        self.assertEqual(code, 0, output)
        files = set(output.split())
        self.assertIn("twisted/plugins/pandapush_plugin.py", files)
        self.assertNotIn("twisted/__init__.py", files)
        self.assertNotIn("twisted/plugins/__init__.py", files)
        self.assertIn("pandapush/py.typed", files)
        # Package data: what the server reads from its own folder at run time.
        for data in (
            "pandapush/web/static/client.js",
            "pandapush/web/static/admin/index.html",
            "pandapush/storage/migrations/sqlite/0001_initial.sql",
            "pandapush/storage/migrations/postgres/0001_initial.sql",
        ):
            self.assertIn(data, files)
        # The installed copy is the one used: not the checkout.
        output, code = await _run(
            env.bin("python"), "-c", "import pandapush; print(pandapush.__file__)", cwd=env.cwd
        )
        self.assertEqual(code, 0, output)
        self.assertTrue(output.strip().startswith(str(env.venv)), output)

    async def test_metadata(self) -> None:
        """The installed distribution says what pyproject.toml does: MIT, with the licence text."""
        env = await installed()
        output, code = await _run(
            env.bin("python"),
            "-c",
            "import importlib.metadata as m, pandapush; d = m.distribution('pandapush'); "
            "print(d.metadata['License-Expression'], d.version == pandapush.__version__, "
            "d.read_text('licenses/LICENSE').splitlines()[0])",
            cwd=env.cwd,
        )
        self.assertEqual(code, 0, output)
        self.assertEqual(output.strip(), "MIT True MIT License")

    async def test_enginesRegistered(self) -> None:
        """The installed copy registers its engines in the ``pandapush.engines`` entry-point group."""
        env = await installed()
        output, code = await _run(
            env.bin("python"),
            "-c",
            "from importlib.metadata import entry_points\n"
            "for e in sorted(entry_points(group='pandapush.engines'), key=lambda e: e.name):\n"
            "    print(e.name, e.value, type(e.load()).__name__)",
            cwd=env.cwd,
        )
        self.assertEqual(code, 0, output)
        self.assertEqual(
            output.splitlines(),
            [
                "memory pandapush.engines.factories:memory MemoryEngineFactory",
                "redis pandapush.engines.factories:redis RedisEngineFactory",
            ],
        )

    async def test_installedServerAnswers(self) -> None:
        """The installed ``twistd -n pandapush`` starts, answers /health_check.json and stops."""
        env = await installed()
        server = InstalledServer(env, "--timeout", "1")
        self.addCleanup(server.stop)
        await server.start()
        code = await server.stop()
        # twistd ends by re-raising the signal that stopped it: -SIGTERM is a clean exit.
        self.assertIn(code, (0, -signal.SIGTERM), server.log())
        self.assertIn("Server Shut Down.", server.log())

    async def test_editableInstallFindsDropin(self) -> None:
        """
        A plain ``pip install -e .`` leaves twisted/plugins/ visible to twistd: setuptools
        puts the root on sys.path (``package-dir`` in pyproject.toml) rather than
        installing an import hook, which twistd's plugin scan would not see through.
        """
        env = await editable()
        output, code = await _run(env.bin("twistd"), "pandapush", "--help", cwd=env.cwd)
        self.assertEqual(code, 0, output)
        self.assertIn("Usage: twistd [options] pandapush [options]", output)

    async def test_consoleScript(self) -> None:
        """``pandapush --help``, the console script, works from the installed copy."""
        env = await installed()
        output, code = await _run(env.bin("pandapush"), "--help", cwd=env.cwd)
        self.assertEqual(code, 0, output)
        self.assertIn("--listen", output)
