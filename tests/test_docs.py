"""
The documentation stays a front page plus a reference that is true to the code.

README.md is the front page, at most 12 KB; the reference is docs/. Every relative
link in them must reach a file of the repository (and a heading, when it names one),
and docs/configuration.md must name every option of ``twistd pandapush`` and every
environment variable the options' help gives as a default. These are checks a
change to the code can break without touching the docs: a new option, a renamed
page, a heading reworded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from twisted.trial.unittest import TestCase

from pandapush.tap import Options

ROOT = Path(__file__).resolve().parent.parent
README_LIMIT = 12 * 1024

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def withoutCode(text: str) -> str:
    """The text with fenced blocks and inline code removed: links there are examples."""
    return _CODE.sub("", _FENCE.sub("", text))


def links(text: str) -> Iterator[str]:
    for match in _LINK.finditer(withoutCode(text)):
        yield match.group(1)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, punctuation dropped, spaces as dashes."""
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    heading = heading.replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        name, n = base, 0
        while name in found:  # GitHub numbers repeated headings
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def brokenLinks(path: Path, text: str | None = None) -> list[str]:
    """What is wrong with each relative link of ``path`` (or of ``text``, as if it were there)."""
    problems = []
    for target in links(path.read_text(encoding="utf-8") if text is None else text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto: ...: not a file of ours
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        where = f"{path.relative_to(ROOT)}: ({target})"
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{where} points outside the repository")
        elif not resolved.exists():
            problems.append(f"{where}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where}: no heading with that anchor in {resolved.relative_to(ROOT)}")
    return problems


class FrontPageTests(TestCase):
    def test_readmeSize(self) -> None:
        """README.md is a front page: at most 12 KB; the reference belongs in docs/."""
        size = len((ROOT / "README.md").read_bytes())
        self.assertLessEqual(size, README_LIMIT, f"README.md is {size} bytes; move reference text to docs/")

    def test_docsIndexed(self) -> None:
        """Every page of docs/ is listed in docs/README.md, the index."""
        index = set(links((ROOT / "docs" / "README.md").read_text(encoding="utf-8")))
        for page in sorted((ROOT / "docs").glob("*.md")):
            if page.name != "README.md":
                self.assertIn(page.name, index, f"docs/README.md does not list {page.name}")


class LinkTests(TestCase):
    def test_relativeLinks(self) -> None:
        """Every relative link in README.md and docs/ reaches a file (and heading) of the repository."""
        problems = [problem for path in documents() for problem in brokenLinks(path)]
        self.assertEqual(problems, [])

    def test_checkerFindsBrokenLinks(self) -> None:
        """The link check itself: a missing file, a missing heading, a way out of the repository."""
        text = (
            "[a](missing.md) [b](configuration.md#no-such-heading) [c](../../elsewhere.md) "
            "[fine](#channels) [fine](configuration.md#limits) [fine](https://example.com/x.md) "
            "`[code](missing.md)`"
        )
        problems = brokenLinks(ROOT / "docs" / "bayeux.md", text)
        self.assertEqual(len(problems), 3, problems)
        self.assertIn("no such file", problems[0])
        self.assertIn("no heading", problems[1])
        self.assertIn("outside the repository", problems[2])

    def test_slug(self) -> None:
        self.assertEqual(slug("Using every core: `--workers`"), "using-every-core---workers")
        self.assertEqual(slug("In the browser: `/client.js`"), "in-the-browser-clientjs")


class ConfigurationTests(TestCase):
    def setUp(self) -> None:
        self.configuration = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")

    def test_everyOption(self) -> None:
        """Each long option of ``twistd pandapush`` appears as `--name` in docs/configuration.md."""
        names = {name.rstrip("=") for name in Options().longOpt} - {"help", "version"}
        self.assertGreater(len(names), 20)  # the options were found at all
        missing = sorted(name for name in names if f"`--{name}`" not in self.configuration)
        self.assertEqual(missing, [], "options missing from docs/configuration.md")

    def test_everyDefaultVariable(self) -> None:
        """Each $VARIABLE an option's help names as its default is documented."""
        helps = " ".join(str(p[3]) for p in Options.optParameters if len(p) > 3)
        variables = set(re.findall(r"\$([A-Z][A-Z0-9_]+)", helps))
        self.assertIn("REDIS_HOSTS", variables)
        missing = sorted(v for v in variables if f"`{v}`" not in self.configuration)
        self.assertEqual(missing, [], "variables missing from docs/configuration.md")
