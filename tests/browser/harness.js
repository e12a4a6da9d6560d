// Test helpers for pages that load /client.js: an event log the Python side reads with
// page.evaluate / wait_for_function, and shown on the page for screenshots.
(function () {
  'use strict';
  const events = [];
  const out = document.getElementById('log');
  const state = document.getElementById('state');
  document.getElementById('title').textContent = location.origin;

  function record(type, detail) {
    const event = Object.assign({ type, t: Date.now() }, detail || {});
    events.push(event);
    out.textContent += JSON.stringify(event) + '\n';
    return event;
  }

  const clients = {};

  window.harness = {
    events,
    clients,
    record,

    /** Events of `type` (and `client`, if given). */
    find(type, client) {
      return events.filter((e) => e.type === type && (client === undefined || e.client === client));
    },

    count(type, client) {
      return this.find(type, client).length;
    },

    /** A client named `name`, with its transport events and state logged. */
    client(name, url, options, disabled) {
      const client = new Pandapush.Client(url, options);
      for (const transport of disabled || []) client.disable(transport);
      client.bind('transport:up', () => {
        record('up', { client: name, transport: client.getTransport() });
        state.textContent = `${name}: up over ${client.getTransport()}`;
      });
      client.bind('transport:down', () => {
        record('down', { client: name });
        state.textContent = `${name}: down`;
      });
      client.bind('subscription:refused', (channel, error) => record('refused-later', { client: name, channel, code: error.code, message: error.message }));
      client.bind('subscription:expired', (channel, error) => record('expired', { client: name, channel, code: error.code, message: error.message }));
      client.bind('subscription:unrecovered', (channel, reasons) => record('unrecovered', { client: name, channel, reasons }));
      clients[name] = client;
      return client;
    },

    /** Subscribes (with a token, or a token function, when given); logs messages and the outcome. */
    subscribe(name, channel, token) {
      const client = clients[name];
      const onMessage = (message) => {};
      const subscription = token === undefined
        ? client.subscribe(channel, onMessage)
        : client.subscribeTo(channel, token, onMessage);
      subscription.withChannel((actual, message) => record('message', { client: name, subscribed: channel, channel: actual, data: message }));
      return subscription.then(
        () => record('subscribed', { client: name, channel }),
        (error) => record('subscribe-failed', {
          client: name, channel, code: error.code, params: error.params, message: error.message, isError: error instanceof Error,
        }),
      );
    },
  };
}());
