/**
 * The token generator: the claims a page or device needs (channel, pub/sub, presence,
 * expiry), minted by the API with the console key or a chosen key, then shown decoded so
 * the operator sees exactly what it grants.
 */

import { admin } from '../api.js';
import { busy, checkbox, field, h, outcome, replace } from '../dom.js';
import { keyStatus, parseJSON } from '../format.js';
import { decodeToken, describeClaims } from '../jwt.js';
import { copyButton, section, table } from '../widgets.js';

/** The channel rules the API and server enforce, checked here first for a quicker answer. */
export function channelProblem(appId, channel) {
  const parts = channel.split('/');
  if (parts[0] !== '' || parts[1] !== appId) return `The channel must start with /${appId}/`;
  if (!['public', 'private', 'presence', 'meta'].includes(parts[2])) return 'The channel type must be public, private, presence or meta.';
  const path = parts.slice(3);
  if (!path.length || path.some((p) => p === '')) return 'Add a path after the type, e.g. /room or /** (no empty segments).';
  for (const [i, part] of path.entries()) {
    if ((part === '*' || part === '**') && i === path.length - 1) continue;
    if (!/^[A-Za-z0-9_~-]+$/.test(part)) return `"${part}" is not allowed: use letters, digits, _ ~ - (and * or ** as the last segment).`;
  }
  return null;
}

/** A claim's meaning, its ISO timestamps as `<time>` (kept on one line, read as dates). */
function meaningText(meaning) {
  return String(meaning)
    .split(/(\d{4}-\d\d-\d\dT[\d:.]+Z)/)
    .map((part, i) => (i % 2 ? h('time', { datetime: part, text: part }) : part));
}

export async function renderTokens(container, context, app) {
  const keys = (await admin.keys(app.id)).filter((k) => keyStatus(k) === 'active' && k.purpose !== 'web console');
  const keySelect = h(
    'select',
    { name: 'key' },
    h('option', { value: '', text: 'Web console key (created for you)' }),
    keys.map((k) => h('option', { value: k.id, text: `${k.id}${k.purpose ? ` — ${k.purpose}` : ''}` })),
  );
  const channel = h('input', { type: 'text', name: 'channel', value: `/${app.id}/private/`, spellcheck: false, autocomplete: 'off' });
  const sub = checkbox('May subscribe (sub)', { name: 'sub', checked: true });
  const pub = checkbox('May publish (pub)', { name: 'pub' });
  const presence = h('textarea', { name: 'presence', rows: 3, spellcheck: false, placeholder: '{"id": "user-1", "name": "Ada"}' });
  const minutes = h('input', { type: 'number', name: 'minutes', min: 1, step: 1, value: '60', inputmode: 'numeric' });
  const keyField = field('Signed with', keySelect, 'The token is signed with this key\'s secret; revoking the key voids it.');
  const channelField = field('Channel', channel, 'Ends in /* for one more segment, /** for the subtree.');
  const presenceField = field('Presence (JSON, optional)', presence, 'Needed on presence channels: an object with at least an "id".');
  const minutesField = field('Expires in (minutes)', minutes);
  const result = outcome();
  const output = h('div', { class: 'token-output', 'aria-live': 'polite' });
  const mint = h('button', { type: 'submit', class: 'primary', text: 'Generate token' });
  const form = h(
    'form',
    { class: 'inline-form', novalidate: true },
    keyField,
    channelField,
    h('fieldset', { class: 'checks' }, h('legend', { text: 'Permissions' }), sub, pub),
    presenceField,
    minutesField,
    h('div', { class: 'actions' }, mint),
    result,
  );

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    result.clear();
    const claims = { channel: channel.value.trim(), sub: sub.input.checked, pub: pub.input.checked };
    const channelError = channelProblem(app.id, claims.channel);
    channelField.setError(channelError || '');
    let presenceError = '';
    if (presence.value.trim()) {
      const parsed = parseJSON(presence.value);
      if (!parsed.ok) presenceError = parsed.error;
      else if (!parsed.value || typeof parsed.value !== 'object' || Array.isArray(parsed.value) || parsed.value.id === undefined || parsed.value.id === '') {
        presenceError = 'Presence must be a JSON object with an "id".';
      } else claims.presence = parsed.value;
    } else if (claims.channel.split('/')[2] === 'presence' && claims.sub) {
      presenceError = 'Subscribing to a presence channel needs a presence object with an "id".';
    }
    presenceField.setError(presenceError);
    const count = Number(minutes.value);
    const minutesError = Number.isFinite(count) && count > 0 ? '' : 'Enter a number of minutes above 0.';
    minutesField.setError(minutesError);
    if (channelError || presenceError || minutesError) {
      form.querySelector('[aria-invalid="true"]')?.focus();
      return;
    }
    claims.expires = Math.floor(Date.now() / 1000 + count * 60);
    await busy(mint, async () => {
      try {
        const { token } = await admin.token(app.id, claims, keySelect.value || undefined);
        showToken(token);
      } catch (error) {
        replace(output);
        result.error(`Could not generate the token: ${error.message}`);
      }
    });
  });

  function showToken(token) {
    const text = h('textarea', { class: 'token', readonly: true, rows: 4, spellcheck: false, 'aria-label': 'Token' });
    text.value = token;
    let decoded;
    try {
      decoded = decodeToken(token);
    } catch (error) {
      replace(output, h('p', { class: 'error', role: 'alert', text: error.message }));
      return;
    }
    const rows = describeClaims(decoded.claims).map(([name, value, meaning]) =>
      h('tr', { dataset: { claim: name } }, h('th', { scope: 'row' }, h('code', { text: name })), h('td', null, h('code', { text: value })), h('td', null, meaningText(meaning))),
    );
    replace(
      output,
      h('h3', { text: 'Token' }),
      text,
      copyButton(() => token, 'Copy token'),
      h('p', { class: 'hint' }, 'Algorithm ', h('code', { text: decoded.header.alg })),
      table('Decoded claims', ['Claim', 'Value', 'Meaning'], rows, { class: 'claims stack-narrow' }),
    );
  }

  replace(container, section('Generate a token', form, output));
}
