/**
 * Reading (never verifying) a JWT, to show an operator what a token grants.
 * Verification is the server's job: it holds the secret; the console only explains.
 */

/** Decodes base64url text to a string (UTF-8). */
function base64url(part) {
  const base64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

/**
 * The header and claims of a compact JWT.
 * @param {string} token
 * @returns {{header: object, claims: object}}
 * @throws {Error} when it is not a JWT
 */
export function decodeToken(token) {
  const parts = String(token).split('.');
  if (parts.length !== 3) throw new Error('Not a JWT (expected three dot-separated parts)');
  return { header: JSON.parse(base64url(parts[0])), claims: JSON.parse(base64url(parts[1])) };
}

/** One line per claim, in words, for the token generator's explanation. */
export function describeClaims(claims) {
  const lines = [];
  if (claims.keyId) lines.push(['keyId', claims.keyId, 'the key whose secret signed it']);
  if (claims.channel) {
    let scope = 'exactly this channel';
    if (claims.channel.endsWith('/**')) scope = 'this channel subtree';
    else if (claims.channel.endsWith('/*')) scope = 'channels one segment below';
    lines.push(['channel', claims.channel, scope]);
  }
  if ('pub' in claims) lines.push(['pub', String(claims.pub), claims.pub ? 'may publish' : 'may not publish']);
  if ('sub' in claims) lines.push(['sub', String(claims.sub), claims.sub ? 'may subscribe' : 'may not subscribe']);
  if (claims.presence) lines.push(['presence', JSON.stringify(claims.presence), `joins presence as ${claims.presence.id}`]);
  for (const time of ['exp', 'nbf', 'iat']) {
    if (typeof claims[time] === 'number') {
      const when = new Date(claims[time] * 1000);
      const label = { exp: 'expires', nbf: 'not valid before', iat: 'issued' }[time];
      lines.push([time, String(claims[time]), `${label} ${when.toISOString().replace('.000Z', 'Z')}`]);
    }
  }
  for (const [name, value] of Object.entries(claims)) {
    if (!lines.some(([n]) => n === name)) lines.push([name, JSON.stringify(value), '']);
  }
  return lines;
}
