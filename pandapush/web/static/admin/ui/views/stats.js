/**
 * Live statistics: connections and messages per second as self-updating charts, the
 * current figures, and the members of a presence channel.
 *
 * Figures come from polling the stats API (`/admin/api/application/<id>/stats`) rather
 * than from subscribing to `/<app>/meta/statistics`: polling does not add the console
 * itself to the connection count it is showing. Rates are computed here from the
 * `published`/`delivered` totals between two polls, so the chart moves at the poll rate
 * and not at the server's statistics interval.
 */

import { admin } from '../api.js';
import { busy, field, h, outcome, replace } from '../dom.js';
import { clockTime, num } from '../format.js';
import { LineChart } from '../chart.js';
import { subscribeChannel } from '../live.js';
import { applyPresence, channelType, isPresenceNotice } from '../presence.js';
import { section, table } from '../widgets.js';
import { channelProblem } from './tokens.js';

/** Milliseconds between polls; `?statsInterval=<ms>` overrides it (tests, slow links). */
function pollInterval() {
  const asked = Number(new URLSearchParams(location.search).get('statsInterval'));
  return Number.isFinite(asked) && asked >= 200 ? asked : 2000;
}

/**
 * Messages per second between two samples; a total that went down means the server
 * forgot an idle application (or restarted), so the new total is counted from zero.
 */
export function rate(previous, current, seconds) {
  if (previous === null || seconds <= 0) return 0;
  const delta = current >= previous ? current - previous : current;
  return delta / seconds;
}

export async function renderStats(container, context, app) {
  const connections = new LineChart('Connections', [{ name: 'connections', className: 's1' }, { name: 'subscriptions', className: 's2' }]);
  const messages = new LineChart('Messages per second', [{ name: 'published/s', className: 's1' }, { name: 'delivered/s', className: 's2' }]);
  const figures = h('div', { class: 'figures' });
  const updated = h('p', { class: 'hint', role: 'status' });
  const problem = h('div');
  let last = null;
  let stopped = false;
  let timer = null;

  async function poll() {
    if (stopped) return;
    try {
      const stats = await admin.stats(app.id);
      if (stopped) return;
      const now = performance.now();
      const seconds = last ? (now - last.at) / 1000 : 0;
      const published = rate(last && last.published, stats.published, seconds);
      const delivered = rate(last && last.delivered, stats.delivered, seconds);
      last = { at: now, published: stats.published, delivered: stats.delivered };
      connections.push([stats.connections, stats.subscriptions]);
      messages.push([published, delivered]);
      const rows = [
        ['Connections', stats.connections],
        ['Subscriptions', stats.subscriptions],
        ['Channels in use', stats.channels],
        ['Published (total)', stats.published],
        ['Delivered (total)', stats.delivered],
        ['Published per second', num(published)],
        ['Delivered per second', num(delivered)],
      ].map(([name, value]) => h('tr', { dataset: { figure: name } }, h('th', { scope: 'row', text: name }), h('td', { class: 'num', text: String(value) })));
      replace(figures, table(stats.nodes > 1 ? `Figures of ${stats.nodes} nodes` : 'Figures', ['Figure', 'Value'], rows, { class: 'figures-table' }));
      updated.textContent = `Updated ${clockTime()}`;
      replace(problem);
    } catch (error) {
      replace(problem, h('p', { class: 'error', role: 'alert', text: `Could not read statistics: ${error.message}` }));
    }
    if (!stopped) timer = setTimeout(poll, pollInterval());
  }

  // --- presence members ----------------------------------------------------------------
  const channel = h('input', { type: 'text', name: 'channel', value: `/${app.id}/presence/lobby`, spellcheck: false, autocomplete: 'off' });
  const channelField = field('Presence channel', channel);
  const me = h('input', { type: 'text', name: 'as', value: `observer-${context.info.username}`, spellcheck: false, autocomplete: 'off' });
  const meField = field('Join as (presence id)', me, 'Watching a presence channel means joining it: the others see this id.');
  const result = outcome();
  const watch = h('button', { type: 'submit', class: 'primary', text: 'Watch members' });
  const memberList = h('ul', { class: 'member-list', 'aria-live': 'polite', 'aria-label': 'Members' });
  const memberCount = h('p', { class: 'member-count' });
  const form = h('form', { class: 'inline-form', novalidate: true }, channelField, meField, h('div', { class: 'actions' }, watch), result);
  let watched = null;
  const members = new Map();
  function drawMembers() {
    const ids = [...members.keys()].sort();
    memberCount.textContent = watched ? `${ids.length} member${ids.length === 1 ? '' : 's'} on ${watched.channel}` : '';
    replace(
      memberList,
      ids.map((id) => h('li', { dataset: { member: id } }, h('strong', { text: id }), id === me.value.trim() ? ' (this console)' : '', h('code', { class: 'member-data', text: JSON.stringify(members.get(id)) }))),
    );
  }
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    result.clear();
    const name = channel.value.trim();
    let bad = channelProblem(app.id, name);
    if (!bad && channelType(name) !== 'presence') bad = 'Choose a presence channel (/<app>/presence/...).';
    if (!bad && name.includes('*')) bad = 'Presence channels are watched one at a time: no wildcards.';
    channelField.setError(bad || '');
    const id = me.value.trim();
    meField.setError(id ? '' : 'Enter a presence id.');
    if (bad) return channel.focus();
    if (!id) return me.focus();
    const presence = { id };
    await busy(watch, async () => {
      watched?.subscription.cancel();
      members.clear();
      watched = null;
      try {
        const { subscription } = await subscribeChannel(app.id, name, (concrete, data) => {
          if (isPresenceNotice(data)) {
            applyPresence(members, data);
            drawMembers();
          }
        }, presence);
        if (stopped) return subscription.cancel();
        watched = { channel: name, subscription };
        drawMembers();
      } catch (error) {
        result.error(`Could not watch ${name}: ${error.message || error}`);
      }
    });
  });

  replace(
    container,
    problem,
    section('Live figures', h('div', { class: 'charts' }, connections.element, messages.element), updated, figures),
    section('Presence members', form, memberCount, memberList),
  );
  await poll();
  return () => {
    stopped = true;
    clearTimeout(timer);
    watched?.subscription.cancel();
  };
}
