"""
``--log-format json``: one JSON object a line (``pandapush/logs.py``).

The serialiser is tested in this process with the events a server can meet (fields
JSON cannot hold, hostile ``repr``, cycles, failures, legacy events); then real servers
in child processes: ``twistd -n pandapush --log-format json``, the same under
``twist``, and ``--workers 2``, whose workers' events reach the parent's log. Every
line each one printed must parse as JSON, and a known event must carry its fields.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import treq
from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from pandapush.logs import MAX_DEPTH, eventAsJSONLine, jsonLineObserver, jsonLogFor
from pandapush.tap import Options
from tests.support.process import PandapushProcess
from tests.support.waiting import eventually
from tests.test_workers import WorkersCase


class _Hostile:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class _Sink(io.StringIO):
    """Keeps each write apart: one per event."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[str] = []

    def write(self, text: str) -> int:
        self.written.append(text)
        return len(text)


def _logged(**fields: Any) -> dict[str, Any]:
    """What one ``Logger.info`` call with ``fields`` becomes, parsed back."""
    sink = _Sink()
    publisher = LogPublisher(jsonLineObserver(sink))
    Logger(namespace="test.logs", observer=publisher).info("hello {name}", **fields)
    (line,) = sink.written
    assert line.endswith("\n") and "\n" not in line[:-1], line
    return json.loads(line)


class JSONLineTests(TestCase):
    def test_coreFieldsAndOwnFields(self) -> None:
        """time (UTC, ISO 8601), level, namespace, system, the formatted text, then the event's fields."""
        record = _logged(name="world", clientId="abc", count=3)
        self.assertEqual(record["level"], "info")
        self.assertEqual(record["namespace"], "test.logs")
        self.assertEqual(record["text"], "hello world")
        self.assertEqual((record["name"], record["clientId"], record["count"]), ("world", "abc", 3))
        self.assertRegex(record["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        self.assertFalse([k for k in record if k.startswith("log_")], record)

    def test_whatJSONCannotHold(self) -> None:
        """bytes, NaN, sets, non-string keys, objects, a failing repr and a cycle: written as text."""
        cycle: list[Any] = []
        cycle.append(cycle)
        record = _logged(
            name=b"\xffbytes",
            nan=math.nan,
            inf=-math.inf,
            items={1, 2},
            keys={(1, 2): "tuple key", 3: "int key"},
            thing=object(),
            hostile=_Hostile(),
            cycle=cycle,
            text="mine",
        )
        self.assertTrue(record["text"].startswith("hello "))
        self.assertEqual(record["name"], "\ufffdbytes")
        self.assertEqual((record["nan"], record["inf"]), ("nan", "-inf"))
        self.assertEqual(sorted(record["items"]), [1, 2])
        self.assertEqual(record["keys"], {"(1, 2)": "tuple key", "3": "int key"})
        self.assertIn("object object at", record["thing"])
        self.assertIn("RuntimeError", record["hostile"])
        depth, value = 0, record["cycle"]
        while isinstance(value, list):
            depth, value = depth + 1, value[0]
        self.assertEqual(depth, MAX_DEPTH)
        self.assertIsInstance(value, str)
        # A field named like a core field does not replace it.
        self.assertEqual((record["text"][:6], record["field_text"]), ("hello ", "mine"))

    def test_failure(self) -> None:
        """A logged failure: its exception type and traceback."""
        sink = _Sink()
        log = Logger(namespace="test.logs", observer=LogPublisher(jsonLineObserver(sink)))
        try:
            _ = 1 / 0
        except ZeroDivisionError:
            log.failure("dividing {what}", Failure(), what="badly")
        record = json.loads(sink.written[0])
        self.assertEqual(
            (record["level"], record["text"], record["what"]), ("critical", "dividing badly", "badly")
        )
        self.assertEqual(record["exception"], "builtins.ZeroDivisionError")
        self.assertIn("ZeroDivisionError", record["traceback"])
        self.assertIn("_ = 1 / 0", record["traceback"])

    def test_legacyEvent(self) -> None:
        """An event of twisted.python.log's kind: its text once, not its message tuple again."""
        event = {
            "message": ("PandapushSite starting on 3000",),
            "isError": 0,
            "system": "-",
            "time": 0.0,
            "log_time": 0.0,
            "log_text": "PandapushSite starting on 3000",
            "log_format": "{log_text}",
            "log_namespace": "log_legacy",
            "log_level": LogLevel.info,
        }
        record = json.loads(eventAsJSONLine(event))
        self.assertEqual(record["text"], "PandapushSite starting on 3000")
        self.assertEqual(record["time"], "1970-01-01T00:00:00.000000Z")
        self.assertNotIn("message", record)
        self.assertNotIn("isError", record)

    def test_unformattable(self) -> None:
        """A format string its fields do not fit still gives a line (saying so)."""
        record = json.loads(eventAsJSONLine({"log_format": "{missing.attr}", "log_level": LogLevel.info}))
        self.assertIn("Unable to format event", record["text"])

    def test_optionChecked(self) -> None:
        """--log-format and PANDAPUSH_LOG_FORMAT take text or json, and nothing else."""
        options = Options()
        options.parseOptions(["--log-format", "json"])
        self.assertEqual(options.configuration.logFormat, "json")
        options = Options()
        options.parseOptions([])
        self.assertEqual(options.configuration.logFormat, "text")
        from pandapush.config import Configuration, ConfigurationError

        self.assertEqual(Configuration.fromOptions({}, {"PANDAPUSH_LOG_FORMAT": "json"}).logFormat, "json")
        with self.assertRaises(ConfigurationError) as caught:
            Configuration.fromOptions({"log-format": "xml"}, {})
        self.assertIn("text, json", str(caught.exception))


class LogFileTests(TestCase):
    async def test_logfileRotatedOnSIGUSR1(self) -> None:
        """
        Daemonized (twistd --logfile): JSON lines go to the file twistd would write, and
        SIGUSR1 rotates it, as it does twistd's own.
        """
        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        path = Path(self.mktemp())
        config = SimpleNamespace(logFormat="json", worker=None)
        twistd = {"logfile": str(path), "nodaemon": False, "logger": None, "syslog": False}
        observer = jsonLogFor(config, twistd)
        assert observer is not None
        Logger(namespace="test.logs", observer=observer).info("before {n}", n=1)
        os.kill(os.getpid(), signal.SIGUSR1)
        await eventually(lambda: Path(f"{path}.1").exists())
        Logger(namespace="test.logs", observer=observer).info("after {n}", n=2)
        self.assertEqual(json.loads(Path(f"{path}.1").read_text())["n"], 1)
        self.assertEqual(json.loads(path.read_text())["n"], 2)

    def test_notInWorkersNorForText(self) -> None:
        """A worker logs Twisted's JSON to its parent; text is twistd's own: no observer from us."""
        runner = {"logfile": None, "nodaemon": True}
        self.assertIsNone(jsonLogFor(SimpleNamespace(logFormat="text", worker=None), runner))
        self.assertIsNone(jsonLogFor(SimpleNamespace(logFormat="json", worker=object()), runner))
        self.assertIsNone(jsonLogFor(SimpleNamespace(logFormat="json", worker=None), {"logger": "x.y"}))


class TwistdProcess(PandapushProcess):
    """The server as production runs it: ``twistd -n --pidfile= pandapush``."""

    def command(self) -> list[str]:
        listen = f"tcp:{self.port}:interface=127.0.0.1"
        return [
            str(Path(sys.executable).with_name("twistd")),
            "-n",
            "--pidfile=",
            "pandapush",
            "--listen",
            listen,
            *self.args,
        ]


def _records(server: PandapushProcess) -> list[dict[str, Any]]:
    """Every line the server printed, parsed; a line that is not a JSON object fails the test."""
    records = []
    for line in server.output:
        text = line.split("] ", 1)[1]
        if text.startswith("$ "):
            continue  # the command line the test support wrote
        record = json.loads(text)
        assert isinstance(record, dict), text
        records.append(record)
    return records


class JSONLogProcessTests(TestCase):
    timeout = 60

    async def _checkServer(self, kind: type[PandapushProcess]) -> list[dict[str, Any]]:
        server = await kind.started(
            self, "--log-format", "json", env={"DATABASE": "memory", "AUTH_METHOD": "none"}
        )
        response = await treq.get(server.url + "/no/such/page", persistent=False)
        await response.content()
        code = await server.stop()
        self.assertIn(code, (0, 1, -15))
        records = _records(server)
        listening = [
            r for r in records if r.get("namespace") == "pandapush.services.StorageService" and "url" in r
        ]
        self.assertEqual([r["url"] for r in listening], [server.url], records)
        self.assertEqual(listening[0]["level"], "info")
        self.assertIn(server.url, listening[0]["text"])
        return records

    async def test_twistd(self) -> None:
        """twistd -n pandapush --log-format json: every line a JSON object; a known event with its fields."""
        records = await self._checkServer(TwistdProcess)
        self.assertIn("twistd", records[0]["text"])

    async def test_twist(self) -> None:
        """The same under twist (python -m twisted), whose own --log-format is overridden."""
        await self._checkServer(PandapushProcess)

    async def test_environment(self) -> None:
        """PANDAPUSH_LOG_FORMAT=json (the container's way) does the same."""
        server = await TwistdProcess.started(
            self, env={"DATABASE": "memory", "AUTH_METHOD": "none", "PANDAPUSH_LOG_FORMAT": "json"}
        )
        await server.stop()
        self.assertTrue(any("url" in r for r in _records(server)))


class JSONLogWorkersTests(WorkersCase):
    async def test_workersEventsInParentsLog(self) -> None:
        """--workers 2 --log-format json: the workers' events come out of the parent as JSON lines too."""
        server = await self.startWorkers(2, kind=TwistdProcess, extra=("--log-format", "json"))
        await self.workerPids(server, 2)

        def workerLines() -> list[dict[str, Any]]:
            return [r for r in _records(server) if str(r.get("system", "")).startswith("worker-1 ")]

        await eventually(lambda: self.assertTrue(workerLines(), server.log()))
        await server.stop()
        records = _records(server)
        self.assertTrue(any(r.get("namespace") == "pandapush.workers.pool.WorkerPool" for r in records))
        for record in workerLines():
            self.assertIn(record["level"], ("debug", "info", "warn", "error", "critical"))
            self.assertIsInstance(record["namespace"], str)
            self.assertIsInstance(record["text"], str)
