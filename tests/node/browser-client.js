#!/usr/bin/env node
// Plays a scenario from scenarios.js with Faye's *browser* client inside headless Chromium,
// forced onto one transport, and prints what it observes as JSON lines on stdout: the
// scenario's events (see scenarios.js) plus what the browser really put on the network.
//
//   node browser-client.js <scenario> <endpoint> --transport=<type> [--channel=/x] [--wait=ms]
//                          [--prefix=/<app>/public] [--auth=<key>:<secret>|token:<jwt>]
//
//   <type>: websocket | eventsource | long-polling | cross-origin-long-polling | callback-polling
//
// Faye picks a transport by what the page can use, so each is forced by disabling the
// others and by where the page comes from:
//   - long-polling, eventsource and websocket run on a page of the server's own origin;
//     the page is answered by the browser itself (Playwright route), never by the server;
//   - cross-origin-long-polling and callback-polling run on a page served by a small HTTP
//     server here, on another port (another origin).
// Faye handshakes over a mandatory type (long-polling, or callback-polling across origins)
// and switches to the chosen one afterwards; the tests look at /meta/connect.
//
// Network events: {"event":"http", method, url, resourceType, origin, status}
//                 {"event":"websocket", url} / {"event":"websocket-closed", url}
//                 {"event":"console", type, text} / {"event":"pageerror", error}
//
// Chromium: $CHROMIUM or /usr/bin/chromium (Debian's package). Nothing here downloads one.
// Exit status: 0 done, 1 the scenario failed, 2 bad usage, 3 the deadline passed.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const { chromium } = require('playwright-core');

const started = Date.now();

// --auth=<key>:<secret> or --auth=token:<jwt>: credentials put on every publish.
function parseAuth(value) {
  if (!value) return null;
  const colon = value.indexOf(':');
  if (colon < 0) throw new Error('--auth wants <key>:<secret> or token:<jwt>');
  const [first, rest] = [value.slice(0, colon), value.slice(colon + 1)];
  return first === 'token' ? { token: rest } : { key: first, secret: rest };
}
function report(event) {
  event.t = Date.now() - started;
  process.stdout.write(JSON.stringify(event) + '\n');
}

const TRANSPORTS = ['websocket', 'eventsource', 'long-polling', 'cross-origin-long-polling', 'callback-polling'];
const CROSS_ORIGIN = new Set(['cross-origin-long-polling', 'callback-polling']);

// Chromium flags for a quiet, self-contained headless run as root in a container.
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
  // The same-origin page is answered by the browser itself (no server address behind it),
  // which Chromium's Local Network Access checks count as public: they would then refuse
  // the page's websocket to 127.0.0.1. The test is about the server, not that policy.
  '--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests',
];

const positional = [];
const flags = {};
for (const arg of process.argv.slice(2)) {
  const match = /^--([a-z-]+)=(.*)$/.exec(arg);
  if (match) flags[match[1]] = match[2];
  else positional.push(arg);
}
if (positional.length !== 2 || !TRANSPORTS.includes(flags.transport)) {
  process.stderr.write('usage: browser-client.js <scenario> <endpoint> --transport=<' + TRANSPORTS.join('|') + '>\n');
  process.exit(2);
}
const [scenario, endpoint] = positional;
const transport = flags.transport;
const crossOrigin = CROSS_ORIGIN.has(transport);

// Everything but the wanted transport is disabled, except what Faye needs to handshake:
// long-polling on its own origin, callback-polling across origins (see the header).
const handshakeType = crossOrigin ? 'callback-polling' : 'long-polling';
const disable = TRANSPORTS.filter((t) => t !== transport && t !== handshakeType);

const fayeBundle = fs.readFileSync(require.resolve('faye/client/faye-browser.js'));
const scenarioScript = fs.readFileSync(path.join(__dirname, 'scenarios.js'));
const PAGE = '<!doctype html><meta charset="utf-8"><title>pandapush e2e</title>' +
  '<link rel="icon" href="favicon.ico">' +
  '<script src="faye-browser.js"></script><script src="scenarios.js"></script>';
const FILES = {
  'index.html': ['text/html; charset=utf-8', PAGE],
  'faye-browser.js': ['text/javascript; charset=utf-8', fayeBundle],
  'scenarios.js': ['text/javascript; charset=utf-8', scenarioScript],
  'favicon.ico': ['image/x-icon', ''],
};
const PAGE_DIR = '/__pandapush_e2e__/';

function serveFile(name) {
  const file = FILES[name];
  return file && { status: 200, contentType: file[0], body: file[1] };
}

// A static server on 127.0.0.1:<other port>: a page of another origin than the endpoint.
function startPageServer() {
  const server = http.createServer((request, response) => {
    const name = new URL(request.url, 'http://x').pathname.slice(PAGE_DIR.length);
    const file = request.url.startsWith(PAGE_DIR) && serveFile(name);
    if (!file) {
      response.writeHead(404);
      response.end();
      return;
    }
    response.writeHead(200, { 'Content-Type': file.contentType, 'Cache-Control': 'no-store' });
    response.end(file.body);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

async function main() {
  const deadline = Number(flags.deadline || 60000);
  setTimeout(() => {
    report({ event: 'failed', error: 'deadline of ' + deadline + ' ms passed' });
    process.exit(3);
  }, deadline).unref();

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
  });
  let pageServer = null;
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    let pageUrl;
    if (crossOrigin) {
      pageServer = await startPageServer();
      pageUrl = `http://127.0.0.1:${pageServer.address().port}${PAGE_DIR}index.html`;
    } else {
      pageUrl = new URL(PAGE_DIR + 'index.html', endpoint).href;
      await page.route(new URL(PAGE_DIR + '**', endpoint).href, (route) => {
        const name = new URL(route.request().url()).pathname.slice(PAGE_DIR.length);
        const file = serveFile(name);
        return file ? route.fulfill(file) : route.fulfill({ status: 404, body: '' });
      });
    }
    report({
      event: 'browser', version: browser.version(), transport, page: pageUrl,
      pageOrigin: new URL(pageUrl).origin, endpointOrigin: new URL(endpoint).origin, disable,
    });

    const pushPath = new URL(endpoint).pathname;
    const isPush = (url) => {
      const u = new URL(url);
      return u.origin === new URL(endpoint).origin && (u.pathname === pushPath || u.pathname.startsWith(pushPath + '/'));
    };
    page.on('request', (request) => {
      if (!isPush(request.url())) return;
      report({
        event: 'http', phase: 'request', method: request.method(), url: request.url(),
        resourceType: request.resourceType(),
      });
    });
    // Headers as sent and received (Origin is added by the network stack, so only
    // allHeaders() knows it).
    page.on('response', async (response) => {
      if (!isPush(response.url())) return;
      const request = response.request();
      const [sent, got] = await Promise.all([
        request.allHeaders().catch(() => ({})), response.allHeaders().catch(() => ({})),
      ]);
      report({
        event: 'http', phase: 'response', method: request.method(), url: response.url(),
        resourceType: request.resourceType(), status: response.status(), origin: sent.origin || null,
        contentType: got['content-type'] || null,
        allowOrigin: got['access-control-allow-origin'] || null,
      });
    });
    page.on('requestfailed', (request) => {
      if (!isPush(request.url())) return;
      report({
        event: 'http', phase: 'failed', method: request.method(), url: request.url(),
        resourceType: request.resourceType(), error: request.failure() && request.failure().errorText,
      });
    });
    page.on('websocket', (ws) => {
      report({ event: 'websocket', url: ws.url() });
      ws.on('close', () => report({ event: 'websocket-closed', url: ws.url() }));
    });
    page.on('console', (message) => report({ event: 'console', type: message.type(), text: message.text() }));
    page.on('pageerror', (error) => report({ event: 'pageerror', error: String(error && error.stack || error) }));

    await page.exposeFunction('__pandapushReport', (event) => report(event));
    await page.goto(pageUrl);
    const ok = await page.evaluate(async (options) => {
      const { scenario, ...rest } = options;
      return window.pandapushScenarios.run(window.Faye, scenario, rest, window.__pandapushReport);
    }, {
      scenario,
      url: endpoint,
      disable,
      transport,
      channel: flags.channel,
      prefix: flags.prefix,
      auth: parseAuth(flags.auth),
      waitMs: flags.wait ? Number(flags.wait) : undefined,
      settleMs: flags.settle ? Number(flags.settle) : undefined,
    });
    // Let the last network events (the disconnect's response) be reported.
    await new Promise((resolve) => setTimeout(resolve, 200));
    return ok;
  } finally {
    await browser.close();
    if (pageServer) pageServer.close();
  }
}

main().then((ok) => {
  process.stdout.write('', () => process.exit(ok ? 0 : 1));
}, (error) => {
  report({ event: 'failed', error: String(error && error.stack || error) });
  process.stdout.write('', () => process.exit(1));
});
