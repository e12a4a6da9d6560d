'use strict';
// Checking that a webhook request came from pandapush. X-Pandapush-Key names the signing key,
// X-Pandapush-Signature is the hex HMAC-SHA256 of the raw body under that key's secret. The
// comparison takes the same time whatever the signature, so it cannot be learnt a byte at a time.

const crypto = require('node:crypto');
const { InvalidWebhookError } = require('./errors.cjs');

const SIGNATURE_HEADER = 'X-Pandapush-Signature';
const KEY_HEADER = 'X-Pandapush-Key';

function bytes(body) {
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  throw new TypeError('the webhook body is the raw request body: a string, Buffer or Uint8Array');
}

/** The signature pandapush sends with `body`. */
function signWebhook(secret, body) {
  return crypto.createHmac('sha256', secret).update(bytes(body)).digest('hex');
}

function safeEqual(a, b) {
  // Digests of both have one length, whatever was sent: timingSafeEqual needs that.
  const left = crypto.createHash('sha256').update(a).digest();
  const right = crypto.createHash('sha256').update(b).digest();
  return crypto.timingSafeEqual(left, right) && Buffer.from(a).equals(Buffer.from(b));
}

/**
 * True if `signature` signs the raw `body` under `secret` (and `signedBy`, the X-Pandapush-Key
 * header, when given, names `keyId`). Verify the bytes as received, not a re-serialized object.
 */
function verifyWebhook({ keyId, secret, body, signature, signedBy }) {
  if (signedBy !== undefined && signedBy !== null && !safeEqual(String(signedBy), String(keyId))) return false;
  if (typeof signature !== 'string' || signature === '') return false;
  return safeEqual(signWebhook(secret, body), signature.trim().toLowerCase());
}

/** A header from a plain object (any case), a Headers/Map (`get`), or an array of [name, value]. */
function header(headers, name) {
  if (!headers) return undefined;
  if (typeof headers.get === 'function') return headers.get(name) ?? headers.get(name.toLowerCase()) ?? undefined;
  const entries = Array.isArray(headers) ? headers : Object.entries(headers);
  const wanted = name.toLowerCase();
  for (const [key, value] of entries) {
    if (String(key).toLowerCase() === wanted) return Array.isArray(value) ? value[0] : value;
  }
  return undefined;
}

/** The webhook's payload once its signature is checked; InvalidWebhookError otherwise. */
function parseWebhook({ keyId, secret, body, headers }) {
  const signature = header(headers, SIGNATURE_HEADER);
  const signedBy = header(headers, KEY_HEADER);
  if (!verifyWebhook({ keyId, secret, body, signature, signedBy })) {
    throw new InvalidWebhookError('Webhook signature or key does not match');
  }
  try {
    return JSON.parse(bytes(body).toString('utf8'));
  } catch {
    throw new InvalidWebhookError('Webhook body is not JSON');
  }
}

module.exports = { SIGNATURE_HEADER, KEY_HEADER, signWebhook, verifyWebhook, parseWebhook };
