#!/usr/bin/env node
// Faye's Node client subscribes to a private channel with a short-lived token and reports,
// as JSON lines, what it can observe when the server ends the subscription at the token's
// expiry: the unsolicited /meta/unsubscribe reaching its incoming extension.
//
//   node token-expiry.js <endpoint> <channel> <token>
//
// Events: {"event":"subscribed"}, {"event":"message","data":...} for each delivery,
// {"event":"expired","message":...} for the server's notice. After "expired" it waits for a
// line "finish" on stdin (so the driver can publish once more), then disconnects and exits 0.
'use strict';

const readline = require('readline');
const faye = require('faye');

function report(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

const [url, channel, token] = process.argv.slice(2);
if (!url || !channel || !token) {
  process.stderr.write('usage: token-expiry.js <endpoint> <channel> <token>\n');
  process.exit(2);
}

const client = new faye.Client(url, { retry: 0.5 });
client.addExtension({
  outgoing(message, callback) {
    if (message.channel === '/meta/subscribe') message.ext = { auth: { token } };
    callback(message);
  },
  incoming(message, callback) {
    // Not an answer to anything this client sent: the server ended the subscription.
    if (message.channel === '/meta/unsubscribe' && message.successful === false && message.id === undefined) {
      report({ event: 'expired', message });
    }
    callback(message);
  },
});

const subscription = client.subscribe(channel, (data) => report({ event: 'message', data }));
subscription.then(
  () => report({ event: 'subscribed' }),
  (error) => {
    report({ event: 'failed', error: String(error && error.message) });
    process.exit(1);
  },
);

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() !== 'finish') return;
  // Let a delivery that should not come have its chance to arrive first.
  setTimeout(() => {
    Promise.resolve(client.disconnect()).then(() => process.stdout.write('', () => process.exit(0)));
  }, 500);
});
