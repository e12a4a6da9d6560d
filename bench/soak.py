"""
Soak: two pandapush nodes over a Redis of their own, clients coming and going at random for
a long time, Redis paused and restarted meanwhile; at the end everything must be back where
it started (issue 18).

    .venv/bin/python bench/soak.py --quick              # 5 minutes
    .venv/bin/python bench/soak.py                      # 1 hour
    .venv/bin/python bench/soak.py --duration 900 --source worktree --out soak.json

Everything runs on 127.0.0.1 and stops by itself: a ``redis-server`` of its own on a free
port (no persistence, so a restart comes back empty), an SQLite file, and two nodes A and B
(``bench/faults.py``'s ``Node``: a ``git archive`` of ``--source``, HEAD by default) with
``--redis-hosts``, ``--cluster-limits`` and ``--timeout 10`` (a held connect answers every
10 s, so clients find out sooner that Redis lost their session), other options as shipped.

Load, for ``--duration`` seconds:

- **Witnesses**: a websocket and a long-poller on each node, subscribed to
  ``/<app>/public/faults`` for the whole run, handshaking and subscribing again when told to
  (as ``bench/faults.py``'s clients do); they count what they receive.
- **Traffic**: ``--rate`` messages a second to that channel, nine in ten REST publishes to A,
  one in ten Bayeux publishes from a websocket on A, each numbered (``faults.Traffic``).
- **Churn**: ``--clients`` clients, each in a loop: a websocket or a long-poller (even odds),
  on A or B, subscribing to one of ten public channels or (one in five) joining one of three
  presence rooms with a token, publishing a few messages of its own with the key now and then,
  living 0.5 s to ``--max-life`` (15 s), then leaving: a ``/meta/disconnect`` (2 in 5), a
  websocket close without goodbye or a long-poller that stops polling (1 in 5), or its TCP
  connection aborted (2 in 5).
- **Faults**, at 1/5, 2/5, 3/5 and 4/5 of the run: Redis restarted (SIGTERM, 2 s down, back
  empty), Redis blocked by ``DEBUG SLEEP 3`` (longer than the nodes' 2 s command timeout),
  Redis restarted again, Redis paused by ``CLIENT PAUSE 3000``. At each pause ``--burst``
  (100) more websockets, subscribed just before, go at once while Redis does not answer (a
  third after a ``/meta/disconnect``, a third with a websocket close, a third aborted: the
  destroy leak of issue 18). A pause comes last: a restart, after which the
  nodes write their sessions back, could hide what a pause left behind.

At the end the churn and the traffic stop, the witnesses say goodbye, and the soak waits up to
``--settle`` seconds for the nodes to be back at their baseline (taken after start, before any
client): per node ``pandapush_clients`` and ``pandapush_queued_messages`` (``/metrics``) equal
to it, Redis's keys (``SCAN``, counted by pattern: ``c:*``, ``c:*:subs``, ``s:*``...) equal to
it once the keys that expire by themselves are set aside (a channel's history, ``h:*`` and
``hm:*``, kept ``--history-ttl`` after its last publish: reported with their TTL), and RSS at
most ``--rss-slack-mb`` above the RSS measured after the warm-up (the first 10% of the run:
Python keeps memory it freed, so the process start is no baseline). It also counts the
acknowledged messages (REST 200, successful Bayeux reply) each witness did not receive: outside
the fault windows (from a fault until 15 s after it) there must be none; inside them they are
reported (see docs/guarantees.md for why some may go).

Prints a summary (``--out`` keeps it as JSON); exits 1 if something is not back to its
baseline or an acknowledged message went missing outside a fault window, 2 if it crashed.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import faults  # noqa: E402  (its path setup also makes tests.support importable)
import treq  # noqa: E402
from faults import APP, DATA, KEY, SECRET, Cluster, LPClient, Snapshot, Traffic, WSClient  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from twisted.internet import defer, reactor  # noqa: E402

from pandapush.redis import RedisShard  # noqa: E402
from pandapush.tokens import mintToken  # noqa: E402
from tests.support.failover import FailoverPoller, FailoverWS, subscribeMessage  # noqa: E402
from tests.support.redis import RedisProcess  # noqa: E402
from tests.support.waiting import sleep  # noqa: E402

CHANNELS = [f"/{APP}/public/churn-{i}" for i in range(10)]
ROOMS = [f"/{APP}/presence/churn-room-{i}" for i in range(3)]
NAMESPACE = "faults"  # faults.Cluster's
#: The collector's lock (``<ns>:gc``) comes and goes with its TTL: reported, not compared.
TRANSIENT = {"gc"}
SUFFIXES = {"subs", "pres", "parked"}


def now() -> float:
    return reactor.seconds()  # type: ignore[attr-defined,no-any-return]


# -- what is measured --------------------------------------------------------------------


def rss(pid: int | None) -> float:
    """A process's resident memory in MB (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def metrics(url: str) -> dict[str, float]:
    response = await treq.get(f"{url}/metrics", persistent=False, timeout=10)
    text = (await response.content()).decode()
    wanted = ("pandapush_clients", "pandapush_queued_messages", "pandapush_subscriptions")
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in wanted
    }


def pattern(key: str) -> str:
    """``faults:c:<id>:subs`` -> ``c:*:subs``: keys counted by kind, not by name."""
    parts = key.split(":")
    if len(parts) < 2:
        return key
    if len(parts) == 2:
        return parts[1]
    if parts[1] == "lim":  # --cluster-limits: lim:nodes, lim:n:<node>, lim:r:<key>
        return ":".join(parts[1:3]) + (":*" if len(parts) > 3 else "")
    last = f":{parts[-1]}" if len(parts) > 3 and parts[-1] in SUFFIXES else ""
    return f"{parts[1]}:*{last}"


async def redisKeys(shard: RedisShard) -> dict[str, int]:
    counts: Counter[str] = Counter()
    cursor = "0"
    while True:
        cursor, keys = await shard.execute("SCAN", cursor, "MATCH", f"{NAMESPACE}:*", "COUNT", 1000)
        counts.update(pattern(k) for k in keys)
        if str(cursor) == "0":
            return dict(sorted(counts.items()))


class Soak:
    def __init__(self, options: argparse.Namespace, cluster: Cluster) -> None:
        self.options = options
        self.cluster = cluster
        self.urls = [cluster.a.url, cluster.b.url]
        self.shard = RedisShard(reactor, cluster.redis.address, commandTimeout=10)
        self.stopping = False
        self.churn: Counter[str] = Counter()
        self.windows: list[tuple[float, float, str]] = []
        self.log: list[str] = []
        self.pauses: list[dict[str, Any]] = []
        self.background: list[defer.Deferred[None]] = []

    def say(self, text: str) -> None:
        line = f"[{now() - self.started:7.1f}s] {text}"
        self.log.append(line)
        print(line, flush=True)

    async def state(self) -> dict[str, Any]:
        nodes = {}
        for name, node in (("A", self.cluster.a), ("B", self.cluster.b)):
            try:
                figures: dict[str, Any] = await metrics(node.url)
            except Exception as e:
                figures = {"error": type(e).__name__}
            figures["rss_mb"] = round(rss(node.pid), 1)
            nodes[name] = figures
        try:
            keys: Any = await redisKeys(self.shard)
        except Exception as e:
            keys = {"error": type(e).__name__}
        return {"nodes": nodes, "keys": keys}

    # -- churn

    async def churner(self, number: int) -> None:
        rng = random.Random(number)
        while not self.stopping:
            try:
                await self.oneLife(rng)
            except Exception as e:
                self.churn[f"failed: {type(e).__name__}"] += 1
                await sleep(0.5)

    async def oneLife(self, rng: random.Random) -> None:
        url = rng.choice(self.urls)
        presence = rng.random() < 0.2
        channel = rng.choice(ROOMS) if presence else rng.choice(CHANNELS)
        ext = None
        if presence:
            token = mintToken(KEY, SECRET, channel, sub=True, presence={"id": f"m{rng.randrange(10**6)}"})
            ext = {"auth": {"token": token}}
        ending = rng.choices(["disconnect", "close", "abort"], [2, 1, 2])[0]
        life = rng.uniform(0.5, self.options.max_life)
        publishes = rng.randrange(4) if rng.random() < 0.3 else 0
        if rng.random() < 0.5:
            ws = FailoverWS([url], "churn", failover=False)
            try:
                await defer.ensureDeferred(ws.start()).addTimeout(10, reactor)
                await ws.subscribe(channel, ext)
                self.churn["websocket"] += 1
                for n in range(publishes):
                    await ws.call(
                        {
                            "channel": rng.choice(CHANNELS),
                            "data": {"n": n},
                            "ext": {"auth": {"key": KEY, "secret": SECRET}},
                        }
                    )
                await sleep(life)
            finally:
                await self.endWebsocket(ws, ending)
        else:
            lp = FailoverPoller([url], "churn", [subscribeMessage(channel, ext)], connectTimeout=20)
            try:
                await defer.ensureDeferred(lp.start()).addTimeout(10, reactor)
                self.churn["long-poll"] += 1
                for n in range(publishes):
                    await lp.post(
                        [
                            {
                                "channel": rng.choice(CHANNELS),
                                "clientId": lp.clientId,
                                "data": {"n": n},
                                "ext": {"auth": {"key": KEY, "secret": SECRET}},
                            }
                        ]
                    )
                await sleep(life)
            finally:
                await self.endPoller(lp, ending)
        self.churn[ending] += 1

    async def endWebsocket(self, ws: FailoverWS, ending: str) -> None:
        ws.failover = False
        if ending == "disconnect" and ws.protocol is not None:
            try:
                await ws.disconnect()
            except Exception:
                pass
        if ending == "close" and ws.protocol is not None:
            ws.stopped = True
            ws.protocol.sendClose()
            await sleep(0.2)
        ws.stop()

    async def endPoller(self, lp: FailoverPoller, ending: str) -> None:
        if ending == "disconnect" and lp.clientId is not None:
            lp.stopped = True
            try:
                await lp.post([{"channel": "/meta/disconnect", "clientId": lp.clientId}], timeout=5)
            except Exception:
                pass
        await lp.stop()

    async def abortBurst(self, count: int) -> list[FailoverWS]:
        """``count`` websockets subscribed now, to be aborted together later."""
        sockets: list[FailoverWS] = []
        for i in range(count):
            ws = FailoverWS([self.urls[i % 2]], "burst", failover=False)
            try:
                await defer.ensureDeferred(ws.start()).addTimeout(5, reactor)
                await ws.subscribe(CHANNELS[i % len(CHANNELS)])
            except Exception:
                ws.stop()
                continue
            sockets.append(ws)
        return sockets

    # -- faults

    async def clients(self) -> float:
        total = 0.0
        for node in (self.cluster.a, self.cluster.b):
            try:
                total += (await metrics(node.url)).get("pandapush_clients", 0.0)
            except Exception:
                pass
        return total

    async def afterPause(self, how: str, before: float) -> None:
        """Clients on both nodes 20 s after a pause (less in short runs), and before its burst."""
        await sleep(min(20.0, self.options.duration / 5))
        self.pauses.append(
            {"pause": how, "clients_before_burst": before, "clients_20s_after": await self.clients()}
        )

    async def pause(self, how: str) -> None:
        before = await self.clients()
        burst = await self.abortBurst(self.options.burst)
        t0 = now()
        self.say(f"Redis paused ({how}), {len(burst)} websockets gone meanwhile")
        pauser = RedisShard(reactor, self.cluster.redis.address, commandTimeout=10)
        command = ("DEBUG", "SLEEP", "3") if how == "DEBUG SLEEP 3" else ("CLIENT", "PAUSE", "3000", "ALL")
        paused = pauser.execute(*command)
        await sleep(0.2)
        for i, ws in enumerate(burst):
            # A third say goodbye first, a third close the websocket, a third drop the TCP connection.
            ws.stopped = True
            if i % 3 == 0 and ws.protocol is not None and ws.clientId is not None:
                goodbye = [{"channel": "/meta/disconnect", "clientId": ws.clientId}]
                ws.protocol.sendMessage(json.dumps(goodbye).encode())
            if i % 3 < 2 and ws.protocol is not None:
                ws.protocol.sendClose()
            else:
                ws.stop()
        self.churn["burst gone"] += len(burst)
        self.background.append(defer.ensureDeferred(self.dropLater(burst)))
        try:
            await paused
        except Exception as e:
            self.say(f"  pause command: {e}")
        if how != "DEBUG SLEEP 3":
            await sleep(3)
        await pauser.close()
        self.windows.append((t0, now() + 15, how))
        self.background.append(defer.ensureDeferred(self.afterPause(how, before)))

    async def dropLater(self, sockets: list[FailoverWS]) -> None:
        await sleep(5)  # whatever did not close cleanly meanwhile
        for ws in sockets:
            ws.stop()

    async def restart(self) -> None:
        t0 = now()
        self.say("Redis restarted (SIGTERM, 2 s down, back empty)")
        await self.cluster.redis.stop()
        await sleep(2)
        await self.cluster.redis.start()
        self.windows.append((t0, now() + 15, "restart"))

    # -- the run

    async def run(self) -> dict[str, Any]:
        options = self.options
        self.started = now()
        baseline = await self.state()
        self.say(f"baseline {json.dumps(baseline)}")
        a, b = self.urls
        dataSub = {"channel": "/meta/subscribe", "subscription": DATA}
        witnesses: list[Any] = [
            await WSClient("ws-A", [a], [dataSub]).start(),
            await WSClient("ws-B", [b], [dataSub]).start(),
            await LPClient("lp-A", [a]).start(),
            await LPClient("lp-B", [b]).start(),
        ]
        publisher = await WSClient("publisher", [a], []).start()
        self.cluster.clients += [*witnesses, publisher]
        await sleep(0.5)
        traffic = Traffic(a, publisher, options.rate)
        traffic.start()
        churners = [defer.ensureDeferred(self.churner(i)) for i in range(options.clients)]
        duration = options.duration
        schedule = [
            (duration * 0.1, "warm"),
            # A pause last: a restart (Redis back empty, sessions written back by their
            # nodes) could otherwise hide what a pause left behind.
            (duration * 0.2, "restart"),
            (duration * 0.4, "DEBUG SLEEP 3"),
            (duration * 0.6, "restart"),
            (duration * 0.8, "CLIENT PAUSE 3000"),
        ]
        warm: dict[str, Any] = {}
        samples = []
        for at, what in [*schedule, (duration, "end")]:
            while now() - self.started < at:
                await sleep(min(10.0, at - (now() - self.started)))
                if now() - self.started >= len(samples) * 60:
                    sample = await self.state()
                    samples.append({"t": round(now() - self.started), **sample})
                    self.say(f"{json.dumps(sample)} churn {dict(self.churn)}")
            if what == "warm":
                warm = await self.state()
                self.say(f"after warm-up {json.dumps(warm)}")
            elif what == "restart":
                await self.restart()
            elif what != "end":
                await self.pause(what)
        await defer.DeferredList(self.background)
        self.say("stopping: churn, traffic, witnesses")
        self.stopping = True
        await defer.DeferredList(churners)
        traffic.stop()
        await sleep(3)
        misses = self.misses(traffic, witnesses)
        for client in [*witnesses, publisher]:
            client.stopped = True
            if isinstance(client, WSClient):
                try:
                    await client.disconnect()
                except Exception:
                    pass
                client.stop()
            else:
                try:
                    await client.post(
                        [{"channel": "/meta/disconnect", "clientId": client.clientId}], timeout=5
                    )
                except Exception:
                    pass
                await client.stop()
        self.cluster.clients.clear()
        settled, final, problems = await self.settle(baseline, warm)
        return {
            "duration_s": duration,
            "rate": options.rate,
            "clients": options.clients,
            "churn": dict(self.churn),
            "faults": [[round(t0 - self.started, 1), what] for t0, _, what in self.windows],
            "pauses": self.pauses,
            "published": len(traffic.publications),
            "acknowledged": sum(1 for p in traffic.publications.values() if p.acked),
            "misses": misses,
            "baseline": baseline,
            "warm": warm,
            "final": final,
            "settled_after_s": settled,
            "samples": samples,
            "problems": problems,
        }

    def misses(self, traffic: Traffic, witnesses: list[Any]) -> dict[str, Any]:
        acked = {seq: p for seq, p in traffic.publications.items() if p.acked}

        def window(sent: float) -> str | None:
            return next((what for start, end, what in self.windows if start - 0.5 <= sent <= end), None)

        out = {}
        for w in witnesses:
            missed = [seq for seq in acked if seq not in w.got]
            during = [w for w in (window(acked[seq].sent) for seq in missed) if w is not None]
            out[w.name] = {
                "received": len(w.got),
                "missed_outside_faults": len(missed) - len(during),
                "missed_in_fault_windows": len(during),
                "missed_by_fault": dict(Counter(during)),
                "duplicates": w.duplicates,
                "handshakes": w.handshakes,
            }
        return out

    async def settle(
        self, baseline: dict[str, Any], warm: dict[str, Any]
    ) -> tuple[float | None, Any, list[str]]:
        started = now()
        problems: list[str] = []
        final: dict[str, Any] = {}
        while True:
            final = await self.state()
            final["expiring"] = await self.expiring(baseline["keys"], final["keys"])
            problems = self.compare(baseline, warm, final)
            if not problems:
                return round(now() - started, 1), final, []
            if now() - started > self.options.settle:
                return None, final, problems
            await sleep(2)

    def compare(self, baseline: dict[str, Any], warm: dict[str, Any], final: dict[str, Any]) -> list[str]:
        problems = []
        for name, figures in final["nodes"].items():
            base = baseline["nodes"][name]
            for metric in ("pandapush_clients", "pandapush_queued_messages"):
                if figures.get(metric) != base.get(metric):
                    problems.append(f"{name} {metric}: {figures.get(metric)} (baseline {base.get(metric)})")
            limit = (
                warm.get("nodes", {}).get(name, {}).get("rss_mb", base["rss_mb"]) + self.options.rss_slack_mb
            )
            if figures["rss_mb"] > limit:
                problems.append(f"{name} RSS {figures['rss_mb']} MB (after warm-up + slack: {limit:.1f})")
        if isinstance(final["keys"], dict) and isinstance(baseline["keys"], dict):
            # Keys beyond the baseline that expire by themselves (a channel's history, kept
            # --history-ttl after its last publish) are reported, not counted against it.
            expiring = final.get("expiring", {})
            keys = {
                k: v - expiring.get(k, {}).get("keys", 0)
                for k, v in final["keys"].items()
                if k not in TRANSIENT
            }
            keys = {k: v for k, v in keys.items() if v}
            base = {k: v for k, v in baseline["keys"].items() if k not in TRANSIENT}
        else:
            keys, base = final["keys"], baseline["keys"]
        if keys != base:
            problems.append(f"Redis keys without an expiry {keys} (baseline {base})")
        return problems

    async def expiring(self, baseline: Any, keys: Any) -> dict[str, Any]:
        """Per pattern with more keys than at baseline: how many of them expire, and the latest in s."""
        if not isinstance(baseline, dict) or not isinstance(keys, dict):
            return {}
        grown = {k for k, v in keys.items() if v > baseline.get(k, 0) and k not in TRANSIENT}
        out: dict[str, Any] = {}
        try:
            cursor = "0"
            while True:
                cursor, names = await self.shard.execute(
                    "SCAN", cursor, "MATCH", f"{NAMESPACE}:*", "COUNT", 1000
                )
                for name in names:
                    kind = pattern(name)
                    if kind in grown:
                        ttl = int(await self.shard.execute("PTTL", name))
                        if ttl > 0:
                            entry = out.setdefault(kind, {"keys": 0, "latest_s": 0.0})
                            entry["keys"] += 1
                            entry["latest_s"] = max(entry["latest_s"], round(ttl / 1000, 1))
                if str(cursor) == "0":
                    return out
        except Exception:
            return out


def verdict(result: dict[str, Any]) -> list[str]:
    failures = list(result["problems"])
    for name, info in result["misses"].items():
        if info["missed_outside_faults"]:
            failures.append(
                f"{name} missed {info['missed_outside_faults']} acknowledged messages outside faults"
            )
    return failures


def printSummary(result: dict[str, Any], commit: str) -> None:
    print(
        f"\n## Soak: pandapush {commit}, {result['duration_s']:g} s, {result['clients']} churning clients, "
        f"{result['rate']:g} msgs/s"
    )
    print(f"  faults (s from start)        {result['faults']}")
    print(f"  churn                        {result['churn']}")
    for pause in result["pauses"]:
        print(
            f"  {pause['pause']:28} clients {pause['clients_before_burst']:g} before the burst, "
            f"{pause['clients_20s_after']:g} 20 s after"
        )
    print(f"  published / acknowledged     {result['published']} / {result['acknowledged']}")
    for name, info in result["misses"].items():
        print(
            f"  {name:6} received {info['received']}, missed outside faults {info['missed_outside_faults']}, "
            f"in fault windows {info['missed_in_fault_windows']} {info['missed_by_fault'] or ''}, "
            f"duplicates {info['duplicates']}, "
            f"handshakes {info['handshakes']}"
        )
    for label in ("baseline", "warm", "final"):
        state = result[label]
        nodes = "; ".join(
            f"{n}: clients {f.get('pandapush_clients')}, queued {f.get('pandapush_queued_messages')}, "
            f"RSS {f.get('rss_mb')} MB"
            for n, f in state.get("nodes", {}).items()
        )
        print(f"  {label:8} {nodes}; Redis keys {state.get('keys')}")
    if result["final"].get("expiring"):
        print(f"  expiring by themselves       {result['final']['expiring']}")
    print(f"  back to baseline after       {result['settled_after_s']} s")
    failures = verdict(result)
    print("  verdict                      " + ("OK" if not failures else "FAILED: " + "; ".join(failures)))
    sys.stdout.flush()


async def main(options: argparse.Namespace) -> dict[str, Any]:
    snapshot = Snapshot(options.source)
    options.server_args = ["--cluster-limits", "--timeout", "10", *options.server_args]
    # faults.Cluster reads the fault it is built for: the soak makes its own (no AOF).
    options.fault = "soak"
    faults.Node.snapshot = snapshot
    cluster = Cluster(options, snapshot)
    # DEBUG SLEEP is refused unless enabled (Redis 7); "local": from 127.0.0.1 only.
    redis = RedisProcess(args=["--enable-debug-command", "local"])
    redis.port = cluster.redis.port  # the port the nodes were given
    cluster.redis = redis
    print(f"pandapush {snapshot.commit}, soak of {options.duration:g} s", flush=True)
    try:
        await cluster.start()
        soak = Soak(options, cluster)
        try:
            result = await soak.run()
        finally:
            await soak.shard.close()
        result["commit"] = snapshot.commit
        result["log_tail"] = soak.log[-20:]
        printSummary(result, snapshot.commit)
        return result
    finally:
        await cluster.stop()
        snapshot.remove()


def parseArguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=3600, help="seconds of load (default 1 h)")
    parser.add_argument("--quick", action="store_true", help="5 minutes (--duration 300)")
    parser.add_argument("--clients", type=int, default=60, help="churning clients at a time")
    parser.add_argument("--rate", type=float, default=50, help="witnessed messages published per second")
    parser.add_argument("--burst", type=int, default=100, help="websockets aborted together at each pause")
    parser.add_argument("--max-life", type=float, default=15, help="longest life of a churning client (s)")
    parser.add_argument("--settle", type=float, default=90, help="seconds allowed to get back to baseline")
    parser.add_argument("--rss-slack-mb", type=float, default=30, help="RSS growth allowed after the warm-up")
    parser.add_argument("--source", default="HEAD", help="git revision the nodes run, or 'worktree'")
    parser.add_argument("--out", help="write the result here, as JSON")
    parser.add_argument("server_args", nargs="*", help="more pandapush options for both nodes, after --")
    options = parser.parse_args(argv)
    if options.quick:
        options.duration = 300
    return options


def run(argv: list[str]) -> int:
    options = parseArguments(argv)
    outcome: dict[str, Any] = {}
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def begin() -> None:
        d = defer.ensureDeferred(main(options))
        d.addCallbacks(lambda result: outcome.update(result=result), lambda f: outcome.update(crash=f))
        d.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]

    reactor.callWhenRunning(begin)  # type: ignore[attr-defined]
    started = time.monotonic()
    reactor.run()  # type: ignore[attr-defined]
    if "crash" in outcome:
        print(outcome["crash"].getTraceback(), file=sys.stderr)
        return 2
    result = outcome["result"]
    result["wall_s"] = round(time.monotonic() - started, 1)
    if options.out:
        Path(options.out).write_text(json.dumps(result, indent=2) + "\n")
    return 1 if verdict(result) else 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
