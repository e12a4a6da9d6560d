"""
``--log-format json``: the log as one JSON object a line, for log collectors.

Twisted's own JSON format (``twist --log-format json``, what ``--workers`` uses
between processes) is for Twisted to read back: records start with a record
separator, the level is an object, and the message is a format string to apply.
Collectors (Loki, Elasticsearch, CloudWatch, ``jq``) want plain lines with the
message already written out, so this observer writes, for each event::

    {"time": "2026-12-06T08:40:00.123456Z", "level": "info", "namespace": "pandapush.tap",
     "system": "-", "text": "the formatted message", <the event's own fields>...}

and ``"traceback"`` (with ``"exception"``, its type) when a failure is logged.
The event's own fields are the ones its ``Logger`` call was given
(``log.info("client {clientId} gone", clientId=c)`` adds ``"clientId"``); one that
would overwrite a field above is written as ``"field_<name>"``.

Serialising never raises: what JSON cannot hold is written as text (bytes
decoded, ``NaN`` quoted, any other object by its ``repr``, itself guarded),
nesting is cut at :data:`MAX_DEPTH`, and an event that still fails is written as
a record saying so. A log line must never be what takes the server down.
"""

from __future__ import annotations

import json
import math
import signal
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from constantly import NamedConstant
from twisted.logger import FileLogObserver, ILogObserver, formatEvent
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile
from twisted.python.reflect import qual, safe_repr

__all__ = ["FORMATS", "MAX_DEPTH", "eventAsJSONLine", "jsonLineObserver", "jsonLogFor"]

#: The values of ``--log-format``.
FORMATS = ("text", "json")

#: Containers nested deeper than this in a field are written as their ``repr``.
MAX_DEPTH = 6

# Keys of events from the legacy API (``twisted.python.log.msg``), which carry the same
# facts as the log_* keys again: written once, as time/level/system/text.
_LEGACY = frozenset({"message", "isError", "system", "time", "format", "failure", "why", "printed"})


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` as what ``json.dumps`` writes without help, whatever it was."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, NamedConstant):
        return value.name
    if depth < MAX_DEPTH:
        if isinstance(value, Mapping):
            try:
                return {
                    str(k) if isinstance(k, str) else safe_repr(k): _plain(v, depth + 1)
                    for k, v in value.items()
                }
            except Exception:
                pass  # a mapping that fails to iterate: its repr below
        elif isinstance(value, list | tuple | set | frozenset):
            return [_plain(v, depth + 1) for v in value]
    return safe_repr(value)


def _time(event: Mapping[str, Any]) -> str | None:
    when = event.get("log_time")
    if not isinstance(when, int | float):
        return None
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(event: Mapping[str, Any]) -> dict[str, Any]:
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": _time(event),
        "level": level.name if isinstance(level, NamedConstant) else "info",
        "namespace": event.get("log_namespace", "-"),
        "system": _plain(event.get("log_system", "-")),
        "text": formatEvent(dict(event)),
    }
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        record["exception"] = qual(failure.type) if isinstance(failure.type, type) else str(failure.type)
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:
            record["traceback"] = safe_repr(failure)
    legacy = "isError" in event
    for key, value in event.items():
        if key.startswith("log_") or (legacy and key in _LEGACY):
            continue
        name = key if key not in record else f"field_{key}"
        record[name] = _plain(value)
    return record


def eventAsJSONLine(event: Mapping[str, Any]) -> str:
    """One log event as one line of JSON (with its newline); never raises."""
    try:
        return json.dumps(_record(event), ensure_ascii=False, allow_nan=False) + "\n"
    except Exception as e:
        # Only a bug of ours gets here (_plain leaves nothing json cannot write): still a line.
        return (
            json.dumps(
                {
                    "time": _time(event),
                    "level": "error",
                    "namespace": "pandapush.logs",
                    "system": "-",
                    "text": f"could not write a log event as JSON ({safe_repr(e)}): {safe_repr(event)}",
                },
                ensure_ascii=False,
            )
            + "\n"
        )


def jsonLineObserver(outFile: IO[Any]) -> ILogObserver:
    """An observer writing each event to ``outFile`` as a JSON line, flushed at once."""
    return FileLogObserver(outFile, eventAsJSONLine)


def jsonLogFor(config: Any, runner: Any) -> ILogObserver | None:
    """
    With ``--log-format json`` (``config``, a :class:`~pandapush.config.Configuration`)
    outside a worker (a worker logs Twisted's JSON to its parent, which writes its
    events), choose JSON lines for the program running the server, given its options
    (``pandapush.tap.Options.parent``, or twistd's loading a .tac). For ``twistd``: an observer writing where
    twistd would have written text (stdout in the foreground or with ``--logfile -``,
    else the ``--logfile``, ``twistd.log`` by default), for the caller to give twistd
    as the application's ``ILogObserver``; None when ``--logger`` or ``--syslog``
    chose another destination. For ``twist``: its options are told to use this
    format, and None is returned. Without either (a ``.tac`` file): stdout.
    """
    if config.logFormat != "json" or config.worker is not None:
        return None
    if runner is None:
        return jsonLineObserver(sys.stdout)
    if "fileLogObserverFactory" in runner:  # twist: it makes the observer itself, later
        runner["fileLogObserverFactory"] = jsonLineObserver
        return None
    if runner.get("logger") or runner.get("syslog"):
        return None
    name = runner.get("logfile")
    if name == "-" or (not name and runner.get("nodaemon")):
        return jsonLineObserver(sys.stdout)
    logFile = LogFile.fromFullPath(name or "twistd.log")
    _rotateOnSIGUSR1(logFile)
    return jsonLineObserver(logFile)


def _rotateOnSIGUSR1(logFile: LogFile) -> None:
    """As twistd does for its own log file: SIGUSR1 rotates it (unless something else took SIGUSR1)."""
    if signal.getsignal(signal.SIGUSR1) not in (None, signal.SIG_DFL):
        return

    def rotate(signum: int, frame: Any) -> None:
        from twisted.internet import reactor

        reactor.callFromThread(logFile.rotate)  # type: ignore[attr-defined]

    signal.signal(signal.SIGUSR1, rotate)
