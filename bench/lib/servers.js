'use strict';
// Starting and stopping the servers under test: pandapush (twistd plugin, from the
// checkout's venv), Faye's NodeAdapter, and redis-server for the two-node placeholder.
// Each is started under a shell that raises its open-file limit to the hard limit and
// then execs the server, so the pid we hold is the server's own.

const { spawn, execFileSync } = require('child_process');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const http = require('http');

const ROOT = path.resolve(__dirname, '..', '..');
const PYTHON = process.env.PANDAPUSH_PYTHON || path.join(ROOT, '.venv', 'bin', 'python');

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

function get(url) {
  return new Promise((resolve) => {
    const request = http.get(url, (response) => {
      response.resume();
      response.on('end', () => resolve(response.statusCode));
    });
    request.on('error', () => resolve(0));
    request.setTimeout(1000, () => request.destroy());
  });
}

async function waitForHttp(url, child, seconds = 30) {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode} before listening`);
    const status = await get(url);
    if (status === 200) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`server at ${url} did not answer within ${seconds}s`);
}

function spawnWithLimit(command, args, options) {
  // ulimit -n to the hard limit (10,000 idle sockets need more than the usual 1024).
  return spawn('sh', ['-c', 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"', 'sh', command, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    ...options,
  });
}

class Server {
  constructor(name, child, port, logFile) {
    this.name = name;
    this.child = child;
    this.pid = child.pid;
    this.port = port;
    this.url = `http://127.0.0.1:${port}/push`;
    this.origin = `http://127.0.0.1:${port}`;
    this.logFile = logFile;
    this.exited = new Promise((resolve) => child.once('exit', resolve));
  }

  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 8000);
    await this.exited;
    clearTimeout(timer);
  }
}

function logTo(child, file) {
  const stream = fs.createWriteStream(file);
  child.stdout.pipe(stream);
  child.stderr.pipe(stream);
}

// Which pandapush source the servers run: by default a snapshot of a commit (HEAD), so
// uncommitted edits in the checkout neither break nor skew a run; 'worktree' runs the
// checkout as it is. The venv's Python is used either way (the snapshot directory comes
// first on sys.path, and its twisted/plugins dropin is found there).
let SOURCE = ROOT;
let SOURCE_LABEL = 'worktree';
function useSource(spec) {
  if (!spec || spec === 'worktree') {
    SOURCE = ROOT;
    SOURCE_LABEL = 'worktree';
    pandapushHelp = null;
    return SOURCE_LABEL;
  }
  const rev = execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', spec]).toString().trim();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `pandapush-src-${rev}-`));
  execFileSync('sh', ['-c', 'git -C "$1" archive --format=tar "$2" | tar -x -C "$3"', 'sh', ROOT, rev, dir]);
  SOURCE = dir;
  SOURCE_LABEL = rev;
  pandapushHelp = null;
  return SOURCE_LABEL;
}

function sourceLabel() {
  return SOURCE_LABEL;
}

// Proposed server changes applied at import time by bench/tools/experiments.py.
let EXPERIMENTS = '';
function useExperiments(names) {
  EXPERIMENTS = names || '';
}

let pandapushHelp = null;
function pandapushOptions() {
  if (pandapushHelp === null) {
    try {
      pandapushHelp = execFileSync(PYTHON, ['-m', 'twisted', 'pandapush', '--help'], { cwd: SOURCE }).toString();
    } catch (error) {
      pandapushHelp = '';
    }
  }
  return pandapushHelp;
}

function pandapushAccepts(option) {
  return new RegExp(`--${option}[=\\s]`).test(pandapushOptions());
}

async function startPandapush({ logDir, rest, extraArgs = [], env = {}, name = 'pandapush', experiments = EXPERIMENTS }) {
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pandapush-bench-'));
  const args = ['-m', 'twisted', 'pandapush', '--listen', `tcp:${port}:interface=127.0.0.1`];
  if (pandapushAccepts('shutdown-grace')) args.push('--shutdown-grace', '1');
  // One key publishes every benchmark message, thousands a second: measure the server, not its per-key limit.
  if (pandapushAccepts('max-publish-rate')) args.push('--max-publish-rate', '0');
  // The idle scenario opens 10,000 clients of one application, and its publisher is one more:
  // with the default of 10,000 per application its publish is refused and nobody receives.
  if (pandapushAccepts('max-connections-per-app')) args.push('--max-connections-per-app', '0');
  // Every benchmark client connects from 127.0.0.1: thousands of connections from one address.
  if (pandapushAccepts('max-connections-per-address')) args.push('--max-connections-per-address', '0');
  // The long-polling generator's clients share one keep-alive agent, so one TCP connection
  // carries the requests of many clients (browsers each have their own): in a 3,000-client
  // storm the default of 4 clients per connection refused most handshakes.
  if (pandapushAccepts('max-clients-per-connection')) args.push('--max-clients-per-connection', '0');
  args.push(...extraArgs);
  const logFile = path.join(logDir, `${name}-${port}.log`);
  const command = experiments ? [path.join(__dirname, '..', 'tools', 'experiments.py'), experiments, ...args] : args;
  const child = spawnWithLimit(PYTHON, command, {
    cwd: SOURCE,
    env: {
      ...process.env,
      // Seed the app and key the REST publisher (and Bayeux publishers' ext.auth) use.
      DEV_APPLICATION_ID: rest.app,
      DEV_KEY_ID: rest.key,
      DEV_KEY_SECRET: rest.secret,
      DATABASE: 'sqlite',
      DATABASE_PATH: path.join(dataDir, 'db.sqlite'),
      ...env,
    },
  });
  logTo(child, logFile);
  const server = new Server(name, child, port, logFile);
  await waitForHttp(`${server.origin}/health_check.json`, child);
  return server;
}

async function startFaye({ logDir, timeout = 30, name = 'faye' }) {
  const port = await freePort();
  const logFile = path.join(logDir, `${name}-${port}.log`);
  const child = spawnWithLimit(process.execPath, [path.join(__dirname, '..', 'faye-server.js'), String(port), String(timeout)], {});
  logTo(child, logFile);
  const server = new Server(name, child, port, logFile);
  await waitForHttp(`${server.origin}/health_check.json`, child);
  return server;
}

async function startRedis({ logDir }) {
  const port = await freePort();
  const logFile = path.join(logDir, `redis-${port}.log`);
  const child = spawnWithLimit('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {});
  logTo(child, logFile);
  const server = new Server('redis', child, port, logFile);
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline) {
    const ok = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.end();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (ok) return server;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await server.stop();
  throw new Error('redis-server did not start');
}

module.exports = { useExperiments, useSource, sourceLabel, startPandapush, startFaye, startRedis, pandapushAccepts, freePort, ROOT };
