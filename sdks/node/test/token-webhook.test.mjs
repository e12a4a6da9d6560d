import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { Client, InvalidWebhookError, mintToken, signWebhook, verifyWebhook } from '../index.mjs';
import { APP, KEY, SECRET } from './fake-server.mjs';

// Made by PyJWT (jwt.encode(claims, SECRET, algorithm="HS256")); the Python and Ruby libraries
// check the same vector.
const PYJWT_TOKEN =
  'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJrZXlJZCI6IlBTSURleGFtcGxlS2V5MDAwMDAxIiwiY2hhbm5lbCI6Ii9leGF' +
  'tcGxlQXBwMDAwMDAwMDAwMS9wcmVzZW5jZS9yb29tIiwicHViIjp0cnVlLCJzdWIiOnRydWUsInByZXNlbmNlIjp7ImlkIjoidTEi' +
  'LCJuYW1lIjoiQW5uIn0sImV4cCI6MTkwMDAwMDAwMH0.JkLutPpig7XsFGPSUKAIx18r5s2Z0AaVWnfFg1wlrUs';
const WEBHOOK_BODY =
  '{"time_ms":1700000000000,"events":[{"id":"e1","name":"channel_occupied",' +
  '"channel":"/exampleApp0000000001/public/room"}]}';
const WEBHOOK_SIGNATURE = 'af696d007152bbbe69d019ab777fc84a7d845a3873e4ecc9678d68efeafbcc6b';

// [header, claims] of a JWT whose HS256 signature under SECRET holds.
function decode(token) {
  const [header, claims, signature] = token.split('.');
  const expected = crypto.createHmac('sha256', SECRET).update(`${header}.${claims}`).digest('base64url');
  assert.equal(signature, expected, 'bad signature');
  return [header, claims].map((part) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8')));
}

const client = new Client({ url: 'http://127.0.0.1:1', keyId: KEY, secret: SECRET });

describe('tokens', () => {
  test("the same claims give PyJWT's token, byte for byte", () => {
    const token = mintToken({
      keyId: KEY, secret: SECRET, channel: `/${APP}/presence/room`, pub: true, sub: true,
      presence: { id: 'u1', name: 'Ann' }, expiresIn: 100, now: 1_899_999_900,
    });
    assert.equal(token, PYJWT_TOKEN);
  });

  test('keyId, channel, pub and sub always; presence and exp when asked; both call forms', async () => {
    const before = Math.floor(Date.now() / 1000);
    const token = await client.token({ channel: `/${APP}/private/users/42`, sub: true, expiresIn: 60 });
    assert.ok(!token.includes('='));
    const [header, claims] = decode(token);
    assert.deepEqual(header, { alg: 'HS256', typ: 'JWT' });
    const { exp, ...rest } = claims;
    assert.deepEqual(rest, { keyId: KEY, channel: `/${APP}/private/users/42`, pub: false, sub: true });
    assert.ok(exp >= before + 60 && exp <= Math.floor(Date.now() / 1000) + 60);
    assert.equal(decode(await client.token(`/${APP}/public/x`, { pub: true }))[1].exp, undefined);
    const [, withPresence] = decode(await client.token(`/${APP}/presence/r`, { presence: { id: 'z', name: 'Zoë' }, expiresIn: 3600 }));
    assert.deepEqual(withPresence.presence, { id: 'z', name: 'Zoë' });
    assert.equal(decode(await client.token(`/${APP}/public/x`, { sub: true }))[1].user, undefined);
    assert.equal(decode(await client.token({ channel: `/${APP}/private/inbox`, sub: true, user: 'u-7' }))[1].user, 'u-7');
    assert.equal(decode(await client.token(`/${APP}/private/inbox`, { sub: true, user: 42 }))[1].user, '42');
  });

  test('bad arguments are refused', async () => {
    await assert.rejects(client.token('room'), TypeError);
    for (const presence of [{}, { id: '' }, ['u1']]) {
      await assert.rejects(client.token(`/${APP}/presence/r`, { presence }), TypeError);
    }
    await assert.rejects(client.token(`/${APP}/public/x`, { expiresIn: 0 }), RangeError);
    await assert.rejects(client.token(`/${APP}/public/x`, { expiresIn: '60' }), TypeError);
    for (const user of ['', 1.5, { id: 'u1' }, true]) {
      await assert.rejects(client.token(`/${APP}/private/x`, { user }), TypeError);
    }
  });
});

describe('webhooks', () => {
  test('the hex HMAC-SHA256 of the raw body under the key secret', async () => {
    assert.equal(signWebhook(SECRET, WEBHOOK_BODY), WEBHOOK_SIGNATURE);
    assert.equal(await client.verifyWebhook(Buffer.from(WEBHOOK_BODY), WEBHOOK_SIGNATURE), true);
    assert.equal(await client.verifyWebhook(WEBHOOK_BODY, WEBHOOK_SIGNATURE.toUpperCase(), { keyId: KEY }), true);
    assert.equal(verifyWebhook({ keyId: KEY, secret: SECRET, body: WEBHOOK_BODY, signature: WEBHOOK_SIGNATURE }), true);
  });

  test('another body, signature, key or secret, or none: false, never an exception', async () => {
    const wrong = [
      [`${WEBHOOK_BODY} `, WEBHOOK_SIGNATURE, undefined],
      [WEBHOOK_BODY, `${WEBHOOK_SIGNATURE.slice(0, -1)}0`, undefined],
      [WEBHOOK_BODY, WEBHOOK_SIGNATURE.slice(0, 10), undefined],
      [WEBHOOK_BODY, '', undefined],
      [WEBHOOK_BODY, undefined, undefined],
      [WEBHOOK_BODY, 'é'.repeat(64), undefined],
      [WEBHOOK_BODY, WEBHOOK_SIGNATURE, 'PSIDanotherKey'],
    ];
    for (const [body, signature, keyId] of wrong) {
      assert.equal(await client.verifyWebhook(body, signature, { keyId }), false, JSON.stringify([body, signature, keyId]));
    }
    const other = new Client({ url: 'http://127.0.0.1:1', keyId: KEY, secret: `${SECRET}x` });
    assert.equal(await other.verifyWebhook(WEBHOOK_BODY, WEBHOOK_SIGNATURE), false);
  });

  test('parseWebhook reads the headers in any case, from an object or Headers', async () => {
    for (const headers of [
      { 'X-Pandapush-Signature': WEBHOOK_SIGNATURE, 'X-Pandapush-Key': KEY },
      { 'x-pandapush-signature': WEBHOOK_SIGNATURE },
      new Headers({ 'x-pandapush-signature': WEBHOOK_SIGNATURE, 'x-pandapush-key': KEY }),
    ]) {
      assert.equal((await client.parseWebhook(WEBHOOK_BODY, headers)).events[0].name, 'channel_occupied');
    }
    await assert.rejects(client.parseWebhook(WEBHOOK_BODY, { 'X-Pandapush-Signature': '00'.repeat(32) }), InvalidWebhookError);
    await assert.rejects(client.parseWebhook('not json', { 'X-Pandapush-Signature': signWebhook(SECRET, 'not json') }), InvalidWebhookError);
  });
});
