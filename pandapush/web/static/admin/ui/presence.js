/**
 * Presence member lists from what a presence channel delivers.
 *
 * pandapush (as upstream) sends the subscriber `{subscribe: {<id>: data, ...every member}}`
 * once subscribed, then `{subscribe: {<id>: data}}` when someone joins and
 * `{unsubscribe: {<id>: null}}` when their last connection leaves. One reducer handles all.
 */

/** Is this a presence notice rather than an application message? */
export function isPresenceNotice(data) {
  if (!data || typeof data !== 'object' || Array.isArray(data)) return false;
  const keys = Object.keys(data);
  return keys.length > 0 && keys.every((k) => k === 'subscribe' || k === 'unsubscribe');
}

/**
 * Applies a notice to `members` (a Map id -> data), in place.
 * @returns {{joined: string[], left: string[]}}
 */
export function applyPresence(members, data) {
  const joined = [];
  const left = [];
  for (const [id, info] of Object.entries(data.subscribe || {})) {
    if (!members.has(id)) joined.push(id);
    members.set(id, info);
  }
  for (const id of Object.keys(data.unsubscribe || {})) {
    if (members.delete(id)) left.push(id);
  }
  return { joined, left };
}

/** The channel's type: public, private, presence or meta (or null). */
export function channelType(channel) {
  const parts = String(channel).split('/');
  return parts.length >= 4 ? parts[2] : null;
}
