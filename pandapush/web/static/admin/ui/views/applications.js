/** The applications list, and the form that creates one. */

import { admin, seg } from '../api.js';
import { busy, field, h, outcome, replace } from '../dom.js';
import { dateTime, isoOf } from '../format.js';
import { idCode, notify, section, table } from '../widgets.js';

/**
 * @param {HTMLElement} main
 * @param {object} context see main.js
 */
export async function renderApplications(main, context) {
  context.setCrumbs([['Applications', null]]);
  const applications = await admin.applications();
  const name = h('input', { type: 'text', name: 'name', required: true, maxlength: 200, autocomplete: 'off' });
  const nameField = field('Name', name, 'A name people recognise, e.g. "Chat (production)".');
  const result = outcome();
  const create = h('button', { type: 'submit', class: 'primary', text: 'Create application' });
  const form = h('form', { class: 'inline-form', novalidate: true }, nameField, h('div', { class: 'actions' }, create), result);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const value = name.value.trim();
    nameField.setError(value ? '' : 'Enter a name for the application.');
    if (!value) return name.focus();
    await busy(create, async () => {
      try {
        const created = await admin.createApplication(value);
        notify(`Created application ${created.name}`, 'ok');
        context.navigate(`#/app/${seg(created.id)}/keys`);
      } catch (error) {
        result.error(`Could not create the application: ${error.message}`);
      }
    });
  });

  const sorted = [...applications].sort((a, b) => String(a.name).localeCompare(String(b.name)));
  const rows = sorted.map((app) =>
    h(
      'tr',
      null,
      h('th', { scope: 'row' }, h('a', { href: `#/app/${seg(app.id)}/keys`, text: app.name })),
      h('td', null, idCode(app.id)),
      h('td', { text: app.created_by || '—' }),
      h('td', null, h('time', { datetime: isoOf(app.created_at), text: dateTime(app.created_at) })),
    ),
  );
  const list = sorted.length
    ? table(`${sorted.length} application${sorted.length === 1 ? '' : 's'}`, ['Name', 'Id', 'Created by', 'Created'], rows, { class: 'apps stack-narrow' })
    : h('p', { class: 'empty', text: context.info.root ? 'No applications yet: create the first one below.' : 'You do not administer any application yet.' });

  replace(main, h('h1', { text: 'Applications' }), section('Your applications', list), section('New application', form));
}
