"""
The shape of the code, checked: packages import each other one way only, and no module
or class grows past what one reader can hold.

``LAYERS`` is the order of ARCHITECTURE.md, bottom first. A module may import from its
own package and from packages in lower layers, never from a higher or a sibling one in the
same layer; imports under ``TYPE_CHECKING`` count too, since an annotation is a dependency a
reader must follow. A new package goes into the list where it belongs, or the test fails.

Two places differ from the first draft of the list. ``services`` (the service classes
``tap`` assembles: ``BayeuxService``, ``StorageService``, ``PandapushService`` and the
``Server`` it returns) is new: above ``web`` and ``workers``, whose pieces a ``Server``
holds, below ``tap``. ``publisher`` and ``cli`` were one layer, but the command uses the
library (``pandapush publish``), so the library is the layer below.
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import TestCase

PACKAGE = Path(__file__).resolve().parents[1] / "pandapush"

#: Bottom first. Parts in one tuple are one layer: they must not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("_deferred", "_process", "logs"),
    ("bayeux",),
    ("interfaces",),
    ("listeners",),
    ("storage", "redis", "tokens"),
    ("engines", "router", "transports"),
    ("auth",),
    ("extensions", "webhooks"),
    ("web",),
    ("config",),
    ("workers",),
    ("services",),
    ("tap",),
    ("publisher",),
    ("cli",),
]

MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 300


def _part(module: str) -> str:
    """``pandapush.engines.redis.engine`` -> ``engines``; ``pandapush`` -> ``pandapush``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _moduleName(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    module = _moduleName(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            found.append((name, node.lineno))
    return [(name, line) for name, line in found if name == "pandapush" or name.startswith("pandapush.")]


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


class ArchitectureTests(TestCase):
    def test_everyPartHasALayer(self) -> None:
        """Every module and package of pandapush/ is placed in LAYERS (the package root aside)."""
        placed = {part for layer in LAYERS for part in layer}
        unplaced = sorted({_part(_moduleName(p)) for p in _sources()} - placed - {"pandapush", "__main__"})
        self.assertEqual(unplaced, [], "add these to LAYERS (and to ARCHITECTURE.md)")

    def test_importsGoDown(self) -> None:
        """No part imports a part of a higher layer or of its own layer."""
        rank = {part: index for index, layer in enumerate(LAYERS) for part in layer}
        wrong: list[str] = []
        for path in _sources():
            here = _part(_moduleName(path))
            for name, line in _imports(path):
                there = _part(name)
                if there in (here, "pandapush") or here not in rank or there not in rank:
                    continue
                if rank[there] >= rank[here]:
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
        self.assertEqual(wrong, [])

    def test_modulesAreSmall(self) -> None:
        """No module is over MAX_MODULE_LINES lines."""
        long = [
            f"{p.relative_to(PACKAGE.parent)}: {n}"
            for p in _sources()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
        ]
        self.assertEqual(long, [])

    def test_classesAreSmall(self) -> None:
        """No class is over MAX_CLASS_LINES lines."""
        long: list[str] = []
        for path in _sources():
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_CLASS_LINES:
                        long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: {lines}")
        self.assertEqual(long, [])
