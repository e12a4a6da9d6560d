/**
 * The live console (Pusher's debug console, for pandapush): subscribe to any channel of the
 * application through `/client.mjs`, watch what arrives, publish JSON through the client
 * (Bayeux) or the REST API with a chosen credential, and see refusals in plain words.
 */

import { admin, restPublish } from '../api.js';
import { busy, field, h, outcome, replace, uid } from '../dom.js';
import { clockTime, keyStatus, parseJSON, pretty } from '../format.js';
import { liveClient, subscribeChannel, tokenSource } from '../live.js';
import { applyPresence, channelType, isPresenceNotice } from '../presence.js';
import { rememberedSecrets } from '../session.js';
import { channelProblem } from './tokens.js';
import { section } from '../widgets.js';

/** Most events kept on screen; older ones are dropped so a busy channel cannot eat the tab. */
const MAX_EVENTS = 500;

export async function renderConsole(container, context, app) {
  const keys = await admin.keys(app.id).catch(() => []);
  /** channel -> {subscription, item, members} */
  const active = new Map();
  let disposed = false;

  // --- the event log -----------------------------------------------------------------
  const log = h('ol', { class: 'events', role: 'log', 'aria-label': 'Events', 'aria-live': 'polite', reversed: true });
  const counter = h('span', { class: 'count', text: '0 events' });
  let total = 0;
  const clear = h('button', { type: 'button', class: 'secondary small', text: 'Clear events' });
  clear.addEventListener('click', () => {
    log.replaceChildren();
    total = 0;
    counter.textContent = '0 events';
  });

  /**
   * Adds an event at the top of the log.
   * @param {'message'|'presence'|'subscribed'|'unsubscribed'|'published'|'error'|'info'} kind
   */
  function record(kind, channel, text, data) {
    if (disposed) return;
    total += 1;
    counter.textContent = `${total} event${total === 1 ? '' : 's'}`;
    const now = new Date();
    const item = h(
      'li',
      { class: `event event-${kind}`, dataset: { kind, channel: channel || '' } },
      h('div', { class: 'event-head' }, h('time', { datetime: now.toISOString(), text: clockTime(now) }), h('span', { class: `badge badge-${kind}`, text: kind }), channel ? h('code', { class: 'event-channel', text: channel }) : null),
      text ? h('p', { class: 'event-text', text }) : null,
      data !== undefined ? h('pre', { class: 'event-data', text: pretty(data) }) : null,
    );
    log.prepend(item);
    while (log.children.length > MAX_EVENTS) log.lastElementChild.remove();
  }

  // --- connection state --------------------------------------------------------------
  const connection = h('p', { class: 'connection', role: 'status', text: 'Not connected (subscribe or publish to connect).' });
  let unbind = () => {};
  function watchClient(client) {
    const show = () => {
      if (disposed) return;
      const transport = client.getTransport();
      connection.textContent = transport ? `Connected over ${transport}.` : `Connection: ${client.getState().toLowerCase()}…`;
    };
    const down = () => !disposed && (connection.textContent = 'Connection lost; reconnecting…');
    client.bind('transport:up', show);
    client.bind('transport:down', down);
    unbind = () => {
      client.unbind('transport:up', show);
      client.unbind('transport:down', down);
    };
    show();
  }
  let watching = false;
  async function client() {
    const c = await liveClient();
    if (!watching) {
      watching = true;
      watchClient(c);
    }
    return c;
  }

  // --- subscribing -------------------------------------------------------------------
  const examples = h(
    'datalist',
    { id: uid('channels') },
    [`/${app.id}/public/**`, `/${app.id}/public/room`, `/${app.id}/private/**`, `/${app.id}/presence/lobby`, `/${app.id}/meta/statistics`, `/${app.id}/meta/channels`].map((c) => h('option', { value: c })),
  );
  const subChannel = h('input', { type: 'text', name: 'channel', value: `/${app.id}/public/**`, list: examples.id, spellcheck: false, autocomplete: 'off' });
  const subChannelField = field('Channel', subChannel, 'public, private, presence or meta; * and ** allowed as the last segment.');
  const presenceInput = h('textarea', { name: 'presence', rows: 2, spellcheck: false });
  presenceInput.value = JSON.stringify({ id: `console-${context.info.username}` });
  const presenceField = field('Your presence (JSON)', presenceInput, 'How this console appears to the channel\'s members.');
  const togglePresence = () => (presenceField.hidden = channelType(subChannel.value.trim()) !== 'presence');
  subChannel.addEventListener('input', togglePresence);
  togglePresence();
  const subResult = outcome();
  const subscribeButton = h('button', { type: 'submit', class: 'primary', text: 'Subscribe' });
  const subForm = h('form', { class: 'inline-form', novalidate: true }, subChannelField, examples, presenceField, h('div', { class: 'actions' }, subscribeButton), subResult);
  const subList = h('ul', { class: 'subscriptions', 'aria-label': 'Active subscriptions' });

  subForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    subResult.clear();
    const channel = subChannel.value.trim();
    const problem = channelProblem(app.id, channel);
    subChannelField.setError(problem || '');
    if (problem) return subChannel.focus();
    if (active.has(channel)) return subResult.error(`Already subscribed to ${channel}.`);
    let presence;
    if (channelType(channel) === 'presence') {
      const parsed = parseJSON(presenceInput.value);
      const bad = !parsed.ok ? parsed.error : !parsed.value || typeof parsed.value !== 'object' || !parsed.value.id ? 'Presence must be a JSON object with an "id".' : '';
      presenceField.setError(bad);
      if (bad) return presenceInput.focus();
      presence = parsed.value;
    }
    await busy(subscribeButton, () => subscribe(channel, presence));
  });

  async function subscribe(channel, presence) {
    const members = channelType(channel) === 'presence' ? new Map() : null;
    const membersEl = members ? h('p', { class: 'members', 'aria-live': 'polite' }) : null;
    const status = h('span', { class: 'badge badge-info', text: 'subscribing' });
    const stop = h('button', { type: 'button', class: 'secondary small', text: 'Unsubscribe', 'aria-label': `Unsubscribe from ${channel}` });
    const item = h('li', { dataset: { channel } }, h('code', { text: channel }), ' ', status, ' ', stop, membersEl);
    subList.append(item);
    const entry = { subscription: null, item, members };
    active.set(channel, entry);
    const drawMembers = () => {
      if (!membersEl) return;
      const ids = [...members.keys()].sort();
      membersEl.textContent = `${ids.length} member${ids.length === 1 ? '' : 's'}${ids.length ? ': ' : ''}${ids.join(', ')}`;
    };
    drawMembers();
    stop.addEventListener('click', () => {
      entry.subscription?.cancel();
      active.delete(channel);
      item.remove();
      record('unsubscribed', channel, 'Unsubscribed.');
      subChannel.focus();
    });
    try {
      await client();
      const { subscription } = await subscribeChannel(
        app.id,
        channel,
        (concrete, data) => {
          if (members && isPresenceNotice(data)) {
            const { joined, left } = applyPresence(members, data);
            drawMembers();
            const words = [joined.length && `joined: ${joined.join(', ')}`, left.length && `left: ${left.join(', ')}`].filter(Boolean).join('; ');
            record('presence', concrete, words || 'Member list', data);
          } else {
            record('message', concrete, '', data);
          }
        },
        presence,
      );
      entry.subscription = subscription;
      if (!active.has(channel)) return subscription.cancel(); // unsubscribed while pending
      status.textContent = 'subscribed';
      status.className = 'badge badge-subscribed';
      record('subscribed', channel, 'Subscribed.');
    } catch (error) {
      active.delete(channel);
      item.remove();
      const message = `Subscribe to ${channel} refused: ${error.message || error}`;
      subResult.error(message);
      record('error', channel, message);
    }
  }

  // --- publishing --------------------------------------------------------------------
  const pubChannel = h('input', { type: 'text', name: 'channel', value: `/${app.id}/public/room`, spellcheck: false, autocomplete: 'off' });
  const pubChannelField = field('Channel', pubChannel, 'public, private or presence; no wildcards.');
  const data = h('textarea', { name: 'data', rows: 5, spellcheck: false, class: 'json' });
  data.value = '{"text": "hello"}';
  const dataField = field('Message (JSON)', data);
  const validate = () => {
    const parsed = parseJSON(data.value);
    dataField.setError(parsed.ok ? '' : parsed.error);
    return parsed;
  };
  data.addEventListener('input', validate);

  const viaName = uid('via');
  const viaClient = h('input', { type: 'radio', name: viaName, value: 'client', id: uid('via'), checked: true });
  const viaRest = h('input', { type: 'radio', name: viaName, value: 'rest', id: uid('via') });
  const via = h(
    'fieldset',
    { class: 'checks' },
    h('legend', { text: 'Send through' }),
    h('div', { class: 'check' }, viaClient, h('label', { for: viaClient.id, text: 'The client (Bayeux, with a publish token)' })),
    h('div', { class: 'check' }, viaRest, h('label', { for: viaRest.id, text: 'The REST API (POST /channel/…)' })),
  );
  const credentials = h(
    'select',
    { name: 'credentials' },
    h('option', { value: 'console', text: 'Token from the web console key' }),
    keys
      .filter((k) => k.purpose !== 'web console')
      .flatMap((k) => {
        const state = keyStatus(k);
        const label = `${k.id}${k.purpose ? ` (${k.purpose})` : ''}${state === 'active' ? '' : ` — ${state}`}`;
        return [
          rememberedSecrets.has(k.id) ? h('option', { value: `secret:${k.id}`, text: `Key + secret: ${label}` }) : null,
          h('option', { value: `token:${k.id}`, text: `Token signed by ${label}` }),
        ];
      }),
  );
  const credentialsField = field('Credentials (REST)', credentials, 'Key + secret is offered for keys created in this tab (their secret is kept in memory until reload).');
  const toggleCredentials = () => (credentialsField.hidden = !viaRest.checked);
  viaClient.addEventListener('change', toggleCredentials);
  viaRest.addEventListener('change', toggleCredentials);
  toggleCredentials();
  const pubResult = outcome();
  const publishButton = h('button', { type: 'submit', class: 'primary', text: 'Publish' });
  const pubForm = h('form', { class: 'inline-form', novalidate: true }, pubChannelField, dataField, via, credentialsField, h('div', { class: 'actions' }, publishButton), pubResult);

  pubForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    pubResult.clear();
    const channel = pubChannel.value.trim();
    let problem = channelProblem(app.id, channel);
    if (!problem && channel.includes('*')) problem = 'Publish to one channel: no wildcards.';
    if (!problem && channelType(channel) === 'meta') problem = 'Meta channels are written by the server only.';
    pubChannelField.setError(problem || '');
    const parsed = validate();
    if (problem) return pubChannel.focus();
    if (!parsed.ok) return data.focus();
    await busy(publishButton, () => (viaRest.checked ? publishRest(channel, parsed.value) : publishClient(channel, parsed.value)));
  });

  async function publishClient(channel, value) {
    try {
      const c = await client();
      await c.publishTo(channel, tokenSource(app.id, { channel, pub: true, sub: false }), value);
      pubResult.ok(`Published to ${channel} through the client.`);
      record('published', channel, 'Published through the client.', value);
    } catch (error) {
      const message = `Publish refused: ${error.message || error}`;
      pubResult.error(message);
      record('error', channel, message);
    }
  }

  async function publishRest(channel, value) {
    const choice = credentials.value;
    let auth;
    let how;
    try {
      if (choice.startsWith('secret:')) {
        const key = choice.slice(7);
        auth = { key, secret: rememberedSecrets.get(key) };
        how = `key ${key} + secret`;
      } else {
        const keyId = choice.startsWith('token:') ? choice.slice(6) : undefined;
        auth = { token: (await admin.token(app.id, { channel, pub: true, sub: false }, keyId)).token };
        how = keyId ? `a token signed by ${keyId}` : 'a web console token';
      }
    } catch (error) {
      const message = `Could not get a token: ${error.message}`;
      pubResult.error(message);
      record('error', channel, message);
      return;
    }
    try {
      await restPublish(channel, value, auth);
      pubResult.ok(`Published to ${channel} over REST with ${how}.`);
      record('published', channel, `Published over REST with ${how}.`, value);
    } catch (error) {
      const message = `REST publish refused: ${error.message}`;
      pubResult.error(message);
      record('error', channel, message);
    }
  }

  replace(
    container,
    connection,
    h('div', { class: 'console-grid' }, h('div', { class: 'console-controls' }, section('Subscribe', subForm, subList), section('Publish', pubForm)), section('Events', h('div', { class: 'log-head' }, counter, clear), log)),
  );

  return () => {
    disposed = true;
    unbind();
    for (const entry of active.values()) entry.subscription?.cancel();
    active.clear();
  };
}
