"""
The commands the deployment docs tell an operator to type exist as written.

docs/operations.md walks a newcomer from nothing to two nodes, and docs/deployment.md
does it three ways; both are mostly shell. A renamed subcommand or option, or a
moved file under ``deploy/``, would leave them wrong without a word. So each shell
block is read: every ``pandapush`` command line is parsed by the command's own
parser (placeholders such as ``<key id>`` standing for any word), every option given
to ``twistd pandapush`` (on its command line or in ``PANDAPUSH_ARGS``) is one the
server has, every variable of an environment file is one docs/configuration.md
documents, and every ``deploy/`` or ``docs/`` file named exists.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from twisted.trial.unittest import TestCase

from pandapush.cli.main import buildParser
from pandapush.tap import Options

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "docs" / "operations.md", ROOT / "docs" / "deployment.md"]

_SHELL = re.compile(r"^```(?:sh|bash|shell)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_PLACEHOLDER = re.compile(r"<[^<>\n]+>")
_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
_FILE = re.compile(r"(?<![\w/.-])((?:deploy|docs)/[\w./-]+\.\w+)")


def shellLines(text: str) -> list[str]:
    """The lines of every shell block, continuation lines joined, comments dropped."""
    lines: list[str] = []
    for block in _SHELL.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"\s#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(_PLACEHOLDER.sub("X", line))
    return lines


def commands(line: str) -> list[list[str]]:
    """A shell line's simple commands, as words, leading VAR=value assignments left out."""
    found = []
    for part in re.split(r"&&|\|\||;|\|", line):
        try:
            words = shlex.split(part)
        except ValueError:
            continue
        while words and _ASSIGNMENT.match(words[0]):
            words.pop(0)
        if words:
            found.append(words)
    return found


def serverOptions() -> set[str]:
    names = {"help", "version"}
    for entry in [*Options.optParameters, *Options.optFlags]:
        names.add(entry[0])
    return {f"--{name}" for name in names} | {"-l", "-t"}


class DeploymentCommandsTests(TestCase):
    def test_pandapushCommandsParse(self) -> None:
        """Every `pandapush ...` line of the walkthroughs is one the command accepts."""
        checked = 0
        for page in PAGES:
            for line in shellLines(page.read_text(encoding="utf-8")):
                for words in commands(line):
                    # The program itself (first word), or its path given to another (systemd-run).
                    starts = [
                        i
                        for i, w in enumerate(words)
                        if (i == 0 and w.rsplit("/", 1)[-1] == "pandapush") or w.endswith("/bin/pandapush")
                    ]
                    for start in starts[:1]:
                        args = words[start + 1 :]
                        if args[:1] == ["serve"]:
                            continue  # the server's options: checked below
                        parser = buildParser()
                        try:
                            parser.parse_args(args)
                        except SystemExit:
                            self.fail(f"{page.name}: `pandapush {' '.join(args)}` does not parse")
                        checked += 1
        self.assertGreaterEqual(checked, 5)

    def test_serverOptionsExist(self) -> None:
        """Options given to twistd pandapush, on its command line or in PANDAPUSH_ARGS, exist."""
        known = serverOptions()
        checked = 0
        for page in PAGES:
            text = page.read_text(encoding="utf-8")
            given: list[list[str]] = []
            for line in shellLines(text):
                if line.startswith("PANDAPUSH_ARGS="):
                    given.append(shlex.split(line.partition("=")[2]))
                for words in commands(line):
                    names = [w.rsplit("/", 1)[-1] for w in words]
                    if "twistd" in names[:1] and "pandapush" in names:
                        given.append(words[names.index("pandapush") + 1 :])
            for options in given:
                for word in options:
                    if word.startswith("-") and not word.startswith("---"):
                        name = word.split("=", 1)[0]
                        self.assertIn(name, known, f"{page.name}: twistd pandapush has no {name}")
                        checked += 1
        self.assertGreaterEqual(checked, 4)

    def test_environmentFilesDocumented(self) -> None:
        """Each variable an environment file of the walkthroughs sets is documented in configuration.md."""
        configuration = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
        checked = 0
        for page in PAGES:
            for block in _SHELL.findall(page.read_text(encoding="utf-8")):
                if "PANDAPUSH_ARGS=" not in block:
                    continue
                for line in block.splitlines():
                    match = re.match(r"^([A-Z_][A-Z0-9_]*)=", line)
                    if match:
                        self.assertIn(f"`{match.group(1)}`", configuration, f"{page.name}: {line}")
                        checked += 1
        self.assertGreaterEqual(checked, 10)

    def test_filesNamedExist(self) -> None:
        """Every deploy/ or docs/ file the pages name exists in the repository."""
        checked = 0
        for page in PAGES:
            for path in set(_FILE.findall(page.read_text(encoding="utf-8"))):
                self.assertTrue((ROOT / path).exists(), f"{page.name} names {path}, which does not exist")
                checked += 1
        self.assertGreaterEqual(checked, 4)
