import { test, describe, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import util from 'node:util';
import {
  Client,
  AuthError,
  AuthenticationError,
  BadRequestError,
  ForbiddenError,
  NetworkError,
  NotFoundError,
  PandapushError,
  RateLimitedError,
  ServerError,
  TimeoutError,
  UnavailableError,
} from '../index.mjs';
import { APP, KEY, SECRET, ROOM, fakeServer, refusal } from './fake-server.mjs';

const BASIC = `Basic ${Buffer.from(`${KEY}:${SECRET}`).toString('base64')}`;

let server;
let sleeps;
let made;

function client(options = {}) {
  const c = new Client({ url: server.url, keyId: KEY, secret: SECRET, ...options });
  c._sleep = async (ms) => { sleeps.push(ms); };
  return c;
}

function assertNoSecret(...texts) {
  for (const text of texts) {
    assert.ok(!text.includes(SECRET), `secret in: ${text}`);
    assert.ok(!text.includes(BASIC.slice(6)), `credentials in: ${text}`);
  }
}

// `promise` rejects with `Kind`, and nothing the error prints holds the secret.
async function rejectsSafely(promise, Kind) {
  let error;
  try {
    await promise;
  } catch (caught) {
    error = caught;
  }
  assert.ok(error instanceof Kind, `expected ${Kind.name}, got ${error && error.stack}`);
  assertNoSecret(String(error), error.stack, util.inspect(error), JSON.stringify(error));
  return error;
}

beforeEach(async () => {
  server = await fakeServer();
  sleeps = [];
  made = client();
});

afterEach(async () => {
  await server.close();
});

describe('request shape', () => {
  test('publish is a JSON POST to /channel/<channel> with Basic key:secret and an idempotency key', async () => {
    assert.equal(await made.publish(ROOM, { text: 'hé', n: [1, 2] }), undefined);
    const [request] = server.requests;
    assert.deepEqual([request.method, request.path], ['POST', `/channel/${APP}/public/room`]);
    assert.deepEqual(request.json(), { text: 'hé', n: [1, 2] });
    assert.equal(request.headers['content-type'], 'application/json; charset=utf-8');
    assert.equal(request.headers.authorization, BASIC);
    assert.match(request.headers['idempotency-key'], /^[0-9a-f]{32}$/);
    assert.ok(request.headers['user-agent'].startsWith('pandapush-node/'));
  });

  test("the caller's idempotency key is sent as given; without retries and without one, none", async () => {
    await made.publish(ROOM, 1, { idempotencyKey: 'order-42' });
    await client({ maxRetries: 0 }).publish(ROOM, 2);
    assert.equal(server.requests[0].headers['idempotency-key'], 'order-42');
    assert.equal(server.requests[1].headers['idempotency-key'], undefined);
    for (const bad of ['', 'x'.repeat(201), 'café', 'a\nb', 42]) {
      await assert.rejects(made.publish(ROOM, 1, { idempotencyKey: bad }), TypeError);
    }
    assert.equal(server.requests.length, 2);
  });

  test('a base URL with a path prefixes every request', async () => {
    await client({ url: `${server.url}/pandapush/` }).publish(`/${APP}/private/users/42`, 1);
    assert.equal(server.requests[0].path, `/pandapush/channel/${APP}/private/users/42`);
  });

  test('publishMany: one message to several channels of one application', async () => {
    server.script({ body: { ok: true } });
    const channels = [ROOM, `/${APP}/private/a`];
    assert.deepEqual(await made.publishMany(channels, { x: 1 }), { ok: true });
    const [request] = server.requests;
    assert.deepEqual([request.method, request.path], ['POST', `/apps/${APP}/events`]);
    assert.deepEqual(request.json(), { channels, data: { x: 1 } });
    assert.ok(request.headers['idempotency-key']);
    await assert.rejects(made.publishMany([ROOM, '/otherApp/public/room'], 1), TypeError);
    await assert.rejects(made.publishMany(ROOM, 1), TypeError);
    assert.equal(server.requests.length, 1);
  });

  test('publishBatch: several messages in order to /batch_events', async () => {
    await made.publishBatch([{ channel: ROOM, data: 1 }, [`/${APP}/public/b`, { y: 2 }]]);
    const [request] = server.requests;
    assert.equal(request.path, `/apps/${APP}/batch_events`);
    assert.deepEqual(request.json(), { batch: [{ channel: ROOM, data: 1 }, { channel: `/${APP}/public/b`, data: { y: 2 } }] });
    for (const bad of [[], [{ channel: ROOM }], [[ROOM, 1], ['/other/public/x', 2]]]) {
      await assert.rejects(made.publishBatch(bad), TypeError);
    }
  });

  test('channel, channels, members and history are GETs under /apps/<app>/ answering JSON', async () => {
    const occupied = { occupied: true, subscription_count: 2, user_count: 1 };
    server.script(
      { body: occupied },
      { body: { channels: {} } },
      { body: { channels: {} } },
      { body: { members: { u1: { id: 'u1' } } } },
      { body: { epoch: 'e', offset: 3, messages: [] } },
    );
    const presence = `/${APP}/presence/room`;
    assert.deepEqual(await made.channel(presence), occupied);
    await made.channels({ prefix: `/${APP}/presence/` });
    await made.channels({ appId: APP });
    assert.deepEqual(await made.members(presence), { members: { u1: { id: 'u1' } } });
    assert.equal((await made.history(ROOM, { since: 2, limit: 10 })).offset, 3);
    assert.deepEqual(server.requests.map((r) => [r.method, r.path, r.query]), [
      ['GET', `/apps/${APP}/channel`, { name: [presence] }],
      ['GET', `/apps/${APP}/channels`, { prefix: [`/${APP}/presence/`] }],
      ['GET', `/apps/${APP}/channels`, {}],
      ['GET', `/apps/${APP}/members`, { channel: [presence] }],
      ['GET', `/apps/${APP}/history`, { channel: [ROOM], since: ['2'], limit: ['10'] }],
    ]);
    assert.ok(server.requests.every((r) => r.headers['idempotency-key'] === undefined));
    await assert.rejects(made.channels(), TypeError);
  });

  test('terminateUserConnections: POST /apps/<app>/users/<userId>/terminate_connections', async () => {
    await client({ appId: APP }).terminateUserConnections('user/1');
    await made.terminateUserConnections('u2', { appId: 'other' });
    const [first, second] = server.requests;
    assert.deepEqual([first.method, first.path], ['POST', `/apps/${APP}/users/user%2F1/terminate_connections`]);
    assert.equal(second.path, '/apps/other/users/u2/terminate_connections');
    await assert.rejects(made.terminateUserConnections('u3'), TypeError);
  });

  test('wrong channels and constructor options fail before anything is sent', async () => {
    for (const channel of ['room', '', '//public/x', null]) {
      await assert.rejects(made.publish(channel, 1), TypeError);
    }
    await assert.rejects(made.publish(ROOM, 10n), TypeError); // JSON cannot encode a BigInt
    for (const url of ['ftp://host', 'localhost', 'http://key:secret@host', undefined]) {
      assert.throws(() => new Client({ url, keyId: KEY, secret: SECRET }), TypeError);
    }
    assert.throws(() => new Client({ url: server.url, keyId: KEY, secret: '' }), TypeError);
    assert.equal(server.requests.length, 0);
  });
});

describe('errors', () => {
  test('a 403 is a ForbiddenError (an AuthError) with the server code and message', async () => {
    server.script(refusal(403, 'Invalid secret'));
    const error = await rejectsSafely(made.publish(ROOM, 1), ForbiddenError);
    assert.ok(error instanceof AuthError && error instanceof PandapushError && error instanceof Error);
    assert.deepEqual([error.status, error.code, error.serverMessage], [403, 403, 'Invalid secret']);
    assert.deepEqual([error.method, error.path], ['POST', `/channel/${APP}/public/room`]);
    assert.equal(error.name, 'ForbiddenError');
    assert.match(error.message, /Invalid secret/);
    assert.equal(server.requests.length, 1);
  });

  test('each refusal maps to its class, and none but 502/503/504 is sent again', async () => {
    const cases = [
      [refusal(401, 'No authentication provided'), AuthenticationError],
      [refusal(404, 'Unknown channel type'), NotFoundError],
      [refusal(400, 'Body is not valid JSON'), BadRequestError],
      [refusal(413, 'Body larger than 1048576 bytes'), BadRequestError],
      [{ status: 500, body: 'Internal trouble' }, ServerError],
    ];
    for (const [answer, Kind] of cases) {
      const before = server.requests.length;
      server.script(answer);
      const error = await rejectsSafely(made.publish(ROOM, 1), Kind);
      assert.equal(error.status, answer.status);
      assert.equal(server.requests.length, before + 1);
      if (Kind === ServerError) assert.equal(error.serverMessage, 'Internal trouble');
    }
    assert.deepEqual(sleeps, []);
  });

  test('a 429 is raised at once with its Retry-After', async () => {
    server.script(refusal(429, 'Publish rate limit exceeded', { 'Retry-After': '7' }));
    const error = await rejectsSafely(made.publish(ROOM, 1), RateLimitedError);
    assert.equal(error.retryAfter, 7);
    assert.deepEqual([server.requests.length, sleeps], [1, []]);
  });
});

describe('retries', () => {
  test('503s are retried after their Retry-After, with the same idempotency key each time', async () => {
    server.script(refusal(503, 'Storage unavailable', { 'Retry-After': '2' }), { status: 502, body: 'Bad gateway' }, {});
    await made.publish(ROOM, { n: 1 });
    assert.equal(server.requests.length, 3);
    assert.equal(new Set(server.requests.map((r) => r.headers['idempotency-key'])).size, 1);
    assert.equal(sleeps[0], 2000);
    assert.ok(sleeps[1] >= 500 && sleeps[1] <= 1000, String(sleeps));
  });

  test('retries are bounded: after maxRetries the UnavailableError', async () => {
    server.script(...Array.from({ length: 5 }, () => refusal(503, 'Failed to publish')));
    const error = await rejectsSafely(made.publish(ROOM, 1), UnavailableError);
    assert.equal(error.serverMessage, 'Failed to publish');
    assert.deepEqual([server.requests.length, sleeps.length], [3, 2]);
  });

  test('a Retry-After beyond maxRetryDelay is not waited for', async () => {
    server.script(refusal(503, 'Draining', { 'Retry-After': '60' }));
    const error = await rejectsSafely(made.publish(ROOM, 1), UnavailableError);
    assert.deepEqual([error.retryAfter, server.requests.length, sleeps], [60, 1, []]);
  });

  test('nobody listening: a NetworkError after 1 + maxRetries attempts', async () => {
    const probe = net.createServer();
    await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const { port } = probe.address();
    await new Promise((resolve) => probe.close(resolve));
    const error = await rejectsSafely(client({ url: `http://127.0.0.1:${port}`, maxRetries: 3 }).publish(ROOM, 1), NetworkError);
    assert.equal(error.status, null);
    assert.match(error.message, /ECONNREFUSED/);
    assert.equal(sleeps.length, 3);
  });

  test('a server slower than the timeout: TimeoutError, retried with the same key', async () => {
    server.script({ delay: 1000 }, {});
    const quick = client({ timeout: 300, maxRetries: 1 });
    await quick.publish(ROOM, 1);
    assert.equal(server.requests.length, 2);
    assert.equal(new Set(server.requests.map((r) => r.headers['idempotency-key'])).size, 1);
    server.script({ delay: 1000 }, { delay: 1000 });
    const error = await rejectsSafely(quick.publish(ROOM, 1), TimeoutError);
    assert.ok(error instanceof NetworkError);
    assert.match(error.message, /300ms/);
  });

  test('a connection closed without an answer is a NetworkError, retried', async () => {
    server.script({ drop: true }, {});
    const fresh = client({ maxRetries: 2 });
    await fresh.publish(ROOM, 1);
    assert.deepEqual([server.requests.length, sleeps.length], [2, 1]);
    server.script(...Array.from({ length: 3 }, () => ({ drop: true })));
    await rejectsSafely(fresh.publish(ROOM, 1), NetworkError);
    assert.equal(server.requests.length, 5);
  });
});

describe('secrets', () => {
  test('the secret is in no inspect, JSON or string form of a client', () => {
    assertNoSecret(util.inspect(made), util.inspect(made, { showHidden: true, depth: 5 }), JSON.stringify(made), String(made));
    assert.equal(util.inspect(made), `Client { url: ${JSON.stringify(server.url)}, keyId: ${JSON.stringify(KEY)} }`);
    assert.ok(!Object.values(made).some((value) => typeof value === 'string' && value.includes(SECRET)));
  });

  test('retries are logged (method, path, delay, error), never with the secret', async () => {
    server.script(refusal(503, 'Failed to publish'), refusal(403, 'Invalid secret'));
    const lines = [];
    await rejectsSafely(client({ logger: { info: (line) => lines.push(line) } }).publish(ROOM, 1), ForbiddenError);
    assert.equal(lines.length, 1);
    assert.match(lines[0], new RegExp(`retrying POST /channel/${APP}/public/room`));
    assert.match(lines[0], /Failed to publish/);
    assertNoSecret(...lines);
  });
});
