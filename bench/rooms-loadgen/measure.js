'use strict';
// What the load generator measures besides deliveries: latency percentiles, and the CPU
// time and memory of processes read from /proc (the server's, its database's, its own).

const fs = require('fs');
const { performance } = require('perf_hooks');

const nowUs = () => Math.round(performance.now() * 1000);
const CLK_TCK = 100; // USER_HZ: /proc/PID/stat counts in 1/100 s on Linux

// Latencies in microseconds: exact up to `cap` samples, reservoir-sampled beyond.
class Recorder {
  constructor(cap = 4_000_000) {
    this.cap = cap; this.buf = new Float64Array(1 << 16); this.n = 0; this.max = 0;
  }

  add(v) {
    if (v > this.max) this.max = v;
    const n = this.n++;
    if (n < this.cap) {
      if (n >= this.buf.length) {
        const b = new Float64Array(Math.min(this.cap, this.buf.length * 2)); b.set(this.buf); this.buf = b;
      }
      this.buf[n] = v;
    } else {
      const j = Math.floor(Math.random() * (n + 1));
      if (j < this.cap) this.buf[j] = v;
    }
  }

  summary() { // in milliseconds
    const k = Math.min(this.n, this.cap);
    if (k === 0) return { samples: 0, p50_ms: null, p90_ms: null, p99_ms: null, max_ms: null };
    const s = this.buf.slice(0, k).sort();
    const q = (p) => Math.round(s[Math.min(k - 1, Math.floor(p * k))]) / 1000;
    return { samples: this.n, p50_ms: q(0.5), p90_ms: q(0.9), p99_ms: q(0.99), max_ms: Math.round(this.max) / 1000 };
  }
}

// utime + stime of these processes, in seconds (0 for those that are gone).
function cpuSeconds(pids) {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch (_) { /* gone */ }
  }
  return ticks / CLK_TCK;
}

// Resident memory of these processes together, in KiB.
function rssKib(pids) {
  let kib = 0;
  for (const pid of pids) {
    try {
      const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'latin1'));
      if (m) kib += Number(m[1]);
    } catch (_) { /* gone */ }
  }
  return kib;
}

// CPU over a measured phase, of the server (`pids`) and of this process. The phase's
// start and end are also announced on stdout, for the runner to account for what runs
// outside the server's process tree (a database's backends).
class CpuMeter {
  constructor(pids, announce) { this.pids = pids; this.announce = announce || (() => {}); }

  start() {
    this.announce({ event: 'phase', state: 'start' });
    this.t0 = performance.now(); this.srv0 = cpuSeconds(this.pids); this.own0 = process.cpuUsage();
    return this;
  }

  // `units`: deliveries (or joins) done in the phase, for the CPU cost per unit.
  stop(units) {
    const wallS = (performance.now() - this.t0) / 1000;
    const srv = cpuSeconds(this.pids) - this.srv0;
    const own = process.cpuUsage(this.own0);
    this.announce({ event: 'phase', state: 'stop', units });
    const pct = (s) => (wallS > 0 ? Math.round((s / wallS) * 1000) / 10 : null);
    return {
      phase_s: Math.round(wallS * 1000) / 1000,
      units,
      server_cpu_s: Math.round(srv * 100) / 100,
      server_cpu_pct: pct(srv),
      server_cpu_us_per_unit: units > 0 ? Math.round((srv * 1e6 / units) * 100) / 100 : null,
      loadgen_cpu_pct: pct((own.user + own.system) / 1e6),
      loadgen_sys_pct: pct(own.system / 1e6),
      server_rss_kib: rssKib(this.pids),
    };
  }
}

module.exports = { Recorder, CpuMeter, cpuSeconds, rssKib, nowUs };
