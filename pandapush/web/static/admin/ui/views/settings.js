/** Application settings: rename, manage admins, allowed origins, channel history, delete (with a typed confirmation). */

import { admin } from '../api.js';
import { busy, field, h, outcome, replace } from '../dom.js';
import { dateTime } from '../format.js';
import { confirmDialog, idCode, notify, section } from '../widgets.js';

export async function renderSettings(container, context, app, reload) {
  // --- name and admins, saved together (the API changes both atomically) --------------
  const name = h('input', { type: 'text', name: 'name', value: app.name, required: true, maxlength: 200, autocomplete: 'off' });
  const nameField = field('Name', name);
  let admins = [...(app.admins || [])].sort();
  const adminList = h('ul', { class: 'admins', 'aria-label': 'Admins' });
  const newAdmin = h('input', { type: 'text', name: 'admin', autocomplete: 'off', spellcheck: false });
  const addAdmin = h('button', { type: 'button', class: 'secondary', text: 'Add admin' });
  const newAdminField = field('Add an admin (user name)', newAdmin, 'Admins see and manage this application. Root admins see every application.');
  const result = outcome();
  const save = h('button', { type: 'submit', class: 'primary', text: 'Save changes' });

  function drawAdmins() {
    replace(
      adminList,
      admins.length
        ? admins.map((user) => {
            const remove = h('button', { type: 'button', class: 'link danger-text', text: 'Remove', 'aria-label': `Remove admin ${user}` });
            remove.addEventListener('click', () => {
              admins = admins.filter((a) => a !== user);
              drawAdmins();
              newAdmin.focus();
            });
            return h('li', { dataset: { admin: user } }, h('span', { text: user }), user === context.info.username ? ' (you)' : '', ' ', remove);
          })
        : h('li', { class: 'empty', text: 'No admins: only root admins will see this application.' }),
    );
  }
  const add = () => {
    const user = newAdmin.value.trim();
    if (!user) return newAdminField.setError('Enter a user name.');
    newAdminField.setError('');
    if (!admins.includes(user)) admins = [...admins, user].sort();
    newAdmin.value = '';
    drawAdmins();
    newAdmin.focus();
  };
  addAdmin.addEventListener('click', add);
  newAdmin.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') {
      event.preventDefault(); // Enter adds the admin rather than saving the whole form
      add();
    }
  });
  drawAdmins();

  const form = h(
    'form',
    { class: 'inline-form', novalidate: true },
    nameField,
    h('fieldset', null, h('legend', { text: 'Admins' }), adminList, h('div', { class: 'add-row' }, newAdminField, addAdmin)),
    h('div', { class: 'actions' }, save),
    result,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    result.clear();
    const value = name.value.trim();
    nameField.setError(value ? '' : 'The name cannot be empty.');
    if (!value) return name.focus();
    if (!context.info.root && !admins.includes(context.info.username)) {
      const sure = await confirmDialog({
        title: 'Remove yourself?',
        message: 'You are not a root admin: without your name in the list you will no longer see this application.',
        confirmLabel: 'Save anyway',
      });
      if (!sure) return;
    }
    await busy(save, async () => {
      try {
        await admin.updateApplication(app.id, { name: value, admins });
        const fresh = await reload();
        notify('Saved', 'ok');
        result.ok(`Saved: ${fresh.name}, ${fresh.admins.length} admin${fresh.admins.length === 1 ? '' : 's'}.`);
        context.navigate(location.hash); // the header and breadcrumbs show the new name
      } catch (error) {
        result.error(`Could not save: ${error.message}`);
      }
    });
  });

  // --- allowed origins: saved on their own --------------------------------------------------
  const origins = h('textarea', {
    name: 'allowed_origins',
    rows: 3,
    spellcheck: false,
    autocomplete: 'off',
    placeholder: 'https://app.example.com',
    value: (app.allowed_origins || []).join('\n'),
  });
  const originsField = field(
    'Allowed origins (one per line)',
    origins,
    'Browser pages of other origins cannot subscribe or publish on this application’s channels. Empty: every origin the server allows.',
  );
  const originsResult = outcome();
  const saveOrigins = h('button', { type: 'submit', class: 'primary', text: 'Save origins' });
  const originsForm = h('form', { class: 'inline-form', novalidate: true }, originsField, h('div', { class: 'actions' }, saveOrigins), originsResult);
  originsForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    originsResult.clear();
    originsField.setError('');
    const list = origins.value.split(/[\s,]+/).filter(Boolean);
    await busy(saveOrigins, async () => {
      try {
        await admin.updateApplication(app.id, { allowed_origins: list });
        const fresh = await reload();
        origins.value = (fresh.allowed_origins || []).join('\n');
        notify('Saved', 'ok');
        const count = fresh.allowed_origins.length;
        originsResult.ok(count ? `Saved: ${count} allowed origin${count === 1 ? '' : 's'}.` : 'Saved: any origin the server allows.');
      } catch (error) {
        originsField.setError(error.message);
        originsResult.error(`Could not save: ${error.message}`);
      }
    });
  });

  // --- channel history: saved on their own ---------------------------------------------------
  // Empty fields: the server's --history-size / --history-ttl.
  const limits = app.history || { size: null, ttl: null };
  const historySize = h('input', { type: 'number', name: 'history_size', min: 0, max: 10000, step: 1, inputmode: 'numeric', placeholder: 'server default', value: limits.size ?? '' });
  const historyTtl = h('input', { type: 'number', name: 'history_ttl', min: 1, max: 86400, step: 1, inputmode: 'numeric', placeholder: 'server default', value: limits.ttl ?? '' });
  const sizeField = field('Messages each channel keeps', historySize, 'For clients resuming after a reconnect. 0 turns history off. Empty: the server’s default.');
  const ttlField = field('Seconds a message is kept', historyTtl, 'Empty: the server’s default.');
  const historyResult = outcome();
  const saveHistory = h('button', { type: 'submit', class: 'primary', text: 'Save history' });
  const historyForm = h('form', { class: 'inline-form', novalidate: true }, sizeField, ttlField, h('div', { class: 'actions' }, saveHistory), historyResult);
  const number = (input) => (input.value.trim() === '' ? null : Number(input.value));
  historyForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    historyResult.clear();
    sizeField.setError('');
    ttlField.setError('');
    const size = number(historySize);
    const ttl = number(historyTtl);
    if (size !== null && !(Number.isInteger(size) && size >= 0 && size <= 10000)) {
      sizeField.setError('A whole number from 0 to 10000, or empty.');
      return historySize.focus();
    }
    if (ttl !== null && !(ttl >= 1 && ttl <= 86400)) {
      ttlField.setError('From 1 to 86400 seconds, or empty.');
      return historyTtl.focus();
    }
    await busy(saveHistory, async () => {
      try {
        await admin.updateApplication(app.id, { history: { size, ttl } });
        const fresh = (await reload()).history;
        notify('Saved', 'ok');
        const kept = fresh.size === null ? 'the server’s default' : fresh.size === 0 ? 'no history' : `${fresh.size} messages`;
        historyResult.ok(`Saved: ${kept}${fresh.ttl === null ? '' : `, kept ${fresh.ttl} s`}.`);
      } catch (error) {
        historyResult.error(`Could not save: ${error.message}`);
      }
    });
  });

  // --- delete ----------------------------------------------------------------------------
  const remove = h('button', { type: 'button', class: 'danger', text: 'Delete application…' });
  const deleteResult = outcome();
  remove.addEventListener('click', async () => {
    const sure = await confirmDialog({
      title: `Delete ${app.name}?`,
      message: 'The application and all its keys are deleted at once: every publish and subscribe with them is refused from now on. This cannot be undone.',
      confirmLabel: 'Delete application',
      requireText: app.name,
    });
    if (!sure) return remove.focus();
    await busy(remove, async () => {
      try {
        await admin.deleteApplication(app.id);
        notify(`Deleted application ${app.name}`, 'ok');
        context.navigate('#/');
      } catch (error) {
        deleteResult.error(`Could not delete: ${error.message}`);
      }
    });
  });

  const facts = h(
    'dl',
    { class: 'facts' },
    h('dt', { text: 'Id' }), h('dd', null, idCode(app.id)),
    h('dt', { text: 'Created' }), h('dd', { text: `${dateTime(app.created_at)}${app.created_by ? ` by ${app.created_by}` : ''}` }),
    h('dt', { text: 'Updated' }), h('dd', { text: dateTime(app.updated_at) }),
  );

  replace(
    container,
    section('About', facts),
    section('Name and admins', form),
    section('Allowed origins', originsForm),
    section('Channel history', historyForm),
    h('section', { class: 'card danger-zone', 'aria-labelledby': 'danger-title' }, h('h2', { id: 'danger-title', text: 'Delete' }), h('p', { text: 'Deleting removes the application and its keys for good.' }), remove, deleteResult),
  );
}
