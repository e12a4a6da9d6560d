"""
Smoke tests of the benchmark's load generator (``bench/loadgen.js``) against a real pandapush,
and of the soak (``bench/soak.py``) for ten seconds.

A handful of clients only, and nothing about time: benchmarks are not tests. This keeps the
generator honest (it speaks Bayeux the way pandapush answers it, and counts what arrives),
so ``bench/run`` does not silently break. Skipped when Node or ``bench/node_modules`` is
missing (``npm ci`` in ``bench/``), unless ``PANDAPUSH_E2E_REQUIRED=1``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet import defer, protocol, reactor, utils
from twisted.trial.unittest import TestCase

from tests.support import REPO_ROOT
from tests.support.process import PandapushProcess, seededEnvironment
from tests.support.redis import requireRedisServer
from tests.support.requirements import missing, requireExecutable

BENCH = REPO_ROOT / "bench"
APP = "BENCHbenchBENCHbench"
KEY = "PSIDbenchBENCHbench0"
SECRET = "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz"


def _requireGenerator() -> str:
    node = requireExecutable("node", "apt-get install nodejs")
    if not (BENCH / "node_modules" / "ws" / "package.json").exists():
        missing(f"bench's Node packages are not installed: run `npm ci` in {BENCH}")
    return node


class LoadGeneratorSmokeTests(TestCase):
    timeout = 120

    async def _generate(self, *args: str) -> dict[str, Any]:
        node = _requireGenerator()
        server = await PandapushProcess.started(self, env=seededEnvironment(APP, KEY, SECRET))
        out, err, code = await utils.getProcessOutputAndValue(
            node,
            [
                str(BENCH / "loadgen.js"),
                "--url",
                server.push,
                "--app",
                APP,
                "--rest-key",
                KEY,
                "--rest-secret",
                SECRET,
                "--idle-timeout",
                "3000",
                *args,
            ],
            env=dict(os.environ),
            path=str(REPO_ROOT),
        )
        self.assertEqual(code, 0, f"loadgen failed:\n{err.decode()}\n--- server ---\n{server.log()}")
        return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]

    def assertAllDelivered(self, result: dict[str, Any], expected: int) -> None:
        self.assertEqual(
            (
                result["expected"],
                result["delivered"],
                result["lost"],
                result["duplicates"],
                result["dropped"],
            ),
            (expected, expected, 0, 0, 0),
            result,
        )

    async def test_websocketBurst(self) -> None:
        """Every websocket subscriber receives every message published over a websocket, once."""
        result = await self._generate("--subscribers", "5", "--messages", "20")
        self.assertAllDelivered(result, 5 * 20)
        self.assertEqual(result["publishFailures"], 0)

    async def test_longPollingManyChannels(self) -> None:
        """Long-polling subscribers on separate channels each get only their channel's messages."""
        result = await self._generate(
            "--transport", "long-polling", "--subscribers", "4", "--channels", "2", "--messages", "10"
        )
        # 10 messages round-robin over 2 channels, 2 subscribers on each: 5 x 2 x 2.
        self.assertAllDelivered(result, 20)

    async def test_restPublisher(self) -> None:
        """
        The REST publisher (raw keep-alive sockets, several POSTs in flight) gets a 200 for
        every POST, and every subscriber receives every message once.
        """
        result = await self._generate("--rest", "--subscribers", "3", "--messages", "40")
        self.assertAllDelivered(result, 3 * 40)
        self.assertEqual(
            (result["published"], result["publishFailures"], result["restRequests"]), (40, 0, 40)
        )

    async def test_restBatchPublisher(self) -> None:
        """
        The batch_events publisher: 43 messages over 4 channels in batches of at most 10,
        every one acknowledged and delivered once to each of the channel's subscribers.
        """
        result = await self._generate(
            "--rest-batch", "10", "--subscribers", "8", "--channels", "4", "--messages", "43"
        )
        self.assertAllDelivered(result, 2 * 43)
        self.assertEqual((result["published"], result["publishFailures"]), (43, 0))
        self.assertEqual(result["restRequests"], 5)

    async def test_duplicatesCounted(self) -> None:
        """
        A message published twice under one sequence number is counted as a duplicate at every
        subscriber, apart from loss: the check that would show a server delivering twice.
        """
        result = await self._generate("--subscribers", "3", "--messages", "20", "--duplicate-every", "10")
        # Messages 0 and 10 go out twice: 22 publishes, each received by all 3.
        self.assertEqual((result["published"], result["expected"], result["delivered"]), (22, 66, 66), result)
        self.assertEqual((result["lost"], result["duplicates"]), (0, 2 * 3), result)

    async def test_subscriberProcesses(self) -> None:
        """
        Subscribers spread over two child processes (3 and 2 of them, on two channels): the
        parent's figures are the children's summed and put back in subscriber order, so every
        subscriber has exactly its channel's messages, and the latencies cover every delivery.
        """
        result = await self._generate(
            "--subscriber-processes", "2", "--subscribers", "5", "--channels", "2", "--messages", "20"
        )
        # Subscribers 0, 2, 4 on c0 and 1, 3 on c1, 10 messages each: 3 x 10 + 2 x 10.
        self.assertAllDelivered(result, 50)
        self.assertEqual((result["generatorProcesses"], result["starved"]), (3, 0))
        self.assertEqual(result["latencySamples"], 50)
        self.assertGreater(result["latencyP50"], 0)
        self.assertLessEqual(result["latencyP50"], result["latencyMax"])
        self.assertGreater(result["generatorCpu"], 0)

    async def test_subscriberProcessesDuplicates(self) -> None:
        """
        Duplicates are found in each child process and summed: a message published twice
        shows up once per subscriber of its channel, in either process, and is not loss.
        """
        result = await self._generate(
            "--subscriber-processes",
            "2",
            "--subscribers",
            "5",
            "--channels",
            "2",
            "--messages",
            "20",
            "--duplicate-every",
            "10",
        )
        # Messages 0 and 10 (both on c0) twice: c0's 3 subscribers get 12, c1's 2 get 10.
        self.assertEqual(
            (result["published"], result["expected"], result["delivered"], result["lost"]),
            (22, 56, 56, 0),
            result,
        )
        self.assertEqual(result["duplicates"], 2 * 3, result)

    async def test_wildcards(self) -> None:
        """Subscribers on /* and /** patterns receive messages of every channel under them."""
        result = await self._generate(
            "--wildcard", "--subscribers", "4", "--channels", "3", "--messages", "9"
        )
        self.assertAllDelivered(result, 4 * 9)


class SoakSmokeTests(TestCase):
    """
    ``bench/soak.py`` for ten seconds (half a minute in all), six websockets gone at each Redis
    pause: it runs its faults, and finds the nodes back at their baseline.
    """

    timeout = 180

    async def test_shortSoak(self) -> None:
        requireRedisServer()
        out = os.path.abspath(self.mktemp())
        output, err, code = await utils.getProcessOutputAndValue(
            sys.executable,
            [
                str(BENCH / "soak.py"),
                "--duration",
                "10",
                "--clients",
                "4",
                "--rate",
                "10",
                "--max-life",
                "2",
                "--burst",
                "6",
                "--settle",
                "40",
                "--source",
                "worktree",
                "--out",
                out,
                "--",
                "--client-expiry",
                "2",
            ],
            env=dict(os.environ),
            path=str(REPO_ROOT),
        )
        self.assertEqual(code, 0, f"soak failed:\n{output.decode()}\n{err.decode()}")
        with open(out) as f:
            result = json.load(f)
        self.assertEqual(
            [what for _, what in result["faults"]],
            ["restart", "DEBUG SLEEP 3", "restart", "CLIENT PAUSE 3000"],
        )
        self.assertGreater(result["acknowledged"], 0)
        self.assertGreater(result["churn"]["burst gone"], 0)
        self.assertEqual(result["problems"], [])
        for witness in result["misses"].values():
            self.assertGreater(witness["received"], 0)
            self.assertEqual(witness["missed_outside_faults"], 0)
        self.assertEqual(
            {name: node["pandapush_clients"] for name, node in result["final"]["nodes"].items()},
            {"A": 0, "B": 0},
        )


class _Listening(protocol.ProcessProtocol):
    """bench/faye-server.js until its ``listening`` line, then until it exits."""

    def __init__(self) -> None:
        self.listening: defer.Deferred[int] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.output = b""

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.listening.called and b"\n" in self.output:
            self.listening.callback(json.loads(self.output.splitlines()[0])["port"])

    def processEnded(self, reason: Any) -> None:
        if not self.listening.called:
            self.listening.errback(RuntimeError(f"faye-server.js exited: {self.output!r}"))
        self.ended.callback(None)


class FayeHttpPublisherTests(TestCase):
    """
    The generator's ``--http`` and ``--http-batch`` publishers: Faye's side of the REST
    scenarios (Bayeux messages POSTed as plain HTTP, as Faye's documentation publishes from
    a server), against the bench's own Faye.
    """

    timeout = 120

    async def _generate(self, url: str, *args: str) -> dict[str, Any]:
        out, err, code = await utils.getProcessOutputAndValue(
            _requireGenerator(),
            [str(BENCH / "loadgen.js"), "--url", url, "--idle-timeout", "3000", *args],
            env=dict(os.environ),
            path=str(REPO_ROOT),
        )
        self.assertEqual(code, 0, f"loadgen failed:\n{err.decode()}")
        return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]

    async def _faye(self) -> str:
        node = _requireGenerator()
        if not (BENCH / "node_modules" / "faye" / "package.json").exists():
            missing(f"bench's Node packages are not installed: run `npm ci` in {BENCH}")
        process = _Listening()
        transport = reactor.spawnProcess(  # type: ignore[attr-defined]
            process, node, [node, str(BENCH / "faye-server.js"), "0", "5"], env=dict(os.environ)
        )

        async def stop() -> None:
            transport.signalProcess("TERM")
            await process.ended

        self.addCleanup(lambda: defer.ensureDeferred(stop()))
        port = await process.listening
        return f"http://127.0.0.1:{port}/push"

    async def test_httpPublisher(self) -> None:
        """One POST per message, each acknowledged by Faye's ``successful`` reply, each delivered once."""
        url = await self._faye()
        result = await self._generate(
            url, "--http", "--subscribers", "4", "--channels", "2", "--messages", "30"
        )
        self.assertEqual((result["expected"], result["delivered"], result["lost"]), (60, 60, 0), result)
        self.assertEqual(
            (result["published"], result["publishFailures"], result["restRequests"]), (30, 0, 30)
        )

    async def test_httpBatchPublisher(self) -> None:
        """Arrays of up to 10 messages per POST: 23 messages in 3 requests, every reply successful."""
        url = await self._faye()
        result = await self._generate(url, "--http-batch", "10", "--subscribers", "3", "--messages", "23")
        self.assertEqual((result["expected"], result["delivered"], result["lost"]), (69, 69, 0), result)
        self.assertEqual((result["published"], result["publishFailures"], result["restRequests"]), (23, 0, 3))

    async def test_refusedIsAFailure(self) -> None:
        """
        A POST whose replies are not successful is counted as failed: pandapush refuses a
        publish without a handshake's clientId, so every one fails and none is delivered.
        """
        server = await PandapushProcess.started(self, env=seededEnvironment(APP, KEY, SECRET))
        result = await self._generate(
            server.push, "--http", "--app", APP, "--subscribers", "2", "--messages", "10"
        )
        self.assertEqual((result["published"], result["publishFailures"]), (10, 10), result)
        self.assertEqual(result["delivered"], 0)


class RunOptionsTests(TestCase):
    """``bench/run.js`` answers ``--help`` and refuses what it does not know, before starting anything."""

    async def bench(self, *args: str) -> tuple[str, str, int]:
        node = requireExecutable("node", "apt-get install nodejs")
        out, err, code = await utils.getProcessOutputAndValue(
            node, [str(BENCH / "run.js"), *args], env=dict(os.environ), path=str(REPO_ROOT)
        )
        return out.decode(), err.decode(), code

    async def test_help(self) -> None:
        out, err, code = await self.bench("--help")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("bench/run [--quick] [--repeat N] [--only", out)
        self.assertIn("--source", out)

    async def test_unknownOption(self) -> None:
        """A typo is refused (it used to start the full run, a quarter of an hour of both cores)."""
        for args in (["--onyl", "chat"], ["--only"], ["chat"], ["--no-faye", "--bogus"]):
            out, err, code = await self.bench(*args)
            self.assertEqual(code, 2, (args, out, err))
            self.assertIn("unknown option", err)
            self.assertEqual(out, "")
