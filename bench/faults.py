"""
Faults under traffic, measured end to end on two real nodes over Redis (issue 7).

    .venv/bin/python bench/faults.py                    # 3 runs of every fault, median/max table
    .venv/bin/python bench/faults.py --runs 1 --only sigkill
    .venv/bin/python bench/faults.py --source worktree  # the checkout as it is, not HEAD
    .venv/bin/python bench/faults.py --out faults.json  # every figure of every run kept
    .venv/bin/python bench/faults.py -- --history-size 20000   # more options for both nodes

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
- ``redis-aof``: the same with a Redis that keeps an append-only file (``--appendonly yes
  --appendfsync always``): it comes back with its data, channel histories included.
  What publishers got meanwhile (status codes, Bayeux errors, how long they waited), how
  long after Redis was back publishes were acknowledged and received again, and which
  acknowledged messages each client missed.
- ``sigterm``: B sent SIGTERM. How long B took to exit, the close code B's websockets got
  and when B's long-poller was answered, when B's clients received again, and which
  acknowledged messages each client missed.
- ``sentinel``: the nodes find Redis through three ``redis-server --sentinel`` watching a
  primary and its replica (``tests/support/sentinel.py``: ``down-after-milliseconds``
  1000, ``failover-timeout`` 3000) instead of ``--redis-hosts``; the primary is killed
  with SIGKILL. When the sentinels named the replica, when publishes were acknowledged
  and received again after that, which sessions were lost (handshakes) and which
  acknowledged messages each client missed.

Two more subscribers on B, ``ws-B-resume`` and ``lp-B-resume``, resume from the channel
history (issue 15) as ``/client.js`` does: they keep the offsets they received, subscribe
again with ``ext.resume`` after a new handshake, after moving to another node in their
session, and when an offset skips one, and drop what they already had by its offset.
History must cover the outage for them (``-- --history-size 20000``: the default 100 is
half a second of this traffic; a resume from further back is told ``position too old``).
They take what history sends again as it comes, so they are left out of the order checks.

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
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

# The nodes, the Redis and the clients are the tests' own (tests/support/).
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import treq  # noqa: E402
from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.web.client import HTTPConnectionPool  # noqa: E402

from pandapush.tokens import mintToken  # noqa: E402
from tests.support.failover import FailoverPoller, FailoverWS, subscribeMessage  # noqa: E402
from tests.support.process import PandapushProcess, seededEnvironment  # noqa: E402
from tests.support.redis import RedisProcess  # noqa: E402
from tests.support.sentinel import SentinelDeployment  # noqa: E402
from tests.support.waiting import sleep  # noqa: E402

APP = "faultsapp00000000001"
KEY = "PSIDfaults0000000001"
SECRET = "faults-bench-secret-0123456789abcdef012345"
ADMIN = ("admin", "faults-admin-password")
DATA = f"/{APP}/public/faults"
ROOM = f"/{APP}/presence/room"
FAULTS = ("sigkill", "redis", "redis-aof", "sigterm", "sentinel")


def now() -> float:
    return reactor.seconds()  # type: ignore[attr-defined,no-any-return]


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


# -- clients ---------------------------------------------------------------------------


class Subscriber:
    """
    What a client received: sequence numbers with their arrival times, presence events.
    Mixed into the tests' failover clients, whose ``deliver`` it replaces (and whose
    ``events`` note each handshake and move).
    """

    name: str
    events: list[tuple[float, str]]

    def received(self) -> None:
        self.got: dict[int, float] = {}
        self.order: list[int] = []
        self.duplicates = 0
        self.presence: list[tuple[float, Any]] = []

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


class WSClient(Subscriber, FailoverWS):
    """
    A websocket Bayeux client: keeps a connect outstanding, subscribes ``subscriptions``,
    handshakes (and subscribes) again when advised to, and when its socket closes opens
    one to the next of ``urls`` with the same clientId, as a client behind a load
    balancer does. ``failover=False``: it stays gone (the ghost).
    """

    def __init__(
        self, name: str, urls: list[str], subscriptions: list[dict[str, Any]], failover: bool = True
    ) -> None:
        FailoverWS.__init__(self, urls, name, subscriptions, failover)
        self.received()


class LPClient(Subscriber, FailoverPoller):
    """
    A long-polling client subscribed to the data channel: one connect at a time, each to
    the current node; a request that fails (refused, reset) moves it to the next of
    ``urls`` with the same clientId.
    """

    def __init__(self, name: str, urls: list[str]) -> None:
        FailoverPoller.__init__(self, urls, name, [subscribeMessage(DATA)])
        self.received()


class Resuming(Subscriber):
    """
    A client that resumes from the channel history (issue 15), as ``/client.js`` does: it
    keeps the offsets it received on the data channel, and subscribes again naming the last
    one it has with nothing missing before it (``ext.resume``) after a new handshake, after
    moving to another node in its session, and when an offset skips one (a message lost on
    the server's side: a Redis pub/sub gap gives no other sign). What it already had is
    dropped by its offset, not counted as a duplicate (``droppedByPosition``); what the
    server could not recover is kept in ``unrecovered``.
    """

    def resumes(self) -> None:
        self.epoch: str | None = None
        self.seen: set[int] = set()
        self.contiguous = 0  # every offset up to this one was received (in ``epoch``)
        self.droppedByPosition = 0
        self.resumed = 0
        self.unrecovered: list[Any] = []
        self._resuming = False

    def deliver(self, message: dict[str, Any]) -> None:
        position = (message.get("ext") or {}).get("position") if message.get("channel") == DATA else None
        if isinstance(position, dict) and isinstance(position.get("offset"), int):
            offset, epoch = position["offset"], position.get("epoch")
            if epoch != self.epoch:
                self.epoch, self.seen, self.contiguous = epoch, set(), offset - 1
            if offset <= self.contiguous or offset in self.seen:
                self.droppedByPosition += 1
                return
            self.seen.add(offset)
            gap = offset > self.contiguous + 1
            while self.contiguous + 1 in self.seen:
                self.contiguous += 1
                self.seen.discard(self.contiguous)
            if gap:
                self.resumeSoon()
        Subscriber.deliver(self, message)

    def resumeMessage(self) -> dict[str, Any]:
        message = subscribeMessage(DATA)
        if self.epoch is not None:
            message["ext"] = {"resume": {DATA: {"offset": self.contiguous, "epoch": self.epoch}}}
        return message

    def answered(self, reply: dict[str, Any]) -> None:
        """A subscribe's reply: what the server could not recover is kept."""
        ext = reply.get("ext") or {}
        if ext.get("recovered") is False:
            self.unrecovered.append(ext.get("unrecovered"))
            # The missing ones are not coming: go on from the last received (as /client.js).
            if self.seen:
                self.contiguous = max(self.seen)
                self.seen = set()

    def resumeSoon(self) -> None:
        raise NotImplementedError


class ResumingWS(Resuming, WSClient):
    """A :class:`WSClient` that resumes (:class:`Resuming`)."""

    def __init__(self, name: str, urls: list[str], subscriptions: list[dict[str, Any]]) -> None:
        WSClient.__init__(self, name, urls, subscriptions)
        self.resumes()

    async def call(self, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        reply = await WSClient.call(self, message, timeout)
        if message.get("subscription") == DATA:
            self.answered(reply)
        return reply

    async def _resubscribe(self) -> bool:
        self.subscriptions = [self.resumeMessage()] + [
            m for m in self.subscriptions if m.get("subscription") != DATA
        ]
        return await WSClient._resubscribe(self)

    async def _failover(self) -> None:
        await WSClient._failover(self)
        self.resumeSoon()  # what the node it left held for it may be gone with that node

    def resumeSoon(self) -> None:
        if self._resuming or self.clientId is None or self.stopped:
            return
        self._resuming = True
        self.resumed += 1

        async def resume() -> None:
            try:
                await self.call(self.resumeMessage())
            except Exception:
                pass  # the session went: the handshake resubscribes from the same place
            finally:
                self._resuming = False

        defer.ensureDeferred(resume())


class ResumingLP(Resuming, LPClient):
    """An :class:`LPClient` that resumes (:class:`Resuming`), the subscribe going with its next connect."""

    def __init__(self, name: str, urls: list[str]) -> None:
        LPClient.__init__(self, name, urls)
        self.resumes()
        self._resumeNext = False

    async def _handshake(self) -> None:
        self.subscriptions = [self.resumeMessage()]
        await LPClient._handshake(self)

    def _failed(self, reason: BaseException) -> None:
        LPClient._failed(self, reason)
        self.resumeSoon()

    def resumeSoon(self) -> None:
        if not self._resumeNext:
            self.resumed += 1
        self._resumeNext = True

    async def post(self, messages: list[dict[str, Any]], timeout: float = 15) -> list[dict[str, Any]]:
        if self._resumeNext and self.clientId and messages and messages[0].get("channel") == "/meta/connect":
            self._resumeNext = False
            messages = [{**self.resumeMessage(), "clientId": self.clientId}, *messages]
        replies = await LPClient.post(self, messages, timeout)
        for reply in replies:
            if reply.get("channel") == "/meta/subscribe":
                self.answered(reply)
        return replies


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

        call = defer.ensureDeferred(self.bayeux.call(message, timeout=15))
        call.addCallbacks(answered, failed).addBoth(finished)


# -- one fault -------------------------------------------------------------------------


class Cluster:
    def __init__(self, options: argparse.Namespace, snapshot: Snapshot, sentinel: bool = False) -> None:
        self.options = options
        self.directory = Path(tempfile.mkdtemp(prefix="pandapush-faults-"))
        # redis-aof: a Redis with persistence (an append-only file, fsync'd every write), which
        # comes back with what it had.
        self.redis = RedisProcess(
            args=["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)]
            if options.fault == "redis-aof"
            else ()
        )
        self.sentinel: SentinelDeployment | None = None
        args = ["--redis-hosts", f"127.0.0.1:{self.redis.port}", "--redis-namespace", "faults"]
        if sentinel:
            self.sentinel = SentinelDeployment()
            found = self.sentinel.env
            args[:2] = ["--redis-sentinels", found["REDIS_SENTINELS"]]
            args += ["--redis-sentinel-masters", found["REDIS_SENTINEL_MASTERS"]]
        args += ["--database", "sqlite", "--database-path", str(self.directory / "db.sqlite")]
        args += list(options.server_args)
        env = seededEnvironment(APP, KEY, SECRET, admin=ADMIN)
        Node.snapshot = snapshot
        self.a = Node(*args, env=env)
        self.b = Node(*args, env=env)
        self.clients: list[Any] = []

    async def start(self) -> None:
        if self.sentinel is not None:
            await self.sentinel.start()
        else:
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
        if self.sentinel is not None:
            await self.sentinel.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


async def presenceMembers(node: str) -> dict[str, Any] | None:
    """The room's members as ``node``'s server API lists them (None while it cannot say)."""
    try:
        response = await treq.get(
            f"{node}/apps/{APP}/members", params={"channel": ROOM}, auth=(KEY, SECRET), timeout=5
        )
        body = await response.content()
    except Exception:
        return None
    members: dict[str, Any] | None = json.loads(body)["members"] if response.code == 200 else None
    return members


def presenceSubscription(member: str) -> dict[str, Any]:
    token = mintToken(KEY, SECRET, ROOM, sub=True, presence={"id": member})
    return {"channel": "/meta/subscribe", "subscription": ROOM, "ext": {"auth": {"token": token}}}


async def runFault(fault: str, options: argparse.Namespace, snapshot: Snapshot) -> dict[str, Any]:
    options.fault = fault
    cluster = Cluster(options, snapshot, sentinel=fault == "sentinel")
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
    # Clients that resume from the channel history (issue 15), on B as ws-B and lp-B.
    wsR = await ResumingWS("ws-B-resume", [b, a], [dataSub]).start()
    lpR = await ResumingLP("lp-B-resume", [b, a]).start()
    cluster.clients += [wsA, wsB, ghost, lpA, lpB, publisher, wsR, lpR]
    subscribers: list[Subscriber] = [wsA, lpA, wsB, lpB, wsR, lpR]
    await sleep(0.5)

    membersBefore = await presenceMembers(a)
    traffic = Traffic(a, publisher, options.rate)
    traffic.start()
    await sleep(options.steady)
    result: dict[str, Any] = {"fault": fault}
    t0 = now()
    if fault == "sigkill":
        await cluster.b.stop(signal.SIGKILL)
        recovered = t0
    elif fault in ("redis", "redis-aof"):
        await cluster.redis.stop()
        result["redis_down_s"] = round(now() - t0, 3)
        await sleep(2)
        await cluster.redis.start()
        recovered = now()
        result["redis_back_at_s"] = round(recovered - t0, 3)
    elif fault == "sentinel":
        assert cluster.sentinel is not None
        primary = await cluster.sentinel.primary()
        await primary.stop(signal.SIGKILL)
        while now() - t0 < options.recovery_timeout:
            try:
                if (await cluster.sentinel.primary()) is not primary:
                    break
            except Exception:
                pass
            await sleep(0.05)
        recovered = now()
        result["primary_named_at_s"] = round(recovered - t0, 3)
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
    if fault in ("redis", "redis-aof", "sentinel"):
        # The member list as A's server API gives it: the same as before the fault, again?
        while now() < deadline and await presenceMembers(a) != membersBefore:
            await sleep(0.1)
        listed = await presenceMembers(a)
        result["members_same_s"] = round(now() - recovered, 3) if listed == membersBefore else None
        result["members"] = f"{sorted(membersBefore or {})} -> {sorted(listed or {})}"
    # After a Redis restart a websocket client learns that its session is gone only with
    # its next connect, up to the server's --timeout later: watch past that.
    await sleep(options.after_redis if fault.startswith("redis") else options.steady)
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
        if isinstance(s, Resuming):
            info["resumed"] = s.resumed
            info["dropped_by_position"] = s.droppedByPosition
            info["unrecovered"] = s.unrecovered
        if isinstance(s, WSClient):
            info["closes"] = [[round(t - t0, 3), code] for t, code in s.closes if t >= t0 - 0.01]
        else:
            assert isinstance(s, LPClient)
            info["failures_after_t0"] = [
                [round(t - t0, 3), what] for t, what in s.requestFailures if t >= t0
            ][:4]
            info["connect_answers_after_t0"] = [
                [round(t - t0, 3), ok, advice.get("reconnect")]
                for t, ok, advice in s.connectReplies
                if t >= t0 - 0.01
            ][:3]
        clients[s.name] = info
    # One common order: every subscriber's sequence, in ws-A's order of arrival.
    rank = {seq: i for i, seq in enumerate(wsA.order)}
    # (Not the resuming clients': they take what history sends again as it comes, after newer
    # messages; /client.js holds those back to keep the order.)
    result["common_order"] = all(
        [rank[seq] for seq in s.order if seq in rank] == sorted(rank[seq] for seq in s.order if seq in rank)
        for s in subscribers
        if not isinstance(s, Resuming)
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
    if fault in ("redis", "redis-aof", "sentinel"):
        out.append(("presence members listed as before (s after recovery)", result["members_same_s"]))
        out.append(("presence members before -> after", result["members"]))
    if fault.startswith("redis"):
        out.append(("Redis back at (s after stop)", result["redis_back_at_s"]))
        out.append(("first publish acknowledged after Redis back (s)", result["first_ack_after_s"]))
        out.append(("sent while Redis was down, acknowledged later", result["acked_though_sent_while_down"]))
    if fault == "sentinel":
        out.append(("new primary named by the sentinels (s after kill)", result["primary_named_at_s"]))
        out.append(("first publish acknowledged after that (s)", result["first_ack_after_s"]))
        out.append(("sent before that, acknowledged later", result["acked_though_sent_while_down"]))
    if fault == "sigterm":
        out.append(("B exited after SIGTERM (s)", result["b_exit_s"]))
    if fault == "sigkill":
        out.append(("ghost presence member announced gone on A (s)", result["ghost_left_s"]))
        out.append(("mover (failed over) announced gone", result["mover_announced_left"]))
    base = {"redis": "Redis back", "redis-aof": "Redis back", "sentinel": "new primary named"}.get(
        fault, "fault"
    )
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
        if "resumed" in info:
            out.append(
                (
                    f"{name}: resumed / dropped by position",
                    f"{info['resumed']} / {info['dropped_by_position']}",
                )
            )
            out.append((f"{name}: told unrecovered", info["unrecovered"] or "never"))
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
                all(i["bayeux_order_ok"] for i in result["clients"].values() if "resumed" not in i),
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
