/** An application's keys: create (secret shown once), list with usage and status, revoke. */

import { admin } from '../api.js';
import { busy, field, h, outcome, replace } from '../dom.js';
import { dateTime, isoOf, keyStatus } from '../format.js';
import { rememberedSecrets } from '../session.js';
import { confirmDialog, copyButton, idCode, notify, section, table } from '../widgets.js';

export async function renderKeys(container, context, app, reload) {
  const listHolder = h('div', { class: 'keys-list' });
  const secretHolder = h('div', { class: 'secret-holder' });

  /** Redraws the key table from the API. */
  async function refresh() {
    try {
      const keys = await admin.keys(app.id);
      replace(listHolder, keyTable(keys));
    } catch (error) {
      replace(listHolder, h('p', { class: 'error', role: 'alert', text: `Could not list keys: ${error.message}` }));
    }
  }

  function keyTable(keys) {
    if (!keys.length) return h('p', { class: 'empty', text: 'No keys yet. Create one to publish from your servers or sign tokens.' });
    const rows = keys.map((key) => {
      const status = keyStatus(key);
      const revoke =
        status === 'revoked'
          ? null
          : h('button', { type: 'button', class: 'danger small', text: 'Revoke', 'aria-label': `Revoke key ${key.id}` });
      if (revoke) {
        revoke.addEventListener('click', async () => {
          const sure = await confirmDialog({
            title: 'Revoke this key?',
            message: `Key ${key.id}${key.purpose ? ` (${key.purpose})` : ''} stops working at once on every node: publishes, subscriptions and tokens signed with it are refused. This cannot be undone.`,
            confirmLabel: 'Revoke key',
          });
          if (!sure) return revoke.focus();
          await busy(revoke, async () => {
            try {
              await admin.revokeKey(app.id, key.id);
              notify(`Revoked key ${key.id}`, 'ok');
              await refresh();
            } catch (error) {
              notify(`Could not revoke ${key.id}: ${error.message}`, 'error');
            }
          });
        });
      }
      return h(
        'tr',
        { dataset: { key: key.id, status } },
        h('th', { scope: 'row' }, idCode(key.id)),
        h('td', { text: key.purpose || '—' }),
        h('td', null, h('span', { class: `badge badge-${status}`, text: status })),
        h('td', null, h('time', { datetime: isoOf(key.expires), text: key.expires ? dateTime(key.expires) : 'never' })),
        h('td', null, h('time', { datetime: isoOf(key.last_used), text: key.last_used ? dateTime(key.last_used) : 'never' })),
        h('td', { class: 'num', text: String(key.use_count ?? 0) }),
        h('td', null, h('time', { datetime: isoOf(key.created_at), text: dateTime(key.created_at) }), key.created_by ? ` by ${key.created_by}` : ''),
        h('td', null, revoke),
      );
    });
    return table(`${keys.length} key${keys.length === 1 ? '' : 's'}`, ['Key id', 'Purpose', 'Status', 'Expires', 'Last used', 'Uses', 'Created', 'Actions'], rows, { class: 'keys stack-narrow' });
  }

  /** The one-time view of a new key's secret. */
  function showSecret(key) {
    const secret = h('input', { type: 'text', readonly: true, class: 'secret', value: key.secret, spellcheck: false, autocomplete: 'off' });
    const id = h('input', { type: 'text', readonly: true, value: key.id, spellcheck: false });
    secret.addEventListener('focus', () => secret.select());
    const done = h('button', { type: 'button', class: 'secondary', text: 'I have stored the secret' });
    const panel = h(
      'div',
      { class: 'secret-panel', role: 'region', 'aria-label': 'New key secret', tabindex: '-1' },
      h('h3', { text: 'New key created' }),
      h('p', { class: 'warn' }, h('strong', { text: 'Copy the secret now: ' }), 'it is shown only this once. Anyone with it can publish and subscribe on every channel of this application.'),
      field('Key id', id),
      h('div', { class: 'secret-row' }, field('Secret', secret), copyButton(() => secret.value, 'Copy secret')),
      h('div', { class: 'actions' }, done),
    );
    done.addEventListener('click', () => replace(secretHolder));
    replace(secretHolder, panel);
    panel.focus();
  }

  const purpose = h('input', { type: 'text', name: 'purpose', maxlength: 200, autocomplete: 'off' });
  const expires = h('input', { type: 'datetime-local', name: 'expires' });
  const purposeField = field('Purpose', purpose, 'What uses this key, e.g. "chat backend".');
  const expiresField = field('Expires (optional)', expires, 'Leave empty for a key that never expires. Your local time.');
  const result = outcome();
  const create = h('button', { type: 'submit', class: 'primary', text: 'Create key' });
  const form = h('form', { class: 'inline-form', novalidate: true }, purposeField, expiresField, h('div', { class: 'actions' }, create), result);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    result.clear();
    let when = null;
    if (expires.value) {
      const date = new Date(expires.value);
      if (Number.isNaN(date.getTime())) return expiresField.setError('Enter a valid date and time.');
      if (date.getTime() <= Date.now()) return expiresField.setError('The expiry must be in the future.');
      when = date.toISOString();
    }
    expiresField.setError('');
    await busy(create, async () => {
      try {
        const key = await admin.createKey(app.id, purpose.value.trim(), when);
        rememberedSecrets.set(key.id, key.secret);
        form.reset();
        showSecret(key);
        await refresh();
      } catch (error) {
        result.error(`Could not create the key: ${error.message}`);
      }
    });
  });

  replace(container, secretHolder, section('Keys', listHolder), section('New key', form));
  await refresh();
}
