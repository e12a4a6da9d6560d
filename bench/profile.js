#!/usr/bin/env node
'use strict';
// Profiles pandapush under the burst fan-out with py-spy, sampling only while bursts run
// (not client setup or teardown), and prints the top functions.
//
//   .venv/bin/pip install py-spy      (once)
//   node bench/profile.js [--subscribers 200] [--messages 1000] [--seconds 15] [--rate 1000]
//                         [--channels 1] [--publishers 1]   (chat shape: --subscribers 2000 --channels 500 --publishers 4)
//                         [--transport websocket|long-polling] [--out /tmp/profile.txt]
//                         [--source HEAD|<rev>|worktree]
//
// Writes py-spy's raw collapsed stacks to --out (feed them to flamegraph.pl, or read the
// summary printed by bench/tools/pyspy-summary.py).

const { spawn, execFileSync } = require('child_process');
const path = require('path');
const os = require('os');
const fs = require('fs');
const { performance } = require('perf_hooks');
const { makeClient } = require('./lib/bayeux');
const { pool, DEFAULT_APP } = require('./loadgen');
const servers = require('./lib/servers');

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const index = args.indexOf(`--${name}`);
  return index >= 0 ? args[index + 1] : fallback;
};
const subscribersCount = Number(option('subscribers', 200));
const messages = Number(option('messages', 1000));
const seconds = Number(option('seconds', 15));
const rate = Number(option('rate', 1000));
const transport = option('transport', 'websocket');
const channels = Number(option('channels', 1));
const publishersCount = Number(option('publishers', 1));
const out = option('out', path.join(os.tmpdir(), `pandapush-profile-${Date.now()}.txt`));
const pyspy = option('py-spy', path.join(servers.ROOT, '.venv', 'bin', 'py-spy'));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  if (!fs.existsSync(pyspy)) throw new Error(`no py-spy at ${pyspy}: .venv/bin/pip install py-spy`);
  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pandapush-profile-'));
  const rest = { app: DEFAULT_APP, key: 'PSIDbenchBENCHbench0', secret: 'bench-secret-0123456789abcdefghijklmnopqrstuvwxyz' };
  if (option('experiment')) servers.useExperiments(option('experiment'));
  process.stderr.write(`pandapush source: ${servers.useSource(option('source', 'HEAD'))}\n`);
  const server = await servers.startPandapush({ logDir, rest });
  const names = Array.from({ length: channels }, (_, j) => `/${DEFAULT_APP}/public/bench/profile/c${j}`);
  let delivered = 0;
  let acked = 0;
  const subscribers = await pool(subscribersCount, 64, async (i) => {
    const client = makeClient(transport, server.url);
    await client.open();
    client.onDelivery = () => delivered++;
    await client.subscribe([names[i % channels]]);
    return client;
  });
  const publishers = await pool(publishersCount, 8, async () => {
    const client = makeClient('websocket', server.url);
    await client.open();
    client.onAck = () => acked++;
    return client;
  });

  const ext = { auth: { key: rest.key, secret: rest.secret } };
  const spy = spawn(pyspy, ['record', '-p', String(server.pid), '-r', String(rate), '-d', String(seconds), '-f', 'raw', '-o', out, '--nonblocking'], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const spyDone = new Promise((resolve) => spy.once('exit', resolve));
  await sleep(500);
  const start = performance.now();
  let bursts = 0;
  let sent = 0;
  while (performance.now() - start < (seconds - 1.5) * 1000) {
    // Each message reaches the subscribers of its channel (round-robin over channels).
    const target = delivered + (messages * subscribersCount) / channels;
    for (let k = 0; k < messages; k++) {
      const seq = sent++;
      publishers[seq % publishersCount].publish(names[seq % channels], { s: seq, t: performance.now(), p: 'x'.repeat(30) }, ext);
      // Stay within a window of 500 unacknowledged publishes, like the burst scenario.
      while (sent - acked > 500) await sleep(1);
    }
    while (delivered < target) await sleep(1);
    bursts++;
  }
  const elapsed = (performance.now() - start) / 1000;
  process.stderr.write(
    `${bursts} bursts of ${messages} to ${subscribersCount} subscribers on ${channels} channels: ${((bursts * messages * subscribersCount) / channels / elapsed).toFixed(0)} deliveries/s, ${((bursts * messages) / elapsed).toFixed(0)} publishes/s under the profiler\n`,
  );
  await spyDone;
  await pool(subscribers.length, 256, (i) => subscribers[i].close());
  await Promise.all(publishers.map((p) => p.close()));
  await server.stop();
  process.stdout.write(execFileSync('python3', [path.join(__dirname, 'tools', 'pyspy-summary.py'), out, '--top', '30']).toString());
  process.stderr.write(`raw profile: ${out}\n`);
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`${error.stack || error}\n`);
    process.exit(1);
  },
);
