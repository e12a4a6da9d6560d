// Scenarios a real Faye client plays against a Bayeux server, reporting what it observes.
//
// The same code runs in Node (faye-client.js, with require('faye')) and in a browser page
// (browser-client.js, with Faye's browser bundle), so every transport is exercised by one
// script. Scenarios only drive the clients and record; the Python tests decide what is
// right. Every report is a plain object handed to `report`, which prints it as a JSON line.
//
// Reports:
//   {event: "sent",      client, message}   every message the client hands its transport
//   {event: "received",  client, message}   every message the client receives, once per wire message
//   {event: "message",   client, subscription, channel, data}   a subscription callback ran
//   {event: "transport", client, state: "up"|"down", connectionType}
//   {event: "step",      name, ...}         the scenario reached a point
//   {event: "ready",     name}              waiting for the driver (a line on stdin, or a call)
//   {event: "done",      summary}           the scenario finished
//   {event: "failed",    error}             the scenario gave up (a wait timed out, a promise failed)
(function (root, factory) {
  if (typeof module === 'object' && module.exports) {
    module.exports = factory();
  } else {
    root.pandapushScenarios = factory();
  }
})(typeof self !== 'undefined' ? self : this, function () {
  'use strict';

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  function randomName() {
    return Math.random().toString(36).slice(2, 10);
  }

  function describe(error) {
    if (!error) return String(error);
    if (error.message !== undefined) return error.code ? error.code + ':' + error.message : String(error.message);
    return String(error);
  }

  // One scenario run: the clients it made and the means to wait for what they observe.
  function Harness(Faye, options, report) {
    this.Faye = Faye;
    this.url = options.url;
    this.disable = options.disable || [];
    this.retry = options.retry || 0.5;
    this.waitMs = options.waitMs || 10000;
    this.settleMs = options.settleMs === undefined ? 500 : options.settleMs;
    this.resume = options.resume || null;
    this.transport = options.transport || null;
    // A multi-tenant server wants /<app>/public/... channels and credentials to publish:
    // `prefix` goes before every channel, `auth` ({key, secret} or {token}) into the
    // ext.auth of every publish, as an application's own publisher would send it.
    this.prefix = options.prefix || '';
    this.auth = options.auth || null;
    this.options = options;
    this.report = report;
    this.clients = [];
  }

  Harness.prototype.client = function (name) {
    var report = this.report;
    var client = new this.Faye.Client(this.url, { retry: this.retry });
    this.disable.forEach(function (feature) { client.disable(feature); });

    var state = {
      name: name,
      faye: client,
      subscriptions: {},
      messages: [],   // subscription callbacks: {subscription, channel, data}
      received: [],   // every incoming wire message
      sent: [],       // every outgoing message
    };

    var auth = this.auth;
    client.addExtension({
      outgoing: function (message, callback) {
        if (auth && message.channel.indexOf('/meta/') !== 0) {
          message.ext = message.ext || {};
          message.ext.auth = auth;
        }
        state.sent.push(message);
        report({ event: 'sent', client: name, message: message });
        callback(message);
      },
      incoming: function (message, callback) {
        state.received.push(message);
        report({ event: 'received', client: name, message: message });
        callback(message);
      },
    });
    ['up', 'down'].forEach(function (upDown) {
      client.on('transport:' + upDown, function () {
        report({
          event: 'transport',
          client: name,
          state: upDown,
          connectionType: client._dispatcher.connectionType || null,
        });
      });
    });
    this.clients.push(state);
    return state;
  };

  Harness.prototype.clientId = function (state) {
    return state.faye._dispatcher.clientId || null;
  };

  Harness.prototype.step = function (name, extra) {
    var report = { event: 'step', name: name };
    for (var key in extra || {}) report[key] = extra[key];
    this.report(report);
  };

  // Resolves once predicate() is true, polling; rejects after waitMs naming what never happened.
  Harness.prototype.waitUntil = function (what, predicate, waitMs) {
    var deadline = Date.now() + (waitMs || this.waitMs);
    return new Promise(function (resolve, reject) {
      (function poll() {
        var value;
        try { value = predicate(); } catch (e) { return reject(e); }
        if (value) return resolve(value);
        if (Date.now() > deadline) return reject(new Error('timed out waiting for ' + what));
        setTimeout(poll, 20);
      })();
    });
  };

  Harness.prototype.withTimeout = function (what, thenable) {
    var self = this;
    return new Promise(function (resolve, reject) {
      var timer = setTimeout(function () {
        reject(new Error('timed out waiting for ' + what));
      }, self.waitMs);
      Promise.resolve(thenable).then(function (value) {
        clearTimeout(timer);
        resolve(value);
      }, function (error) {
        clearTimeout(timer);
        reject(new Error(what + ' failed: ' + describe(error)));
      });
    });
  };

  Harness.prototype.subscribe = function (state, channel) {
    var report = this.report;
    // A Faye Subscription is a thenable but has no catch(): adapt it before awaiting.
    var subscription = state.faye.subscribe(channel, function () {});
    subscription.withChannel(function (actual, data) {
      state.messages.push({ subscription: channel, channel: actual, data: data });
      report({ event: 'message', client: state.name, subscription: channel, channel: actual, data: data });
    });
    state.subscriptions[channel] = subscription;
    var self = this;
    return this.withTimeout(state.name + ' subscribing to ' + channel, {
      then: function (ok, fail) { subscription.then(ok, fail); },
    }).then(function () {
      self.step('subscribed', { client: state.name, channel: channel });
    });
  };

  // Faye's unsubscribe() returns nothing: wait for the server's reply instead.
  Harness.prototype.unsubscribe = function (state, channel) {
    var before = state.received.length;
    state.subscriptions[channel].cancel();
    delete state.subscriptions[channel];
    var self = this;
    return this.waitUntil(state.name + "'s /meta/unsubscribe reply for " + channel, function () {
      return state.received.slice(before).some(function (m) {
        return m.channel === '/meta/unsubscribe' && m.subscription === channel;
      });
    }).then(function () {
      self.step('unsubscribed', { client: state.name, channel: channel });
    });
  };

  Harness.prototype.publish = function (state, channel, data) {
    var publication = state.faye.publish(channel, data);
    var self = this;
    return this.withTimeout(state.name + ' publishing to ' + channel, {
      then: function (ok, fail) { publication.then(ok, fail); },
    }).then(function () {
      self.step('published', { client: state.name, channel: channel, data: data });
    });
  };

  Harness.prototype.disconnect = function (state) {
    var self = this;
    var publication = state.faye.disconnect();
    if (!publication) return Promise.resolve();
    return this.withTimeout(state.name + ' disconnecting', {
      then: function (ok, fail) { publication.then(ok, fail); },
    }).then(function () {
      self.step('disconnected', { client: state.name });
    });
  };

  // Faye handshakes over a mandatory type and moves to the chosen transport once it has
  // opened (an EventSource or a websocket) and the connect in flight has returned. Waiting
  // for a connect over the chosen type makes what follows travel over it.
  Harness.prototype.onTransport = function (state) {
    var transport = this.transport;
    if (!transport) return Promise.resolve();
    var self = this;
    return this.waitUntil(state.name + ' connecting over ' + transport, function () {
      var id = self.clientId(state);
      return state.sent.some(function (m) {
        return m.channel === '/meta/connect' && m.connectionType === transport && m.clientId === id;
      });
    }).then(function () {
      self.step('on-transport', { client: state.name, connectionType: transport });
    });
  };

  Harness.prototype.got = function (state, predicate) {
    return state.messages.filter(function (m) { return predicate(m.data, m); }).length;
  };

  Harness.prototype.waitForMessage = function (state, what, predicate) {
    var self = this;
    return this.waitUntil(state.name + ' receiving ' + what, function () {
      return self.got(state, predicate) > 0;
    });
  };

  // Waits for the driver: the Python test answers on stdin (Node) or by page.evaluate (browser).
  Harness.prototype.ready = function (name) {
    this.report({ event: 'ready', name: name });
    if (!this.resume) return Promise.resolve();
    return this.resume(name);
  };

  Harness.prototype.summary = function () {
    var self = this;
    return this.clients.map(function (state) {
      return {
        client: state.name,
        clientId: self.clientId(state),
        connectionType: state.faye._dispatcher.connectionType || null,
        messages: state.messages,
      };
    });
  };

  Harness.prototype.closeAll = function () {
    this.clients.forEach(function (state) {
      try { state.faye.disconnect(); } catch (e) { /* already gone */ }
    });
  };

  function hasN(n) {
    return function (data) { return data && data.n === n; };
  }

  var scenarios = {};

  // Two clients on one channel: both receive what either publishes, once; an unsubscribed
  // client receives nothing more; both disconnect cleanly.
  scenarios.roundtrip = async function (h) {
    var channel = h.options.channel || h.prefix + '/e2e/roundtrip/' + randomName();
    var a = h.client('A');
    var b = h.client('B');
    await h.subscribe(a, channel);
    await h.subscribe(b, channel);
    await h.onTransport(a);
    await h.onTransport(b);
    h.step('handshaken', { A: h.clientId(a), B: h.clientId(b) });

    await h.publish(a, channel, { n: 1, from: 'A', text: 'hello from A' });
    await h.waitForMessage(a, 'n=1', hasN(1));
    await h.waitForMessage(b, 'n=1', hasN(1));

    await h.publish(b, channel, { n: 2, from: 'B', text: 'h\u00e9llo \u2028 from B' });
    await h.waitForMessage(a, 'n=2', hasN(2));
    await h.waitForMessage(b, 'n=2', hasN(2));

    await h.unsubscribe(a, channel);
    await h.publish(b, channel, { n: 3, from: 'B', text: 'only B hears this' });
    await h.waitForMessage(b, 'n=3', hasN(3));

    // Room for a duplicate or a stray delivery to show up before we count.
    await sleep(h.settleMs);
    await h.disconnect(a);
    await h.disconnect(b);
    return { channel: channel };
  };

  // One client subscribed to a channel and to wildcards above it; another publishes.
  scenarios.wildcards = async function (h) {
    var base = h.options.channel || h.prefix + '/e2e/wild/' + randomName();
    var a = h.client('A');
    var b = h.client('B');
    await h.subscribe(a, base + '/*');
    await h.subscribe(a, base + '/**');
    await h.subscribe(a, base + '/x');
    await h.subscribe(b, base + '/*');
    await h.onTransport(a);
    await h.onTransport(b);
    h.step('handshaken', { A: h.clientId(a), B: h.clientId(b), base: base });

    var targets = [
      [base + '/x', 1],        // /*, /** and exact on A; /* on B
      [base + '/y', 2],        // /* and /** on A; /* on B
      [base + '/x/deep', 3],   // /** only on A; nothing on B
      [base + 'suffix/x', 4],  // nobody: a string prefix is not a segment
      [base, 5],               // nobody: /* and /** need one more segment
    ];
    for (var i = 0; i < targets.length; i++) {
      await h.publish(b, targets[i][0], { n: targets[i][1], channel: targets[i][0] });
    }
    await h.waitForMessage(a, 'n=3', hasN(3));
    await h.waitForMessage(b, 'n=2', hasN(2));
    await sleep(h.settleMs);
    await h.disconnect(a);
    await h.disconnect(b);
    return { base: base };
  };

  // The server goes away and comes back (same port, new process, no memory of us):
  // the client must re-handshake, resubscribe by itself, and receive again.
  scenarios.restart = async function (h) {
    var channel = h.options.channel || h.prefix + '/e2e/restart/' + randomName();
    var a = h.client('A');
    var b = h.client('B');
    await h.subscribe(a, channel);
    await h.onTransport(a);
    await h.publish(b, channel, { n: 1, phase: 'before' });
    await h.waitForMessage(a, 'n=1', hasN(1));
    var oldA = h.clientId(a);
    var oldB = h.clientId(b);
    h.step('before-restart', { A: oldA, B: oldB });

    await h.ready('restart');
    h.step('server-restarted');

    // Faye resubscribes on its own after a new handshake; wait for the server to confirm it.
    await h.waitUntil('A to re-handshake and resubscribe to ' + channel, function () {
      var id = h.clientId(a);
      return id && id !== oldA && a.received.some(function (m) {
        return m.channel === '/meta/subscribe' && m.successful && m.clientId === id &&
          [].concat(m.subscription).indexOf(channel) >= 0;
      });
    }, h.waitMs * 2);
    h.step('resubscribed', { A: h.clientId(a) });
    await h.onTransport(a);

    // B's first publish may still carry its dead clientId (401, then Faye re-handshakes):
    // retry until one is accepted. Each accepted publish must reach A exactly once.
    var accepted = null;
    for (var attempt = 1; attempt <= 20 && accepted === null; attempt++) {
      try {
        await h.publish(b, channel, { n: 2, phase: 'after', attempt: attempt });
        accepted = attempt;
      } catch (e) {
        h.step('publish-retry', { attempt: attempt, error: describe(e) });
        await sleep(250);
      }
    }
    if (accepted === null) throw new Error('no publish accepted after the restart');
    await h.waitForMessage(a, 'n=2 after the restart', hasN(2));
    await sleep(h.settleMs);
    await h.disconnect(a);
    await h.disconnect(b);
    return { channel: channel, oldClientIds: { A: oldA, B: oldB }, accepted: accepted };
  };

  function run(Faye, name, options, report) {
    var scenario = scenarios[name];
    if (!scenario) {
      report({ event: 'failed', error: 'unknown scenario ' + name + '; known: ' + Object.keys(scenarios) });
      return Promise.resolve(false);
    }
    var h = new Harness(Faye, options, report);
    h.step('start', { scenario: name, url: options.url, disable: h.disable });
    return Promise.resolve()
      .then(function () { return scenario(h); })
      .then(function (result) {
        report({ event: 'done', result: result || {}, summary: h.summary() });
        return true;
      }, function (error) {
        report({ event: 'failed', error: describe(error), summary: h.summary() });
        h.closeAll();
        return false;
      });
  }

  return { run: run, names: Object.keys(scenarios), sleep: sleep };
});
