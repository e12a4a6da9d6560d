#!/usr/bin/env node
// Send a user a notification from Node (the pandapush package, sdks/node):
//
//   node examples/notifications/notify.mjs 42 "Your export is ready"
//
// It lands on /<app>/private/users/<user>/notifications; watch it with
// node examples/faye-client/subscribe.js /exampleApp0000000001/private/users/42/notifications

import { Client, PandapushError } from '../../sdks/node/index.mjs'; // installed: from 'pandapush'

const [user, text] = process.argv.slice(2);
if (!user || !text) {
  console.error('usage: notify.mjs <user id> <text>');
  process.exit(2);
}

const pandapush = new Client({
  url: process.env.PANDAPUSH_URL || 'http://localhost:3000',
  keyId: process.env.PANDAPUSH_KEY_ID || 'PSIDexampleKey000001',
  secret: process.env.PANDAPUSH_KEY_SECRET || 'example-secret-0123456789',
});
const channel = `/${process.env.PANDAPUSH_APP_ID || 'exampleApp0000000001'}/private/users/${user}/notifications`;

try {
  await pandapush.publish(channel, { text, from: 'node', at: new Date().toISOString() });
  console.log(`sent to ${channel}`);
} catch (error) {
  if (!(error instanceof PandapushError)) throw error;
  console.error(`not sent: ${error.message}`); // typed: ForbiddenError, UnavailableError, NetworkError...
  process.exit(1);
}
