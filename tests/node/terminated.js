#!/usr/bin/env node
// Faye's Node client, subscribed to a presence channel with a token, reports what it sends
// after the server ends it (terminate_connections): it must neither handshake again nor
// keep connecting. Prints one JSON line when --duration ms have passed after subscribing:
//
//   {"subscribed": true, "after": [{"t": ms, "channel": "/meta/connect"}, ...],
//    "advice": ["none", ...]}
//
//   node terminated.js <endpoint> <channel> <token> [--transport=websocket|long-polling] [--duration=ms]
'use strict';

const faye = require('faye');

const positional = [];
const flags = {};
for (const arg of process.argv.slice(2)) {
  const match = /^--([a-z-]+)=(.*)$/.exec(arg);
  if (match) flags[match[1]] = match[2];
  else positional.push(arg);
}
const [url, channel, token] = positional;
const duration = Number(flags.duration || 4000);
const client = new faye.Client(url, { timeout: 5, retry: 0.2 });
if (flags.transport === 'long-polling') client.disable('websocket');

let subscribedAt = null;
const after = [];
const advice = [];
client.addExtension({
  outgoing(message, callback) {
    if (message.channel === '/meta/subscribe') message.ext = { auth: { token } };
    if (subscribedAt !== null) after.push({ t: Date.now() - subscribedAt, channel: message.channel });
    callback(message);
  },
  incoming(message, callback) {
    if (subscribedAt !== null && message.advice) advice.push(message.advice.reconnect);
    callback(message);
  },
});
client.subscribe(channel, () => {}).then(
  () => {
    subscribedAt = Date.now();
    process.stdout.write(JSON.stringify({ ready: true }) + '\n');
    setTimeout(() => {
      process.stdout.write(JSON.stringify({ subscribed: true, after, advice }) + '\n');
      process.exit(0);
    }, duration);
  },
  (error) => {
    process.stdout.write(JSON.stringify({ subscribed: false, error: String(error && error.message) }) + '\n');
    process.exit(1);
  },
);
