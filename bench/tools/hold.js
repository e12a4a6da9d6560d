'use strict';
// Opens N idle websocket clients (subscribed over 100 channels), then signals the server
// (SIGUSR2: the `memtrace` experiment's snapshot) and holds them for a while.
//   node bench/tools/hold.js URL PID N [holdSeconds]
const { makeClient } = require('../lib/bayeux');
const { pool, DEFAULT_APP } = require('../loadgen');

const [url, pid, n, hold = '8'] = process.argv.slice(2);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

(async () => {
  process.kill(Number(pid), 'SIGUSR2');
  await sleep(3000);
  const clients = await pool(Number(n), 64, async (i) => {
    const client = makeClient('websocket', url);
    await client.open();
    await client.subscribe([`/${DEFAULT_APP}/public/bench/hold/c${i % 100}`]);
    return client;
  });
  await sleep(3000);
  process.kill(Number(pid), 'SIGUSR2');
  await sleep(Number(hold) * 1000);
  await pool(clients.length, 256, (i) => clients[i].close());
  process.exit(0);
})();
