/**
 * An application's webhooks: the endpoints (URL, events, signing key), a form for a new
 * one, and each endpoint's recent deliveries (status, HTTP status, attempts, last error)
 * with a button to send one again.
 *
 * Deliveries are read when an endpoint is opened and on "Refresh": the list is the
 * server's record, kept in the outbox's store (Redis or the database), so every node
 * shows the same.
 */

import { admin } from '../api.js';
import { busy, checkbox, field, h, outcome, replace } from '../dom.js';
import { dateTime, isoOf } from '../format.js';
import { confirmDialog, notify, section, table } from '../widgets.js';

/** Every event an endpoint may want; `client_event` is opt-in. */
export const EVENTS = [
  { name: 'channel_occupied', label: 'Channel occupied', checked: true },
  { name: 'channel_vacated', label: 'Channel vacated', checked: true },
  { name: 'member_added', label: 'Member added', checked: true },
  { name: 'member_removed', label: 'Member removed', checked: true },
  { name: 'client_event', label: 'Client event (messages browsers publish with a token)', checked: false },
];

/** A problem with a URL typed in the form, or '' if it looks right (the server checks again). */
export function urlProblem(text) {
  if (!text) return 'Enter the URL to send events to.';
  let url;
  try {
    url = new URL(text);
  } catch {
    return 'Enter a full URL, e.g. https://example.com/pandapush/webhook';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'A webhook URL is http:// or https://';
  if (url.username || url.password) return 'No user name or password in the URL: requests are signed instead.';
  return '';
}

export async function renderWebhooks(container, context, app) {
  const listHolder = h('div', { class: 'webhooks-list' });
  const detailHolder = h('div', { class: 'webhook-detail' });
  let open = null;

  async function refresh() {
    try {
      const hooks = await admin.webhooks(app.id);
      replace(listHolder, hookTable(hooks));
      if (open && !hooks.some((hook) => hook.id === open.id)) {
        open = null;
        replace(detailHolder);
      }
    } catch (error) {
      replace(listHolder, h('p', { class: 'error', role: 'alert', text: `Could not list webhooks: ${error.message}` }));
    }
  }

  function hookTable(hooks) {
    if (!hooks.length) return h('p', { class: 'empty', text: 'No webhooks yet. Add one to hear about channels and members as they come and go.' });
    const rows = hooks.map((hook) => {
      const show = h('button', { type: 'button', class: 'secondary small', text: 'Deliveries', 'aria-label': `Deliveries of ${hook.url}` });
      show.addEventListener('click', () => showDeliveries(hook));
      const remove = h('button', { type: 'button', class: 'danger small', text: 'Delete', 'aria-label': `Delete webhook ${hook.url}` });
      remove.addEventListener('click', async () => {
        const sure = await confirmDialog({
          title: 'Delete this webhook?',
          message: `${hook.url} gets no more events; the events waiting for it are dropped.`,
          confirmLabel: 'Delete webhook',
        });
        if (!sure) return remove.focus();
        await busy(remove, async () => {
          try {
            await admin.deleteWebhook(app.id, hook.id);
            notify(`Deleted webhook ${hook.url}`, 'ok');
            await refresh();
          } catch (error) {
            notify(`Could not delete ${hook.url}: ${error.message}`, 'error');
          }
        });
      });
      return h(
        'tr',
        { dataset: { webhook: hook.id } },
        h('th', { scope: 'row' }, h('code', { class: 'url', text: hook.url })),
        h('td', null, h('ul', { class: 'event-list' }, hook.events.map((name) => h('li', { text: name })))),
        h('td', null, h('code', { text: hook.key_id })),
        h('td', null, h('time', { datetime: isoOf(hook.created_at), text: dateTime(hook.created_at) }), hook.created_by ? ` by ${hook.created_by}` : ''),
        h('td', null, h('div', { class: 'row-actions' }, show, remove)),
      );
    });
    return table(`${hooks.length} webhook${hooks.length === 1 ? '' : 's'}`, ['URL', 'Events', 'Signed by', 'Created', 'Actions'], rows, { class: 'webhooks stack-narrow' });
  }

  async function showDeliveries(hook) {
    open = hook;
    const holder = h('div', { class: 'deliveries', 'aria-live': 'polite' });
    const reload = h('button', { type: 'button', class: 'secondary', text: 'Refresh' });
    const heading = h('p', null, 'Recent deliveries to ', h('code', { text: hook.url }));
    async function load() {
      try {
        const found = await admin.deliveries(app.id, hook.id);
        replace(holder, deliveryTable(hook, found));
      } catch (error) {
        replace(holder, h('p', { class: 'error', role: 'alert', text: `Could not read deliveries: ${error.message}` }));
      }
    }
    reload.addEventListener('click', () => busy(reload, load));
    replace(detailHolder, section('Deliveries', heading, h('div', { class: 'actions' }, reload), holder));
    await load();
  }

  function deliveryTable(hook, deliveries) {
    if (!deliveries.length) return h('p', { class: 'empty', text: 'Nothing sent yet.' });
    const rows = deliveries.map((delivery) => {
      const again = h('button', { type: 'button', class: 'secondary small', text: 'Send again', 'aria-label': `Send delivery ${delivery.id} again` });
      again.addEventListener('click', () =>
        busy(again, async () => {
          try {
            const answer = await admin.resendDelivery(app.id, hook.id, delivery.id);
            notify(`Queued ${answer.resent} event${answer.resent === 1 ? '' : 's'} again`, 'ok');
          } catch (error) {
            notify(`Could not send it again: ${error.message}`, 'error');
          }
        }),
      );
      const names = delivery.events.map((e) => `${e.name} ${e.channel}`).join(', ');
      return h(
        'tr',
        { dataset: { delivery: delivery.id, status: delivery.status } },
        h('th', { scope: 'row' }, h('time', { datetime: new Date(delivery.time_ms).toISOString(), text: dateTime(new Date(delivery.time_ms)) })),
        h('td', null, h('span', { class: `badge badge-${delivery.status === 'delivered' ? 'active' : 'error'}`, text: delivery.status })),
        h('td', { class: 'num', text: delivery.http_status === null ? '—' : String(delivery.http_status) }),
        h('td', { class: 'num', text: String(delivery.attempts) }),
        h('td', { class: 'delivery-error', text: delivery.error || '—' }),
        h('td', { class: 'delivery-events', text: names }),
        h('td', null, again),
      );
    });
    return table(`${deliveries.length} recent deliver${deliveries.length === 1 ? 'y' : 'ies'}`, ['When', 'Status', 'HTTP', 'Attempts', 'Last error', 'Events', 'Actions'], rows, { class: 'deliveries-table stack-narrow' });
  }

  // --- a new endpoint ---------------------------------------------------------------------
  const url = h('input', { type: 'url', name: 'url', placeholder: 'https://example.com/pandapush/webhook', spellcheck: false, autocomplete: 'off' });
  const urlField = field('URL', url, 'Events are POSTed here as JSON, signed with the key below (X-Pandapush-Signature).');
  const boxes = EVENTS.map((event) => {
    const box = checkbox(event.label, { name: 'events', value: event.name, checked: event.checked });
    return box;
  });
  const eventsSet = h('fieldset', { class: 'events' }, h('legend', { text: 'Events' }), boxes);
  const eventsError = h('p', { class: 'field-error', role: 'alert', hidden: true });
  const key = h('select', { name: 'key' });
  const keyField = field('Signing key', key, 'Its secret signs each request; your receiver checks it.');
  const result = outcome();
  const create = h('button', { type: 'submit', class: 'primary', text: 'Add webhook' });
  const form = h('form', { class: 'inline-form', novalidate: true }, urlField, eventsSet, eventsError, keyField, h('div', { class: 'actions' }, create), result);

  async function loadKeys() {
    const keys = (await admin.keys(app.id)).filter((k) => !k.revoked);
    replace(key, keys.map((k) => h('option', { value: k.id, text: `${k.id}${k.purpose ? ` (${k.purpose})` : ''}` })));
    if (!keys.length) keyField.setError('Create a key first (Keys tab): a webhook needs one to sign with.');
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    result.clear();
    const problem = urlProblem(url.value.trim());
    urlField.setError(problem);
    const events = boxes.filter((b) => b.input.checked).map((b) => b.input.value);
    eventsError.textContent = events.length ? '' : 'Choose at least one event.';
    eventsError.hidden = Boolean(events.length);
    if (problem) return url.focus();
    if (!events.length) return boxes[0].input.focus();
    if (!key.value) return key.focus();
    await busy(create, async () => {
      try {
        const made = await admin.createWebhook(app.id, { url: url.value.trim(), events, keyId: key.value });
        notify(`Added webhook ${made.url}`, 'ok');
        url.value = '';
        await refresh();
      } catch (error) {
        result.error(`Could not add the webhook: ${error.message}`);
      }
    });
  });

  replace(container, section('Webhooks', listHolder), detailHolder, section('New webhook', form));
  await Promise.all([refresh(), loadKeys().catch((error) => keyField.setError(`Could not list keys: ${error.message}`))]);
}
