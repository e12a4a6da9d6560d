"""
``docker-compose.yml`` read as Compose would, without a container engine.

``loadYaml`` uses PyYAML: the test interpreter's if it has it, else Debian's
``python3-yaml`` through ``/usr/bin/python3`` (run-tests installs it when missing).
``interpolate`` applies Compose's variable syntax (``${NAME}``, ``${NAME:-default}``,
``${NAME-default}``, ``${NAME:?error}``, ``${NAME?error}``, ``$$``) to every string,
as ``docker compose`` does with the ``.env`` file's values.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support import REPO_ROOT
from tests.support.requirements import missing

__all__ = ["COMPOSE_PATH", "InterpolationError", "interpolate", "loadYaml"]

COMPOSE_PATH = REPO_ROOT / "docker-compose.yml"
SYSTEM_PYTHON = "/usr/bin/python3"


class InterpolationError(ValueError):
    """A required variable (``${NAME:?message}``) is not set."""


def loadYaml(path: Path) -> Any:
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        yaml = None
    if yaml is not None:
        return yaml.safe_load(path.read_text())
    script = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"
    if os.access(SYSTEM_PYTHON, os.X_OK):
        done = subprocess.run(
            [SYSTEM_PYTHON, "-c", script, str(path)], capture_output=True, text=True, timeout=60
        )
        if done.returncode == 0:
            return json.loads(done.stdout)
        if "No module named 'yaml'" not in done.stderr:
            raise AssertionError(f"PyYAML could not read {path}:\n{done.stderr}")
    missing("PyYAML is not installed (apt-get install python3-yaml; run-tests does)")
    raise AssertionError("unreachable")


_VARIABLE = re.compile(
    r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


def _substitute(text: str, env: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        dollar, braced, operator, argument, bare = match.groups()
        if dollar:
            return "$"
        name = braced or bare
        value = env.get(name)
        if operator in (":-", ":?"):
            unset = not value
        else:
            unset = value is None
        if operator in ("-", ":-"):
            return argument if unset else value  # type: ignore[return-value]
        if operator in ("?", ":?"):
            if unset:
                raise InterpolationError(f"{name}: {argument}")
            return value  # type: ignore[return-value]
        return value or ""

    return _VARIABLE.sub(one, text)


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """``value`` with every string in it interpolated from ``env``."""
    if isinstance(value, str):
        return _substitute(value, env)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value
