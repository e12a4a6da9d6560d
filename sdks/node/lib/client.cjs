'use strict';
// A client for pandapush's HTTP API, on Node's own fetch. Every method returns a Promise: it
// resolves with the answer or rejects with a PandapushError.
//
// Retries: a call that got no answer (refused, reset, timed out) or a 502/503/504 is sent again
// up to `maxRetries` times, after Retry-After when the server gave one, else after an
// exponential back-off with jitter. Publishes carry an Idempotency-Key (the caller's, or one made
// up per call when retries are on) that stays the same on every attempt, so a server that
// already took the first attempt can drop the repeat.

const crypto = require('node:crypto');
const util = require('node:util');
const errors = require('./errors.cjs');
const { mintToken } = require('./token.cjs');
const webhook = require('./webhook.cjs');

const VERSION = '0.1.0';
const RETRYABLE_STATUSES = new Set([502, 503, 504]);
// The server refuses longer keys (issue 15: "an idempotency key over 200 characters").
const MAX_IDEMPOTENCY_KEY_LENGTH = 200;
const PRINTABLE_ASCII = /^[\x20-\x7e]+$/;

function appOf(channel) {
  const app = typeof channel === 'string' && channel.startsWith('/') ? channel.split('/')[1] : '';
  if (!app) throw new TypeError(`a channel starts with '/<appId>/': ${JSON.stringify(channel)}`);
  return app;
}

function sameApp(channels) {
  const apps = [...new Set(channels.map(appOf))];
  if (apps.length !== 1) throw new TypeError(`all channels must belong to one application, not ${apps.sort().join(', ')}`);
  return apps[0];
}

function retryAfterSeconds(value) {
  if (!value || !value.trim()) return null;
  const seconds = Number(value.trim());
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const when = Date.parse(value);
  return Number.isNaN(when) ? null : Math.max(0, (when - Date.now()) / 1000);
}

// What failed on the way, without the request (fetch's errors hold none of our headers, but
// their causes hold sockets: only a code or a name travels on).
function failureName(error) {
  const cause = error && error.cause;
  return (cause && (cause.code || cause.name)) || (error && (error.code || error.name)) || 'Error';
}

class Client {
  #secret;
  #authorization;

  /**
   * `new Client({ url, keyId, secret })`. `timeout` (ms, default 10000) bounds each attempt,
   * answer included; `maxRetries` (default 2) how many times a call is sent again after no
   * answer or a 502/503/504 (0: never); `retryDelay` (ms, 500) the first back-off, doubled per
   * attempt up to `maxRetryDelay` (ms, 10000), which also bounds how long a Retry-After is
   * honoured (longer, and the error is raised at once). `appId` is the application for calls
   * that name no channel. `logger` (with `info`, e.g. console) hears of retries.
   */
  constructor({ url, keyId, secret, appId = null, timeout = 10000, maxRetries = 2, retryDelay = 500, maxRetryDelay = 10000, logger = null } = {}) {
    let parsed;
    try {
      parsed = new URL(url);
    } catch {
      throw new TypeError(`url must be http(s)://host[:port][/path], not ${JSON.stringify(url)}`);
    }
    if (!['http:', 'https:'].includes(parsed.protocol) || !parsed.hostname) {
      throw new TypeError(`url must be http(s)://host[:port][/path], not ${JSON.stringify(url)}`);
    }
    if (parsed.username || parsed.password) throw new TypeError('give the key and secret as options, not in the url');
    if (!keyId || !secret) throw new TypeError('a Client needs a keyId and its secret');
    if (!(maxRetries >= 0) || !(timeout > 0)) throw new RangeError('maxRetries must be >= 0 and timeout > 0');
    this.url = String(url).replace(/\/+$/, '');
    this.keyId = keyId;
    this.appId = appId;
    this.timeout = timeout;
    this.maxRetries = maxRetries;
    this.retryDelay = retryDelay;
    this.maxRetryDelay = maxRetryDelay;
    this.logger = logger;
    this.#secret = secret;
    this.#authorization = `Basic ${Buffer.from(`${keyId}:${secret}`, 'utf8').toString('base64')}`;
    /** Waits between attempts, in ms (tests replace it to record the delays). */
    this._sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  }

  [util.inspect.custom]() {
    return `Client { url: ${JSON.stringify(this.url)}, keyId: ${JSON.stringify(this.keyId)} }`;
  }

  toJSON() {
    return { url: this.url, keyId: this.keyId, appId: this.appId };
  }

  /**
   * Publish `data` (anything JSON can encode) to `channel` (/<appId>/<type>/<path>). Resolves
   * with undefined once the server accepted it.
   */
  async publish(channel, data, { idempotencyKey } = {}) {
    appOf(channel);
    const path = `/channel/${channel.slice(1).split('/').map(encodeURIComponent).join('/')}`;
    await this.#call('POST', path, { body: data, idempotencyKey: this.#idempotencyKey(idempotencyKey) });
  }

  /** One message to several channels of one application in one request (POST /apps/<appId>/events). */
  async publishMany(channels, data, { idempotencyKey } = {}) {
    if (!Array.isArray(channels) || channels.length === 0) throw new TypeError('channels is a non-empty array of channel names');
    const app = sameApp(channels);
    return this.#call('POST', `/apps/${encodeURIComponent(app)}/events`, {
      body: { channels, data },
      idempotencyKey: this.#idempotencyKey(idempotencyKey),
    });
  }

  /** Several messages ({channel, data} objects or [channel, data] pairs), in order, in one request. */
  async publishBatch(messages, { idempotencyKey } = {}) {
    const batch = Array.from(messages, (message) => {
      if (Array.isArray(message)) return { channel: message[0], data: message[1] };
      if (!message || !('channel' in message) || !('data' in message)) throw new TypeError('each batch message has a channel and data');
      return { channel: message.channel, data: message.data };
    });
    if (batch.length === 0) throw new TypeError('a batch holds at least one message');
    const app = sameApp(batch.map((m) => m.channel));
    return this.#call('POST', `/apps/${encodeURIComponent(app)}/batch_events`, {
      body: { batch },
      idempotencyKey: this.#idempotencyKey(idempotencyKey),
    });
  }

  /**
   * A JWT for a browser (client.subscribeTo(channel, token, ...) with /client.js):
   * `token({ channel, pub, sub, presence, expiresIn, user })` (or `token(channel, { ... })`); `pub`
   * lets it publish on `channel`, `sub` subscribe, `presence` ({ id, ... }) names the member on a
   * presence channel, `expiresIn` seconds bound its life, `user` names the user it is for
   * (terminateUserConnections(user) then ends what it subscribed). A Promise like every other call;
   * `mintToken` is the synchronous form.
   */
  async token(channelOrOptions, options = {}) {
    const claims = typeof channelOrOptions === 'string' ? { ...options, channel: channelOrOptions } : { ...channelOrOptions };
    const { channel, pub, sub, presence, expiresIn, user } = claims;
    return mintToken({ keyId: this.keyId, secret: this.#secret, channel, pub, sub, presence, expiresIn, user });
  }

  /**
   * True if `signature` (X-Pandapush-Signature) signs the raw `body` (string or Buffer) with this
   * client's secret, and `keyId` (X-Pandapush-Key), when given, is this client's key.
   */
  async verifyWebhook(body, signature, { keyId } = {}) {
    return webhook.verifyWebhook({ keyId: this.keyId, secret: this.#secret, body, signature, signedBy: keyId });
  }

  /** The verified webhook payload (`headers`: a plain object, Headers or Map); rejects with InvalidWebhookError. */
  async parseWebhook(body, headers) {
    return webhook.parseWebhook({ keyId: this.keyId, secret: this.#secret, body, headers });
  }

  /** {occupied, subscription_count, user_count} of one channel. */
  async channel(name) {
    return this.#call('GET', `/apps/${encodeURIComponent(appOf(name))}/channel`, { query: { name } });
  }

  /** The occupied channels (those starting with `prefix`): {channels: {name: {...}}}. */
  async channels({ prefix, appId } = {}) {
    const app = prefix ? appOf(prefix) : this.#appFor(appId);
    return this.#call('GET', `/apps/${encodeURIComponent(app)}/channels`, { query: prefix ? { prefix } : null });
  }

  /** The members of a presence channel: {members: {id: presence data}}. */
  async members(channel) {
    return this.#call('GET', `/apps/${encodeURIComponent(appOf(channel))}/members`, { query: { channel } });
  }

  /** The channel's recent messages, oldest first, after offset `since` (at most `limit`). */
  async history(channel, { since, limit } = {}) {
    const query = { channel };
    if (since !== undefined && since !== null) query.since = String(Math.trunc(since));
    if (limit !== undefined && limit !== null) query.limit = String(Math.trunc(limit));
    return this.#call('GET', `/apps/${encodeURIComponent(appOf(channel))}/history`, { query });
  }

  /** Disconnect every client of the application whose presence id is `userId`, on every node. */
  async terminateUserConnections(userId, { appId } = {}) {
    if (userId === undefined || userId === null || userId === '') throw new TypeError('userId is required');
    const app = encodeURIComponent(this.#appFor(appId));
    return this.#call('POST', `/apps/${app}/users/${encodeURIComponent(String(userId))}/terminate_connections`);
  }

  #appFor(given) {
    const app = given || this.appId;
    if (!app) throw new TypeError('this call needs an application: pass appId here or to the Client');
    return app;
  }

  #idempotencyKey(given) {
    if (given !== undefined && given !== null) {
      if (typeof given !== 'string' || given.length > MAX_IDEMPOTENCY_KEY_LENGTH || !PRINTABLE_ASCII.test(given)) {
        throw new TypeError(`an idempotency key is 1 to ${MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters`);
      }
      return given;
    }
    // Only a call that may be sent twice needs one; the same key goes with every attempt.
    return this.maxRetries > 0 ? crypto.randomUUID().replaceAll('-', '') : null;
  }

  #backoff(attempt) {
    // Full jitter over an exponential ceiling: clients refused together do not come back together.
    const ceiling = Math.min(this.maxRetryDelay, this.retryDelay * 2 ** attempt);
    return ceiling / 2 + (Math.random() * ceiling) / 2;
  }

  async #call(method, path, { query = null, body, idempotencyKey = null } = {}) {
    const search = query ? `?${new URLSearchParams(query)}` : '';
    const target = `${this.url}${path}${search}`;
    const headers = {
      Authorization: this.#authorization,
      Accept: 'application/json',
      'User-Agent': `pandapush-node/${VERSION}`,
    };
    let payload;
    if (method === 'POST') {
      payload = JSON.stringify(body === undefined ? {} : body);
      headers['Content-Type'] = 'application/json; charset=utf-8';
    }
    if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;
    for (let attempt = 0; ; attempt += 1) {
      let error;
      let delay;
      try {
        const response = await this.#exchange(method, target, payload, headers);
        if (response.status >= 200 && response.status < 300) return decode(response);
        error = refusal(response, method, path);
        if (!RETRYABLE_STATUSES.has(response.status)) throw error;
        delay = error.retryAfter !== null ? error.retryAfter * 1000 : this.#backoff(attempt);
      } catch (failure) {
        if (!(failure instanceof errors.NetworkError)) throw failure;
        error = failure.forRequest(method, path);
        delay = this.#backoff(attempt);
      }
      if (attempt >= this.maxRetries || delay > this.maxRetryDelay) throw error;
      if (this.logger) {
        this.logger.info(`pandapush: retrying ${method} ${path} in ${(delay / 1000).toFixed(2)}s (retry ${attempt + 1} of ${this.maxRetries}) after: ${error.message}`);
      }
      await this._sleep(delay);
    }
  }

  async #exchange(method, target, payload, headers) {
    const signal = AbortSignal.timeout(this.timeout);
    try {
      const response = await fetch(target, { method, headers, body: payload, redirect: 'manual', signal });
      // Read it all under the same deadline: a server that stalls mid-body is a timeout too.
      const text = await response.text();
      return { status: response.status, headers: response.headers, text };
    } catch (failure) {
      if (signal.aborted) throw new errors.TimeoutError(`No answer within ${this.timeout}ms`);
      throw new errors.NetworkError(`Connection failed: ${failureName(failure)}`);
    }
  }
}

function decode(response) {
  if (!response.text.trim()) return undefined;
  if (!(response.headers.get('content-type') || '').includes('json')) return response.text;
  return JSON.parse(response.text);
}

function refusal(response, method, path) {
  let serverMessage = `HTTP ${response.status}`;
  let code = null;
  let params = [];
  let decoded = null;
  try {
    decoded = response.text.trim() ? JSON.parse(response.text) : null;
  } catch {
    serverMessage = response.text.trim().slice(0, 300);
  }
  if (decoded && typeof decoded === 'object' && !Array.isArray(decoded)) {
    if (typeof decoded.message === 'string') serverMessage = decoded.message;
    if (Number.isInteger(decoded.code)) code = decoded.code;
    if (Array.isArray(decoded.params)) params = decoded.params;
  }
  const Kind = errors.errorForStatus(response.status);
  return new Kind(serverMessage, {
    status: response.status, code, params, method, path, retryAfter: retryAfterSeconds(response.headers.get('retry-after')),
  });
}

module.exports = { Client, VERSION, MAX_IDEMPOTENCY_KEY_LENGTH };
