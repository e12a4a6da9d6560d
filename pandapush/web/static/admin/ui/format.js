/** Formatting for people: dates, times, numbers, JSON. */

/** `2026-11-28 05:53` in the viewer's time zone, or an em dash for null. */
export function dateTime(value) {
  if (value === null || value === undefined || value === '') return '—';
  const date = value instanceof Date ? value : new Date(typeof value === 'number' ? value * 1000 : value);
  if (Number.isNaN(date.getTime())) return String(value);
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** `05:53:12.345`: the event log's timestamps (milliseconds matter when watching latency). */
export function clockTime(date = new Date()) {
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

/** `<time datetime=...>` content: ISO for machines. */
export function isoOf(value) {
  if (value === null || value === undefined || value === '') return null;
  const date = new Date(typeof value === 'number' ? value * 1000 : value);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

/** A number with at most `digits` decimals, trailing zeros dropped. */
export function num(value, digits = 2) {
  if (typeof value !== 'number' || !Number.isFinite(value)) return '—';
  return String(Number(value.toFixed(digits)));
}

/** Pretty JSON for display (two-space indent). */
export function pretty(value) {
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/**
 * Parses user-typed JSON, with an error message that says where it went wrong.
 * @returns {{ok: true, value: any} | {ok: false, error: string}}
 */
export function parseJSON(text) {
  if (!text.trim()) return { ok: false, error: 'Enter a JSON value, e.g. {"text": "hello"}' };
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (error) {
    return { ok: false, error: `Not valid JSON: ${error.message}` };
  }
}

/** What state a key is in, from its public record. */
export function keyStatus(key, now = Date.now()) {
  if (key.revoked || key.revoked_at) return 'revoked';
  if (key.expires && new Date(key.expires).getTime() <= now) return 'expired';
  return 'active';
}
