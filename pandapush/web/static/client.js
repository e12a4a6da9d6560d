/*!
 * Pandapush browser client: Bayeux (Faye/CometD protocol) over websocket or long-polling.
 *
 *   <script src="https://pandapush.example/client.js"></script>
 *   const client = new Pandapush.Client('https://pandapush.example/push');
 *   client.subscribe('/APP/public/news', (message) => console.log(message));
 *   client.subscribeTo('/APP/private/inbox', () => fetchTokenFromMyServer(), onMessage);
 *
 * Also an ES module: `import Pandapush, { Client } from 'https://pandapush.example/client.mjs'`.
 *
 * Written for pandapush from the protocol (no third-party code, no dependencies, no build
 * step). It keeps Faye's client API so pages written for Faye or for the original pandapush
 * keep working, and it fixes what bit Faye's users: a subscription refused for auth reasons
 * is never retried on its own, failing handshakes back off instead of looping, and nothing
 * published while the client was away is silently missed: it remembers the position
 * (`ext.position`) of the last message of every subscription and resumes from it whenever
 * it subscribes again, drops what it already had, and says when the server could not
 * recover everything (`subscription:unrecovered`).
 */
(function (root, factory) {
  'use strict';
  const Pandapush = factory(root);
  // CommonJS (bundlers, tests in Node) when there is a `module`; a global everywhere, which
  // is also what `client.mjs` reads after importing this file as a module.
  if (typeof module === 'object' && module && typeof module.exports === 'object') {
    module.exports = Pandapush;
  }
  root.Pandapush = Pandapush;
}(typeof globalThis !== 'undefined' ? globalThis : typeof self !== 'undefined' ? self : this, function (root) {
  'use strict';

  const VERSION = '1.0.0';
  const BAYEUX_VERSION = '1.0';

  const HANDSHAKE = '/meta/handshake';
  const CONNECT = '/meta/connect';
  const SUBSCRIBE = '/meta/subscribe';
  const UNSUBSCRIBE = '/meta/unsubscribe';
  const DISCONNECT = '/meta/disconnect';

  /** Client states, as strings so they read well in logs and tests. */
  const UNCONNECTED = 'UNCONNECTED';
  const CONNECTING = 'CONNECTING';
  const CONNECTED = 'CONNECTED';
  const DISCONNECTED = 'DISCONNECTED';

  /** The transports this client implements, in order of preference. */
  const WEBSOCKET = 'websocket';
  const LONG_POLLING = 'long-polling';
  const CROSS_ORIGIN_LONG_POLLING = 'cross-origin-long-polling';

  const DEFAULTS = {
    /** Seconds a request may take before it counts as failed (a connect gets the server's hold time on top). */
    timeout: 60,
    /** Seconds before the first retry after a network failure; doubles on each failure in a row. */
    retry: 1,
    /** Ceiling, in seconds, of that backoff (also of the backoff between refused handshakes). */
    maxRetry: 30,
    /** Seconds to wait for a websocket to open before falling back to long-polling. */
    websocketTimeout: 5,
    /** Transports not to use (same as calling `disable()` for each). */
    disable: [],
    /** Extra HTTP headers for long-polling requests (a websocket cannot carry any). */
    headers: {},
    /** End the session when the page goes away, so presence channels see the user leave at once. */
    autodisconnect: true,
  };

  // ---------------------------------------------------------------------------------------
  // Errors

  /**
   * A refusal or failure, shaped like Faye's errors: `code` is the Bayeux code (403, 401...),
   * `params` its arguments, `message` its text, e.g. `401::Invalid token` gives
   * `{code: 401, params: [], message: 'Invalid token'}`. Failures that never reached an
   * answer from the server (network, timeout) have `code` 0.
   * It is an Error, so it carries a stack and works with `instanceof Error`.
   */
  class PandapushError extends Error {
    constructor(code, params, message) {
      super(message);
      this.name = 'PandapushError';
      this.code = code;
      this.params = params || [];
    }

    /** Parses a Bayeux `error` string: `code:arg1,arg2:message`. */
    static parse(text) {
      if (typeof text !== 'string') return new PandapushError(0, [], 'Unknown error');
      const match = /^([0-9]{3}):([^:]*):([\s\S]*)$/.exec(text);
      if (!match) return new PandapushError(0, [], text);
      return new PandapushError(Number(match[1]), match[2] ? match[2].split(',') : [], match[3]);
    }

    toString() {
      return this.code ? `${this.code}:${this.params.join(',')}:${this.message}` : this.message;
    }
  }

  /** A failure of the network or of a timeout, as opposed to a server's answer. */
  function networkError(message) {
    const error = new PandapushError(0, [], message);
    error.network = true;
    return error;
  }

  // ---------------------------------------------------------------------------------------
  // Small helpers

  /** A promise plus its resolve/reject, for things settled from elsewhere. */
  function deferred() {
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  }

  /** A deferred for "connected": its rejection (on disconnect) is an answer, never an unhandled error. */
  function readiness() {
    const ready = deferred();
    ready.promise.catch(() => {});
    return ready;
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  /** Calls a user callback without letting its exception break the client (it is reported, not swallowed). */
  function safely(fn, self, args) {
    try {
      fn.apply(self, args);
    } catch (error) {
      setTimeout(() => {
        throw error;
      }, 0);
    }
  }

  /**
   * Exponential backoff with jitter: `base * 2^failures`, capped, then a random point in its
   * upper half, so a thousand pages that lost the same server do not come back in lockstep.
   */
  function backoff(failures, baseSeconds, maxSeconds) {
    const ceiling = Math.min(maxSeconds, baseSeconds * Math.pow(2, Math.max(0, failures - 1))) * 1000;
    return Math.round(ceiling / 2 + Math.random() * ceiling / 2);
  }

  /** Is this error the server saying it does not know our client (session lost, e.g. after a restart)? */
  function isUnknownClient(error, clientId) {
    return error.code === 401 && (error.message === 'Unknown client' || (clientId != null && error.params[0] === clientId));
  }

  /**
   * The channel patterns that match `name`, as Bayeux defines them: `/a/b/c` is matched by
   * itself, `/a/b/*`, `/a/b/**`, `/a/**` and `/**` (by segments, never by string prefix).
   */
  function expandChannel(name) {
    const segments = name.split('/').slice(1);
    const patterns = [name, '/**'];
    let prefix = '';
    for (let i = 0; i < segments.length - 1; i += 1) {
      prefix += '/' + segments[i];
      patterns.push(prefix + '/**');
    }
    patterns.push(prefix + '/*');
    return patterns;
  }

  /**
   * Channels a wildcard subscription remembers positions for, at most (the most recent kept):
   * they all go in its `ext.resume`, which the server takes for at most `--max-subscriptions`
   * (128 by default) channels.
   */
  const MAX_POSITIONS = 100;

  /**
   * Milliseconds a subscription holds back messages that came after a gap (a message it
   * never got: offsets count every message of a channel) while it asks for the missing
   * ones; then it hands them over anyway and tells the page.
   */
  const GAP_WAIT_MS = 5000;

  /** `ext.position` of a delivery, `{offset, epoch}`, when it is one; else null. */
  function positionOf(message) {
    const position = message.ext && message.ext.position;
    if (!position || typeof position !== 'object') return null;
    if (!Number.isSafeInteger(position.offset) || position.offset < 0 || typeof position.epoch !== 'string') return null;
    return position;
  }

  function resolveUrl(url) {
    const base = root.location && root.location.href ? root.location.href : undefined;
    return new URL(url, base);
  }

  // ---------------------------------------------------------------------------------------
  // Events (Faye's bind/unbind)

  class Events {
    constructor() {
      this._listeners = Object.create(null);
    }

    bind(event, listener, context) {
      (this._listeners[event] = this._listeners[event] || []).push([listener, context]);
      return this;
    }

    unbind(event, listener, context) {
      const list = this._listeners[event];
      if (!list) return this;
      this._listeners[event] = listener ? list.filter(([l, c]) => l !== listener || (context !== undefined && c !== context)) : [];
      return this;
    }

    trigger(event, ...args) {
      for (const [listener, context] of (this._listeners[event] || []).slice()) safely(listener, context, args);
    }
  }
  Events.prototype.on = Events.prototype.bind;
  Events.prototype.off = Events.prototype.unbind;

  // ---------------------------------------------------------------------------------------
  // Thenables: Subscription and Publication

  /**
   * Gives a class Faye's Deferrable surface on top of a promise: `then`/`catch`/`finally`, and
   * `callback(fn)`/`errback(fn)` for pages written against Faye's older API.
   */
  function thenable(Class) {
    Object.assign(Class.prototype, {
      then(onFulfilled, onRejected) {
        return this._settled.promise.then(onFulfilled, onRejected);
      },
      catch(onRejected) {
        return this._settled.promise.catch(onRejected);
      },
      finally(onFinally) {
        return this._settled.promise.finally(onFinally);
      },
      callback(fn, context) {
        this._settled.promise.then((value) => fn.call(context, value), () => {});
        return this;
      },
      errback(fn, context) {
        this._settled.promise.catch((error) => fn.call(context, error));
        return this;
      },
    });
  }

  /**
   * One `subscribe()` call: its callback, and a thenable that resolves once the server has
   * confirmed the channel (at once when it already had) or rejects with the server's refusal.
   */
  class Subscription {
    constructor(client, channel, callback, context) {
      this._client = client;
      this._channel = channel;
      this._callback = callback;
      this._context = context;
      this._withChannel = null;
      this._cancelled = false;
      this._settled = deferred();
      // A refused subscription is an answer, not a crash: nobody has to attach a handler.
      this._settled.promise.catch(() => {});
    }

    /** Also receive the concrete channel (useful with wildcards): `fn(channel, message)`. */
    withChannel(fn, context) {
      this._withChannel = [fn, context];
      return this;
    }

    /**
     * Also receive the channel's latest message at once, from the server's history (a cache
     * channel), when this subscription is the one that subscribes the channel (its first).
     * Call it right after `subscribe()`.
     */
    latest() {
      const entry = this._client._channels.get(this._channel);
      if (entry && entry.status === 'pending') entry.latest = true;
      return this;
    }

    /** Stops this subscription; the server subscription ends with the channel's last one. */
    cancel() {
      if (this._cancelled) return;
      this._cancelled = true;
      this._client._removeSubscription(this);
    }

    unsubscribe() {
      this.cancel();
    }

    _deliver(channel, message) {
      if (this._cancelled) return;
      if (typeof this._callback === 'function') safely(this._callback, this._context, [message]);
      if (this._withChannel) safely(this._withChannel[0], this._withChannel[1], [channel, message]);
    }
  }
  thenable(Subscription);

  /** What `publish()` returns: resolves when the server accepted the message, rejects on its refusal. */
  class Publication {
    constructor() {
      this._settled = deferred();
      this._settled.promise.catch(() => {});
    }
  }
  thenable(Publication);

  // ---------------------------------------------------------------------------------------
  // Transports. Both hand every message they receive to `client._receive`; replies are
  // matched to requests by id there, so the transports know nothing of Bayeux.

  /**
   * One websocket for the session. Bayeux over websocket needs no framing beyond JSON
   * arrays; the server pushes deliveries as they come and answers the held connect when
   * its time is up.
   */
  class WebSocketTransport {
    constructor(client, url) {
      this.client = client;
      this.type = WEBSOCKET;
      this.url = url;
      this.socket = null;
      this.closed = false;
    }

    /** Opens the socket; rejects if it has not opened within `seconds` or fails first. */
    open(seconds) {
      return new Promise((resolve, reject) => {
        let socket;
        try {
          socket = new root.WebSocket(this.url);
        } catch (error) {
          reject(networkError('WebSocket could not be created: ' + error.message));
          return;
        }
        this.socket = socket;
        let opened = false;
        const timer = setTimeout(() => {
          if (!opened) {
            reject(networkError('WebSocket did not open in time'));
            this.close();
          }
        }, seconds * 1000);
        socket.onopen = () => {
          opened = true;
          clearTimeout(timer);
          resolve(this);
        };
        socket.onmessage = (event) => {
          let messages;
          try {
            messages = JSON.parse(event.data);
          } catch (error) {
            return; // Not Bayeux: nothing to route.
          }
          this.client._receive(Array.isArray(messages) ? messages : [messages]);
        };
        socket.onclose = (event) => {
          clearTimeout(timer);
          if (!opened) reject(networkError('WebSocket closed before opening'));
          this._closed(event.code);
        };
        // `error` is always followed by `close`, which does the work.
        socket.onerror = () => {};
      });
    }

    get ready() {
      return !this.closed && this.socket !== null && this.socket.readyState === 1;
    }

    /** Sends a batch; the replies arrive through `client._receive`. */
    send(messages) {
      if (!this.ready) return Promise.reject(networkError('WebSocket is not open'));
      try {
        this.socket.send(JSON.stringify(messages));
      } catch (error) {
        return Promise.reject(networkError('WebSocket send failed: ' + error.message));
      }
      return Promise.resolve();
    }

    close() {
      if (this.socket && this.socket.readyState < 2) {
        try {
          this.socket.close(1000);
        } catch (error) {
          // Already closing: nothing to do.
        }
      }
      this._closed();
    }

    _closed(code) {
      if (this.closed) return;
      this.closed = true;
      this.client._transportClosed(this, code);
    }
  }

  /**
   * Long-polling: one HTTP POST per batch, the replies in its response. Across origins the
   * body is `text/plain` `message=<json>`, a "simple" CORS request that needs no preflight
   * (unless `setHeader` added headers); the server reads both that and `application/json`.
   * Cookies go along (`credentials: include`), as they do for Faye's cross-origin transport.
   */
  class LongPollingTransport {
    constructor(client, url, crossOrigin) {
      this.client = client;
      this.url = url;
      this.crossOrigin = crossOrigin;
      this.type = crossOrigin ? CROSS_ORIGIN_LONG_POLLING : LONG_POLLING;
      this.closed = false;
      this._aborts = new Set();
    }

    get ready() {
      return !this.closed;
    }

    /** POSTs a batch; resolves once the response's messages went to the client, rejects on network errors. */
    send(messages, timeoutMs) {
      if (this.closed) return Promise.reject(networkError('Transport closed'));
      const json = JSON.stringify(messages);
      const headers = Object.assign({}, this.client._headers);
      let body;
      if (this.crossOrigin) {
        headers['Content-Type'] = 'text/plain;charset=UTF-8';
        body = 'message=' + encodeURIComponent(json);
      } else {
        headers['Content-Type'] = 'application/json';
        body = json;
      }
      const abort = new AbortController();
      this._aborts.add(abort);
      const timer = timeoutMs ? setTimeout(() => abort.abort(), timeoutMs) : null;
      const done = () => {
        if (timer) clearTimeout(timer);
        this._aborts.delete(abort);
      };
      return root.fetch(this.url, {
        method: 'POST',
        headers,
        body,
        credentials: this.crossOrigin ? 'include' : 'same-origin',
        cache: 'no-store',
        signal: abort.signal,
      }).then((response) => {
        if (response.status === 401) {
          // An HTTP-level 401 means the same as Bayeux's: this session is no good.
          throw Object.assign(new PandapushError(401, [], 'Unknown client'), { http: true });
        }
        if (response.status >= 500 || response.status === 408 || response.status === 429) {
          throw networkError(`HTTP ${response.status}`);
        }
        if (!response.ok) {
          // A request the server will never take (413 too large, 400...): retrying cannot help.
          return response.text().then((text) => {
            throw Object.assign(new PandapushError(response.status, [], `HTTP ${response.status}: ${text.slice(0, 200)}`), { http: true });
          });
        }
        return response.json();
      }).then((replies) => {
        done();
        if (!Array.isArray(replies)) throw networkError('Malformed response');
        // Settles once incoming extensions have let every reply through to its request.
        return this.client._receive(replies);
      }, (error) => {
        done();
        if (error instanceof PandapushError) throw error;
        throw networkError(abort.signal.aborted ? 'Request timed out' : 'Network error: ' + (error && error.message));
      });
    }

    close() {
      if (this.closed) return;
      this.closed = true;
      for (const abort of this._aborts) abort.abort();
      this._aborts.clear();
      this.client._transportClosed(this);
    }
  }

  // ---------------------------------------------------------------------------------------
  // The client

  /**
   * A server-side channel subscription and the local subscriptions sharing it. One
   * `/meta/subscribe` serves every `subscribe()` of a channel; it is sent again with a fresh
   * token after each re-handshake. `attempt` tells a superseded subscribe loop to stop.
   */
  class ChannelEntry {
    constructor(name) {
      this.name = name;
      this.subscriptions = new Set();
      this.status = 'pending'; // pending | subscribed | refused
      this.token = null; // string, or function returning a string or a promise of one
      this.attempt = 0;
      this.members = null; // presence channels: id -> presence object, kept current
      // Concrete channel -> {offset, epoch, seen}: the last message's position on each (seen:
      // delivered here; else the position the subscribe reply gave, a place to resume from).
      this.positions = new Map();
      this.latest = false; // ask for the channel's latest message (Subscription.latest)
      // Concrete channel -> {messages: Map(offset -> {data, position}), epoch}: messages held
      // back after a gap, until the missing ones come (or GAP_WAIT_MS passes).
      this.gaps = new Map();
    }

    /** `ext.resume` for a subscribe: every position known, or null when there is none. */
    resume() {
      if (this.positions.size === 0) return null;
      const resume = {};
      for (const [channel, position] of this.positions) resume[channel] = { offset: position.offset, epoch: position.epoch };
      return resume;
    }

    /**
     * What to do with a message at `position` on `channel`: `'old'` when this subscription
     * had it (sent again around a resume), `'hold'` when one before it is missing (the
     * offsets of a channel count every message), else `'deliver'`, remembering it.
     */
    admit(channel, position) {
      const last = this.positions.get(channel);
      if (last && last.seen && last.epoch === position.epoch) {
        if (position.offset <= last.offset) return 'old';
        if (position.offset > last.offset + 1) return 'hold';
      }
      this.remember(channel, position);
      return 'deliver';
    }

    remember(channel, position) {
      this.positions.delete(channel); // re-inserted last: the oldest go first past the cap
      this.positions.set(channel, { offset: position.offset, epoch: position.epoch, seen: true });
      if (this.positions.size > MAX_POSITIONS) this.positions.delete(this.positions.keys().next().value);
    }
  }

  class Client extends Events {
    /**
     * @param {string} url the Bayeux endpoint, e.g. `https://pandapush.example/push`
     *   (relative URLs resolve against the page)
     * @param {object} [options] see DEFAULTS above
     */
    constructor(url, options) {
      super();
      if (typeof url !== 'string' || !url) throw new TypeError('Pandapush.Client needs the server URL');
      this._options = Object.assign({}, DEFAULTS, options || {});
      this._endpoint = resolveUrl(url);
      this._disabled = new Set(this._options.disable || []);
      this._headers = Object.assign({}, this._options.headers || {});
      this._extensions = [];
      this._channels = new Map();
      this._state = UNCONNECTED;
      this._clientId = null;
      this._session = 0; // increments with each successful handshake
      this._generation = 0; // increments with each disconnect()
      this._advice = { reconnect: 'retry', interval: 0, timeout: this._options.timeout * 1000 };
      this._transport = null;
      this._transportUp = null; // null: never known; true/false afterwards
      this._websocketWorked = false;
      this._websocketBroken = false;
      this._websocketSuspect = false; // a websocket just failed; broken if long-polling now works
      this._nextId = 0;
      this._inflight = new Map(); // id -> {message, resolve, reject, timer, transport}
      this._outbox = [];
      this._flushTimer = null;
      this._batchInFlight = false;
      this._outgoingChain = Promise.resolve();
      this._incomingChain = Promise.resolve();
      this._ready = readiness(); // resolves when connected with a clientId; replaced when the session ends
      this._endedSession = 0;
      this._handshaking = false;
      this._handshakeFailures = 0;
      this._connectFailures = 0;
      this._connecting = false;
      this._timers = new Set();
      this._pageHide = null;
      if (this._options.autodisconnect && typeof root.addEventListener === 'function') {
        this._pageHide = () => this._leavePage();
        root.addEventListener('pagehide', this._pageHide);
      }
    }

    // --- Faye's public API ---------------------------------------------------------------

    getClientId() {
      return this._clientId;
    }

    /** One of 'UNCONNECTED', 'CONNECTING', 'CONNECTED', 'DISCONNECTED'. */
    getState() {
      return this._state;
    }

    /** The transport in use ('websocket', 'long-polling', 'cross-origin-long-polling') or null. */
    getTransport() {
      return this._transport ? this._transport.type : null;
    }

    /** Never use `transport` ('websocket', 'long-polling', 'cross-origin-long-polling'). */
    disable(transport) {
      this._disabled.add(transport);
      if (this._transport && this._transport.type === transport) this._transport.close();
      return this;
    }

    /** A header on every long-polling request from now on. */
    setHeader(name, value) {
      this._headers[name] = String(value);
      return this;
    }

    /**
     * Faye's extensions: objects with `incoming(message, callback)` and/or
     * `outgoing(message, callback)`; each passes the (possibly changed) message to the
     * callback, or null to drop it. `added(client)`/`removed(client)` are called if present.
     */
    addExtension(extension) {
      this._extensions.push(extension);
      if (typeof extension.added === 'function') safely(extension.added, extension, [this]);
      return this;
    }

    removeExtension(extension) {
      const before = this._extensions.length;
      this._extensions = this._extensions.filter((e) => e !== extension);
      if (before !== this._extensions.length && typeof extension.removed === 'function') {
        safely(extension.removed, extension, [this]);
      }
      return this;
    }

    /** Starts the session now rather than at the first subscribe/publish; resolves once connected. */
    connect(callback, context) {
      this._start();
      const promise = this._ready.promise;
      if (typeof callback === 'function') promise.then(() => callback.call(context), () => {});
      return promise;
    }

    /**
     * Receives `callback(message)` for every message on `channel` (wildcards allowed).
     * @returns {Subscription}
     */
    subscribe(channel, callback, context) {
      return this._subscribe(channel, undefined, callback, context);
    }

    /**
     * Pandapush: subscribes with a token (`ext.auth.token`). `token` is a string, or a
     * function returning one or a promise of one; a function is called again for a fresh
     * token each time the subscription is (re)sent, e.g. after the server restarted.
     * Several subscriptions to one channel share one server subscription: the token given
     * last is the one used for the next re-subscribe (`subscribe()` keeps the current one).
     */
    subscribeTo(channel, token, callback, context) {
      return this._subscribe(channel, token, callback, context);
    }

    /**
     * Stops `callback` (or every callback) receiving `channel`'s messages; the server
     * subscription ends with the last one. Resolves once the server confirmed (or at once).
     */
    unsubscribe(channel, callback) {
      const entry = this._channels.get(channel);
      if (!entry) return Promise.resolve();
      if (callback instanceof Subscription) return this._removeSubscription(callback);
      let last = Promise.resolve();
      for (const subscription of Array.from(entry.subscriptions)) {
        if (!callback || subscription._callback === callback) {
          subscription._cancelled = true;
          last = this._removeSubscription(subscription);
        }
      }
      return last;
    }

    /** Publishes `data`; the returned thenable resolves when the server accepted it. */
    publish(channel, data, options) {
      return this._publish(channel, undefined, data, options);
    }

    /** Pandapush: publishes with a token (`ext.auth.token`); `token` as for `subscribeTo`. */
    publishTo(channel, token, data, options) {
      return this._publish(channel, token, data, options);
    }

    /**
     * Ends the session: tells the server (so presence channels see us leave), stops every
     * loop and drops every subscription. The client can be used again afterwards: a new
     * subscribe starts a new session.
     */
    disconnect() {
      const wasConnected = this._state === CONNECTED && this._clientId;
      this._generation += 1; // work started before this point (retrying publishes) must not resurface
      const message = wasConnected ? { channel: DISCONNECT, clientId: this._clientId, id: this._newId() } : null;
      const transport = this._transport;
      this._state = DISCONNECTED;
      for (const entry of this._channels.values()) {
        entry.attempt += 1;
        for (const subscription of entry.subscriptions) subscription._cancelled = true;
      }
      this._channels.clear();
      for (const timer of this._timers) clearTimeout(timer);
      this._timers.clear();
      this._clientId = null;
      this._failInflight(networkError('Client disconnected'));
      this._ready.reject(networkError('Client disconnected'));
      this._ready = readiness();
      if (this._pageHide && typeof root.removeEventListener === 'function') {
        root.removeEventListener('pagehide', this._pageHide);
        this._pageHide = null;
      }
      let done = Promise.resolve();
      if (message && transport && transport.ready) {
        // Straight to the wire: the outbox and extensions may not get another tick.
        done = transport.send([message], 5000).catch(() => {});
      }
      return done.then(() => {
        this._transport = null;
        if (transport) transport.close();
        this._setTransportUp(false);
      });
    }

    // --- subscriptions ---------------------------------------------------------------------

    _subscribe(channel, token, callback, context) {
      if (typeof channel !== 'string' || channel.charAt(0) !== '/') {
        throw new TypeError(`Cannot subscribe to ${channel}: channel names start with /`);
      }
      const subscription = new Subscription(this, channel, callback, context);
      let entry = this._channels.get(channel);
      const fresh = !entry;
      if (fresh) {
        entry = new ChannelEntry(channel);
        this._channels.set(channel, entry);
      }
      entry.subscriptions.add(subscription);
      if (token !== undefined) entry.token = token;
      if (fresh) {
        this._sendSubscribe(entry);
      } else if (entry.status === 'subscribed') {
        subscription._settled.resolve();
        if (entry.members) {
          // A late subscriber to a presence channel learns who is there, as the first one did.
          const members = Object.assign({}, entry.members);
          setTimeout(() => subscription._deliver(channel, { subscribe: members }), 0);
        }
      }
      this._start();
      return subscription;
    }

    /**
     * Sends (or re-sends) the channel's `/meta/subscribe` until it is answered. Network
     * failures and a lost session are retried (after the reconnect); any other refusal,
     * auth above all, is final: the subscriptions reject and the channel is forgotten, so
     * a bad token never turns into a request loop.
     */
    async _sendSubscribe(entry) {
      entry.attempt += 1;
      const attempt = entry.attempt;
      const current = () => entry.attempt === attempt && this._channels.get(entry.name) === entry;
      let failures = 0;
      for (;;) {
        try {
          await this._ready.promise;
        } catch (error) {
          return; // disconnected meanwhile
        }
        if (!current()) return;
        const session = this._session;
        let token;
        try {
          token = await this._tokenFor(entry.token);
        } catch (error) {
          if (current()) this._refuse(entry, new PandapushError(0, [], 'Could not get a token: ' + (error && error.message)));
          return;
        }
        if (!current()) return;
        if (session !== this._session || this._state !== CONNECTED) {
          await sleep(50); // the session changed while the token came: wait for the new one
          continue;
        }
        const message = { channel: SUBSCRIBE, clientId: this._clientId, subscription: entry.name };
        const ext = {};
        if (token) ext.auth = { token };
        // Every subscribe after the first says where to go on from (after a reconnect, a new
        // session, a server restart, another node): the server sends what came meanwhile.
        const resume = entry.resume();
        if (resume) ext.resume = resume;
        else if (entry.latest) ext.latest = true;
        if (Object.keys(ext).length) message.ext = ext;
        let reply;
        try {
          reply = await this._request(message);
        } catch (error) {
          if (!current()) return;
          if (error.http && error.code === 401) {
            this._sessionLost(session);
            continue;
          }
          if (!error.network) {
            this._refuse(entry, error); // dropped by an extension, or refused at the HTTP level
            return;
          }
          failures += 1;
          await sleep(backoff(failures, this._options.retry, this._options.maxRetry));
          continue;
        }
        if (!current()) return;
        if (reply.successful) {
          this._subscribed(entry, reply);
          return;
        }
        const error = PandapushError.parse(reply.error);
        if (isUnknownClient(error, message.clientId)) {
          this._sessionLost(session);
          continue;
        }
        if (resume && error.code === 400 && /^Invalid (position|resume)\b/.test(error.message)) {
          // The server cannot go on from where we were (a position it never gave): go on from
          // now, without the subscription ending, and tell the page what may be missing.
          entry.positions.clear();
          this.trigger('subscription:unrecovered', entry.name, { [entry.name]: error.message });
          continue;
        }
        this._refuse(entry, error);
        return;
      }
    }

    _tokenFor(token) {
      if (typeof token === 'function') return Promise.resolve(token());
      return Promise.resolve(token);
    }

    _subscribed(entry, reply) {
      entry.status = 'subscribed';
      entry.session = this._session;
      const ext = reply.ext && typeof reply.ext === 'object' ? reply.ext : {};
      const unrecovered = ext.unrecovered && typeof ext.unrecovered === 'object' ? ext.unrecovered : {};
      // Positions the server could not go on from are forgotten (their epoch is gone);
      // the channel's current position is where to resume from next time, if nothing comes.
      for (const channel of Object.keys(unrecovered)) {
        // What a gap held back goes on: the missing messages are not coming.
        if (entry.gaps.has(channel)) this._release(entry, channel, true);
        entry.positions.delete(channel);
      }
      if (ext.positions && typeof ext.positions === 'object') {
        for (const channel of Object.keys(ext.positions)) {
          const position = positionOf({ ext: { position: ext.positions[channel] } });
          if (position && !entry.positions.has(channel)) {
            entry.positions.set(channel, { offset: position.offset, epoch: position.epoch, seen: false });
          }
        }
      }
      if (ext.recovered === false) this.trigger('subscription:unrecovered', entry.name, Object.assign({}, unrecovered));
      const presence = reply.ext && reply.ext.presence;
      for (const subscription of entry.subscriptions) subscription._settled.resolve();
      if (presence && typeof presence === 'object') {
        // Upstream pandapush's contract: the subscriber's callback gets every current member.
        entry.members = Object.assign({}, presence.subscribe || {});
        for (const subscription of entry.subscriptions) subscription._deliver(entry.name, presence);
      }
    }

    _refuse(entry, error) {
      error.channel = entry.name;
      const wasSubscribed = entry.status === 'subscribed';
      entry.status = 'refused';
      entry.attempt += 1;
      if (this._channels.get(entry.name) === entry) this._channels.delete(entry.name);
      for (const subscription of entry.subscriptions) {
        subscription._cancelled = true;
        subscription._settled.reject(error);
      }
      // A re-subscribe refused after a reconnect (the token expired, say): the promises had
      // resolved long ago, so this event is the only way the page can learn of it.
      if (wasSubscribed) this.trigger('subscription:refused', entry.name, error);
    }

    /**
     * The server ended a subscription on its own: its token expired (`401:<channel>:Token
     * expired`, an unsolicited `/meta/unsubscribe`), or its key did or was revoked (`Expired
     * key`, `Revoked key`, `Could not find key`). `subscription:expired` tells the page;
     * with a token function the channel is subscribed again at once with a fresh token (as
     * after a reconnect), otherwise it is refused (`subscription:refused` follows).
     */
    _endedByServer(message) {
      const entry = this._channels.get(message.subscription);
      if (!entry || entry.status !== 'subscribed') return;
      const error = PandapushError.parse(message.error);
      error.channel = entry.name;
      this.trigger('subscription:expired', entry.name, error);
      if (typeof entry.token === 'function') this._sendSubscribe(entry);
      else this._refuse(entry, error);
    }

    _removeSubscription(subscription) {
      subscription._cancelled = true;
      const entry = this._channels.get(subscription._channel);
      if (!entry || !entry.subscriptions.delete(subscription)) return Promise.resolve();
      if (entry.subscriptions.size > 0) return Promise.resolve();
      this._channels.delete(entry.name);
      entry.attempt += 1;
      if (this._state !== CONNECTED || !this._clientId) return Promise.resolve();
      const message = { channel: UNSUBSCRIBE, clientId: this._clientId, subscription: entry.name };
      return this._request(message).then(() => undefined, () => undefined);
    }

    // --- publishing ------------------------------------------------------------------------

    /**
     * Publishes, re-sending across a lost session or network failure until the request
     * timeout, so a message published during a reconnect is not lost (a server that got it
     * but whose answer was lost may see it twice: at-least-once, as Faye).
     */
    _publish(channel, token, data, options) {
      if (typeof channel !== 'string' || channel.charAt(0) !== '/') {
        throw new TypeError(`Cannot publish to ${channel}: channel names start with /`);
      }
      const publication = new Publication();
      // Faye's `deadline` option (seconds) bounds the retries; the request timeout by default.
      const seconds = options && typeof options.deadline === 'number' ? options.deadline : this._options.timeout;
      const deadline = Date.now() + seconds * 1000;
      const generation = this._generation;
      const attempt = async () => {
        const id = this._newId();
        let failures = 0;
        let socketsLost = 0;
        for (;;) {
          await this._ready.promise;
          if (generation !== this._generation) throw networkError('Client disconnected');
          const session = this._session;
          const message = { channel, data, clientId: this._clientId, id };
          const auth = await this._tokenFor(token);
          if (auth) message.ext = { auth: { token: auth } };
          if (options && options.ext) message.ext = Object.assign({}, options.ext, message.ext || {});
          let reply;
          try {
            reply = await this._request(message, Math.max(1000, deadline - Date.now()));
          } catch (error) {
            if (error.http && error.code === 401 && Date.now() < deadline) {
              this._sessionLost(session);
              continue;
            }
            failures += 1;
            if (error.closed) {
              socketsLost += 1;
              if (socketsLost >= 2) {
                throw new PandapushError(0, [], 'The connection closed twice while sending this message (too large for the server?)');
              }
            }
            if (!error.network || Date.now() + 100 >= deadline || this._state === DISCONNECTED) throw error;
            await sleep(Math.min(backoff(failures, this._options.retry, this._options.maxRetry), Math.max(0, deadline - Date.now())));
            continue;
          }
          if (reply.successful) return reply;
          const error = PandapushError.parse(reply.error);
          error.channel = channel;
          if (isUnknownClient(error, message.clientId) && Date.now() < deadline) {
            this._sessionLost(session);
            continue;
          }
          throw error;
        }
      };
      attempt().then(() => publication._settled.resolve(), (error) => publication._settled.reject(error));
      this._start();
      return publication;
    }

    // --- the session: handshake, connect loop, reconnects ---------------------------------

    _start() {
      if (this._state === DISCONNECTED) this._state = UNCONNECTED;
      if (this._state === UNCONNECTED) this._handshake();
    }

    _later(fn, ms) {
      const timer = setTimeout(() => {
        this._timers.delete(timer);
        fn();
      }, ms);
      this._timers.add(timer);
    }

    /** The transports to offer the server, best first. */
    _connectionTypes() {
      const types = [];
      if (!this._disabled.has(WEBSOCKET) && typeof root.WebSocket === 'function' && !this._websocketBroken) types.push(WEBSOCKET);
      const http = this._crossOrigin() ? CROSS_ORIGIN_LONG_POLLING : LONG_POLLING;
      if (!this._disabled.has(http) && typeof root.fetch === 'function') types.push(http);
      return types;
    }

    _crossOrigin() {
      return !!(root.location && root.location.origin && this._endpoint.origin !== root.location.origin);
    }

    /**
     * Picks and opens a transport: a websocket when allowed and it opens, else
     * long-polling. A websocket that never opened while long-polling to the same server
     * worked is not tried again (a proxy that blocks it would otherwise cost
     * `websocketTimeout` on every reconnect); one that failed while the server was away
     * (both failed) is tried again next time.
     */
    async _openTransport() {
      const types = this._connectionTypes();
      if (types.length === 0) throw new PandapushError(0, [], 'No usable transport (all disabled)');
      if (this._transport && this._transport.ready && this._transport.type === types[0]) return this._transport;
      if (this._transport) this._transport.close();
      this._transport = null;
      if (types[0] === WEBSOCKET) {
        const url = new URL(this._endpoint.href);
        url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
        const socket = new WebSocketTransport(this, url.href);
        this._transport = socket;
        try {
          await socket.open(this._options.websocketTimeout);
          this._websocketWorked = true;
          this._websocketSuspect = false;
          return socket;
        } catch (error) {
          if (this._transport === socket) this._transport = null;
          this._websocketSuspect = !this._websocketWorked;
          if (types.length === 1) throw error;
        }
      }
      const http = types[types.length - 1];
      this._transport = new LongPollingTransport(this, this._endpoint.href, http === CROSS_ORIGIN_LONG_POLLING);
      return this._transport;
    }

    async _handshake() {
      if (this._handshaking || this._state === DISCONNECTED) return;
      this._handshaking = true;
      this._state = CONNECTING;
      this._clientId = null;
      let retryIn = null;
      try {
        const transport = await this._openTransport();
        if (this._state === DISCONNECTED) return;
        const message = {
          channel: HANDSHAKE,
          version: BAYEUX_VERSION,
          supportedConnectionTypes: this._connectionTypes(),
        };
        let reply;
        try {
          reply = await this._request(message, this._options.timeout * 1000, true);
        } catch (error) {
          if (this._transport === transport && transport.type === WEBSOCKET) transport.close();
          throw error;
        }
        if (this._state === DISCONNECTED) return;
        this._takeAdvice(reply.advice);
        if (!reply.successful) {
          // Refused: never faster than advised, and slower each time (no storms).
          this._handshakeFailures += 1;
          this._setTransportUp(true); // the server answered; the network is fine
          const error = PandapushError.parse(reply.error);
          this.trigger('handshake:error', error);
          if (this._advice.reconnect === 'none') {
            this._state = UNCONNECTED;
            return;
          }
          retryIn = Math.max(this._advice.interval, backoff(this._handshakeFailures, this._options.retry, this._options.maxRetry));
          return;
        }
        const types = reply.supportedConnectionTypes || [];
        if (transport.type === WEBSOCKET && types.indexOf(WEBSOCKET) < 0) {
          // The server will not hold connects over a websocket: same session, over HTTP.
          this._websocketBroken = true;
          this._transport = null;
          transport.close();
          await this._openTransport();
        }
        if (this._websocketSuspect && transport.type !== WEBSOCKET) this._websocketBroken = true;
        this._websocketSuspect = false;
        this._clientId = reply.clientId;
        this._session += 1;
        this._state = CONNECTED;
        this._setTransportUp(true);
        this._ready.resolve();
        this._resubscribe();
        this._connect(true);
      } catch (error) {
        if (this._state === DISCONNECTED) return;
        this._handshakeFailures += 1;
        this._setTransportUp(false);
        retryIn = backoff(this._handshakeFailures, this._options.retry, this._options.maxRetry);
      } finally {
        this._handshaking = false;
        if (retryIn !== null && this._state !== DISCONNECTED) {
          this._state = CONNECTING;
          this._later(() => this._handshake(), retryIn);
        }
      }
    }

    /** After a re-handshake, channels confirmed in an earlier session are sent again (fresh tokens). */
    _resubscribe() {
      for (const entry of this._channels.values()) {
        if (entry.status === 'subscribed' && entry.session !== this._session) this._sendSubscribe(entry);
      }
    }

    /**
     * The server no longer knows us (restart, expiry, closed socket): forget the session
     * and handshake again. `session` guards against several requests reporting the same loss.
     */
    _sessionLost(session, delay) {
      if (session !== this._session || this._endedSession === session || this._state === DISCONNECTED) return;
      this._endedSession = session;
      this._clientId = null;
      this._state = CONNECTING;
      this._ready = readiness();
      if (delay === undefined) {
        // The first re-handshake goes at once; if sessions keep dying, back off.
        const failures = this._handshakeFailures;
        delay = failures === 0 ? 0 : backoff(failures, this._options.retry, this._options.maxRetry);
      }
      if (delay <= 0) this._handshake();
      else this._later(() => this._handshake(), delay);
    }

    _takeAdvice(advice) {
      if (!advice || typeof advice !== 'object') return;
      if (typeof advice.reconnect === 'string') this._advice.reconnect = advice.reconnect;
      if (typeof advice.interval === 'number' && advice.interval >= 0) this._advice.interval = advice.interval;
      if (typeof advice.timeout === 'number' && advice.timeout >= 0) this._advice.timeout = advice.timeout;
    }

    /**
     * The connect loop: one `/meta/connect` held by the server at a time; the next goes
     * `advice.interval` ms after its answer. Over long-polling deliveries come in its
     * response; over a websocket they are pushed and the connect is the heartbeat.
     */
    async _connect(first) {
      if (this._connecting || this._state !== CONNECTED) return;
      this._connecting = true;
      const session = this._session;
      const transport = this._transport;
      if (!transport || !transport.ready) {
        // The transport went away between connects (closed socket, `disable()`): start over.
        this._connecting = false;
        this._sessionLost(session);
        return;
      }
      const message = { channel: CONNECT, clientId: this._clientId, connectionType: transport.type };
      // The first connect is answered at once, so the page is "up" without waiting a hold.
      if (first) message.advice = { timeout: 0 };
      const hold = first ? 0 : this._advice.timeout;
      let reply;
      try {
        reply = await this._request(message, hold + Math.min(this._options.timeout * 1000, 10000));
      } catch (error) {
        this._connecting = false;
        if (session !== this._session || this._state !== CONNECTED) return;
        this._connectFailures += 1;
        this._setTransportUp(false);
        if (error.code === 401) {
          this._sessionLost(session);
          return;
        }
        if (transport.type === WEBSOCKET || !transport.ready || transport !== this._transport) {
          // A dead socket took the session with it (the server ends a client whose socket closed).
          this._handshakeFailures = Math.max(this._handshakeFailures, this._connectFailures);
          this._sessionLost(session);
          return;
        }
        this._later(() => this._connect(), backoff(this._connectFailures, this._options.retry, this._options.maxRetry));
        return;
      }
      this._connecting = false;
      if (session !== this._session || this._state !== CONNECTED) return;
      this._takeAdvice(reply.advice);
      if (reply.successful) {
        this._connectFailures = 0;
        this._handshakeFailures = 0;
        this._setTransportUp(true);
      }
      if (this._advice.reconnect === 'none') {
        // The server wants no more of us: stop, without retrying; a new subscribe starts over.
        this._endedSession = session;
        this._state = UNCONNECTED;
        this._clientId = null;
        this._ready = readiness();
        this._setTransportUp(false);
        return;
      }
      if (!reply.successful || this._advice.reconnect === 'handshake') {
        if (!reply.successful) this._handshakeFailures += 1;
        const interval = this._advice.interval;
        this._sessionLost(session, this._handshakeFailures > 1
          ? Math.max(interval, backoff(this._handshakeFailures, this._options.retry, this._options.maxRetry))
          : interval);
        return;
      }
      const interval = this._advice.interval;
      if (interval > 0) this._later(() => this._connect(), interval);
      else this._connect();
    }

    _setTransportUp(up) {
      if (this._transportUp === up) return;
      const announce = up || this._transportUp === true;
      const recovered = up && this._transportUp === false;
      this._transportUp = up;
      if (announce) this.trigger(up ? 'transport:up' : 'transport:down');
      if (recovered && this._state === CONNECTED) this._resumeSubscriptions();
    }

    /**
     * Back after a failure, in the same session (the server kept it, maybe on another node
     * that took the client over): what the node we were on held for us may be gone with
     * it, so every subscription that has seen a position subscribes again from there.
     * Those of an earlier session are `_resubscribe`'s.
     */
    _resumeSubscriptions() {
      for (const entry of this._channels.values()) {
        if (entry.status === 'subscribed' && entry.session === this._session && entry.positions.size > 0) {
          this._sendSubscribe(entry);
        }
      }
    }

    /**
     * A transport closed under us: fail what it carried; a closed websocket ends the session.
     * A websocket closed with 1009 (message too big) was killed by a publish the server
     * will never take: that publish fails for good instead of being retried into a
     * reconnect loop (meta messages are small; they are retried as after any close).
     * Browsers often report such a close as 1006 (abnormal) instead: `_publish` then gives
     * up after the second socket that dies under the same message.
     */
    _transportClosed(transport, code) {
      for (const [id, request] of Array.from(this._inflight)) {
        if (request.transport === transport) {
          this._inflight.delete(id);
          clearTimeout(request.timer);
          const tooBig = code === 1009 && request.message.channel.indexOf('/meta/') !== 0;
          request.reject(tooBig
            ? new PandapushError(413, [], 'Message too large for the server')
            : Object.assign(networkError('Connection closed'), { closed: transport.type === WEBSOCKET }));
        }
      }
      if (this._transport === transport) this._transport = null;
    }

    _failInflight(error) {
      for (const request of this._inflight.values()) {
        clearTimeout(request.timer);
        request.reject(error);
      }
      this._inflight.clear();
      for (const request of this._outbox) {
        clearTimeout(request.timer);
        request.reject(error);
      }
      this._outbox = [];
    }

    /** Page unload: a beacon survives the page; a websocket's close already tells the server. */
    _leavePage() {
      if (this._state !== CONNECTED || !this._clientId || !this._transport) return;
      if (this._transport.type !== WEBSOCKET && root.navigator && typeof root.navigator.sendBeacon === 'function') {
        const body = 'message=' + encodeURIComponent(JSON.stringify([{ channel: DISCONNECT, clientId: this._clientId, id: this._newId() }]));
        try {
          root.navigator.sendBeacon(this._endpoint.href, new Blob([body], { type: 'application/x-www-form-urlencoded' }));
        } catch (error) {
          // Best effort: the server expires the client anyway.
        }
      }
      if (this._transport) this._transport.close();
    }

    // --- requests: ids, extensions, batching, timeouts ------------------------------------

    _newId() {
      this._nextId += 1;
      return this._nextId.toString(36);
    }

    /**
     * Sends one message and resolves with its reply (successful or not); rejects only when
     * no reply came (network, timeout, dropped by an extension). Outgoing extensions run
     * in order, one message after another, so they cannot reorder publishes.
     */
    _request(message, timeoutMs, now) {
      if (message.id === undefined) message.id = this._newId();
      const request = deferred();
      const timeout = timeoutMs || this._options.timeout * 1000;
      const run = this._outgoingChain.then(() => this._pipe('outgoing', message)).then((processed) => {
        if (!processed) {
          request.reject(new PandapushError(0, [], 'Message dropped by an extension'));
          return;
        }
        const record = {
          message: processed,
          id: processed.id,
          resolve: request.resolve,
          reject: request.reject,
          timer: null,
          transport: null,
        };
        record.timeout = timeout;
        record.timer = setTimeout(() => this._timedOut(record), timeout);
        this._enqueue(record, now);
      }, (error) => request.reject(error));
      this._outgoingChain = run.catch(() => {});
      return request.promise;
    }

    _timedOut(record) {
      this._inflight.delete(record.id);
      this._outbox = this._outbox.filter((r) => r !== record);
      record.reject(networkError('Request timed out'));
      // A websocket that lets a request time out is probably dead without having said so.
      if (record.transport && record.transport.type === WEBSOCKET) record.transport.close();
    }

    /**
     * Queues a message for the next batch (all messages of one tick go as one array). Over
     * long-polling a connect travels alone: the server holds its response, and anything in
     * the same request would wait with it.
     */
    _enqueue(record, now) {
      const transport = this._transport;
      if (!transport || !transport.ready) {
        clearTimeout(record.timer);
        record.reject(networkError('Not connected'));
        return;
      }
      if (transport.type !== WEBSOCKET && (record.message.channel === CONNECT || now)) {
        this._sendBatch(transport, [record], record.message.channel === CONNECT);
        return;
      }
      this._outbox.push(record);
      if (this._flushTimer === null) this._flushTimer = setTimeout(() => this._flush(), 0);
    }

    _flush() {
      this._flushTimer = null;
      if (this._outbox.length === 0) return;
      const transport = this._transport;
      if (transport && transport.type !== WEBSOCKET && this._batchInFlight) return; // sent when it returns
      const batch = this._outbox;
      this._outbox = [];
      if (!transport || !transport.ready) {
        for (const record of batch) {
          clearTimeout(record.timer);
          record.reject(networkError('Not connected'));
        }
        return;
      }
      this._sendBatch(transport, batch, false);
    }

    /**
     * Long-polling batches go one at a time (besides the held connect), which keeps
     * subscribe/unsubscribe/publish in order, as they are over a websocket.
     */
    _sendBatch(transport, records, isConnect) {
      for (const record of records) {
        record.transport = transport;
        this._inflight.set(record.id, record);
      }
      const serial = transport.type !== WEBSOCKET && !isConnect;
      if (serial) this._batchInFlight = true;
      const longest = records.reduce((max, record) => Math.max(max, record.timeout || 0), 0);
      transport.send(records.map((r) => r.message), longest || undefined).catch((error) => {
        for (const record of records) {
          if (this._inflight.get(record.id) === record) {
            this._inflight.delete(record.id);
            clearTimeout(record.timer);
            record.reject(error);
          }
        }
      }).then(() => {
        // Requests whose reply the response did not contain will never get one.
        if (transport.type !== WEBSOCKET) {
          for (const record of records) {
            if (this._inflight.get(record.id) === record) {
              this._inflight.delete(record.id);
              clearTimeout(record.timer);
              record.reject(networkError('No reply'));
            }
          }
        }
        if (serial) {
          this._batchInFlight = false;
          if (this._outbox.length && this._flushTimer === null) this._flushTimer = setTimeout(() => this._flush(), 0);
        }
      });
    }

    /**
     * Every message from the server, from any transport: incoming extensions, then replies
     * or deliveries, in arrival order. Resolves once all of them were dispatched.
     */
    _receive(messages) {
      for (const message of messages) {
        if (!message || typeof message !== 'object') continue;
        if (this._extensions.length === 0) {
          this._dispatch(message);
          continue;
        }
        this._incomingChain = this._incomingChain
          .then(() => this._pipe('incoming', message))
          .then((processed) => processed && this._dispatch(processed))
          .catch(() => {});
      }
      return this._incomingChain;
    }

    _dispatch(message) {
      // Replies carry `successful`; deliveries never do (and may carry someone else's id).
      if ('successful' in message || (message.channel && message.channel.indexOf('/meta/') === 0)) {
        const request = this._inflight.get(message.id);
        if (request && request.message.channel === message.channel) {
          this._inflight.delete(message.id);
          clearTimeout(request.timer);
          request.resolve(message);
        } else if (message.channel === UNSUBSCRIBE && message.successful === false && typeof message.subscription === 'string') {
          this._endedByServer(message);
        } else if (message.advice) {
          this._takeAdvice(message.advice);
        }
        return;
      }
      if (typeof message.channel !== 'string' || !('data' in message)) return;
      this._deliver(message.channel, message.data, positionOf(message));
    }

    /**
     * Hands a delivery to every local subscription matching its channel (each once), but
     * not to one that already had it (by its position: sent again around a resume).
     */
    _deliver(channel, data, position) {
      for (const pattern of expandChannel(channel)) {
        const entry = this._channels.get(pattern);
        if (!entry || entry.status === 'refused') continue;
        if (position) {
          const gap = entry.gaps.get(channel);
          if (gap && gap.epoch !== position.epoch) this._gapUnfilled(entry, channel, 'epoch changed');
          const verdict = entry.admit(channel, position);
          if (verdict === 'old') continue;
          if (verdict === 'hold') {
            this._holdBack(entry, channel, data, position);
            continue;
          }
        }
        this._hand(entry, channel, data);
        if (position && entry.gaps.has(channel)) this._release(entry, channel, false);
      }
    }

    /** A message to every subscription of `entry`. */
    _hand(entry, channel, data) {
      if (entry.members && entry.name === channel && data && typeof data === 'object') {
        // Keep the presence member list current, for subscribers who arrive later.
        if (data.subscribe && typeof data.subscribe === 'object') Object.assign(entry.members, data.subscribe);
        if (data.unsubscribe && typeof data.unsubscribe === 'object') {
          for (const id of Object.keys(data.unsubscribe)) delete entry.members[id];
        }
      }
      for (const subscription of Array.from(entry.subscriptions)) subscription._deliver(channel, data);
    }

    /**
     * A message came after one this subscription never got (lost on a server's way: a
     * Redis pub/sub gap, a node that died with it): hold it, and those after it, and
     * subscribe again from the last position had, so the server sends the missing ones
     * from history; they are then handed over in order. If they do not come in time, or
     * the server cannot send them, what was held goes on and the page is told.
     */
    _holdBack(entry, channel, data, position) {
      let gap = entry.gaps.get(channel);
      if (!gap) {
        gap = { messages: new Map(), epoch: position.epoch };
        entry.gaps.set(channel, gap);
        if (this._state === CONNECTED && entry.status === 'subscribed') this._sendSubscribe(entry);
        const opened = gap;
        this._later(() => {
          if (entry.gaps.get(channel) === opened) this._gapUnfilled(entry, channel, 'missing messages did not come');
        }, GAP_WAIT_MS);
      }
      gap.messages.set(position.offset, { data, position });
    }

    /**
     * Hands over what was held back on `channel` in order: those that follow on from the last
     * position (all of them with `all`, skipping what is missing); the gap is closed once
     * nothing is held.
     */
    _release(entry, channel, all) {
      const gap = entry.gaps.get(channel);
      if (!gap) return;
      for (const offset of Array.from(gap.messages.keys()).sort((a, b) => a - b)) {
        const held = gap.messages.get(offset);
        const last = entry.positions.get(channel);
        const known = last && last.seen && last.epoch === held.position.epoch;
        if (known && offset <= last.offset) {
          gap.messages.delete(offset);
          continue;
        }
        if (!all && (!known || offset > last.offset + 1)) break;
        gap.messages.delete(offset);
        entry.remember(channel, held.position);
        this._hand(entry, channel, held.data);
      }
      if (gap.messages.size === 0) entry.gaps.delete(channel);
    }

    /** The missing messages are not coming: what was held goes on, and the page is told. */
    _gapUnfilled(entry, channel, reason) {
      if (!entry.gaps.has(channel) || this._channels.get(entry.name) !== entry) return;
      this._release(entry, channel, true);
      this.trigger('subscription:unrecovered', entry.name, { [channel]: reason });
    }

    /** Runs a message through the extensions' `incoming` or `outgoing` hooks (Faye's callback style). */
    _pipe(direction, message) {
      const extensions = this._extensions.filter((e) => typeof e[direction] === 'function');
      if (extensions.length === 0) return Promise.resolve(message);
      return extensions.reduce((chain, extension) => chain.then((current) => {
        if (!current) return current;
        return new Promise((resolve) => {
          const hook = extension[direction];
          try {
            // Faye 1.x passes (message, request, callback) to three-argument hooks.
            if (hook.length >= 3) hook.call(extension, current, null, resolve);
            else hook.call(extension, current, resolve);
          } catch (error) {
            setTimeout(() => {
              throw error;
            }, 0);
            resolve(current);
          }
        });
      }), Promise.resolve(message));
    }
  }

  return {
    VERSION,
    Client,
    Subscription,
    Publication,
    PandapushError,
    UNCONNECTED,
    CONNECTING,
    CONNECTED,
    DISCONNECTED,
  };
}));
