/** Small shared pieces of UI: notices, the copy button, confirmation dialogs. */

import { h, replace, uid } from './dom.js';

/**
 * A short notice at the top of the page (polite live region); errors stay until
 * dismissed, successes fade after a few seconds.
 * @param {string} message
 * @param {'ok'|'error'|'info'} [kind]
 */
export function notify(message, kind = 'info') {
  const region = document.getElementById('notices');
  if (!region) return;
  const close = h('button', { type: 'button', class: 'link', 'aria-label': 'Dismiss', text: '×' });
  const notice = h('p', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : null }, h('span', { text: message }), close);
  close.addEventListener('click', () => notice.remove());
  region.append(notice);
  if (kind !== 'error') setTimeout(() => notice.remove(), 5000);
}

/**
 * Copies text to the clipboard, falling back to a selected hidden textarea when the async
 * Clipboard API is refused (plain http on a non-localhost host is not a secure context).
 * Dispatches `pandapush:copied` on `document` with `{detail: {text, ok}}`, so tests and
 * other code can see what was copied without reading the system clipboard.
 * @returns {Promise<boolean>} whether the copy worked
 */
export async function copyText(text) {
  let ok = false;
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      ok = true;
    }
  } catch {
    ok = false;
  }
  if (!ok) {
    const area = h('textarea', { class: 'offscreen', readonly: true, 'aria-hidden': 'true' });
    area.value = text;
    document.body.append(area);
    area.select();
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    area.remove();
  }
  document.dispatchEvent(new CustomEvent('pandapush:copied', { detail: { text, ok } }));
  return ok;
}

/**
 * A "Copy" button for `getText()`; says "Copied" (announced) for a moment afterwards.
 * @param {() => string} getText
 * @param {string} [label] accessible name, e.g. "Copy secret"
 */
export function copyButton(getText, label = 'Copy') {
  const status = h('span', { class: 'copy-status', role: 'status' });
  const button = h('button', { type: 'button', class: 'secondary', text: label });
  button.addEventListener('click', async () => {
    const ok = await copyText(getText());
    status.textContent = ok ? 'Copied' : 'Could not copy: select the text and copy it yourself';
    setTimeout(() => (status.textContent = ''), 3000);
  });
  return h('span', { class: 'copy' }, button, status);
}

/**
 * Asks for confirmation in a modal `<dialog>` (focus trapped and Escape handled by the
 * browser). With `requireText`, the confirm button stays disabled until that text is
 * typed: deleting an application cannot be undone, so it should not be one stray click.
 * @returns {Promise<boolean>}
 */
export function confirmDialog({ title, message, confirmLabel = 'Confirm', requireText = null, danger = true }) {
  return new Promise((resolve) => {
    const titleId = uid('dlg');
    const input = requireText === null ? null : h('input', { type: 'text', id: uid('confirm'), autocomplete: 'off', spellcheck: false });
    const confirm = h('button', { type: 'submit', class: danger ? 'danger' : 'primary', text: confirmLabel, disabled: requireText !== null });
    const cancel = h('button', { type: 'button', class: 'secondary', text: 'Cancel' });
    const form = h(
      'form',
      { method: 'dialog' },
      h('h2', { id: titleId, text: title }),
      h('p', { text: message }),
      input && h('label', { for: input.id }, 'Type ', h('strong', { text: requireText }), ' to confirm'),
      input,
      h('div', { class: 'actions' }, cancel, confirm),
    );
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': titleId }, form);
    let answer = false;
    if (input) input.addEventListener('input', () => (confirm.disabled = input.value !== requireText));
    cancel.addEventListener('click', () => dialog.close());
    form.addEventListener('submit', () => {
      answer = !confirm.disabled;
    });
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(answer);
    });
    document.body.append(dialog);
    dialog.showModal();
    (input || cancel).focus();
  });
}

/**
 * A table with a caption and column headers; `rows` are `<tr>` elements.
 *
 * Each cell is labelled with its column (`data-label`), so a table whose `props.class`
 * includes `stack-narrow` can be shown on a narrow screen as one card per row, each value
 * under its column's name, instead of squeezing eight columns into 390 px (which broke
 * words and ids a few characters a line). Changing a table's `display` makes some browsers
 * drop its table semantics, so the roles are said explicitly.
 */
export function table(caption, headers, rows, props = {}) {
  for (const row of rows) {
    row.setAttribute('role', 'row');
    [...row.children].forEach((cell, index) => {
      if (headers[index] !== undefined) cell.dataset.label = headers[index];
      cell.setAttribute('role', cell.tagName === 'TH' ? 'rowheader' : 'cell');
    });
  }
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { role: 'table', ...props },
      h('caption', { text: caption }),
      h('thead', { role: 'rowgroup' }, h('tr', { role: 'row' }, headers.map((name) => h('th', { scope: 'col', role: 'columnheader', text: name })))),
      h('tbody', { role: 'rowgroup' }, rows),
    ),
  );
}

/**
 * An id (application, key): monospace, kept on one line, its full value in the tooltip.
 * On a screen too narrow even for that it ends in an ellipsis rather than wrapping a few
 * characters a line; pair it with `copyButton` where the id is meant to be copied.
 */
export function idCode(value) {
  return h('code', { class: 'id', title: String(value), text: String(value) });
}

/** A section with a heading (for the document outline). */
export function section(title, ...children) {
  const id = uid('sec');
  return h('section', { class: 'card', 'aria-labelledby': id }, h('h2', { id, text: title }), children);
}

/** Shows an error in place of a view's content. */
export function showError(container, error) {
  replace(container, h('p', { class: 'error', role: 'alert', text: error.message || String(error) }));
}
