#!/usr/bin/env node
'use strict';
// Publish one message with Faye's Node client, as a browser would, with a `pub` token:
//
//   node publish.js /exampleApp0000000001/public/news '{"text": "hello"}'
//   node publish.js /exampleApp0000000001/public/news 'plain text works too'
//
// (A server would rather use the pandapush package's publish(), over HTTP.)

const faye = require('faye');
const { URL, token, authExtension, report } = require('./auth');

const [channel, text] = process.argv.slice(2);
if (!channel || text === undefined) {
  console.error('usage: publish.js <channel> <JSON or text>');
  process.exit(2);
}
let data;
try {
  data = JSON.parse(text);
} catch {
  data = text;
}

const client = new faye.Client(`${URL}/push`);
client.addExtension(authExtension(channel, token(channel, { pub: true })));
client.publish(channel, data).then(
  () => {
    report({ event: 'published', channel, data });
    Promise.resolve(client.disconnect()).finally(() => process.exit(0));
  },
  (error) => {
    console.error(`publish refused: ${error.message}`);
    process.exit(1);
  },
);
