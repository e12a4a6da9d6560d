#!/usr/bin/env node
// A reference Bayeux server: Faye 1.4's own NodeAdapter, mounted at /push like pandapush.
//
//   node faye-server.js [port] [timeoutSeconds]
//
// Prints one JSON line {"event":"listening","url":...} once it accepts connections.
// The e2e scenarios can be pointed at it to tell a client-side quirk from a pandapush bug:
// whatever passes here and fails against pandapush is ours.
'use strict';

const http = require('http');
const faye = require('faye');

const port = Number(process.argv[2] || 0);
const timeout = Number(process.argv[3] || 5);

const bayeux = new faye.NodeAdapter({ mount: '/push', timeout });
const server = http.createServer((request, response) => {
  if (request.url === '/health_check.json') {
    response.writeHead(200, { 'Content-Type': 'application/json; charset=utf-8' });
    response.end(JSON.stringify({ version: 'faye-' + faye.VERSION, rev: 'reference', built: '' }));
    return;
  }
  response.writeHead(404);
  response.end();
});
bayeux.attach(server);

server.listen(port, '127.0.0.1', () => {
  const address = server.address();
  const url = `http://127.0.0.1:${address.port}`;
  process.stdout.write(JSON.stringify({ event: 'listening', url, port: address.port }) + '\n');
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
