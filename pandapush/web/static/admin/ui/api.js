/**
 * The admin API client: JSON in, JSON out, errors turned into readable messages.
 *
 * Paths resolve against this file's location (`/admin/ui/api.js` -> `/admin/api/...`), so
 * the console keeps working if pandapush is served under a path prefix. Requests carry the
 * browser's admin login (HTTP Basic is cached by the browser after the page's own login),
 * and bodies are always `application/json`: the API refuses anything else, which is its
 * protection against cross-site form posts.
 */

/** `/admin/` (where this console lives). */
export const ADMIN_BASE = new URL('../', import.meta.url);
/** The server root, for `/push`, `/client.mjs` and `/channel/...`. */
export const ROOT = new URL('../../', import.meta.url);

/** An API refusal or failure; `message` is what the user should read. */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status (0 when the server could not be reached)
   * @param {string} message
   * @param {any} [body] the decoded answer, if any
   */
  constructor(status, message, body) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.body = body;
  }
}

/**
 * The text a user should see for a failed answer: the server's `message` when it sent
 * one (`{"code", "params", "message"}` is what pandapush answers), else the status.
 */
export function errorText(status, statusText, body) {
  if (body && typeof body === 'object' && typeof body.message === 'string' && body.message) {
    return `${body.message} (${status})`;
  }
  if (typeof body === 'string' && body.trim() && body.length < 300) return `${body.trim()} (${status})`;
  return `${statusText || 'Request failed'} (${status})`;
}

/**
 * One HTTP request with a JSON body and a decoded answer.
 * @param {string} method
 * @param {URL|string} url
 * @param {any} [body] sent as JSON when defined
 * @param {Record<string,string>} [headers]
 * @returns {Promise<any>} the decoded JSON (or text) of a 2xx answer
 * @throws {ApiError}
 */
export async function request(method, url, body, headers = {}) {
  const init = { method, headers: { Accept: 'application/json', ...headers }, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    throw new ApiError(0, `Could not reach the server: ${error.message}`);
  }
  const text = await response.text();
  let decoded = text;
  if ((response.headers.get('Content-Type') || '').includes('json') && text) {
    try {
      decoded = JSON.parse(text);
    } catch {
      decoded = text;
    }
  }
  if (response.status === 401 && sameOrigin(url)) {
    // The admin session ended (or the login was withdrawn): whoever listens sends the
    // browser to sign in again (main.js), instead of every view showing the error.
    document.dispatchEvent(new CustomEvent('pandapush:unauthorized', { detail: { url: String(url) } }));
  }
  if (!response.ok) throw new ApiError(response.status, errorText(response.status, response.statusText, decoded), decoded);
  return decoded;
}

function sameOrigin(url) {
  return new URL(url, location.href).origin === location.origin && String(url).includes('/admin/');
}

/** A call to `/admin/api/<path>`; `path` segments must already be encoded (see `seg`). */
export function api(method, path, body) {
  return request(method, new URL(`api/${path}`, ADMIN_BASE), body);
}

/** Encodes one path segment (application and key ids are plain, but never trust that). */
export const seg = (value) => encodeURIComponent(String(value));

/** The admin API's routes, one function each, so views never spell paths. */
export const admin = {
  info: () => api('GET', 'info'),
  /** Ends an admin session of a method with pages of its own; answers `{redirect}`. */
  signOut: (path) => request('POST', new URL(path, location.href), {}),
  applications: () => api('GET', 'applications'),
  createApplication: (name) => api('POST', 'applications', { name }),
  application: (id) => api('GET', `application/${seg(id)}`),
  updateApplication: (id, changes) => api('POST', `application/${seg(id)}`, changes),
  deleteApplication: (id) => api('DELETE', `application/${seg(id)}`),
  stats: (id) => api('GET', `application/${seg(id)}/stats`),
  keys: (id) => api('GET', `application/${seg(id)}/keys`),
  createKey: (id, purpose, expires) => api('POST', `application/${seg(id)}/keys`, { purpose, expires }),
  revokeKey: (id, keyId) => api('POST', `application/${seg(id)}/keys/${seg(keyId)}/revoke`, {}),
  webhooks: (id) => api('GET', `application/${seg(id)}/webhooks`),
  createWebhook: (id, webhook) => api('POST', `application/${seg(id)}/webhooks`, webhook),
  deleteWebhook: (id, webhookId) => api('DELETE', `application/${seg(id)}/webhooks/${seg(webhookId)}`),
  deliveries: (id, webhookId) => api('GET', `application/${seg(id)}/webhooks/${seg(webhookId)}/deliveries`),
  resendDelivery: (id, webhookId, deliveryId) =>
    api('POST', `application/${seg(id)}/webhooks/${seg(webhookId)}/deliveries/${seg(deliveryId)}/resend`, {}),
  /**
   * A token from the API: signed with `keyId`'s secret, or (no key) with the application's
   * "web console" key, which the API creates when missing.
   */
  token: (id, claims, keyId) =>
    api('POST', keyId ? `application/${seg(id)}/keys/${seg(keyId)}/token` : `application/${seg(id)}/token`, claims),
};

/**
 * Publishes over the REST API (`POST /channel/<app>/<type>/<path>`), as an application's
 * server would. `auth` is `{token}` or `{key, secret}`.
 * @throws {ApiError} with the server's refusal text, e.g. "Revoked key (403)"
 */
export function restPublish(channel, data, auth) {
  const headers = {};
  if (auth && auth.token) headers.Authorization = `Token ${auth.token}`;
  else if (auth && auth.key) headers.Authorization = `Basic ${btoa(`${auth.key}:${auth.secret}`)}`;
  const path = channel.replace(/^\/+/, '').split('/').map(seg).join('/');
  return request('POST', new URL(`channel/${path}`, ROOT), JSON.stringify(data), headers);
}
