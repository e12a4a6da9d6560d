/**
 * A small hand-written SVG line chart for live figures (no chart library: the console has
 * no build step and ships no third-party code). It redraws from its own ring buffer on each
 * `push`, scaling the y axis to what is on screen.
 */

import { h } from './dom.js';
import { num } from './format.js';

const WIDTH = 600;
const HEIGHT = 160;
const PAD = { top: 12, right: 12, bottom: 20, left: 44 };

export class LineChart {
  /**
   * @param {string} title what the chart shows (its accessible name)
   * @param {{name: string, className: string}[]} series one line each
   * @param {number} [capacity] points kept (oldest dropped)
   */
  constructor(title, series, capacity = 60) {
    this.title = title;
    this.series = series;
    this.capacity = capacity;
    /** @type {{t: number, values: number[]}[]} */
    this.points = [];
    this.svg = h('svg:svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: 'chart', role: 'img', preserveAspectRatio: 'none' });
    this.titleEl = h('svg:title', { text: title });
    this.summary = h('p', { class: 'chart-summary' });
    this.legend = h(
      'ul',
      { class: 'legend' },
      series.map((s) => h('li', null, h('span', { class: `swatch ${s.className}`, 'aria-hidden': 'true' }), s.name)),
    );
    this.element = h('figure', { class: 'chart-figure' }, this.svg, h('figcaption', null, this.legend, this.summary));
    this.draw();
  }

  /** Adds one sample (a value per series) and redraws. */
  push(values, t = Date.now()) {
    this.points.push({ t, values });
    if (this.points.length > this.capacity) this.points.shift();
    this.draw();
  }

  draw() {
    const plotW = WIDTH - PAD.left - PAD.right;
    const plotH = HEIGHT - PAD.top - PAD.bottom;
    const max = Math.max(1, ...this.points.flatMap((p) => p.values));
    const top = niceCeiling(max);
    const x = (i) => PAD.left + (this.capacity <= 1 ? 0 : (i + this.capacity - this.points.length) * (plotW / (this.capacity - 1)));
    const y = (v) => PAD.top + plotH - (v / top) * plotH;
    const children = [this.titleEl];
    for (const fraction of [0, 0.5, 1]) {
      const value = top * fraction;
      children.push(h('svg:line', { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(value), y2: y(value), class: 'grid' }));
      children.push(h('svg:text', { x: PAD.left - 6, y: y(value) + 4, class: 'axis', 'text-anchor': 'end', text: num(value, 1) }));
    }
    this.series.forEach((s, index) => {
      if (this.points.length === 0) return;
      const d = this.points.map((p, i) => `${i === 0 ? 'M' : 'L'}${x(i).toFixed(1)},${y(p.values[index] || 0).toFixed(1)}`).join(' ');
      children.push(h('svg:path', { d, class: `line ${s.className}` }));
    });
    children.push(h('svg:text', { x: WIDTH - PAD.right, y: HEIGHT - 4, class: 'axis', 'text-anchor': 'end', text: 'now' }));
    this.svg.replaceChildren(...children);
    const last = this.points[this.points.length - 1];
    const text = last
      ? `${this.title}, latest: ${this.series.map((s, i) => `${s.name} ${num(last.values[i])}`).join(', ')}`
      : `${this.title}: no data yet`;
    this.svg.setAttribute('aria-label', text);
    this.summary.textContent = last ? `Latest: ${this.series.map((s, i) => `${s.name} ${num(last.values[i])}`).join(' · ')}` : 'Waiting for data…';
  }
}

/** 1, 2, 5 × 10^n at or above `value`, so the axis reads in round numbers. */
function niceCeiling(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}
