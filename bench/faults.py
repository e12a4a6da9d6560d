"""
Faults under traffic, measured end to end on two real nodes over Redis (issue 7).

    .venv/bin/python bench/faults.py                    # 3 runs of every fault, median/max table
    .venv/bin/python bench/faults.py --runs 1 --only sigkill
    .venv/bin/python bench/faults.py --source worktree  # the checkout as it is, not HEAD
    .venv/bin/python bench/faults.py --out faults.json  # every figure of every run kept

Everything runs on 127.0.0.1 and stops by itself. For each fault and run it starts, from
scratch: a ``redis-server`` of its own on a free port (``--save "" --appendonly no``: a
restart comes back empty, as a Redis without persistence does), an SQLite file of its
own, and two pandapush nodes A and B (``tests/support/process.py``'s ``PandapushProcess``:
``python -m twisted pandapush`` with ``--redis-hosts``, server defaults otherwise, so
``--client-expiry 10``, ``--timeout 30``, ``--shutdown-grace 5``). By default the nodes run
a ``git archive`` snapshot of HEAD, so uncommitted edits in the checkout do not change the
figures (``--source worktree`` measures the checkout).

Traffic, the same for every fault: ``--rate`` (200) messages a second to
``/<app>/public/faults``, nine in ten as REST publishes to A (keep-alive, key+secret) and
one in ten as Bayeux publishes from a websocket client on A; each carries a sequence
number. Four subscribers: a websocket and a long-poller on A, a websocket and a
long-poller on B. The clients behave as real ones behind a load balancer would: when a
socket or request to B fails they go to A with the same clientId (the session lives in
Redis), and they handshake and subscribe again when told to (``advice.reconnect ==
"handshake"``). Presence: a watcher on A and the websocket on B are members of
``/<app>/presence/room``; a "ghost" member on B never reconnects.

Faults (traffic runs throughout; ``t0`` is the fault):

- ``sigkill``: B killed with SIGKILL. When did B's clients receive again (through A), when
  was the ghost announced gone on A, and which acknowledged messages did each client miss.
- ``redis``: Redis stopped (SIGTERM), started again 2 s later on the same port, empty.
  What publishers got meanwhile (status codes, Bayeux errors, how long they waited), how
  long after Redis was back publishes were acknowledged and received again, and which
  acknowledged messages each client missed.
- ``sigterm``: B sent SIGTERM. How long B took to exit, the close code B's websockets got
  and when B's long-poller was answered, when B's clients received again, and which
  acknowledged messages each client missed.

"Acknowledged" is a REST 200 or a successful Bayeux publish reply. A message counts as
missed by a client when it was acknowledged, the client was subscribed before traffic
started, and the client never received it (the traffic stops, then 3 s pass before
counting). Order is checked too: every subscriber must see the messages it got in the
order of the Bayeux publisher's sequence, and all subscribers in one common order.

Prints one table per run and a summary (median and max over the runs); ``--out`` keeps
everything as JSON. The exit status is 0 unless a run crashed: this measures, it does
not judge (see the README's "Guarantees and limits" for what is promised).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import treq  # noqa: E402
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol  # noqa: E402
from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint  # noqa: E402
from twisted.web.client import HTTPConnectionPool  # noqa: E402

from pandapush.tokens import mintToken  # noqa: E402
from tests.support.ports import freePort  # noqa: E402
from tests.support.process import PandapushProcess  # noqa: E402

APP = "faultsapp00000000001"
KEY = "PSIDfaults0000000001"
SECRET = "faults-bench-secret-0123456789abcdef012345"
ADMIN = ("admin", "faults-admin-password")
DATA = f"/{APP}/public/faults"
ROOM = f"/{APP}/presence/room"
HANDSHAKE = {
    "channel": "/meta/handshake",
    "version": "1.0",
    "supportedConnectionTypes": ["websocket", "long-polling"],
}
FAULTS = ("sigkill", "redis", "sigterm")


def now() -> float:
    return reactor.seconds()  # type: ignore[attr-defined,no-any-return]


def sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


# -- processes -------------------------------------------------------------------------


class Snapshot:
    """The code the nodes run: a ``git archive`` of a revision, or the checkout itself."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.path = REPO
        self.commit = "worktree"
        if source != "worktree":
            self.commit = subprocess.run(
                ["git", "rev-parse", "--short", source], cwd=REPO, check=True, capture_output=True, text=True
            ).stdout.strip()
            self.path = Path(tempfile.mkdtemp(prefix="pandapush-faults-src-"))
            archive = subprocess.run(["git", "archive", source], cwd=REPO, check=True, capture_output=True)
            subprocess.run(["tar", "-x", "-C", str(self.path)], input=archive.stdout, check=True)

    def remove(self) -> None:
        if self.path != REPO:
            shutil.rmtree(self.path, ignore_errors=True)


class Node(PandapushProcess):
    """A pandapush node running ``snapshot``'s code (first on its PYTHONPATH)."""

    snapshot: Snapshot

    def childEnvironment(self) -> dict[str, str]:
        env = super().childEnvironment()
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(self.snapshot.path), os.environ.get("PYTHONPATH")])
        )
        return env


class Redis:
    """A throwaway redis-server on a free port; stopped and started again on the same port."""

    def __init__(self) -> None:
        self.port = freePort()
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise SystemExit("redis-server is not installed")
        argv = [executable, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = now() + 10
        while not reachable(self.port):
            if now() > deadline or self.process.poll() is not None:
                raise SystemExit(f"redis-server on port {self.port} did not start")
            await sleep(0.01)

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        while self.process.poll() is None:
            await sleep(0.01)


# -- clients ---------------------------------------------------------------------------


class Subscriber:
    """What a client received: sequence numbers with their arrival times, presence events."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.got: dict[int, float] = {}
        self.order: list[int] = []
        self.duplicates = 0
        self.presence: list[tuple[float, Any]] = []
        self.events: list[tuple[float, str]] = []
        self.stopped = False

    def note(self, what: str) -> None:
        self.events.append((now(), what))

    def deliver(self, message: dict[str, Any]) -> None:
        if message.get("channel") == DATA and isinstance(message.get("data"), dict):
            seq = message["data"].get("n")
            if seq in self.got:
                self.duplicates += 1
            else:
                self.got[seq] = now()
                self.order.append(seq)
        elif message.get("channel") == ROOM:
            self.presence.append((now(), message.get("data")))


class _WSProtocol(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.owner._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.owner._batch(self, json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.owner._closed(self, code)


class WSClient(Subscriber):
    """
    A websocket Bayeux client: keeps a connect outstanding, subscribes ``subscriptions``,
    handshakes (and subscribes) again when advised to, and when its socket closes opens
    one to the next of ``urls`` with the same clientId, as a client behind a load
    balancer does. ``failover=False``: it stays gone (the ghost).
    """

    def __init__(
        self, name: str, urls: list[str], subscriptions: list[dict[str, Any]], failover: bool = True
    ) -> None:
        super().__init__(name)
        self.urls = urls
        self.index = 0
        self.subscriptions = subscriptions
        self.failover = failover
        self.clientId: str | None = None
        self.protocol: Any = None
        self.closes: list[tuple[float, int | None]] = []
        self._pending: dict[str, defer.Deferred[dict[str, Any]]] = {}
        self._opening: defer.Deferred[Any] | None = None
        self._nextId = 0
        self._recovering = False

    async def _open(self) -> None:
        host, port = self.urls[self.index].split("//")[1].split(":")
        factory = WebSocketClientFactory(f"ws://{host}:{port}/push")
        factory.protocol = _WSProtocol
        factory.owner = self  # type: ignore[attr-defined]
        self._opening = defer.Deferred()
        self._opening.addTimeout(3, reactor)
        await TCP4ClientEndpoint(reactor, host, int(port), timeout=2).connect(factory)
        await self._opening

    def _opened(self, protocol: Any) -> None:
        self.protocol = protocol
        if self._opening is not None and not self._opening.called:
            self._opening.callback(protocol)

    def _send(self, messages: list[dict[str, Any]]) -> None:
        if self.protocol is not None:
            self.protocol.sendMessage(json.dumps(messages).encode())

    def _connect(self) -> None:
        if not self.stopped and self.clientId is not None:
            self._send(
                [{"channel": "/meta/connect", "clientId": self.clientId, "connectionType": "websocket"}]
            )

    def call(self, message: dict[str, Any], timeout: float = 5.0) -> defer.Deferred[dict[str, Any]]:
        self._nextId += 1
        messageId = f"{self.name}-{self._nextId}"
        message = {**message, "id": messageId}
        if self.clientId is not None and message["channel"] != "/meta/handshake":
            message["clientId"] = self.clientId
        d: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._pending[messageId] = d
        d.addTimeout(timeout, reactor)
        d.addBoth(lambda result: (self._pending.pop(messageId, None), result)[1])
        self._send([message])
        return d

    def _batch(self, protocol: Any, batch: list[dict[str, Any]]) -> None:
        for message in batch:
            pending = self._pending.get(str(message.get("id")))
            if pending is not None:
                pending.callback(message)
            elif message.get("channel") == "/meta/connect":
                if protocol is not self.protocol or self.stopped:
                    continue
                if message.get("successful"):
                    self._connect()
                elif (message.get("advice") or {}).get("reconnect") == "handshake":
                    self.recover()
                else:
                    reactor.callLater(0.2, self._connect)  # type: ignore[attr-defined]
            elif "successful" not in message:
                self.deliver(message)

    async def start(self) -> WSClient:
        await self._open()
        await self._handshake()
        return self

    async def _handshake(self) -> None:
        while not self.stopped:
            self.clientId = None
            try:
                reply = await self.call(HANDSHAKE, timeout=3)
            except Exception:
                reply = {}
            if reply.get("successful"):
                self.clientId = reply["clientId"]
                self.note("handshake")
                self._connect()
                break
            await sleep(0.2)
        for subscription in self.subscriptions:
            while not self.stopped and self.protocol is not None:
                try:
                    reply = await self.call(subscription)
                except Exception:
                    reply = {}
                if reply.get("successful"):
                    break
                if "Unknown client" in str(reply.get("error")):
                    self.recover()  # the session is gone (Redis came back empty)
                    return
                await sleep(0.2)

    def recover(self) -> None:
        """Handshake and subscribe again (once at a time)."""
        if self._recovering or self.stopped:
            return
        self._recovering = True

        def done(_: Any) -> None:
            self._recovering = False

        defer.ensureDeferred(self._handshake()).addBoth(done)

    def _closed(self, protocol: Any, code: int | None) -> None:
        if protocol is not self.protocol:
            return
        self.closes.append((now(), code))
        self.protocol = None
        if self.failover and not self.stopped:
            defer.ensureDeferred(self._failover())

    async def _failover(self) -> None:
        while not self.stopped:
            self.index = (self.index + 1) % len(self.urls)
            try:
                await self._open()
            except Exception:
                await sleep(0.1)
                continue
            self.note(f"reopened on {self.urls[self.index]}")
            self._connect()  # same session; an unknown clientId gets handshake advice
            return

    def stop(self) -> None:
        self.stopped = True
        if self.protocol is not None:
            self.protocol.transport.abortConnection()


class LPClient(Subscriber):
    """
    A long-polling client: one connect at a time, each to the current node; a request
    that fails (refused, reset) moves it to the next of ``urls`` with the same clientId.
    """

    def __init__(self, name: str, urls: list[str]) -> None:
        super().__init__(name)
        self.urls = urls
        self.index = 0
        self.clientId: str | None = None
        self.connectReplies: list[tuple[float, bool, dict[str, Any]]] = []
        self.failures: list[tuple[float, str]] = []
        self._loop: defer.Deferred[None] | None = None

    async def post(self, messages: list[dict[str, Any]], timeout: float = 10) -> list[dict[str, Any]]:
        response = await treq.post(
            self.urls[self.index] + "/push",
            data=json.dumps(messages).encode(),
            headers={"Content-Type": "application/json"},
            persistent=False,
            timeout=timeout,
        )
        return json.loads(await response.content())  # type: ignore[no-any-return]

    async def _handshake(self) -> None:
        while not self.stopped:
            try:
                (reply,) = await self.post([HANDSHAKE])
                if reply.get("successful"):
                    self.clientId = reply["clientId"]
                    (reply,) = await self.post(
                        [{"channel": "/meta/subscribe", "clientId": self.clientId, "subscription": DATA}]
                    )
                    if reply.get("successful"):
                        self.note("handshake")
                        return
            except Exception as e:
                self._failed(e)
            await sleep(0.2)

    def _failed(self, e: Exception) -> None:
        self.failures.append((now(), type(e).__name__))
        if len(self.urls) > 1:
            self.index = (self.index + 1) % len(self.urls)
            self.note(f"moved to {self.urls[self.index]}")

    async def start(self) -> LPClient:
        await self._handshake()
        self._loop = defer.ensureDeferred(self._poll())
        return self

    async def _poll(self) -> None:
        while not self.stopped:
            message = {
                "channel": "/meta/connect",
                "clientId": self.clientId,
                "connectionType": "long-polling",
            }
            try:
                replies = await self.post([message], timeout=45)
            except Exception as e:
                if not self.stopped:
                    self._failed(e)
                    await sleep(0.05)
                continue
            for reply in replies:
                if reply.get("channel") == "/meta/connect" and "successful" in reply:
                    advice = reply.get("advice") or {}
                    self.connectReplies.append((now(), bool(reply["successful"]), advice))
                    if not reply["successful"]:
                        if advice.get("reconnect") == "handshake":
                            await self._handshake()
                        else:
                            await sleep(0.2)
                elif "successful" not in reply:
                    self.deliver(reply)

    async def stop(self) -> None:
        self.stopped = True


class Publication:
    __slots__ = ("acked", "done", "outcome", "sent", "source")

    def __init__(self, source: str, sent: float) -> None:
        self.source = source
        self.sent = sent
        self.done: float | None = None
        self.outcome = "pending"
        self.acked = False


class Traffic:
    """``rate`` messages a second: nine in ten REST publishes to A, one in ten Bayeux from A."""

    def __init__(self, nodeA: str, bayeux: WSClient, rate: float) -> None:
        self.url = f"{nodeA}/channel{DATA}"
        self.bayeux = bayeux
        self.rate = rate
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 64
        self.publications: dict[int, Publication] = {}
        self.inFlight = 0
        self.skipped = 0
        self._started = 0.0
        self._loop: task.LoopingCall | None = None

    def start(self) -> None:
        self._started = now()
        self._loop = task.LoopingCall(self._tick)
        self._loop.start(0.005)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _tick(self) -> None:
        due = int((now() - self._started) * self.rate)
        while len(self.publications) + self.skipped < due:
            seq = len(self.publications) + self.skipped
            if seq % 10 == 9:
                self._bayeux(seq)
            elif self.inFlight >= 64:
                self.skipped += 1  # A is not answering: do not pile up requests
            else:
                self._rest(seq)

    def _rest(self, seq: int) -> None:
        publication = self.publications[seq] = Publication("rest", now())
        self.inFlight += 1
        d = treq.post(
            self.url,
            data=json.dumps({"n": seq, "src": "rest"}).encode(),
            headers={"Content-Type": "application/json"},
            auth=(KEY, SECRET),
            pool=self.pool,
            timeout=15,
        )

        def answered(response: Any) -> Any:
            publication.outcome = str(response.code)
            publication.acked = response.code == 200
            return response.content()

        def failed(failure: Any) -> None:
            if publication.outcome == "pending":
                publication.outcome = type(failure.value).__name__

        def finished(_: Any) -> None:
            self.inFlight -= 1
            publication.done = now()

        d.addCallbacks(answered, failed).addErrback(failed).addBoth(finished)

    def _bayeux(self, seq: int) -> None:
        publication = self.publications[seq] = Publication("bayeux", now())
        if self.bayeux.clientId is None or self.bayeux.protocol is None:
            publication.outcome, publication.done = "not connected", now()
            return
        message = {
            "channel": DATA,
            "data": {"n": seq, "src": "bayeux"},
            "ext": {"auth": {"key": KEY, "secret": SECRET}},
        }

        def answered(reply: dict[str, Any]) -> None:
            publication.acked = bool(reply.get("successful"))
            publication.outcome = "successful" if publication.acked else str(reply.get("error", "?"))[:80]
            if "Unknown client" in publication.outcome:
                self.bayeux.recover()

        def failed(failure: Any) -> None:
            publication.outcome = type(failure.value).__name__

        def finished(_: Any) -> None:
            publication.done = now()

        self.bayeux.call(message, timeout=15).addCallbacks(answered, failed).addBoth(finished)


# -- one fault -------------------------------------------------------------------------


class Cluster:
    def __init__(self, options: argparse.Namespace, snapshot: Snapshot) -> None:
        self.options = options
        self.directory = Path(tempfile.mkdtemp(prefix="pandapush-faults-"))
        self.redis = Redis()
        args = ["--redis-hosts", f"127.0.0.1:{self.redis.port}", "--redis-namespace", "faults"]
        args += ["--database", "sqlite", "--database-path", str(self.directory / "db.sqlite")]
        args += list(options.server_args)
        env = {
            "DEV_APPLICATION_ID": APP,
            "DEV_KEY_ID": KEY,
            "DEV_KEY_SECRET": SECRET,
            "AUTH_METHOD": "basic",
            "ADMIN_USERNAME": ADMIN[0],
            "ADMIN_PASSWORD": ADMIN[1],
        }
        Node.snapshot = snapshot
        self.a = Node(*args, env=env)
        self.b = Node(*args, env=env)
        self.clients: list[Any] = []

    async def start(self) -> None:
        await self.redis.start()
        await self.a.start()  # migrates the SQLite file and seeds the key; B finds them
        await self.b.start()

    async def stop(self) -> None:
        for client in self.clients:
            if isinstance(client, WSClient):
                client.stop()
            else:
                await client.stop()
        for node in (self.a, self.b):
            await node.stop(signal.SIGKILL)
            node.removeScratch()
        await self.redis.stop(signal.SIGKILL)
        shutil.rmtree(self.directory, ignore_errors=True)


def presenceSubscription(member: str) -> dict[str, Any]:
    token = mintToken(KEY, SECRET, ROOM, sub=True, presence={"id": member})
    return {"channel": "/meta/subscribe", "subscription": ROOM, "ext": {"auth": {"token": token}}}


async def runFault(fault: str, options: argparse.Namespace, snapshot: Snapshot) -> dict[str, Any]:
    cluster = Cluster(options, snapshot)
    try:
        return await _runFault(fault, cluster, options)
    finally:
        await cluster.stop()


async def _runFault(fault: str, cluster: Cluster, options: argparse.Namespace) -> dict[str, Any]:
    await cluster.start()
    a, b = cluster.a.url, cluster.b.url
    dataSub = {"channel": "/meta/subscribe", "subscription": DATA}
    wsA = await WSClient("ws-A", [a], [dataSub, presenceSubscription("watcher")]).start()
    wsB = await WSClient("ws-B", [b, a], [dataSub, presenceSubscription("mover")]).start()
    ghost = await WSClient("ghost", [b], [presenceSubscription("ghost")], failover=False).start()
    lpA = await LPClient("lp-A", [a]).start()
    lpB = await LPClient("lp-B", [b, a]).start()
    publisher = await WSClient("publisher", [a], []).start()
    cluster.clients += [wsA, wsB, ghost, lpA, lpB, publisher]
    subscribers: list[Subscriber] = [wsA, lpA, wsB, lpB]
    await sleep(0.5)

    traffic = Traffic(a, publisher, options.rate)
    traffic.start()
    await sleep(options.steady)
    result: dict[str, Any] = {"fault": fault}
    t0 = now()
    if fault == "sigkill":
        await cluster.b.stop(signal.SIGKILL)
        recovered = t0
    elif fault == "redis":
        await cluster.redis.stop()
        result["redis_down_s"] = round(now() - t0, 3)
        await sleep(2)
        await cluster.redis.start()
        recovered = now()
        result["redis_back_at_s"] = round(recovered - t0, 3)
    else:
        code = await cluster.b.stop(signal.SIGTERM)
        result["b_exit_s"] = round(now() - t0, 3)
        result["b_exit_code"] = code
        recovered = t0

    # Until every subscriber receives again (and, after SIGKILL, the ghost has left).
    deadline = now() + options.recovery_timeout

    def receivingAgain(s: Subscriber) -> bool:
        return any(t > recovered + 0.05 for t in list(s.got.values())[-50:])

    def ghostGone() -> bool:
        return any(data == {"unsubscribe": {"ghost": None}} for _, data in wsA.presence)

    while now() < deadline and not (
        all(receivingAgain(s) for s in subscribers) and (fault != "sigkill" or ghostGone())
    ):
        await sleep(0.02)
    # After a Redis restart a websocket client learns that its session is gone only with
    # its next connect, up to the server's --timeout later: watch past that.
    await sleep(options.after_redis if fault == "redis" else options.steady)
    traffic.stop()
    await sleep(3)  # deliveries in flight, a long-poller's next connect

    # -- figures
    pubs = traffic.publications
    acked = {seq for seq, p in pubs.items() if p.acked}
    result["published"] = len(pubs)
    result["acknowledged"] = len(acked)
    result["not_sent_backlog"] = traffic.skipped
    # The first acknowledgement of a publish sent after the fault ended (a REST publish
    # sent while Redis was down may wait for it and be acknowledged once it is back).
    firstAckAfter = min(
        (p.done for p in pubs.values() if p.acked and p.done is not None and p.done >= recovered),
        default=None,
    )
    result["first_ack_after_s"] = round(firstAckAfter - recovered, 3) if firstAckAfter else None
    result["acked_though_sent_while_down"] = sum(
        1 for p in pubs.values() if p.acked and t0 <= p.sent < recovered
    )
    failedPubs = [p for p in pubs.values() if not p.acked]
    result["publish_failures"] = dict(Counter(f"{p.source}:{p.outcome}" for p in failedPubs))
    result["publish_failure_wait_max_s"] = (
        round(max((p.done or now()) - p.sent for p in failedPubs), 3) if failedPubs else None
    )
    clients: dict[str, Any] = {}
    for s in subscribers:
        missed = sorted(acked - set(s.got))
        unackedGot = [seq for seq in s.got if seq in pubs and not pubs[seq].acked]
        after = [t for t in s.got.values() if t > recovered + 0.05]
        times = sorted(s.got.values())
        gaps = [b2 - b1 for b1, b2 in itertools.pairwise(times) if b2 > t0 - 1]
        bayeuxOrder = [seq for seq in s.order if pubs.get(seq) is not None and pubs[seq].source == "bayeux"]
        info: dict[str, Any] = {
            "received": len(s.got),
            "acked_missed": len(missed),
            "duplicates": s.duplicates,
            "bayeux_order_ok": bayeuxOrder == sorted(bayeuxOrder),
            "received_unacked": len(unackedGot),
            "receiving_again_s": round(min(after) - recovered, 3) if after else None,
            "longest_silence_s": round(max(gaps), 3) if gaps else None,
            "handshakes": sum(1 for _, what in s.events if what == "handshake"),
            "events_after_t0": [[round(t - t0, 3), what] for t, what in s.events if t >= t0][:6],
        }
        if missed:
            info["missed_sent_from_s"] = round(pubs[missed[0]].sent - t0, 3)
            info["missed_sent_to_s"] = round(pubs[missed[-1]].sent - t0, 3)
        if isinstance(s, WSClient):
            info["closes"] = [[round(t - t0, 3), code] for t, code in s.closes if t >= t0 - 0.01]
        else:
            assert isinstance(s, LPClient)
            info["failures_after_t0"] = [[round(t - t0, 3), what] for t, what in s.failures if t >= t0][:4]
            info["connect_answers_after_t0"] = [
                [round(t - t0, 3), ok, advice.get("reconnect")]
                for t, ok, advice in s.connectReplies
                if t >= t0 - 0.01
            ][:3]
        clients[s.name] = info
    # One common order: every subscriber's sequence, in ws-A's order of arrival.
    rank = {seq: i for i, seq in enumerate(wsA.order)}
    result["common_order"] = all(
        [rank[seq] for seq in s.order if seq in rank] == sorted(rank[seq] for seq in s.order if seq in rank)
        for s in subscribers
    )
    result["clients"] = clients
    if fault == "sigkill":
        left = [t for t, data in wsA.presence if data == {"unsubscribe": {"ghost": None}}]
        result["ghost_left_s"] = round(left[0] - t0, 3) if left else None
        result["mover_announced_left"] = any(
            data == {"unsubscribe": {"mover": None}} for t, data in wsA.presence if t >= t0
        )
    return result


# -- report ----------------------------------------------------------------------------


def rows(result: dict[str, Any]) -> list[tuple[str, Any]]:
    """The figures of one fault run, as (label, value) lines of the table."""
    fault = result["fault"]
    out: list[tuple[str, Any]] = []
    if fault == "redis":
        out.append(("Redis back at (s after stop)", result["redis_back_at_s"]))
        out.append(("first publish acknowledged after Redis back (s)", result["first_ack_after_s"]))
        out.append(("sent while Redis was down, acknowledged later", result["acked_though_sent_while_down"]))
    if fault == "sigterm":
        out.append(("B exited after SIGTERM (s)", result["b_exit_s"]))
    if fault == "sigkill":
        out.append(("ghost presence member announced gone on A (s)", result["ghost_left_s"]))
        out.append(("mover (failed over) announced gone", result["mover_announced_left"]))
    base = "Redis back" if fault == "redis" else "fault"
    for name, info in result["clients"].items():
        out.append((f"{name}: receiving again (s after {base})", info["receiving_again_s"]))
        out.append((f"{name}: longest silence (s)", info["longest_silence_s"]))
        out.append((f"{name}: handshook again (session lost)", info["handshakes"] - 1))
        out.append((f"{name}: acknowledged messages missed", info["acked_missed"]))
        if info["acked_missed"]:
            window = f"{info['missed_sent_from_s']} .. {info['missed_sent_to_s']}"
            out.append((f"{name}: missed ones published at (s after fault)", window))
        if info.get("closes"):
            out.append((f"{name}: close codes", [c for _, c in info["closes"]]))
    out.append(("publishes / acknowledged", f"{result['published']} / {result['acknowledged']}"))
    out.append(("publish failures", result["publish_failures"] or "none"))
    out.append(("REST publishes not sent (64 already waiting)", result["not_sent_backlog"]))
    out.append(
        (
            "received though their publish failed (most by a client)",
            max(i["received_unacked"] for i in result["clients"].values()),
        )
    )
    out.append(("longest wait for a failed publish (s)", result["publish_failure_wait_max_s"]))
    out.append(
        (
            "duplicates / Bayeux order kept / one common order",
            (
                sum(i["duplicates"] for i in result["clients"].values()),
                all(i["bayeux_order_ok"] for i in result["clients"].values()),
                result["common_order"],
            ),
        )
    )
    return out


def printRun(result: dict[str, Any]) -> None:
    print(f"\n### {result['fault']} (run {result['run']})")
    for label, value in rows(result):
        print(f"  {label:58} {value}")
    sys.stdout.flush()


def summarize(results: list[dict[str, Any]]) -> None:
    print("\n## Summary: median (max) over runs; lists show every run")
    for fault in FAULTS:
        runs = [r for r in results if r["fault"] == fault]
        if not runs:
            continue
        print(f"\n### {fault} ({len(runs)} runs)")
        byLabel: dict[str, list[Any]] = {}
        for r in runs:
            for label, value in rows(r):
                byLabel.setdefault(label, []).append(value)
        for label, values in byLabel.items():
            numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if numbers and len(numbers) == len(values) == len(runs):
                shown = f"{statistics.median(numbers):g} ({max(numbers):g})   {numbers}"
            else:
                shown = " | ".join(str(v) for v in values) + (
                    f"   ({len(values)} of {len(runs)} runs)" if len(values) < len(runs) else ""
                )
            print(f"  {label:58} {shown}")


async def main(options: argparse.Namespace) -> list[dict[str, Any]]:
    snapshot = Snapshot(options.source)
    print(f"pandapush {snapshot.commit}, faults {', '.join(options.only)}, {options.runs} run(s)")
    results: list[dict[str, Any]] = []
    try:
        for run in range(1, options.runs + 1):
            for fault in options.only:
                result = await runFault(fault, options, snapshot)
                result["run"] = run
                result["commit"] = snapshot.commit
                results.append(result)
                printRun(result)
    finally:
        snapshot.remove()
    summarize(results)
    return results


def parseArguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions of every fault")
    parser.add_argument(
        "--only", default=",".join(FAULTS), help="comma-separated faults: " + ", ".join(FAULTS)
    )
    parser.add_argument("--rate", type=float, default=200, help="messages published per second")
    parser.add_argument("--steady", type=float, default=3, help="seconds of traffic before and after a fault")
    parser.add_argument(
        "--recovery-timeout", type=float, default=40, help="seconds to wait for everyone to receive again"
    )
    parser.add_argument(
        "--after-redis",
        type=float,
        default=35,
        help="seconds of traffic after Redis is back (past the server's --timeout, 30 s)",
    )
    parser.add_argument("--source", default="HEAD", help="git revision the nodes run, or 'worktree'")
    parser.add_argument("--out", help="write every figure of every run here, as JSON")
    parser.add_argument("server_args", nargs="*", help="more pandapush options for both nodes, after --")
    options = parser.parse_args(argv)
    options.only = [f for f in options.only.split(",") if f]
    unknown = set(options.only) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    return options


def run(argv: list[str]) -> int:
    options = parseArguments(argv)
    outcome: dict[str, Any] = {}

    def begin() -> None:
        d = defer.ensureDeferred(main(options))
        d.addCallbacks(lambda results: outcome.update(results=results), lambda f: outcome.update(crash=f))
        d.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]

    reactor.callWhenRunning(begin)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    if "crash" in outcome:
        print(outcome["crash"].getTraceback(), file=sys.stderr)
        return 1
    if options.out:
        Path(options.out).write_text(json.dumps(outcome["results"], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
