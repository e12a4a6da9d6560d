#!/usr/bin/env node
// Faye's Node client resuming a subscription through pandapush's history, with a small
// extension that does what an application (or /client.js) would: it remembers the last
// ext.position of every channel it received and sends them as ext.resume on every
// /meta/subscribe. Prints JSON lines on stdout; the driver answers "ready" events with
// the named line on stdin.
//
//   node resume-client.js <subscription> <endpoint> [<endpoint of the second client>]
//        [--transport=websocket|long-polling] [--latest]
//
// Steps: client A subscribes ({event:"subscribed", client:"A", ext}), ready "first";
// on "leave" it disconnects, ready "left"; on "back" client B (a new session, maybe on
// another node) subscribes with the positions A saw, ready "resumed"; on "end" it exits.
// Every message either receives: {event:"message", client, channel, data, position}.
'use strict';

const readline = require('readline');
const faye = require('faye');

const started = Date.now();
function report(event) {
  event.t = Date.now() - started;
  process.stdout.write(JSON.stringify(event) + '\n');
}

const positional = [];
const flags = {};
for (const arg of process.argv.slice(2)) {
  const match = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
  if (match) flags[match[1]] = match[2] === undefined ? true : match[2];
  else positional.push(arg);
}
const [subscription, firstUrl, secondUrl] = positional;
if (!subscription || !firstUrl) {
  process.stderr.write('usage: resume-client.js <subscription> <endpoint> [<endpoint>] [--transport=...]\n');
  process.exit(2);
}

const lines = [];
const waiters = [];
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  lines.push(line.trim());
  while (waiters.length) waiters.shift()();
});
function step(name) {
  report({ event: 'ready', name });
  return new Promise((resolve) => {
    (function check() {
      const index = lines.indexOf(name === 'first' ? 'leave' : name === 'left' ? 'back' : 'end');
      if (index >= 0) {
        lines.splice(index, 1);
        resolve();
      } else {
        waiters.push(check);
      }
    })();
  });
}

setTimeout(() => {
  report({ event: 'failed', error: 'deadline passed' });
  process.exit(3);
}, Number(flags.deadline || 60000)).unref();

// channel -> the last position received on it (shared by both clients: one application).
const positions = {};

function covers(pattern, channel) {
  if (pattern === channel) return true;
  if (pattern.endsWith('/**')) return channel.startsWith(pattern.slice(0, -2));
  if (pattern.endsWith('/*')) {
    const prefix = pattern.slice(0, -1);
    return channel.startsWith(prefix) && channel.indexOf('/', prefix.length) < 0;
  }
  return false;
}

function positionsExtension(name) {
  return {
    outgoing(message, callback) {
      if (message.channel === '/meta/subscribe') {
        const resume = {};
        for (const channel of Object.keys(positions)) {
          if (covers(message.subscription, channel)) resume[channel] = positions[channel];
        }
        message.ext = message.ext || {};
        if (Object.keys(resume).length) message.ext.resume = resume;
        if (flags.latest) message.ext.latest = true;
      }
      callback(message);
    },
    incoming(message, callback) {
      if (message.channel === '/meta/subscribe') {
        report({ event: 'subscribed', client: name, successful: message.successful, error: message.error,
          ext: message.ext || null });
      } else if (!message.channel.startsWith('/meta/') && 'data' in message) {
        const position = message.ext && message.ext.position;
        if (position) positions[message.channel] = position;
        report({ event: 'message', client: name, channel: message.channel, data: message.data,
          position: position || null });
      }
      callback(message);
    },
  };
}

function makeClient(name, url) {
  const client = new faye.Client(url, { retry: 0.5, timeout: 10 });
  if (flags.transport === 'long-polling') client.disable('websocket');
  client.addExtension(positionsExtension(name));
  return client;
}

(async () => {
  const a = makeClient('A', firstUrl);
  await a.subscribe(subscription, () => {});
  await step('first');
  await a.disconnect();
  await step('left');
  const b = makeClient('B', secondUrl || firstUrl);
  await b.subscribe(subscription, () => {});
  await step('resumed');
  await b.disconnect();
  report({ event: 'done' });
  process.stdout.write('', () => process.exit(0));
})().catch((error) => {
  report({ event: 'failed', error: String(error && error.stack || error) });
  process.exit(1);
});
