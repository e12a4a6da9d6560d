#!/usr/bin/env node
'use strict';
// Subscribe with Faye's Node client and print every message as a JSON line:
//
//   node subscribe.js /exampleApp0000000001/public/news
//   node subscribe.js /exampleApp0000000001/private/users/42/notifications
//   node subscribe.js '/exampleApp0000000001/private/users/42/**'      (wildcards: the channel is printed too)
//
// Public channels need no token; private and presence ones get a `sub` token (presence: with a
// member id). Ctrl-C disconnects (a presence channel sees the member leave at once).

const faye = require('faye');
const { URL, token, authExtension, report } = require('./auth');

const channel = process.argv[2];
if (!channel || process.argv.length > 3) {
  console.error('usage: subscribe.js <channel>');
  process.exit(2);
}

const client = new faye.Client(`${URL}/push`);
const type = channel.split('/')[2];
if (type !== 'public') {
  const presence = type === 'presence' ? { id: `faye-${process.pid}`, name: 'Faye example' } : undefined;
  client.addExtension(authExtension(channel, token(channel, { sub: true, presence })));
}

const subscription = client.subscribe(channel);
subscription.withChannel((from, data) => report({ event: 'message', channel: from, data }));
subscription.then(
  () => report({ event: 'subscribed', channel }),
  (error) => {
    console.error(`subscribe refused: ${error.message}`);
    process.exit(1);
  },
);

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    Promise.resolve(client.disconnect()).finally(() => process.exit(0));
  });
}
