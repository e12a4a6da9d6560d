'use strict';
// The subscribers of a fan-out and what they received, held in the generator's own process
// (LocalSubscribers) or spread over child processes (SubscriberProcesses), behind one surface:
//
//   await s.start()                   fork the children (nothing for local subscribers)
//   await s.open()                    open and subscribe every client (the timed set-up)
//   s.pids()                          the children's pids (their CPU is the generator's)
//   s.delivered, s.lastDeliveryAt     so far (a child's figures trail by up to PROGRESS_MS)
//   await s.reached(expected)         resolves once subscriber i got expected[i] in all
//   await s.collect()                 every count, and the latencies merged as raw samples
//   await s.close()                   disconnect every client (and the children exit)
//
// One Node process at a core was the limit of burst-200 against pandapush (server at ~23 %
// of a core): the children each hold a share of the subscriber connections. Latency crosses
// processes, so publish stamps and receive times are read from process.hrtime.bigint()
// (CLOCK_MONOTONIC on Linux, one clock for every process on the machine: a child's reading
// fell between the parent's send and reply in 1,000 of 1,000 round trips) minus a base the
// parent chooses, in ms.

const { fork } = require('child_process');
const { makeClient } = require('./bayeux');

// How often a child reports its progress while deliveries arrive (only the idle timeout and
// the progress shown to the parent use it; the end of a run is each child's own last delivery).
const PROGRESS_MS = 50;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Milliseconds on the machine-wide monotonic clock since `base` (a bigint of nanoseconds).
function hrClock(base) {
  return () => Number(process.hrtime.bigint() - base) / 1e6;
}

// Runs `count` async tasks with at most `limit` in flight.
async function pool(count, limit, task) {
  let next = 0;
  const results = new Array(count);
  async function worker() {
    while (next < count) {
      const index = next++;
      results[index] = await task(index);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
  return results;
}

// Latencies in a growable Float64Array: no boxing, one sort at the end.
class Samples {
  constructor() {
    this.data = new Float64Array(1 << 16);
    this.length = 0;
  }

  push(value) {
    if (this.length === this.data.length) this._grow(this.length + 1);
    this.data[this.length++] = value;
  }

  // Another process's raw samples: percentiles are taken over the union, never merged.
  append(values) {
    if (this.length + values.length > this.data.length) this._grow(this.length + values.length);
    this.data.set(values, this.length);
    this.length += values.length;
  }

  values() {
    return this.data.subarray(0, this.length);
  }

  _grow(needed) {
    let size = this.data.length * 2;
    while (size < needed) size *= 2;
    const bigger = new Float64Array(size);
    bigger.set(this.data.subarray(0, this.length));
    this.data = bigger;
  }

  summary() {
    if (this.length === 0) return { p50: null, p99: null, max: null };
    const sorted = this.data.slice(0, this.length).sort();
    const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
    return { p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] };
  }
}

// What a set of subscribers received: per subscriber counts, duplicates (a bitmap of
// sequence numbers each), latencies of messages from `firstTimed` on.
class Tally {
  constructor(subscribers, total, firstTimed, trackDuplicates, clock) {
    this.received = new Uint32Array(subscribers);
    this.seen = trackDuplicates ? Array.from({ length: subscribers }, () => new Uint8Array(total)) : null;
    this.latencies = new Samples();
    this.firstTimed = firstTimed;
    this.clock = clock;
    this.delivered = 0;
    this.duplicates = 0;
    this.lastDeliveryAt = 0;
    this.target = Infinity;
    this.onTarget = null;
  }

  deliver(i, message) {
    const data = message.data;
    if (data === null || typeof data !== 'object' || data.s === undefined) return;
    const now = this.clock();
    if (data.s >= this.firstTimed) this.latencies.push(now - data.t);
    this.received[i]++;
    if (this.seen !== null) {
      if (this.seen[i][data.s]) this.duplicates++;
      else this.seen[i][data.s] = 1;
    }
    this.delivered++;
    this.lastDeliveryAt = now;
    if (this.delivered >= this.target && this.onTarget !== null) {
      const done = this.onTarget;
      this.onTarget = null;
      done();
    }
  }

  // Resolves once `count` deliveries arrived (at once if they already have).
  reach(count) {
    this.target = count;
    if (this.delivered >= count) return Promise.resolve();
    return new Promise((resolve) => {
      this.onTarget = resolve;
    });
  }
}

// Opens `specs.length` clients, client i subscribing to specs[i].channels (with specs[i].ext),
// every delivery counted in `tally` under index i.
async function openClients(transport, url, specs, concurrency, tally) {
  return pool(specs.length, concurrency, async (i) => {
    const client = makeClient(transport, url);
    await client.open();
    client.onDelivery = (message) => tally.deliver(i, message);
    await client.subscribe(specs[i].channels, specs[i].ext);
    return client;
  });
}

async function closeClients(clients) {
  await pool(clients.length, 256, (i) => clients[i].close());
}

const sum = (values, start, end) => {
  let total = 0;
  for (let i = start; i < end; i++) total += values[i];
  return total;
};

// `run` is what runFanout knows: transport, url, specs, concurrency, total, firstTimed,
// trackDuplicates, clock.
class LocalSubscribers {
  constructor(run) {
    this.run = run;
    this.tally = new Tally(run.specs.length, run.total, run.firstTimed, run.trackDuplicates, run.clock);
    this.clients = [];
  }

  async start() {}

  pids() {
    return [];
  }

  async open() {
    const { transport, url, specs, concurrency } = this.run;
    this.clients = await openClients(transport, url, specs, concurrency, this.tally);
  }

  get delivered() {
    return this.tally.delivered;
  }

  get lastDeliveryAt() {
    return this.tally.lastDeliveryAt;
  }

  reached(expected) {
    return this.tally.reach(sum(expected, 0, expected.length));
  }

  async collect() {
    const t = this.tally;
    return {
      received: t.received,
      delivered: t.delivered,
      duplicates: t.duplicates,
      latencies: t.latencies,
      lastDeliveryAt: t.lastDeliveryAt,
      dropped: this.clients.filter((c) => c.dropped).length,
      clientErrors: this.clients.reduce((n, c) => n + c.errors, 0),
    };
  }

  async close() {
    await closeClients(this.clients);
  }
}

// One child process per share of the subscribers (contiguous ranges of indices). Functions
// do not cross processes: the parent hands each child its clients' channels and ext as data,
// keeps what each subscriber should get to itself, and asks each child only for a count.
class SubscriberProcesses {
  constructor(run, processes) {
    this.run = run;
    const n = run.specs.length;
    const count = Math.max(1, Math.min(processes, n));
    this.ranges = Array.from({ length: count }, (_, k) => [Math.floor((k * n) / count), Math.floor(((k + 1) * n) / count)]);
    this.children = [];
    this.progress = this.ranges.map(() => ({ delivered: 0, last: 0 }));
  }

  async start() {
    this.children = this.ranges.map(() => {
      const child = fork(__filename, ['--subscriber-process'], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      child.waiting = new Map();
      child.on('message', (message) => this._received(child, message));
      child.on('exit', (code, signal) => {
        child.exited = true;
        for (const { reject } of child.waiting.values()) reject(new Error(`subscriber process ${child.pid} exited (${signal || code})`));
        child.waiting.clear();
      });
      return child;
    });
    await Promise.all(this.children.map((child) => this._await(child, 'hello')));
  }

  pids() {
    return this.children.map((child) => child.pid);
  }

  _received(child, message) {
    if (message.type === 'progress') {
      const progress = this.progress[this.children.indexOf(child)];
      progress.delivered = message.delivered;
      progress.last = message.last;
      return;
    }
    if (message.type === 'error') {
      for (const { reject } of child.waiting.values()) reject(new Error(`subscriber process ${child.pid}: ${message.message}`));
      child.waiting.clear();
      return;
    }
    const waiter = child.waiting.get(message.type);
    if (waiter === undefined) return;
    child.waiting.delete(message.type);
    waiter.resolve(message);
  }

  _await(child, type) {
    if (child.exited) return Promise.reject(new Error(`subscriber process ${child.pid} exited`));
    return new Promise((resolve, reject) => child.waiting.set(type, { resolve, reject }));
  }

  _ask(child, message, reply) {
    const answer = this._await(child, reply);
    child.send(message);
    return answer;
  }

  async open() {
    const { transport, url, specs, concurrency, total, firstTimed, trackDuplicates, clockBase } = this.run;
    // As many in flight in all as one process opens (64 by default).
    const share = Math.max(1, Math.ceil(concurrency / this.children.length));
    await Promise.all(
      this.children.map((child, k) => {
        const [start, end] = this.ranges[k];
        const open = { type: 'open', transport, url, specs: specs.slice(start, end), concurrency: share, total, firstTimed, trackDuplicates, clockBase: String(clockBase) };
        return this._ask(child, open, 'opened');
      }),
    );
  }

  get delivered() {
    return this.progress.reduce((n, p) => n + p.delivered, 0);
  }

  get lastDeliveryAt() {
    return Math.max(...this.progress.map((p) => p.last));
  }

  reached(expected) {
    return Promise.all(this.children.map((child, k) => this._ask(child, { type: 'expect', count: sum(expected, ...this.ranges[k]) }, 'reached')));
  }

  async collect() {
    const parts = await Promise.all(this.children.map((child) => this._ask(child, { type: 'collect' }, 'collected')));
    const received = new Uint32Array(this.run.specs.length);
    const latencies = new Samples();
    const out = { received, delivered: 0, duplicates: 0, latencies, lastDeliveryAt: 0, dropped: 0, clientErrors: 0 };
    parts.forEach((part, k) => {
      received.set(part.received, this.ranges[k][0]);
      latencies.append(part.latencies);
      out.delivered += part.delivered;
      out.duplicates += part.duplicates;
      out.lastDeliveryAt = Math.max(out.lastDeliveryAt, part.lastDeliveryAt);
      out.dropped += part.dropped;
      out.clientErrors += part.clientErrors;
    });
    return out;
  }

  async close() {
    await Promise.all(
      this.children.map(async (child) => {
        if (child.exited) return;
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.send({ type: 'close' });
        await Promise.race([exited, sleep(10000)]);
        if (!child.exited) child.kill();
      }),
    );
  }
}

// A child: holds its share of the subscribers until the parent says close.
function subscriberProcess() {
  let tally = null;
  let clients = [];
  let timer = null;
  const send = (message) => process.send(message);
  const handlers = {
    async open(m) {
      tally = new Tally(m.specs.length, m.total, m.firstTimed, m.trackDuplicates, hrClock(BigInt(m.clockBase)));
      clients = await openClients(m.transport, m.url, m.specs, m.concurrency, tally);
      let reported = -1;
      timer = setInterval(() => {
        if (tally.delivered === reported) return;
        reported = tally.delivered;
        send({ type: 'progress', delivered: tally.delivered, last: tally.lastDeliveryAt });
      }, PROGRESS_MS);
      send({ type: 'opened' });
    },
    async expect(m) {
      await tally.reach(m.count);
      send({ type: 'reached' });
    },
    async collect() {
      clearInterval(timer);
      send({
        type: 'collected',
        received: tally.received,
        delivered: tally.delivered,
        duplicates: tally.duplicates,
        latencies: tally.latencies.values(),
        lastDeliveryAt: tally.lastDeliveryAt,
        dropped: clients.filter((c) => c.dropped).length,
        clientErrors: clients.reduce((n, c) => n + c.errors, 0),
      });
    },
    async close() {
      clearInterval(timer);
      await closeClients(clients);
      process.exit(0);
    },
  };
  process.on('message', (message) => {
    handlers[message.type](message).catch((error) => {
      send({ type: 'error', message: String(error.stack || error) });
    });
  });
  // Orphaned (the parent died): nothing left to measure.
  process.on('disconnect', () => process.exit(1));
  send({ type: 'hello' });
}

if (require.main === module && process.argv[2] === '--subscriber-process') subscriberProcess();

module.exports = { LocalSubscribers, SubscriberProcesses, Samples, Tally, pool, hrClock };
