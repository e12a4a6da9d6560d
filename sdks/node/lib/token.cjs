'use strict';
// Pandapush tokens: HS256 JWTs signed with a key's secret, scoped to one channel. A JWT is
// three base64url parts and one HMAC-SHA256, so the package needs no JWT library.

const crypto = require('node:crypto');

const HEADER = { alg: 'HS256', typ: 'JWT' };

function base64url(text) {
  return Buffer.from(text, 'utf8').toString('base64url');
}

/** `claims` as a JWT signed with HMAC-SHA256 under `secret`. */
function signHS256(claims, secret) {
  const signing = `${base64url(JSON.stringify(HEADER))}.${base64url(JSON.stringify(claims))}`;
  return `${signing}.${crypto.createHmac('sha256', secret).update(signing).digest('base64url')}`;
}

/**
 * A token for `channel` (it may end in /* or /**) with the claims pandapush reads: keyId,
 * channel, pub, sub, presence (an object with at least an `id`, for presence channels) and
 * exp (`expiresIn` seconds from `now`, in seconds; without it the token never expires), and
 * user (the user the subscriber is: the server's terminate_connections for that user ends it).
 */
function mintToken({ keyId, secret, channel, pub = false, sub = false, presence, expiresIn, user, now } = {}) {
  if (!keyId || !secret) throw new TypeError('a token needs a key id and its secret');
  if (typeof channel !== 'string' || !channel.startsWith('/')) {
    throw new TypeError(`a channel starts with '/': ${JSON.stringify(channel)}`);
  }
  const claims = { keyId, channel, pub: Boolean(pub), sub: Boolean(sub) };
  if (presence !== undefined && presence !== null) {
    if (typeof presence !== 'object' || Array.isArray(presence) || presence.id === undefined || presence.id === null || presence.id === '') {
      throw new TypeError("presence must be an object with at least an 'id'");
    }
    claims.presence = { ...presence };
  }
  if (user !== undefined && user !== null) {
    const valid = (typeof user === 'string' && user !== '') || Number.isInteger(user);
    if (!valid) throw new TypeError('user must be a non-empty string or an integer');
    claims.user = String(user);
  }
  if (expiresIn !== undefined && expiresIn !== null) {
    if (typeof expiresIn !== 'number' || !Number.isFinite(expiresIn)) {
      throw new TypeError('expiresIn must be a number of seconds');
    }
    if (expiresIn <= 0) throw new RangeError(`expiresIn must be positive, not ${expiresIn}`);
    claims.exp = Math.trunc((now ?? Date.now() / 1000) + expiresIn);
  }
  return signHS256(claims, secret);
}

module.exports = { mintToken, signHS256 };
