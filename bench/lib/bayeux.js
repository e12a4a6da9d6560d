'use strict';
// Minimal raw Bayeux clients for load generation: websocket (the `ws` package) and
// long-polling (raw HTTP/1.1 over keep-alive sockets). No Faye client code on the hot path:
// one JSON.parse per frame/response and a callback per delivery, nothing else.
//
// Both clients share one surface:
//   await c.open()                    handshake + first connect (advice.timeout 0, like Faye's client)
//   await c.subscribe([channels])     resolves when every subscription is acknowledged
//   c.publish(channel, data, ext)     fire-and-forget; c.onAck(ok, reply) is called with the reply
//   c.onDelivery = (message) => ...   every delivered (non-meta) message
//   await c.close()                   /meta/disconnect, then close the socket

const WebSocket = require('ws');

const CONNECTION_TYPES = ['websocket', 'long-polling'];

class BaseClient {
  constructor(baseUrl, options = {}) {
    this.baseUrl = baseUrl.replace(/\/$/, '');
    // A loopback source address (127.0.0.2, ...) when one address's ephemeral ports run out.
    this.localAddress = options.localAddress;
    this.clientId = null;
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject}
    this.onDelivery = null;
    this.onAck = null;
    this.onError = null;
    this.closed = false;
    this.connects = 0;
    this.errors = 0;
  }

  _id() {
    return String(this.nextId++);
  }

  _request(message) {
    const id = this._id();
    message.id = id;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this._send([message]);
    });
  }

  _handle(messages) {
    if (!Array.isArray(messages)) messages = [messages];
    for (let i = 0; i < messages.length; i++) {
      const m = messages[i];
      if (m === null || typeof m !== 'object') continue;
      if (m.successful === undefined) {
        // A delivery (replies always carry `successful`, deliveries never do).
        if (this.onDelivery !== null) this.onDelivery(m);
        continue;
      }
      const channel = m.channel;
      if (channel === '/meta/connect') {
        this.connects++;
        if (!m.successful) this.errors++;
        this._connectReplied(m);
        continue;
      }
      const waiter = m.id !== undefined ? this.pending.get(m.id) : undefined;
      if (waiter !== undefined) {
        this.pending.delete(m.id);
        if (m.successful) waiter.resolve(m);
        else waiter.reject(new Error(`${channel}: ${m.error}`));
        continue;
      }
      if (!m.successful) this.errors++;
      if (this.onAck !== null) this.onAck(m.successful, m);
    }
  }

  _connectMessage(timeout) {
    const message = { channel: '/meta/connect', clientId: this.clientId, connectionType: this.connectionType, id: this._id() };
    if (timeout !== undefined) message.advice = { timeout };
    return message;
  }

  async _handshake() {
    const reply = await this._request({
      channel: '/meta/handshake',
      version: '1.0',
      supportedConnectionTypes: CONNECTION_TYPES,
    });
    this.clientId = reply.clientId;
  }

  subscribe(channels, ext) {
    const message = { channel: '/meta/subscribe', clientId: this.clientId, subscription: channels };
    if (ext !== undefined) message.ext = ext;
    return this._request(message);
  }

  publish(channel, data, ext) {
    const message = { channel, data, clientId: this.clientId, id: this._id() };
    if (ext !== undefined) message.ext = ext;
    this._send([message]);
  }

  publishBatch(messages, ext) {
    const batch = messages.map(([channel, data]) => {
      const message = { channel, data, clientId: this.clientId, id: this._id() };
      if (ext !== undefined) message.ext = ext;
      return message;
    });
    this._send(batch);
  }
}

function uncork(client) {
  client.corked = false;
  if (client.ws._socket) client.ws._socket.uncork();
}

class WebSocketClient extends BaseClient {
  constructor(baseUrl, options) {
    super(baseUrl, options);
    this.connectionType = 'websocket';
    this.ws = null;
    this.corked = false;
  }

  open() {
    return new Promise((resolve, reject) => {
      const wsOptions = { perMessageDeflate: false };
      if (this.localAddress) wsOptions.localAddress = this.localAddress;
      const ws = new WebSocket(this.baseUrl.replace(/^http/, 'ws'), wsOptions);
      this.ws = ws;
      let settled = false;
      ws.on('open', async () => {
        try {
          await this._handshake();
          // First connect answered at once (Faye's client asks with advice.timeout 0);
          // each reply triggers the next held connect.
          this._firstConnect = new Promise((res) => {
            this._firstConnectDone = res;
          });
          this._send([this._connectMessage(0)]);
          await this._firstConnect;
          settled = true;
          resolve(this);
        } catch (error) {
          settled = true;
          reject(error);
        }
      });
      ws.on('message', (data) => {
        let parsed;
        try {
          parsed = JSON.parse(data);
        } catch (error) {
          this.errors++;
          return;
        }
        this._handle(parsed);
      });
      ws.on('error', (error) => {
        this.errors++;
        if (!settled) {
          settled = true;
          reject(error);
        } else if (this.onError) this.onError(error);
      });
      ws.on('close', () => {
        if (!this.closed) {
          this.dropped = true;
          if (this.onError) this.onError(new Error('socket closed by server'));
        }
        for (const waiter of this.pending.values()) waiter.reject(new Error('socket closed'));
        this.pending.clear();
        if (!settled) {
          settled = true;
          reject(new Error('socket closed before open'));
        }
      });
    });
  }

  _connectReplied(reply) {
    if (this._firstConnectDone) {
      const done = this._firstConnectDone;
      this._firstConnectDone = null;
      done();
    }
    if (!this.closed && this.ws.readyState === WebSocket.OPEN) this._send([this._connectMessage()]);
  }

  // Frames sent in one tick leave in one write: a publisher answering acknowledgements sends
  // many frames a tick, and a syscall per frame was a large part of the generator's CPU per
  // publish. Each message is still its own frame, so neither server reads anything else (a
  // busy server already reads tens of KB of frames at once).
  _send(messages) {
    const ws = this.ws;
    if (ws.readyState !== WebSocket.OPEN) return;
    if (!this.corked) {
      this.corked = true;
      ws._socket.cork();
      process.nextTick(uncork, this);
    }
    ws.send(JSON.stringify(messages));
  }

  close(disconnect = true) {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((resolve) => {
      const ws = this.ws;
      if (ws.readyState !== WebSocket.OPEN) {
        resolve();
        return;
      }
      const timer = setTimeout(() => {
        ws.terminate();
        resolve();
      }, 2000);
      ws.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      if (disconnect) ws.send(JSON.stringify([{ channel: '/meta/disconnect', clientId: this.clientId, id: this._id() }]));
      // Faye keeps the socket open after a disconnect; pandapush closes it. Close ourselves shortly after.
      setTimeout(() => ws.close(1000), disconnect ? 100 : 0);
    });
  }
}

// Long-polling requests go over the raw keep-alive connections below (httpPost), as the REST
// publisher's do: node:http's client cost ~0.5 ms of CPU per storm client, and the generator
// at a core was what set storm-lp's rate for both servers. A held connect occupies one
// connection; handshakes, subscribes and disconnects take another from the pool (as a
// browser's two connections). The bytes sent are node:http's (same headers, same order).
class LongPollingClient extends BaseClient {
  constructor(baseUrl, options) {
    super(baseUrl, options);
    this.connectionType = 'long-polling';
    const url = new URL(this.baseUrl);
    this.host = url.hostname;
    this.port = Number(url.port || 80);
    this.path = url.pathname;
  }

  async open() {
    await this._handshake();
    await new Promise((resolve, reject) => {
      this._firstConnectDone = resolve;
      this._firstConnectFailed = reject;
      this._send([this._connectMessage(0)]);
    });
    return this;
  }

  // A request that failed (refused, reset, not 200) fails what waited for its answer.
  _failed(messages, error) {
    this.errors++;
    for (const message of messages) {
      const waiter = message.id !== undefined ? this.pending.get(message.id) : undefined;
      if (waiter !== undefined) {
        this.pending.delete(message.id);
        waiter.reject(error);
      }
    }
    if (this._firstConnectFailed && messages.some((m) => m.channel === '/meta/connect')) {
      const fail = this._firstConnectFailed;
      this._firstConnectDone = this._firstConnectFailed = null;
      fail(error);
      return true;
    }
    return false;
  }

  _connectReplied(reply) {
    if (this._firstConnectDone) {
      const done = this._firstConnectDone;
      this._firstConnectDone = this._firstConnectFailed = null;
      done();
    }
  }

  _send(messages) {
    const isConnect = messages.length === 1 && messages[0].channel === '/meta/connect';
    httpPost(this.host, this.port, this.path, JSON.stringify(messages), '', this.localAddress, (error, status, body) => {
      if (error) {
        if (this._failed(messages, error)) return;
        if (isConnect && !this.closed) setTimeout(() => this._send([this._connectMessage()]), 100);
        else if (this.onError) this.onError(error);
        return;
      }
      if (status === 200) {
        try {
          this._handle(JSON.parse(body));
        } catch (parseError) {
          this.errors++;
        }
      } else if (this._failed(messages, new Error(`HTTP ${status}`))) return;
      // The next long-poll goes out as soon as the previous one is answered.
      if (isConnect && !this.closed) this._send([this._connectMessage()]);
    });
  }

  async close(disconnect = true) {
    if (this.closed) return;
    this.closed = true;
    if (disconnect) {
      await Promise.race([
        this._request({ channel: '/meta/disconnect', clientId: this.clientId }).catch(() => {}),
        new Promise((resolve) => setTimeout(resolve, 2000)),
      ]);
    }
  }
}

function makeClient(transport, baseUrl, options) {
  if (transport === 'websocket') return new WebSocketClient(baseUrl, options);
  if (transport === 'long-polling') return new LongPollingClient(baseUrl, options);
  throw new Error(`unknown transport ${transport}`);
}

// Raw HTTP/1.1 POSTs over keep-alive connections, one request at a time on each (no
// pipelining), as node:http's keep-alive agent does (idle connections reused last in, first
// out). Both the long-polling clients and the REST publisher use them: node:http's client
// cost about as much CPU per POST as the server's whole publish, so one generator process
// was near a core at a few thousand POSTs/s and became the limit of private-rest and of the
// long-polling storms. A request is byte for byte what node:http sent (same headers, same
// order), so the server's work is unchanged. Answers must carry a Content-Length (both
// servers' do); anything else fails that request. Errors carry node's codes (ECONNREFUSED,
// ECONNRESET...), as node:http's did.
const net = require('net');

class HttpConnection {
  constructor(host, port, localAddress, onIdle) {
    const options = { host, port, noDelay: true };
    if (localAddress) options.localAddress = localAddress;
    this.socket = net.connect(options);
    this.onIdle = onIdle;
    this.buffer = null;
    this.done = null;
    this.closed = false;
    this.socket.on('data', (chunk) => this._data(chunk));
    const fail = (error) => {
      this.closed = true;
      const done = this.done;
      this.done = null;
      if (done) {
        if (!error) {
          error = new Error('socket hang up');
          error.code = 'ECONNRESET';
        }
        done(error);
      }
    };
    this.socket.on('error', fail);
    this.socket.on('close', () => fail(null));
  }

  request(bytes, done) {
    this.done = done;
    this.buffer = null;
    this.socket.write(bytes);
  }

  _data(chunk) {
    this.buffer = this.buffer ? Buffer.concat([this.buffer, chunk]) : chunk;
    const end = this.buffer.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = this.buffer.toString('latin1', 0, end);
    const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    if (!length) {
      this.socket.destroy(new Error('answer without a Content-Length'));
      return;
    }
    const total = end + 4 + Number(length[1]);
    if (this.buffer.length < total) return;
    const status = Number(head.slice(9, 12));
    const body = this.buffer.toString('utf8', end + 4, total);
    this.buffer = null;
    const done = this.done;
    this.done = null;
    if (/\r\nconnection:\s*close/i.test(head)) {
      this.closed = true;
      this.socket.end();
    } else this.onIdle(this);
    if (done) done(null, status, body);
  }
}

const pools = new Map(); // localAddress|host:port -> idle HttpConnections

// POST `body` to http://host:port/path; `headers`: extra header lines, each ending in \r\n,
// sent after Content-Length as node:http sent them. done(error) or done(null, status, body).
function httpPost(host, port, path, body, headers, localAddress, done) {
  const hostPort = `${host}:${port}`;
  const key = `${localAddress || ''}|${hostPort}`;
  let idle = pools.get(key);
  if (!idle) pools.set(key, (idle = []));
  let connection = idle.pop();
  while (connection && connection.closed) connection = idle.pop();
  if (!connection) connection = new HttpConnection(host, port, localAddress, (c) => idle.push(c));
  const payload = Buffer.from(body);
  const head = Buffer.from(
    `POST ${path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: ${payload.length}\r\n` +
      `${headers}Host: ${hostPort}\r\nConnection: keep-alive\r\n\r\n`,
    'latin1',
  );
  connection.request(payload.length ? Buffer.concat([head, payload]) : head, done);
}

// REST publisher: POST /channel/<app>/<type>/<path> (or batch_events) with Basic key:secret.
// Resolves {status, body}; a connection error resolves status 0.
function restPost(origin, path, body, authorization) {
  const url = new URL(origin);
  return new Promise((resolve) => {
    httpPost(url.hostname, Number(url.port || 80), path, body, `Authorization: ${authorization}\r\n`, undefined, (error, status, answer) =>
      resolve(error ? { status: 0, body: String(error) } : { status, body: answer }),
    );
  });
}

// Bayeux messages POSTed as plain HTTP (Faye's documented way to publish from a server
// without a client: no handshake, no clientId). Resolves the number of replies with
// "successful": true; 0 for an error or another status.
function bayeuxPost(origin, path, body) {
  const url = new URL(origin);
  return new Promise((resolve) => {
    httpPost(url.hostname, Number(url.port || 80), path, body, '', undefined, (error, status, answer) => {
      if (error || status !== 200) return resolve(0);
      let replies;
      try {
        replies = JSON.parse(answer);
      } catch {
        return resolve(0);
      }
      resolve(Array.isArray(replies) ? replies.filter((reply) => reply && reply.successful === true).length : 0);
    });
  });
}

// Closes the idle connections (the generator's process exits anyway; a long-lived user may call it).
function closeRestConnections() {
  for (const idle of pools.values()) for (const connection of idle.splice(0)) connection.socket.end();
}

module.exports = { WebSocketClient, LongPollingClient, makeClient, restPost, bayeuxPost, httpPost, closeRestConnections };
