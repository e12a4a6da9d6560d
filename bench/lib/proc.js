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

// A process and its descendants (--workers: the parent and its worker processes).
function treePids(pid) {
  const pids = [pid];
  for (let k = 0; k < pids.length; k++) {
    try {
      for (const task of fs.readdirSync(`/proc/${pids[k]}/task`)) {
        const children = fs.readFileSync(`/proc/${pids[k]}/task/${task}/children`, 'utf8').trim();
        if (children) pids.push(...children.split(' ').map(Number));
      }
    } catch (error) {
      // gone meanwhile
    }
  }
  return pids;
}

function sumOver(pids, read) {
  let total = 0;
  for (const pid of pids) {
    try {
      total += read(pid);
    } catch (error) {
      // gone meanwhile
    }
  }
  return total;
}

// Kernel TCP counters (what `nstat -az` shows as TcpExt*/Tcp*), machine-wide: listen
// queue overflows and SYN retransmissions say when connections waited for the server's
// accept queue rather than for the server.
const NETSTAT_FIELDS = {
  ListenOverflows: 'TcpExt',
  ListenDrops: 'TcpExt',
  TCPSynRetrans: 'TcpExt',
  TCPReqQFullDrop: 'TcpExt',
  TCPTimeouts: 'TcpExt',
  TCPAbortOnData: 'TcpExt',
  EstabResets: 'Tcp',
  AttemptFails: 'Tcp',
  OutRsts: 'Tcp',
};

function netCounters() {
  const out = {};
  for (const file of ['/proc/net/netstat', '/proc/net/snmp']) {
    const lines = fs.readFileSync(file, 'utf8').trim().split('\n');
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const names = lines[i].split(/\s+/);
      const values = lines[i + 1].split(/\s+/);
      const group = names[0].replace(/:$/, '');
      names.forEach((name, k) => {
        if (NETSTAT_FIELDS[name] === group) out[name] = Number(values[k]);
      });
    }
  }
  return out;
}

function netCountersSince(before) {
  const now = netCounters();
  const out = {};
  for (const name of Object.keys(now)) out[name] = now[name] - (before[name] || 0);
  return out;
}

// Samples RSS every `interval` ms (peak over a phase), and CPU between mark() and read().
// With `tree`, the figures are the sums over the process and its descendants.
class ProcessSampler {
  constructor(pid, interval = 100, { tree = false } = {}) {
    this.pid = pid;
    this.tree = tree;
    this.peak = 0;
    this.timer = setInterval(() => this.sample(), interval);
    this.timer.unref();
    this.sample();
  }

  pids() {
    return this.tree ? treePids(this.pid) : [this.pid];
  }

  sample() {
    try {
      const rss = this.tree ? sumOver(this.pids(), (pid) => memory(pid).rss) : memory(this.pid).rss;
      if (rss > this.peak) this.peak = rss;
      return rss;
    } catch (error) {
      return 0;
    }
  }

  rss() {
    return this.sample();
  }

  ticks() {
    return this.tree ? sumOver(this.pids(), cpuTicks) : cpuTicks(this.pid);
  }

  markCpu() {
    return { ticks: this.ticks(), at: process.hrtime.bigint() };
  }

  // CPU% of one core between `mark` and now (100 = one core busy all the time).
  cpuSince(mark) {
    const ticks = this.ticks() - mark.ticks;
    const seconds = Number(process.hrtime.bigint() - mark.at) / 1e9;
    return seconds > 0 ? (100 * ticks) / CLK_TCK / seconds : 0;
  }

  // CPU seconds used since `mark` (user + system).
  cpuSecondsSince(mark) {
    return (this.ticks() - mark.ticks) / CLK_TCK;
  }

  stop() {
    clearInterval(this.timer);
  }
}

// The generator's own CPU (to show it is not the bottleneck): this process's, plus its
// `children`'s (subscriber processes) from /proc, so several processes sum as one figure
// that may pass 100.
function selfCpuMark(children = []) {
  return { usage: process.cpuUsage(), children, ticks: children.map((pid) => cpuTicks(pid)), at: process.hrtime.bigint() };
}

function selfCpuSince(mark) {
  const usage = process.cpuUsage(mark.usage);
  let childTicks = 0;
  mark.children.forEach((pid, i) => {
    try {
      childTicks += cpuTicks(pid) - mark.ticks[i];
    } catch (error) {
      // gone
    }
  });
  const seconds = Number(process.hrtime.bigint() - mark.at) / 1e9;
  return seconds > 0 ? (100 * ((usage.user + usage.system) / 1e6 + childTicks / CLK_TCK)) / seconds : 0;
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

module.exports = { netCounters, netCountersSince, treePids, othersMark, othersSince, machineBusyTicks, ProcessSampler, cpuTicks, memory, selfCpuMark, selfCpuSince, CLK_TCK };
