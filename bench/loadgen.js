#!/usr/bin/env node
'use strict';
// The load generator: Bayeux subscribers and publishers against one server (or a
// publishing node and a subscribing node), with every figure the runner prints.
//
// As a module: runFanout(options), runIdle(options), probeRest(...).
// As a command (one scenario against a server that is already running):
//
//   node bench/loadgen.js --url http://127.0.0.1:3000/push --subscribers 200 --messages 1000
//        [--channels 1] [--transport websocket|long-polling] [--publishers 1]
//        [--mode burst|paced --rate 100 --duration 10] [--size 64] [--wildcard] [--rest --window 32]
//        [--rest-key K --rest-secret S] [--app APPID] [--pid SERVER_PID] [--subscriber-processes N]
//   node bench/loadgen.js --url ... --storm [--clients 3000] [--inflight 200] [--transport long-polling]
//   node bench/loadgen.js --url ... --idle [--connections 1000]
//
// prints one JSON object with the results.

const { performance } = require('perf_hooks');
const { makeClient, restPost, bayeuxPost, closeRestConnections } = require('./lib/bayeux');
const crypto = require('crypto');
const { LocalSubscribers, SubscriberProcesses, Samples, pool, hrClock } = require('./lib/subscribers');
const { ProcessSampler, selfCpuMark, selfCpuSince, othersMark, othersSince, netCounters, netCountersSince } = require('./lib/proc');

// Publishers that POST each message (or batch) over plain HTTP, rather than over a Bayeux client.
const HTTP_PUBLISHERS = new Set(['rest', 'rest-batch', 'http', 'http-batch']);

const DEFAULT_APP = 'BENCHbenchBENCHbench';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function padding(size) {
  // The delivered `data` object is about `size` bytes of JSON: {"s":123,"t":12345.678901,"p":"xxx"}
  const base = JSON.stringify({ s: 100000, t: 123456.123456, p: '' }).length;
  return 'x'.repeat(Math.max(0, size - base));
}

function basic(key, secret) {
  return 'Basic ' + Buffer.from(`${key}:${secret}`).toString('base64');
}

// Is there a REST publish endpoint, and do our credentials work? -> {ok, status, reason}
async function probeRest(origin, app, key, secret) {
  const path = `/channel/${app}/public/bench/probe`;
  const { status, body } = await restPost(origin, path, JSON.stringify({ probe: true }), basic(key, secret));
  if (status === 200) return { ok: true, status };
  if (status === 404) return { ok: false, status, reason: 'REST endpoint not found (404)' };
  if (status === 401 || status === 403) return { ok: false, status, reason: `REST credentials refused (${status}: ${body.slice(0, 80)})` };
  return { ok: false, status, reason: `REST probe answered ${status}: ${body.slice(0, 80)}` };
}

/*
 * Fan-out: `subscribers` clients over `transport`, each subscribed to what
 * `subscriptionsOf(i, channelNames)` returns and expecting what lands on channels where
 * `matches(i, channelIndex)`; `publishers` websocket publishers (or REST) publish to
 * channel `seq % channels`, either `messages` as fast as the `window` of unacknowledged
 * publishes allows (burst) or `rate` messages/s for `duration` s (paced).
 *
 * With `subscriberProcesses` N > 0 the subscribers are spread over N child processes and
 * this one runs the publishers only (lib/subscribers.js): the figures are the same fields,
 * summed and merged over the processes (generatorCpu is theirs together).
 * `duplicateEvery` K > 0 publishes every Kth message twice, same sequence number: a test
 * that duplicates are counted, and counted apart from loss.
 */
async function runFanout(o) {
  const options = {
    transport: 'websocket',
    subscribers: 200,
    channels: 1,
    publishers: 1,
    publishVia: 'websocket',
    mode: 'burst',
    messages: 1000,
    rate: 100,
    duration: 10,
    size: 64,
    window: 500,
    concurrency: 64,
    idleTimeout: 5000,
    warmup: 0,
    maxTime: 120000,
    app: DEFAULT_APP,
    tag: 'fanout',
    subscriptionsOf: null,
    matches: null,
    channelType: 'public',
    subscribeExtOf: null,
    subscriberProcesses: 0,
    duplicateEvery: 0,
    ...o,
  };
  const url = options.url;
  const publishUrl = options.publishUrl || url;
  const sampler = options.pid ? new ProcessSampler(options.pid) : null;
  const publishSampler = options.publishPid && options.publishPid !== options.pid ? new ProcessSampler(options.publishPid) : null;
  const prefix = `/${options.app}/${options.channelType}/bench/${options.tag}`;
  const channelNames = Array.from({ length: options.channels }, (_, j) => `${prefix}/c${j}`);
  const subscriptionsOf = options.subscriptionsOf || ((i) => [channelNames[i % options.channels]]);
  const matches = options.matches || ((i, j) => i % options.channels === j);
  const ext = options.key ? { auth: { key: options.key, secret: options.secret } } : undefined;

  const total =
    options.mode === 'burst' ? options.messages : Math.round(options.rate * options.duration);
  // Paced runs leave the first `warmup` seconds out of the latency figures (both servers
  // and the generator warm up: JIT, allocator, socket buffers); loss still counts them.
  const firstTimed = options.mode === 'paced' ? Math.round(options.rate * options.warmup) : 0;
  const trackDuplicates = total * options.subscribers <= 200e6;
  // Publish stamps and receive times on one clock: this process's own, or with subscriber
  // processes the machine-wide monotonic one (lib/subscribers.js says why it is comparable).
  const clockBase = process.hrtime.bigint();
  const now = options.subscriberProcesses > 0 ? hrClock(clockBase) : () => performance.now();
  const specs = Array.from({ length: options.subscribers }, (_, i) => ({
    channels: subscriptionsOf(i, channelNames),
    ext: options.subscribeExtOf ? options.subscribeExtOf(i, channelNames) : undefined,
  }));
  const run = { transport: options.transport, url, specs, concurrency: options.concurrency, total, firstTimed, trackDuplicates, clock: now, clockBase };
  const subscribers = options.subscriberProcesses > 0 ? new SubscriberProcesses(run, options.subscriberProcesses) : new LocalSubscribers(run);
  await subscribers.start();

  const rssBefore = sampler ? sampler.rss() : 0;

  // Subscribers
  const setupStart = performance.now();
  await subscribers.open();
  const setupSeconds = (performance.now() - setupStart) / 1000;

  // Publishers
  const publishers =
    HTTP_PUBLISHERS.has(options.publishVia)
      ? []
      : await pool(options.publishers, options.concurrency, async () => {
          const client = makeClient('websocket', publishUrl);
          await client.open();
          return client;
        });
  const rssLoaded = sampler ? sampler.rss() : 0;
  await sleep(500);

  const pad = padding(options.size);
  const perChannel = new Uint32Array(options.channels);
  let sent = 0; // messages (sequence numbers)
  let publishes = 0; // with duplicateEvery, more than messages
  let acked = 0;
  let failed = 0;
  const origin = new URL(publishUrl).origin;
  const authorization = options.key ? basic(options.key, options.secret) : '';
  let pump = null;

  const onAcks = (ok, n) => {
    acked += n;
    if (!ok) failed += n;
    if (pump !== null) pump();
  };
  const onAck = (ok) => onAcks(ok, 1);
  // rest-batch: what a backend does with a server library's trigger_batch (Pusher's caps a
  // batch at 10): up to batchSize messages per POST /apps/<app>/batch_events, sent when full
  // and at the end of each pump, so a message never waits for others to fill its batch.
  const batchSize = options.batchSize || 10;
  let batch = [];
  let restRequests = 0;
  const flushBatch = () => {
    if (batch.length === 0) return;
    const items = batch;
    batch = [];
    restRequests++;
    if (options.publishVia === 'http-batch') {
      // Faye's counterpart: one POST of an array of Bayeux publish messages.
      bayeuxPost(origin, bayeuxPath, JSON.stringify(items)).then((ok) => onAcks(ok === items.length, items.length));
      return;
    }
    restPost(origin, `/apps/${options.app}/batch_events`, JSON.stringify({ batch: items }), authorization).then(({ status }) =>
      onAcks(status === 200, items.length),
    );
  };
  // 'http' and 'http-batch': Bayeux publish messages POSTed as plain HTTP, without a
  // handshake or a clientId, the way Faye's documentation publishes "using a plain HTTP
  // client" (its security page, "Push-only servers"): Faye's REST publish. Acknowledged by
  // the replies' "successful".
  const bayeuxPath = new URL(publishUrl).pathname;
  for (const publisher of publishers) publisher.onAck = onAck;

  function sendOne() {
    const seq = sent++;
    const data = { s: seq, t: now(), p: pad };
    publishOne(seq, data);
    if (options.duplicateEvery > 0 && seq % options.duplicateEvery === 0) publishOne(seq, data);
  }

  function publishOne(seq, data) {
    const j = seq % options.channels;
    perChannel[j]++;
    publishes++;
    if (options.publishVia === 'rest') {
      const path = `/channel/${options.app}/${options.channelType}/bench/${options.tag}/c${j}`;
      restRequests++;
      restPost(origin, path, JSON.stringify(data), authorization).then(({ status }) => onAck(status === 200));
    } else if (options.publishVia === 'http') {
      restRequests++;
      bayeuxPost(origin, bayeuxPath, JSON.stringify({ channel: channelNames[j], data })).then((ok) => onAck(ok === 1));
    } else if (options.publishVia === 'rest-batch' || options.publishVia === 'http-batch') {
      batch.push({ channel: channelNames[j], data });
      if (batch.length >= batchSize) flushBatch();
    } else {
      publishers[seq % publishers.length].publish(channelNames[j], data, ext);
    }
  }

  const cpuMark = sampler ? sampler.markCpu() : null;
  const publishCpuMark = publishSampler ? publishSampler.markCpu() : null;
  const selfMark = selfCpuMark(subscribers.pids());
  const ownPids = [process.pid, ...subscribers.pids(), options.pid, options.publishPid].filter((pid, i, all) => pid && all.indexOf(pid) === i);
  const othersAt = othersMark(ownPids);
  const t0 = now();

  if (options.mode === 'burst') {
    await new Promise((resolve) => {
      pump = () => {
        while (sent < total && publishes - acked < options.window) sendOne();
        flushBatch();
        if (sent >= total) {
          pump = null;
          resolve();
        }
      };
      pump();
    });
  } else {
    await new Promise((resolve) => {
      const timer = setInterval(() => {
        const due = Math.min(total, Math.floor(((now() - t0) / 1000) * options.rate));
        while (sent < due) sendOne();
        flushBatch();
        if (sent >= total) {
          clearInterval(timer);
          resolve();
        }
      }, 1);
    });
  }
  const publishedAt = now();

  // Expected deliveries per subscriber, now that we know what went where.
  const expected = new Float64Array(options.subscribers);
  let expectedTotal = 0;
  for (let i = 0; i < options.subscribers; i++) {
    let sum = 0;
    for (let j = 0; j < options.channels; j++) if (matches(i, j)) sum += perChannel[j];
    expected[i] = sum;
    expectedTotal += sum;
  }
  const reached = subscribers.reached(expected);
  if (subscribers.delivered < expectedTotal) {
    // Wait for the rest, or until deliveries stop coming for idleTimeout.
    await Promise.race([
      reached,
      new Promise((resolve) => {
        const timer = setInterval(() => {
          const quietFor = now() - Math.max(subscribers.lastDeliveryAt, publishedAt);
          if (quietFor > options.idleTimeout || now() - t0 > options.maxTime || subscribers.delivered >= expectedTotal) {
            clearInterval(timer);
            resolve();
          }
        }, 50);
      }),
    ]);
  }
  // Let publish acks land (a burst's last acks may trail its last deliveries).
  for (let waited = 0; acked < publishes && waited < 2000; waited += 20) await sleep(20);
  const stoppedAt = now();
  const serverCpu = cpuMark ? sampler.cpuSince(cpuMark) : null;
  const serverCpuSeconds = cpuMark ? sampler.cpuSecondsSince(cpuMark) + (publishCpuMark ? publishSampler.cpuSecondsSince(publishCpuMark) : 0) : null;
  const publishServerCpu = publishCpuMark ? publishSampler.cpuSince(publishCpuMark) : null;
  const generatorCpu = selfCpuSince(selfMark);
  const otherCpu = othersSince(othersAt);
  // After the CPU figures: moving a child's samples here is not part of the run.
  const { received, delivered, duplicates, latencies, lastDeliveryAt, dropped: droppedSubscribers, clientErrors: subscriberErrors } = await subscribers.collect();
  const end = lastDeliveryAt || stoppedAt;

  let lost = 0;
  let starved = 0;
  for (let i = 0; i < options.subscribers; i++) {
    const missing = expected[i] - (received[i] - 0);
    if (missing > 0) lost += missing;
    if (expected[i] > 0 && received[i] === 0) starved++;
  }
  // Duplicates show up as more received than expected; count them apart from loss.
  const dropped = droppedSubscribers + publishers.filter((c) => c.dropped).length;
  const clientErrors = subscriberErrors + publishers.reduce((n, c) => n + c.errors, 0);
  const peakRss = sampler ? sampler.peak : null;

  await subscribers.close();
  await Promise.all(publishers.map((p) => p.close()));
  closeRestConnections();
  await sleep(options.settleAfter ?? 2000);
  const rssAfter = sampler ? sampler.rss() : null;
  if (sampler) sampler.stop();
  if (publishSampler) publishSampler.stop();

  const seconds = (end - t0) / 1000;
  return {
    subscribers: options.subscribers,
    published: publishes,
    publishFailures: failed,
    restRequests,
    expected: expectedTotal,
    delivered,
    lost,
    duplicates,
    starved,
    dropped,
    clientErrors,
    deliveriesPerSec: seconds > 0 ? delivered / seconds : 0,
    publishesPerSec: publishes / ((publishedAt - t0) / 1000),
    ...prefixKeys('latency', latencies.summary()),
    latencySamples: latencies.length,
    setupPerSec: options.subscribers / setupSeconds,
    serverCpu,
    // The efficiency figure that holds when the generator saturates: server CPU ms per
    // 1,000 messages delivered (publishing node included when it is another process).
    cpuMsPer1k: serverCpuSeconds !== null && delivered > 0 ? (serverCpuSeconds * 1e6) / delivered : null,
    publishServerCpu,
    generatorCpu,
    otherCpu,
    generatorProcesses: 1 + subscribers.pids().length,
    rssBefore,
    rssLoaded,
    peakRss,
    rssAfter,
  };
}

function prefixKeys(prefix, object) {
  const out = {};
  for (const [key, value] of Object.entries(object)) out[prefix + key[0].toUpperCase() + key.slice(1)] = value;
  return out;
}

// How a client's setup failed, from the error its socket or request reported.
function failureKind(error) {
  const code = error && error.code;
  if (code === 'ETIMEDOUT' || (error && error.timedOut)) return 'timedOut';
  if (code === 'ECONNREFUSED') return 'refused';
  if (code === 'ECONNRESET' || code === 'EPIPE' || /socket hang up|closed/i.test(String(error && error.message))) return 'reset';
  return 'other';
}

function withTimeout(promise, ms) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error(`no answer within ${ms} ms`), { timedOut: true })), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// Loopback source addresses for many connections to one server port: each gives its own
// ~28,000 ephemeral ports (net.ipv4.ip_local_port_range), so 50,000 clients need two.
function sourceAddresses(connections, perAddress = 25000) {
  const count = Math.ceil(connections / perAddress);
  return count <= 1 ? [undefined] : Array.from({ length: count }, (_, k) => `127.0.0.${k + 1}`);
}

// A JWT (HS256) as pandapush.tokens.mintToken makes it: may subscribe to `channel`.
function mintToken(keyId, secret, channel, claims = { sub: true }) {
  const b64 = (object) => Buffer.from(JSON.stringify(object)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ keyId, channel, ...claims })}`;
  return `${body}.${crypto.createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/*
 * Reconnect storm: `clients` clients each open a connection (websocket, or long-polling
 * requests), handshake, make their first connect and subscribe, with at most `inflight`
 * of them setting up at once, as after a deploy or a network blip. Reports setups/s, the
 * clients refused, reset or timed out (each has `timeout` ms), the kernel's listen-queue
 * counters over the storm, and the server's CPU per 1,000 setups.
 */
async function runStorm(o) {
  const options = { transport: 'websocket', clients: 3000, inflight: 200, channels: 100, timeout: 30000, app: DEFAULT_APP, tag: 'storm', tree: false, ...o };
  const sampler = options.pid ? new ProcessSampler(options.pid, 100, { tree: options.tree }) : null;
  const prefix = `/${options.app}/public/bench/${options.tag}`;
  const failures = { refused: 0, reset: 0, timedOut: 0, other: 0 };
  const firstErrors = [];
  const net0 = netCounters();
  const cpuMark = sampler ? sampler.markCpu() : null;
  const selfMark = selfCpuMark();
  const othersAt = othersMark([process.pid, ...(sampler ? sampler.pids() : [])]);
  const setupStart = performance.now();
  const clients = (
    await pool(options.clients, options.inflight, async (i) => {
      const client = makeClient(options.transport, options.url);
      try {
        await withTimeout(
          (async () => {
            await client.open();
            await client.subscribe([`${prefix}/c${i % options.channels}`]);
          })(),
          options.timeout,
        );
        return client;
      } catch (error) {
        failures[failureKind(error)]++;
        if (firstErrors.length < 5) firstErrors.push(String(error.code || error.message));
        client.close(false).catch(() => {});
        return null;
      }
    })
  ).filter(Boolean);
  const seconds = (performance.now() - setupStart) / 1000;
  const serverCpu = cpuMark ? sampler.cpuSince(cpuMark) : null;
  const serverCpuSeconds = cpuMark ? sampler.cpuSecondsSince(cpuMark) : null;
  const generatorCpu = selfCpuSince(selfMark);
  const otherCpu = othersSince(othersAt);
  const net = netCountersSince(net0);
  const peakRss = sampler ? sampler.peak : null;
  await pool(clients.length, 256, (i) => clients[i].close());
  if (sampler) sampler.stop();
  return {
    clients: options.clients,
    setups: clients.length,
    setupPerSec: clients.length / seconds,
    seconds,
    ...failures,
    failed: options.clients - clients.length,
    firstErrors: firstErrors.join(' '),
    listenOverflows: net.ListenOverflows,
    listenDrops: net.ListenDrops,
    synRetrans: net.TCPSynRetrans,
    resetsSent: net.OutRsts,
    serverCpu,
    cpuMsPer1k: serverCpuSeconds !== null && clients.length > 0 ? (serverCpuSeconds * 1e6) / clients.length : null,
    generatorCpu,
    otherCpu,
    peakRss,
  };
}

/*
 * Idle connections: `connections` websocket clients, each subscribed to one of
 * `channels` channels, held open; memory per connection is the RSS it added. One
 * message per channel afterwards proves every connection still delivers.
 */
async function runIdle(o) {
  const options = { connections: 10000, channels: 100, concurrency: 64, settle: 3000, app: DEFAULT_APP, tag: 'idle', ...o };
  const sources = sourceAddresses(options.connections);
  const sampler = options.pid ? new ProcessSampler(options.pid) : null;
  const prefix = `/${options.app}/public/bench/${options.tag}`;
  const rssBefore = sampler ? sampler.rss() : 0;
  let delivered = 0;
  const received = new Uint32Array(options.connections);
  const setupStart = performance.now();
  const cpuMark = sampler ? sampler.markCpu() : null;
  let failures = 0;
  let firstError = '';
  const clients = (
    await pool(options.connections, options.concurrency, async (i) => {
      const client = makeClient('websocket', options.url, { localAddress: sources[i % sources.length] });
      try {
        await client.open();
        await client.subscribe([`${prefix}/c${i % options.channels}`]);
      } catch (error) {
        failures++;
        firstError = firstError || String(error.code || error.message);
        return null;
      }
      client.onDelivery = () => {
        received[i]++;
        delivered++;
      };
      return client;
    })
  ).filter(Boolean);
  const setupSeconds = (performance.now() - setupStart) / 1000;
  const setupCpuSeconds = cpuMark ? sampler.cpuSecondsSince(cpuMark) : null;
  await sleep(options.settle);
  // RSS settles once the setup garbage is collected; take the lowest of a few samples.
  let rssLoaded = Infinity;
  for (let k = 0; k < 5; k++) {
    rssLoaded = Math.min(rssLoaded, sampler ? sampler.rss() : 0);
    await sleep(200);
  }
  const peakRss = sampler ? sampler.peak : null;

  // Liveness: one message per channel reaches every connection.
  const publisher = makeClient('websocket', options.url);
  await publisher.open();
  const ext = options.key ? { auth: { key: options.key, secret: options.secret } } : undefined;
  for (let j = 0; j < options.channels; j++) publisher.publish(`${prefix}/c${j}`, { s: j, t: performance.now(), p: '' }, ext);
  const deliverMark = sampler ? sampler.markCpu() : null;
  const deliverStart = performance.now();
  for (let waited = 0; delivered < clients.length && waited < 20000; waited += 20) await sleep(20);
  const deliverSeconds = (performance.now() - deliverStart) / 1000;
  const deliverCpuSeconds = deliverMark ? sampler.cpuSecondsSince(deliverMark) : null;
  const dropped = clients.filter((c) => c.dropped).length;
  let lost = 0;
  received.forEach((count, i) => {
    if (count === 0) lost++;
  });
  lost -= options.connections - clients.length; // failed to connect is counted apart

  await pool(clients.length, 256, (i) => clients[i].close());
  await publisher.close();
  await sleep(options.settleAfter ?? 3000);
  const rssAfter = sampler ? sampler.rss() : null;
  if (sampler) sampler.stop();
  return {
    connections: clients.length,
    connectFailures: failures,
    firstError,
    // Server CPU ms per 1,000 clients set up, and per 1,000 of the liveness deliveries
    // (one message per channel reaching every idle client; seconds include the 20 ms polls).
    setupCpuMsPer1k: setupCpuSeconds !== null ? (setupCpuSeconds * 1e6) / Math.max(1, clients.length) : null,
    cpuMsPer1k: deliverCpuSeconds !== null && delivered > 0 ? (deliverCpuSeconds * 1e6) / delivered : null,
    deliverSeconds,
    setupPerSec: clients.length / setupSeconds,
    rssBefore,
    rssLoaded,
    peakRss,
    rssAfter,
    bytesPerConnection: (rssLoaded - rssBefore) / Math.max(1, clients.length),
    delivered,
    lost,
    dropped,
  };
}

module.exports = { runFanout, runIdle, runStorm, mintToken, probeRest, basic, DEFAULT_APP, Samples, pool };

if (require.main === module) {
  const args = process.argv.slice(2);
  const get = (name, fallback) => {
    const index = args.indexOf(`--${name}`);
    return index >= 0 ? args[index + 1] : fallback;
  };
  const has = (name) => args.includes(`--${name}`);
  const channels = Number(get('channels', 1));
  const options = {
    url: get('url', 'http://127.0.0.1:3000/push'),
    pid: get('pid') ? Number(get('pid')) : undefined,
    transport: get('transport', 'websocket'),
    subscribers: Number(get('subscribers', 200)),
    channels,
    publishers: Number(get('publishers', 1)),
    publishVia: has('rest-batch') ? 'rest-batch' : has('rest') ? 'rest' : has('http-batch') ? 'http-batch' : has('http') ? 'http' : 'websocket',
    batchSize: Number(get('rest-batch', get('http-batch', 10))),
    mode: get('mode', 'burst'),
    messages: Number(get('messages', 1000)),
    rate: Number(get('rate', 100)),
    duration: Number(get('duration', 10)),
    warmup: Number(get('warmup', 0)),
    size: Number(get('size', 64)),
    app: get('app', DEFAULT_APP),
    key: get('rest-key'),
    secret: get('rest-secret'),
    tag: get('tag', 'cli'),
    idleTimeout: Number(get('idle-timeout', 5000)),
    window: Number(get('window', 500)),
    subscriberProcesses: Number(get('subscriber-processes', 0)),
    duplicateEvery: Number(get('duplicate-every', 0)),
  };
  if (has('wildcard')) {
    const prefix = `/${options.app}/public/bench/${options.tag}`;
    options.subscriptionsOf = (i) => [i % 2 ? `${prefix}/*` : `${prefix}/**`];
    options.matches = () => true;
  }
  const run = has('storm')
    ? runStorm({ ...options, clients: Number(get('clients', 3000)), inflight: Number(get('inflight', 200)) })
    : has('idle')
      ? runIdle({ ...options, connections: Number(get('connections', 1000)) })
      : runFanout(options);
  run
    .then((result) => {
      process.stdout.write(JSON.stringify(result) + '\n');
      process.exit(0);
    })
    .catch((error) => {
      process.stderr.write(`${error.stack || error}\n`);
      process.exit(1);
    });
}
