/**
 * What this tab remembers until it is reloaded, and nowhere else (no storage, no cookies).
 *
 * The API shows a key's secret once, when the key is created. The console keeps the
 * secrets of keys created in this tab in memory so the live console can publish with
 * key + secret over REST (handy to check a key right after creating it, and to see a
 * revoked key refused); a reload forgets them, as the API intends.
 */

/** keyId -> secret, for keys created in this tab. */
export const rememberedSecrets = new Map();
