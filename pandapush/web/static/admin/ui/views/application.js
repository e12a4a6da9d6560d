/**
 * One application: its header and tabs (keys, tokens, live console, statistics,
 * webhooks, settings), each tab a view of its own under `#/app/<id>/<tab>`.
 */

import { admin, seg } from '../api.js';
import { h, replace } from '../dom.js';
import { copyButton, idCode } from '../widgets.js';
import { renderKeys } from './keys.js';
import { renderTokens } from './tokens.js';
import { renderConsole } from './console.js';
import { renderStats } from './stats.js';
import { renderSettings } from './settings.js';
import { renderWebhooks } from './webhooks.js';

/** The tabs, in order; `render(container, context, app, reload)` may return a cleanup. */
export const TABS = [
  { id: 'keys', label: 'Keys', render: renderKeys },
  { id: 'tokens', label: 'Tokens', render: renderTokens },
  { id: 'console', label: 'Live console', render: renderConsole },
  { id: 'stats', label: 'Statistics', render: renderStats },
  { id: 'webhooks', label: 'Webhooks', render: renderWebhooks },
  { id: 'settings', label: 'Settings', render: renderSettings },
];

export async function renderApplication(main, context, appId, tabId) {
  const app = await admin.application(appId);
  const tab = TABS.find((t) => t.id === tabId) || TABS[0];
  context.setCrumbs([
    ['Applications', '#/'],
    [app.name, tab.id === 'keys' ? null : `#/app/${seg(app.id)}/keys`],
    ...(tab.id === 'keys' ? [] : [[tab.label, null]]),
  ]);
  // Links, not ARIA tabs: each tab is a page of its own with a URL (back button, bookmarks).
  const nav = h(
    'nav',
    { class: 'tabs', 'aria-label': 'Application sections' },
    h(
      'ul',
      null,
      TABS.map((t) =>
        h('li', null, h('a', { href: `#/app/${seg(app.id)}/${t.id}`, 'aria-current': t.id === tab.id ? 'page' : null, text: t.label })),
      ),
    ),
  );
  const body = h('div', { class: 'tab-body' });
  replace(
    main,
    h('div', { class: 'app-head' }, h('h1', null, app.name, h('span', { class: 'visually-hidden', text: ` — ${tab.label}` })), h('p', { class: 'app-id' }, 'Application id ', idCode(app.id), ' ', copyButton(() => app.id, 'Copy id'))),
    nav,
    body,
  );
  /** Fetches the application again (after a change) without leaving the tab. */
  const reload = () => admin.application(appId);
  return tab.render(body, context, app, reload);
}
