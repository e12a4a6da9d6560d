'use strict';
// What both scripts share: where pandapush is, and a Faye extension that puts a token on the
// messages that need one (pandapush reads it from ext.auth).
//
// A browser would get its token from your backend; these scripts play both parts and mint it
// themselves with the pandapush package (sdks/node), which needs the key's secret.

const { mintToken } = require('../../sdks/node'); // installed from npm: require('pandapush')

const URL = (process.env.PANDAPUSH_URL || 'http://localhost:3000').replace(/\/+$/, '');
const KEY_ID = process.env.PANDAPUSH_KEY_ID || 'PSIDexampleKey000001';
const SECRET = process.env.PANDAPUSH_KEY_SECRET || 'example-secret-0123456789';

function token(channel, claims) {
  return mintToken({ keyId: KEY_ID, secret: SECRET, channel, expiresIn: 3600, ...claims });
}

// Adds ext.auth = {token} to the subscribe of `channel` and to publishes on it.
function authExtension(channel, token) {
  return {
    outgoing(message, callback) {
      const subscribing = message.channel === '/meta/subscribe' && message.subscription === channel;
      if (subscribing || message.channel === channel) {
        message.ext = { ...message.ext, auth: { token } };
      }
      callback(message);
    },
  };
}

function report(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

module.exports = { URL, token, authExtension, report };
