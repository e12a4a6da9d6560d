/**
 * Building DOM without innerHTML.
 *
 * Every name, channel and message shown by the console comes from users of the service,
 * so nothing is ever parsed as HTML: `h()` makes elements and text nodes only. That, and
 * the page's Content-Security-Policy (no inline scripts), keep a hostile application name
 * from running script in an operator's browser.
 */

/**
 * Creates an element.
 * @param {string} tag element name; `svg:` prefix for SVG elements
 * @param {Record<string, any>|null} [props] attributes; `class`, `text`, `dataset`,
 *   `on<event>` handlers, booleans set or omit the attribute, null/undefined are skipped
 * @param {...(Node|string|number|null|undefined|false|Array)} children
 * @returns {HTMLElement|SVGElement}
 */
export function h(tag, props, ...children) {
  const svg = tag.startsWith('svg:');
  const el = svg
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'text') el.textContent = String(value);
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (value === true) el.setAttribute(name, '');
    else if (!svg && name in el && typeof el[name] !== 'function' && name !== 'list' && name !== 'form') {
      el[name] = value; // properties such as value/checked reflect live state, not the default
    } else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

/** Appends children (nested arrays flattened; null/false skipped; other values as text). */
export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replaces every child of `parent`. */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

let counter = 0;

/** A page-unique id, for tying labels, descriptions and errors to their fields. */
export function uid(prefix = 'f') {
  counter += 1;
  return `${prefix}-${counter}`;
}

/**
 * A labelled form field: `<div class="field"><label/>control<p hint/><p error/></div>`.
 * The hint and the error are tied to the control with aria-describedby, so a screen reader
 * reads them with the field; `setError` marks the control invalid.
 * @param {string} label
 * @param {HTMLElement} control an input, select or textarea (its id is set if missing)
 * @param {string} [hint]
 */
export function field(label, control, hint) {
  if (!control.id) control.id = uid('field');
  const hintEl = hint ? h('p', { class: 'hint', id: uid('hint'), text: hint }) : null;
  const errorEl = h('p', { class: 'field-error', id: uid('err'), hidden: true });
  control.setAttribute('aria-describedby', [hintEl && hintEl.id, errorEl.id].filter(Boolean).join(' '));
  const wrapper = h('div', { class: 'field' }, h('label', { for: control.id, text: label }), control, hintEl, errorEl);
  wrapper.setError = (message) => {
    errorEl.textContent = message || '';
    errorEl.hidden = !message;
    if (message) control.setAttribute('aria-invalid', 'true');
    else control.removeAttribute('aria-invalid');
  };
  return wrapper;
}

/** A checkbox with its label after it. */
export function checkbox(label, props) {
  const input = h('input', { type: 'checkbox', id: uid('check'), ...props });
  const wrapper = h('div', { class: 'check' }, input, h('label', { for: input.id, text: label }));
  wrapper.input = input;
  return wrapper;
}

/**
 * A region for a form's outcome: errors as `role="alert"` (read at once), successes as
 * polite status text.
 */
export function outcome() {
  const el = h('div', { class: 'outcome' });
  el.error = (message) => replace(el, h('p', { class: 'error', role: 'alert', text: message }));
  el.ok = (message) => replace(el, h('p', { class: 'ok', role: 'status', text: message }));
  el.clear = () => replace(el);
  return el;
}

/**
 * Runs `action` with `button` disabled and marked busy, so a double click cannot create two
 * keys; the button comes back whatever happens.
 */
export async function busy(button, action) {
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    return await action();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}
