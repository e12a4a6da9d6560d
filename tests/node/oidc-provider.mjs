// A real OpenID provider for pandapush's single sign-on tests: npm's oidc-provider on
// 127.0.0.1, with test users, dynamic client registration (the test registers the console
// once it knows its port), and a few test-only switches that alter what the token endpoint
// hands out, so that pandapush can be shown refusing a forged ID token.
//
//   node oidc-provider.mjs            prints {"issuer": "http://127.0.0.1:<port>"} once listening
//
// Environment: CLIENT_ID and CLIENT_SECRET, what registration gives the client (so the
// console can be configured before it is registered); CONFORM=1 to keep scope claims (email)
// out of the ID token, as the spec's strict reading does, so the console must ask userinfo.
//
// Test users (any password): root, alice, bob (e-mail <name>@example.com), and mallory,
// whose address the provider has not verified.
//
// Test-only endpoints (not part of any standard):
//   POST /test/mode {"mode": m}   the next ID tokens are altered: "nonce" (another nonce,
//        validly signed), "audience", "issuer", "expired" (re-signed with those changed),
//        "signature" (sub changed, not re-signed), "unknown-key" (signed with a key the
//        JWKS does not hold), "rotated" (signed with a new key the JWKS now also holds),
//        "none" (unchanged)
//   GET  /test/counts             how often discovery, JWKS, token and userinfo were asked for

import crypto from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

const USERS = {
  root: { email: 'root@example.com', email_verified: true, name: 'Root Admin' },
  alice: { email: 'Alice@Example.com', email_verified: true, name: 'Alice' },
  bob: { email: 'bob@example.com', email_verified: true, name: 'Bob' },
  mallory: { email: 'root@example.com', email_verified: false, name: 'Mallory' },
};

function rsaKey(kid) {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { kid, privateKey, jwk: { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' } };
}

const main = rsaKey('main-key');
const rotated = rsaKey('rotated-key');
const stranger = rsaKey('stranger-key');

let mode = 'none';
const counts = { discovery: 0, jwks: 0, token: 0, userinfo: 0, registration: 0 };

const b64 = (data) => Buffer.from(data).toString('base64url');

function resign(token, change, key = main) {
  const [header, payload] = token.split('.');
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
  const head = { ...JSON.parse(Buffer.from(header, 'base64url').toString()), kid: key.kid, alg: 'RS256' };
  change(claims);
  const input = `${b64(JSON.stringify(head))}.${b64(JSON.stringify(claims))}`;
  return `${input}.${b64(crypto.sign('sha256', Buffer.from(input), key.privateKey))}`;
}

function tamper(token) {
  const now = Math.floor(Date.now() / 1000);
  switch (mode) {
    case 'nonce':
      return resign(token, (c) => { c.nonce = 'a-nonce-this-login-never-sent'; });
    case 'audience':
      return resign(token, (c) => { c.aud = 'another-client'; delete c.azp; });
    case 'issuer':
      return resign(token, (c) => { c.iss = 'https://issuer.invalid'; });
    case 'expired':
      return resign(token, (c) => { c.iat = now - 7200; c.exp = now - 3600; });
    case 'unknown-key':
      return resign(token, () => {}, stranger);
    case 'rotated':
      return resign(token, () => {}, rotated);
    case 'signature': {
      const [header, payload, signature] = token.split('.');
      const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
      claims.sub = 'root';
      claims.email = 'root@example.com';
      return `${header}.${b64(JSON.stringify(claims))}.${signature}`;
    }
    default:
      return token;
  }
}

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    jwks: { keys: [main.jwk] },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    conformIdTokenClaims: process.env.CONFORM === '1',
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    scopes: ['openid', 'email', 'profile'],
    async findAccount(ctx, id) {
      const user = USERS[id];
      if (!user) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, ...user }) };
    },
    features: {
      devInteractions: { enabled: true },
      // The default pages import a web font from the internet: these stand alone.
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.body = `<!doctype html><html><head><meta charset="utf-8"><title>Sign out</title></head>
            <body><h1>Sign out of the test provider?</h1>${form}
            <button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
            <button type="submit" form="op.logoutForm">No, stay signed in</button></body></html>`;
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = '<!doctype html><html><head><meta charset="utf-8"><title>Signed out</title></head><body><h1>Signed out of the test provider</h1></body></html>';
        },
      },
      registration: {
        enabled: true,
        idFactory: () => process.env.CLIENT_ID || crypto.randomUUID(),
        secretFactory: async () => process.env.CLIENT_SECRET || crypto.randomBytes(32).toString('base64url'),
      },
    },
    // The console is the operator's own: no consent screen, as a company's SSO would set it.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope('openid email profile');
      await grant.save();
      return grant;
    },
    ttl: { IdToken: 3600, AccessToken: 3600, Session: 3600, Interaction: 600, Grant: 3600 },
  });
  provider.on('server_error', (ctx, error) => console.error('server_error', error));

  provider.use(async (ctx, next) => {
    if (ctx.path === '/test/mode' && ctx.method === 'POST') {
      const body = await new Promise((resolve) => {
        let text = '';
        ctx.req.on('data', (chunk) => { text += chunk; });
        ctx.req.on('end', () => resolve(text));
      });
      mode = JSON.parse(body || '{}').mode || 'none';
      ctx.body = { mode };
      return;
    }
    if (ctx.path === '/test/counts') {
      ctx.body = counts;
      return;
    }
    if (ctx.path === '/.well-known/openid-configuration') counts.discovery += 1;
    if (ctx.path === '/jwks') counts.jwks += 1;
    if (ctx.path === '/token') counts.token += 1;
    if (ctx.path === '/me') counts.userinfo += 1;
    if (ctx.path === '/reg') counts.registration += 1;
    await next();
    if (ctx.path === '/token' && ctx.body && typeof ctx.body.id_token === 'string') {
      ctx.body = { ...ctx.body, id_token: tamper(ctx.body.id_token) };
    }
    if (ctx.path === '/jwks' && mode === 'rotated' && ctx.body && Array.isArray(ctx.body.keys)) {
      const { d, p, q, dp, dq, qi, ...publicPart } = rotated.jwk;
      ctx.body = { keys: [...ctx.body.keys, publicPart] };
    }
  });

  server.on('request', provider.callback());
  console.log(JSON.stringify({ issuer }));
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
