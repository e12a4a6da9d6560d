#!/usr/bin/env node
// The reference: Faye 1.4's NodeAdapter at /push, one process, in-memory engine.
//   node bench/faye-server.js <port> [timeoutSeconds]
// Prints {"event":"listening","port":...} once it accepts connections.
'use strict';
const http = require('http');
const faye = require('faye');

const port = Number(process.argv[2] || 0);
const timeout = Number(process.argv[3] || 30);
const bayeux = new faye.NodeAdapter({ mount: '/push', timeout });
const server = http.createServer((request, response) => {
  response.writeHead(request.url === '/health_check.json' ? 200 : 404, { 'Content-Type': 'application/json' });
  response.end(JSON.stringify({ version: 'faye-' + faye.VERSION }));
});
bayeux.attach(server);
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ event: 'listening', port: server.address().port }) + '\n');
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
