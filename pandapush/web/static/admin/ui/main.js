/**
 * The admin console's entry point: who is logged in, and a hash router over the views.
 *
 * Hash routes (`#/app/<id>/keys`) keep the server's part trivial (it serves one page) and
 * make every view linkable and reachable with the back button. Each view renders into
 * `<main>` and may return a cleanup function, run when the user navigates away, which
 * stops its timers and live subscriptions.
 */

import { admin } from './api.js';
import { h, replace } from './dom.js';
import { notify, showError } from './widgets.js';
import { renderApplications } from './views/applications.js';
import { renderApplication, TABS } from './views/application.js';

/** What every view gets: the logged-in admin and a way to navigate. */
const context = {
  /** @type {{username: string, root: boolean, environment: string|null, environments: {name: string, url: string}[], version: string}|null} */
  info: null,
  navigate(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  },
  setCrumbs,
};

let cleanup = null;
let routing = 0;

/** Parses `#/app/<id>/<tab>` into a view and its arguments. */
export function parseRoute(hash) {
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'app' && parts[1]) {
    const tab = TABS.some((t) => t.id === parts[2]) ? parts[2] : 'keys';
    return { view: 'application', appId: parts[1], tab };
  }
  return { view: 'applications' };
}

async function route() {
  routing += 1;
  const mine = routing;
  if (cleanup) {
    try {
      cleanup();
    } catch (error) {
      console.error(error);
    }
    cleanup = null;
  }
  const main = document.getElementById('main');
  const where = parseRoute(location.hash);
  replace(main, h('p', { class: 'loading', text: 'Loading…' }));
  try {
    const done =
      where.view === 'application'
        ? await renderApplication(main, context, where.appId, where.tab)
        : await renderApplications(main, context);
    if (mine !== routing) {
      if (typeof done === 'function') done(); // navigated away while loading
      return;
    }
    cleanup = typeof done === 'function' ? done : null;
  } catch (error) {
    if (mine === routing) showError(main, error);
  }
  // Move focus to the new content for keyboard and screen reader users, as a page load would.
  const heading = main.querySelector('h1');
  if (heading && mine === routing && document.activeElement === document.body) {
    heading.setAttribute('tabindex', '-1');
    heading.focus({ preventScroll: true });
  }
}

/** Breadcrumb trail: `[['Applications', '#/'], ['My app', null]]` (null: the current page). */
function setCrumbs(items) {
  replace(
    document.getElementById('crumbs'),
    items.map(([label, href]) =>
      h('li', null, href ? h('a', { href, text: label }) : h('span', { 'aria-current': 'page', text: label })),
    ),
  );
}

/**
 * Links to the same console on the other configured environments (`ENVIRONMENTS`), so an
 * operator can tell at a glance which one they are changing and switch without retyping URLs.
 */
function showEnvironments(info) {
  const environments = info.environments || [];
  if (!environments.length) return;
  const nav = h(
    'nav',
    { class: 'environments', 'aria-label': 'Environments' },
    h(
      'ul',
      null,
      environments.map((env) => {
        const current = env.name === info.environment;
        const href = new URL('admin/', env.url.endsWith('/') ? env.url : `${env.url}/`).href;
        return h('li', null, h('a', { href, 'aria-current': current ? 'page' : null, text: env.name }));
      }),
    ),
  );
  document.querySelector('header.top').append(nav);
}

/**
 * Where to sign in again once the session has ended, coming back to this very view, for a
 * login method with pages of its own (single sign-on); null for the browser's own login
 * (Basic), which the browser asks for again by itself.
 */
export function signInURL(auth, here = location) {
  if (!auth || !auth.signIn) return null;
  return `${auth.signIn}?next=${encodeURIComponent(here.pathname + here.search + here.hash)}`;
}

let leaving = false;

/** A 401 from the API: the session ended. Sign in again, once, if the method can. */
function unauthorized() {
  const target = signInURL(context.info && context.info.auth);
  if (!target || leaving) return;
  leaving = true;
  notify('Your session has ended: signing in again…', 'info');
  location.assign(target);
}

/** A "Sign out" button, for login methods that have a sign-out (single sign-on). */
function signOutButton(auth) {
  if (!auth || !auth.signOut) return null;
  const button = h('button', { type: 'button', class: 'link sign-out', text: 'Sign out' });
  button.addEventListener('click', async () => {
    button.disabled = true;
    leaving = true; // the session ends now: a view's 401 must not start a new sign-in
    try {
      const answer = await admin.signOut(auth.signOut);
      location.assign(answer && answer.redirect ? answer.redirect : auth.signIn || '/admin/');
    } catch (error) {
      leaving = false;
      button.disabled = false;
      notify(`Could not sign out: ${error.message}`, 'error');
    }
  });
  return button;
}

async function start() {
  document.addEventListener('pandapush:unauthorized', unauthorized);
  try {
    context.info = await admin.info();
  } catch (error) {
    // The session ended between loading the page and asking who we are: loading the page
    // again lets the server send us to sign in (once; a second failure is shown).
    if (error.status === 401 && !sessionStorage.getItem('pandapush:reloaded')) {
      sessionStorage.setItem('pandapush:reloaded', '1');
      location.reload();
      return;
    }
    showError(document.getElementById('main'), error);
    return;
  }
  sessionStorage.removeItem('pandapush:reloaded');
  const info = context.info;
  const env = info.environment ? ` · ${info.environment}` : '';
  const signOut = signOutButton(info.auth);
  replace(document.getElementById('whoami'), 'Signed in as ', h('strong', { text: info.username }), info.root ? ' (root admin)' : '', env, signOut ? ' ' : null, signOut);
  document.getElementById('version').textContent = `pandapush ${info.version}`;
  showEnvironments(info);
  document.title = info.environment ? `pandapush admin (${info.environment})` : 'pandapush admin';
  window.addEventListener('hashchange', route);
  await route();
  document.documentElement.dataset.ready = 'true'; // for tests: the first view is on screen
}

start();
