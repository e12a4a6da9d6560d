"""
Run the Node scripts in ``tests/node`` (real third-party clients: Faye's, in Node and, through
Node's Playwright, in Chromium) from trial tests.

A script prints one JSON object per line on stdout; ``NodeScript`` collects them as
``events``, lets a test wait for a particular one (``waitFor``) and answer on stdin
(``send``), and finishes with the exit code. Nothing blocks the reactor.

    script = NodeScript("faye-client.js", "roundtrip", server.push)
    result = await script.run()           # or: script.start(); await script.waitFor(...)
    result.events, result.code, result.stderr

The Node packages come from ``tests/node/package-lock.json`` (``npm ci`` in ``run-tests``).
When Node, the packages or Chromium are missing the tests that need them are skipped,
unless ``PANDAPUSH_E2E_REQUIRED=1`` (set by ``run-tests``) makes that a failure instead.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, error
from twisted.internet import reactor as _reactor
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from tests.support import REPO_ROOT
from tests.support.browser import CHROMIUM
from tests.support.requirements import missing

__all__ = ["NODE_DIR", "NodeResult", "NodeScript", "requireBrowser", "requireNode"]

NODE_DIR = REPO_ROOT / "tests" / "node"

Event = dict[str, Any]


def nodeExecutable() -> str | None:
    return shutil.which("node")


def requireNode() -> str:
    """The node binary, when it and tests/node's packages are installed; else skip (or fail)."""
    node = nodeExecutable()
    if node is None:
        missing("node is not installed")
    if not (NODE_DIR / "node_modules" / "faye" / "package.json").exists():
        missing(f"Node packages not installed: run `npm ci` in {NODE_DIR}")
    return node


def requireBrowser() -> str:
    requireNode()
    if not (NODE_DIR / "node_modules" / "playwright-core" / "package.json").exists():
        missing(f"playwright-core not installed: run `npm ci` in {NODE_DIR}")
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)")
    return CHROMIUM


@dataclass
class NodeResult:
    code: int | None
    events: list[Event]
    stderr: str
    command: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """Everything the script said, for failure messages."""
        lines = [f"$ {' '.join(self.command)}", f"exit code: {self.code}"]
        lines += [json.dumps(e, ensure_ascii=False) for e in self.events]
        if self.stderr:
            lines += ["--- stderr ---", self.stderr]
        return "\n".join(lines)


class _NodeProtocol(ProcessProtocol):
    def __init__(self, script: NodeScript) -> None:
        self.script = script
        self._stdout = b""
        self.stderr = b""

    def outReceived(self, data: bytes) -> None:
        # Split on b"\n" only: JSON text may hold U+2028, a line break to str.splitlines().
        *lines, self._stdout = (self._stdout + data).split(b"\n")
        for line in lines:
            self.script._line(line)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        if self._stdout:
            self.script._line(self._stdout)
            self._stdout = b""
        code: int | None = 0
        if isinstance(reason.value, error.ProcessTerminated):
            code = reason.value.exitCode
            if code is None:
                code = -(reason.value.signal or 0)
        self.script._ended(code, self.stderr.decode("utf-8", "replace"))


class NodeScript:
    """One run of ``node tests/node/<script> <args...>``."""

    def __init__(
        self,
        script: str,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 90.0,
        reactor: Any = None,
    ) -> None:
        self.command = [nodeExecutable() or "node", str(NODE_DIR / script), *args]
        self.env = dict(env or {})
        self.timeout = timeout
        self.reactor: Any = reactor or _reactor
        self.events: list[Event] = []
        self._result: NodeResult | None = None
        self._finishWaiters: list[defer.Deferred[NodeResult]] = []
        self._waiters: list[tuple[Callable[[Event], bool], defer.Deferred[Event]]] = []
        self._transport: Any = None
        self._timer: Any = None

    def start(self) -> NodeScript:
        env = dict(os.environ)
        env.update(self.env)
        self._transport = IReactorProcess(self.reactor).spawnProcess(
            _NodeProtocol(self), self.command[0], self.command, env=env, path=str(NODE_DIR)
        )
        self._timer = self.reactor.callLater(self.timeout, self._tooLong)
        return self

    async def run(self) -> NodeResult:
        """Start, and wait for the exit."""
        self.start()
        return await self.whenFinished()

    def whenFinished(self) -> defer.Deferred[NodeResult]:
        """Fires with the result once the script has exited (each call its own Deferred)."""
        if self._result is not None:
            return defer.succeed(self._result)
        d: defer.Deferred[NodeResult] = defer.Deferred()
        self._finishWaiters.append(d)
        return d

    def send(self, line: str) -> None:
        """A line on the script's stdin (e.g. a name it waits for after an ``ready`` event)."""
        self._transport.write(line.encode() + b"\n")

    def waitFor(self, predicate: Callable[[Event], bool]) -> defer.Deferred[Event]:
        """The first event, past or future, for which ``predicate`` holds; fails if the script ends first."""
        for event in self.events:
            if predicate(event):
                return defer.succeed(event)
        if self._result is not None:
            return defer.fail(
                AssertionError("script ended without the awaited event:\n" + self.result().describe())
            )
        d: defer.Deferred[Event] = defer.Deferred()
        self._waiters.append((predicate, d))
        return d

    def waitForEvent(self, _event: str, **fields: Any) -> defer.Deferred[Event]:
        return self.waitFor(
            lambda e: e.get("event") == _event and all(e.get(k) == v for k, v in fields.items())
        )

    def kill(self) -> None:
        if self._transport is None or self._result is not None:
            return
        try:
            self._transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass

    async def stop(self) -> None:
        """Kill the script if it still runs and wait for it: for a test's cleanup."""
        if self._transport is None:
            return
        self.kill()
        await self.whenFinished()

    def result(self) -> NodeResult:
        assert self._result is not None, "the script has not ended"
        return self._result

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            return
        try:
            event = json.loads(text)
        except ValueError:
            event = {"event": "unparsed", "line": text}
        self.events.append(event)
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate(event):
                self._waiters.remove(waiter)
                d.callback(event)

    def _ended(self, code: int | None, stderr: str) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._result = NodeResult(code, self.events, stderr, self.command)
        waiters, self._waiters = self._waiters, []
        for _, d in waiters:
            d.errback(AssertionError("script ended without the awaited event:\n" + self._result.describe()))
        finishWaiters, self._finishWaiters = self._finishWaiters, []
        for finished in finishWaiters:
            finished.callback(self._result)

    def _tooLong(self) -> None:
        self.events.append({"event": "killed", "reason": f"still running after {self.timeout}s"})
        self.kill()
