#!/usr/bin/env node
// Plays one scenario from scenarios.js with Faye's Node client and prints what it observes
// as JSON lines on stdout (see scenarios.js for the events).
//
//   node faye-client.js <scenario> <endpoint> [--transport=websocket|long-polling]
//                       [--channel=/x/y] [--wait=ms] [--settle=ms] [--deadline=ms]
//                       [--prefix=/<app>/public] [--auth=<key>:<secret>|token:<jwt>]
//
//   node faye-client.js roundtrip http://127.0.0.1:3000/push --transport=long-polling
//
// --prefix goes before every channel the scenario uses; --auth is put in ext.auth of
// every publish (pandapush's tenancy wants both; Faye's own server neither).
//
// Faye's Node client knows two network transports: websocket (its first choice) and
// long-polling; --transport=long-polling disables websocket. When a scenario reaches a
// point where the driver must act (e.g. restart the server) it prints {"event":"ready",
// "name":...} and waits for that name as a line on stdin.
//
// Exit status: 0 done, 1 the scenario failed, 2 bad usage, 3 the deadline passed.
'use strict';

const readline = require('readline');
const faye = require('faye');
const scenarios = require('./scenarios');

const started = Date.now();

// --auth=<key>:<secret> or --auth=token:<jwt>: credentials put on every publish.
function parseAuth(value) {
  if (!value) return null;
  const colon = value.indexOf(':');
  if (colon < 0) throw new Error('--auth wants <key>:<secret> or token:<jwt>');
  const [first, rest] = [value.slice(0, colon), value.slice(colon + 1)];
  return first === 'token' ? { token: rest } : { key: first, secret: rest };
}

function report(event) {
  event.t = Date.now() - started;
  process.stdout.write(JSON.stringify(event) + '\n');
}

function usage(message) {
  process.stderr.write(message + '\nusage: faye-client.js <' + scenarios.names.join('|') +
    '> <endpoint> [--transport=websocket|long-polling] [--channel=/x] [--wait=ms] [--settle=ms]' +
    ' [--prefix=/<app>/public] [--auth=<key>:<secret>]\n');
  process.exit(2);
}

const positional = [];
const flags = {};
for (const arg of process.argv.slice(2)) {
  const match = /^--([a-z-]+)=(.*)$/.exec(arg);
  if (match) flags[match[1]] = match[2];
  else positional.push(arg);
}
if (positional.length !== 2) usage('need a scenario and an endpoint');
const [name, url] = positional;

const disable = [];
const transport = flags.transport || 'websocket';
if (transport === 'long-polling') disable.push('websocket');
else if (transport !== 'websocket') usage('Faye in Node has no transport ' + transport);

// Lines from the driver, for Harness.ready(name).
const lines = [];
const waiters = [];
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  lines.push(line.trim());
  while (waiters.length) waiters.shift()();
});
function resume(step) {
  return new Promise((resolve) => {
    (function check() {
      const index = lines.indexOf(step);
      if (index >= 0) {
        lines.splice(index, 1);
        resolve();
      } else {
        waiters.push(check);
      }
    })();
  });
}

const deadline = Number(flags.deadline || 60000);
setTimeout(() => {
  report({ event: 'failed', error: 'deadline of ' + deadline + ' ms passed' });
  process.exit(3);
}, deadline).unref();

process.on('unhandledRejection', (error) => {
  report({ event: 'failed', error: 'unhandled rejection: ' + (error && error.stack || error) });
  process.exit(1);
});

report({ event: 'client', faye: faye.VERSION, node: process.version, transport });
scenarios.run(faye, name, {
  url,
  disable,
  transport,
  channel: flags.channel,
  prefix: flags.prefix,
  auth: parseAuth(flags.auth),
  waitMs: flags.wait ? Number(flags.wait) : undefined,
  settleMs: flags.settle ? Number(flags.settle) : undefined,
  resume,
}, report).then((ok) => {
  // Faye keeps timers and sockets alive after a disconnect; leave once stdout is written.
  process.stdout.write('', () => process.exit(ok ? 0 : 1));
});
