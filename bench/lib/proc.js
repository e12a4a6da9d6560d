'use strict';
// CPU and memory of a server process we started, from /proc/<pid>/stat and /proc/<pid>/status.

const fs = require('fs');
const { execFileSync } = require('child_process');

let CLK_TCK = 100;
try {
  CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
} catch (error) {
  // 100 on every Linux we know of
}

function cpuTicks(pid) {
  // Field 2 (comm) may hold spaces: split after the last ')'.
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state): utime is field 14, stime field 15.
  return Number(fields[11]) + Number(fields[12]);
}

function memory(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name) => {
    const match = status.match(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm'));
    return match ? Number(match[1]) * 1024 : 0;
  };
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

// Samples RSS every `interval` ms (peak over a phase), and CPU between mark() and read().
class ProcessSampler {
  constructor(pid, interval = 100) {
    this.pid = pid;
    this.peak = 0;
    this.timer = setInterval(() => this.sample(), interval);
    this.timer.unref();
    this.sample();
  }

  sample() {
    try {
      const { rss } = memory(this.pid);
      if (rss > this.peak) this.peak = rss;
      return rss;
    } catch (error) {
      return 0;
    }
  }

  rss() {
    return this.sample();
  }

  markCpu() {
    return { ticks: cpuTicks(this.pid), at: process.hrtime.bigint() };
  }

  // CPU% of one core between `mark` and now (100 = one core busy all the time).
  cpuSince(mark) {
    const ticks = cpuTicks(this.pid) - mark.ticks;
    const seconds = Number(process.hrtime.bigint() - mark.at) / 1e9;
    return seconds > 0 ? (100 * ticks) / CLK_TCK / seconds : 0;
  }

  stop() {
    clearInterval(this.timer);
  }
}

// The generator's own CPU (to show it is not the bottleneck).
function selfCpuMark() {
  return { usage: process.cpuUsage(), at: process.hrtime.bigint() };
}

function selfCpuSince(mark) {
  const usage = process.cpuUsage(mark.usage);
  const seconds = Number(process.hrtime.bigint() - mark.at) / 1e9;
  return seconds > 0 ? (100 * (usage.user + usage.system)) / 1e6 / seconds : 0;
}

// Busy ticks of the whole machine (all CPUs) from /proc/stat: with the server's and the
// generator's own ticks subtracted, what other processes took during a measurement.
function machineBusyTicks() {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0];
  const [, user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).map(Number);
  return user + nice + system + irq + softirq + steal;
}

function othersMark(pids) {
  return { machine: machineBusyTicks(), own: pids.map((pid) => cpuTicks(pid)), pids, at: process.hrtime.bigint() };
}

// CPU% (of one core) used by everything except `pids` since the mark.
function othersSince(mark) {
  let own = 0;
  mark.pids.forEach((pid, i) => {
    try {
      own += cpuTicks(pid) - mark.own[i];
    } catch (error) {
      // gone
    }
  });
  const seconds = Number(process.hrtime.bigint() - mark.at) / 1e9;
  const other = machineBusyTicks() - mark.machine - own;
  return seconds > 0 ? Math.max(0, (100 * other) / CLK_TCK / seconds) : 0;
}

module.exports = { othersMark, othersSince, machineBusyTicks, ProcessSampler, cpuTicks, memory, selfCpuMark, selfCpuSince, CLK_TCK };
