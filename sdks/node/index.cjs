'use strict';
// pandapush for Node: publish, mint tokens for browsers, verify webhooks; Node's standard
// library only. `const { Client } = require('pandapush')` or `import { Client } from 'pandapush'`.

const errors = require('./lib/errors.cjs');
const { Client, VERSION, MAX_IDEMPOTENCY_KEY_LENGTH } = require('./lib/client.cjs');
const { mintToken, signHS256 } = require('./lib/token.cjs');
const { SIGNATURE_HEADER, KEY_HEADER, signWebhook, verifyWebhook, parseWebhook } = require('./lib/webhook.cjs');

module.exports = {
  Client,
  VERSION,
  MAX_IDEMPOTENCY_KEY_LENGTH,
  mintToken,
  signHS256,
  SIGNATURE_HEADER,
  KEY_HEADER,
  signWebhook,
  verifyWebhook,
  parseWebhook,
  PandapushError: errors.PandapushError,
  AuthError: errors.AuthError,
  AuthenticationError: errors.AuthenticationError,
  ForbiddenError: errors.ForbiddenError,
  NotFoundError: errors.NotFoundError,
  BadRequestError: errors.BadRequestError,
  RateLimitedError: errors.RateLimitedError,
  ServerError: errors.ServerError,
  UnavailableError: errors.UnavailableError,
  NetworkError: errors.NetworkError,
  TimeoutError: errors.TimeoutError,
  InvalidWebhookError: errors.InvalidWebhookError,
};
