/**
 * The console's connection to pandapush: one `/client.mjs` client per page, shared by the
 * live console and the presence watcher, with tokens minted through the admin API.
 *
 * The client is imported lazily, from the server's own `/client.mjs`, the first time a live
 * feature is used: the rest of the console works even where the client is not served.
 */

import { ROOT, admin } from './api.js';

let clientPromise = null;

/** The shared `Pandapush.Client` for `<root>/push` (created on first use). */
export function liveClient() {
  if (!clientPromise) {
    clientPromise = import(new URL('client.mjs', ROOT).href).then((module) => {
      const Pandapush = module.default || globalThis.Pandapush;
      return new Pandapush.Client(new URL('push', ROOT).href, { retry: 1, maxRetry: 10 });
    });
    clientPromise.catch(() => {
      clientPromise = null; // let a later attempt try again
    });
  }
  return clientPromise;
}

/**
 * A token function for `subscribeTo`/`publishTo`: called by the client each time it
 * (re)subscribes, so a token never outlives a server restart or its expiry. Minted with
 * the application's "web console" key (the API creates it when missing), or `keyId`'s.
 * @param {string} appId
 * @param {{channel: string, pub?: boolean, sub?: boolean, presence?: object}} claims
 * @param {string} [keyId]
 * @returns {() => Promise<string>}
 */
export function tokenSource(appId, claims, keyId) {
  return async () => (await admin.token(appId, claims, keyId)).token;
}

/**
 * Subscribes to `channel` the way its type needs: public channels without a token (anyone
 * may), meta, private and presence channels with a `sub` token (presence's carrying
 * `presence`). Resolves with `{subscription}` once the server accepted it; rejects with
 * the server's refusal (a `PandapushError`, e.g. `Invalid token`).
 * @param {string} appId
 * @param {string} channel
 * @param {(channel: string, data: any) => void} onMessage the concrete channel (wildcards) and data
 * @param {object} [presence] the presence object, for presence channels
 */
export async function subscribeChannel(appId, channel, onMessage, presence) {
  const client = await liveClient();
  const type = channel.split('/')[2];
  let subscription;
  if (type === 'public') {
    subscription = client.subscribe(channel, () => {});
  } else {
    const claims = { channel, sub: true, pub: false };
    if (type === 'presence') claims.presence = presence;
    subscription = client.subscribeTo(channel, tokenSource(appId, claims), () => {});
  }
  subscription.withChannel((concrete, data) => onMessage(concrete, data));
  await subscription;
  // Wrapped: the subscription is a thenable, so returning it bare would be awaited again.
  return { subscription };
}
