"""
The systemd unit (``deploy/systemd/pandapush.service``) read and run as systemd would.

systemd is not PID 1 on this machine (nor in CI), so nothing can ``systemctl start``
the unit. Instead:

- ``parseUnit`` reads the unit file (sections, repeated keys, continuation lines);
- ``unitEnvironment`` builds the environment as systemd does: ``Environment=`` in
  order, then each ``EnvironmentFile=`` (which overrides them);
- ``expandCommand`` expands ``ExecStart=`` with that environment by systemd's rules
  (``$NAME`` alone is split into words, ``${NAME}`` is one word, ``$$`` is ``$``);
- ``UnitProcess`` runs the result as a ``PandapushProcess`` through ``unitexec.py``,
  which applies the unit's user, working directory, file limits and file-system
  sandbox in a private mount namespace (see there for what is emulated and what not).

The unit's install prefix (``/opt/pandapush``) is a virtualenv made from Debian's
``/usr/bin/python3`` (the Python a Debian server has; the test's own may live under
/root, which ``ProtectHome=`` hides), with the checkout ``pip install``\\ ed into it,
cached in ``tests.support.container.CACHE_DIR`` by the hash of the installed files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support import REPO_ROOT
from tests.support.container import (
    CACHE_DIR,
    STALE_AFTER,
    CacheLock,
    outsideEnvironment,
    requireRoot,
    requireTools,
    run,
)
from tests.support.process import PandapushProcess

__all__ = [
    "SYSTEM_PYTHON",
    "UNIT_PATH",
    "UnitProcess",
    "expandCommand",
    "parseEnvironmentFile",
    "parseUnit",
    "systemVenv",
    "unitEnvironment",
]

UNIT_PATH = REPO_ROOT / "deploy" / "systemd" / "pandapush.service"
ENV_EXAMPLE_PATH = REPO_ROOT / "deploy" / "systemd" / "pandapush.env"
SYSTEM_PYTHON = "/usr/bin/python3"
UNITEXEC = Path(__file__).with_name("unitexec.py")

Unit = dict[str, list[tuple[str, str]]]


def parseUnit(text: str) -> Unit:
    """``{section: [(key, value), ...]}``, keys in file order (systemd allows repeats)."""
    unit: Unit = {}
    section: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], [])
            continue
        if section is None or "=" not in line:
            raise ValueError(f"not a unit file line: {raw!r}")
        key, value = line.split("=", 1)
        section.append((key.strip(), value.strip()))
    return unit


def values(unit: Unit, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def value(unit: Unit, section: str, key: str) -> str | None:
    """The last setting of ``key`` (a later one overrides), or None."""
    found = values(unit, section, key)
    return found[-1] if found else None


def parseEnvironmentFile(text: str) -> dict[str, str]:
    """``NAME=value`` lines; comments (``#``, ``;``) and blank lines skipped; quotes removed."""
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        name, equals, rest = line.partition("=")
        name = name.strip()
        if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"line {number} is no NAME=value: {raw!r}")
        rest = rest.strip()
        if len(rest) >= 2 and rest[0] == rest[-1] and rest[0] in "\"'":
            rest = rest[1:-1]
        env[name] = rest
    return env


def unitEnvironment(unit: Unit, files: Mapping[str, str] | None = None) -> dict[str, str]:
    """
    The service's environment: ``Environment=`` assignments in order, then the
    ``EnvironmentFile=`` files (``files`` maps a path in the unit to the file to read
    instead; a ``-`` prefix means a missing file is fine).
    """
    env: dict[str, str] = {}
    for assignments in values(unit, "Service", "Environment"):
        for word in shlex.split(assignments):
            name, _, setting = word.partition("=")
            env[name] = setting
    for path in values(unit, "Service", "EnvironmentFile"):
        optional = path.startswith("-")
        path = path.lstrip("-")
        actual = (files or {}).get(path, path)
        try:
            env.update(parseEnvironmentFile(Path(actual).read_text()))
        except FileNotFoundError:
            if not optional:
                raise
    return env


def expandCommand(line: str, env: Mapping[str, str]) -> list[str]:
    """An ``Exec*=`` line as argv, expanded as systemd does (its ``@-:+!`` prefixes dropped)."""
    line = line.lstrip("@-:+!")
    argv: list[str] = []
    for word in shlex.split(line):
        alone = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if alone:
            argv += (env.get(alone.group(1)) or "").split()
            continue
        word = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word)
        argv.append(word.replace("$$", "$"))
    return argv


_venv: Path | None = None
#: Where the venv may not be: the unit's PrivateTmp= and ProtectHome= hide these from its server.
_HIDDEN_FROM_THE_UNIT = (Path("/tmp"), Path("/var/tmp"), Path("/home"), Path("/root"), Path("/run/user"))


def _installedFiles() -> list[Path]:
    paths = [REPO_ROOT / name for name in ("pyproject.toml", "README.md", "LICENSE")]
    for directory in ("pandapush", "twisted"):
        for root, dirs, files in os.walk(REPO_ROOT / directory):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            paths += [Path(root) / f for f in sorted(files) if not f.endswith(".pyc") and f != "dropin.cache"]
    return paths


async def systemVenv() -> Path:
    """A virtualenv of Debian's Python with this checkout installed, as /opt/pandapush would be."""
    global _venv
    requireRoot()
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        requireTools("python3")  # names the package in the failure
    if _venv is not None:
        return _venv
    for hidden in _HIDDEN_FROM_THE_UNIT:
        if CACHE_DIR.resolve().is_relative_to(hidden):
            raise AssertionError(
                f"PANDAPUSH_TEST_CACHE={CACHE_DIR} is under {hidden}, which the unit's sandbox"
                " (PrivateTmp=, ProtectHome=) hides from the server it runs: choose another"
            )
    files = _installedFiles()
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    venv = CACHE_DIR / f"venv-{digest.hexdigest()[:16]}"
    async with CacheLock("venv"):
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            source = Path(tempfile.mkdtemp(prefix="pandapush-source-"))
            try:
                for path in files:
                    target = source / path.relative_to(REPO_ROOT)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)
                for step in (
                    [SYSTEM_PYTHON, "-m", "venv", str(venv)],
                    # Debian 12's pip (23.0) installs a Metadata-Version 2.4 wheel, as
                    # pyproject.toml's setuptools makes, without its dependencies.
                    [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
                    [
                        str(venv / "bin" / "python"),
                        "-m",
                        "pip",
                        "install",
                        "--no-input",
                        "--quiet",
                        str(source),
                    ],
                ):
                    code, output = await run(*step, timeout=900, env=outsideEnvironment())
                    if code != 0:
                        shutil.rmtree(venv, ignore_errors=True)
                        raise AssertionError(f"{' '.join(step)} exited {code}:\n{output[-4000:]}")
            finally:
                shutil.rmtree(source, ignore_errors=True)
            # Twisted's plugin cache, now: at run time the venv is read-only to the unit.
            code, output = await run(
                str(venv / "bin" / "twistd"), "pandapush", "--help", timeout=120, env=outsideEnvironment()
            )
            if code != 0:
                raise AssertionError(f"twistd pandapush --help exited {code}:\n{output}")
        # Marks it in use; venvs nobody used for a while go (another checkout's run
        # may be using its own right now).
        (venv / ".complete").touch()
        for old in CACHE_DIR.glob("venv-*"):
            used = old / ".complete"
            age = time.time() - (used.stat().st_mtime if used.exists() else old.stat().st_mtime)
            if old != venv and age > STALE_AFTER:
                shutil.rmtree(old, ignore_errors=True)
    _venv = venv
    return venv


def _yes(setting: str | None) -> bool:
    return (setting or "").lower() in ("1", "yes", "true", "on")


class UnitProcess(PandapushProcess):
    """
    The unit's ``ExecStart=`` (already expanded: ``argv``), run under ``unitexec.py``
    with the unit's sandbox settings and ``environment`` as its whole environment.
    """

    sourceOnPath = False

    def __init__(self, unit: Unit, argv: list[str], environment: dict[str, str], port: int) -> None:
        super().__init__(port=port)
        self.unit = unit
        self.argv = argv
        self.environment = environment
        self.specDirectory = Path(tempfile.mkdtemp(prefix="pandapush-unit-"))

    def spec(self) -> dict[str, Any]:
        unit = self.unit
        limit = value(unit, "Service", "LimitNOFILE")
        return {
            "argv": self.argv,
            "environment": self.environment,
            "user": value(unit, "Service", "User"),
            "group": value(unit, "Service", "Group"),
            "workingDirectory": value(unit, "Service", "WorkingDirectory"),
            "protectSystem": value(unit, "Service", "ProtectSystem"),
            "protectHome": _yes(value(unit, "Service", "ProtectHome")),
            "privateTmp": _yes(value(unit, "Service", "PrivateTmp")),
            "readWritePaths": [p for v in values(unit, "Service", "ReadWritePaths") for p in v.split()],
            "limitNOFILE": limit.split(":")[0] if limit else None,
            "umask": value(unit, "Service", "UMask"),
            "noNewPrivileges": _yes(value(unit, "Service", "NoNewPrivileges")),
        }

    def command(self) -> list[str]:
        specFile = self.specDirectory / "spec.json"
        specFile.write_text(json.dumps(self.spec()))
        unshare = shutil.which("unshare") or "/usr/bin/unshare"
        # Standard library only, run by the test's interpreter while still root.
        return [
            unshare,
            "--mount",
            "--propagation",
            "private",
            "--",
            sys.executable,
            str(UNITEXEC),
            str(specFile),
        ]

    def childEnvironment(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    def removeScratch(self) -> None:
        super().removeScratch()
        shutil.rmtree(self.specDirectory, ignore_errors=True)
