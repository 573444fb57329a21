'use strict';
// Load generator of Hubbub's rooms benchmark (bench/README.md), one Node process.
//
//   node loadgen.js <scenario> --protocol hubbub|socketio --url ws://127.0.0.1:PORT [--key value ...]
//
// Scenarios:
//   rooms   --rooms R --members N [--one-sender] --window W --seconds D
//           R rooms of N members; every member posts (or only the one that joined last,
//           with --one-sender), each room keeping at most W of its messages not yet back
//           at their sender, for D seconds; then everything sent must arrive.
//   storm   --clients K --rooms R: K clients connect and join one room each, at once.
//   resume  --clients K --rooms-each E --room-size Z --live A --backlog B: K clients in E
//           rooms each take A messages live, go away, B more are posted per room, the
//           server restarts, and all K come back at once (Hubbub: join with since).
//
// Every message's text is "<sender> <counter> <send time µs> <padding>", so every member
// checks what it gets per room and sender (lost, duplicated, out of order) and measures
// latency against the sender's clock (one process, one clock); on Hubbub it also checks
// the room's seq (each exactly once, in order, no gap).
// Output: JSON lines on stdout, the last {"event":"result", ...}; {"event":"phase"} marks
// the measured phase. The server's process ids come with --pids; for `resume` the runner
// restarts the server when asked ({"event":"restart"}) and answers on stdin with
// "restarted <pids>". Only loopback addresses are ever loaded.

const readline = require('readline');
const { performance } = require('perf_hooks');
const { PROTOCOLS, activity } = require('./clients');
const { Recorder, CpuMeter, nowUs } = require('./measure');

function parseArgs(argv) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) { out._.push(a); continue; }
    const next = argv[i + 1];
    if (next === undefined || next.startsWith('--')) out[a.slice(2)] = true;
    else { out[a.slice(2)] = next; i++; }
  }
  return out;
}
const args = parseArgs(process.argv.slice(2));
const num = (k, d) => (args[k] === undefined ? d : Number(args[k]));
const URL_BASE = String(args.url || 'ws://127.0.0.1:8000').replace(/\/$/, '');
const HOST = new URL(URL_BASE).hostname;
if (!/^127\.\d+\.\d+\.\d+$/.test(HOST) && HOST !== 'localhost') {
  console.error(`refusing to load a non-loopback host: ${HOST}`);
  process.exit(2);
}
const Client = PROTOCOLS[args.protocol || 'hubbub'];
if (!Client) { console.error(`unknown --protocol ${args.protocol}`); process.exit(2); }
const pidList = (s) => String(s || '').split(',').filter(Boolean).map(Number);
let PIDS = pidList(args.pids);
const CONNECT_CONCURRENCY = num('connect-concurrency', 200);
const CONNECT_TIMEOUT_MS = num('connect-timeout', 30) * 1000;
const SETUP_TIMEOUT_MS = num('setup-timeout', 900) * 1000;
const TEXT_BYTES = num('text-bytes', 64);
const SETUP_BATCH = num('setup-batch', 250);

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const log = (msg) => emit({ event: 'progress', msg, t_s: Math.round(performance.now()) / 1000 });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const stdinLines = [];
let stdinWaiter = null;
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (stdinWaiter) { const w = stdinWaiter; stdinWaiter = null; w(line); } else stdinLines.push(line);
});
function nextStdinLine(timeoutMs) {
  if (stdinLines.length) return Promise.resolve(stdinLines.shift());
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { stdinWaiter = null; reject(new Error('no answer from the runner')); }, timeoutMs);
    stdinWaiter = (line) => { clearTimeout(timer); resolve(line); };
  });
}

// Resolves when `done()` holds (checked every 20 ms), or false at the deadline.
async function waitUntil(done, timeoutMs) {
  const end = performance.now() + timeoutMs;
  while (!done()) {
    if (performance.now() > end) return false;
    await sleep(20);
  }
  return true;
}
// Setup frames (presence) still arriving: wait until none came for `quietMs`.
function waitQuiet(quietMs, timeoutMs) { return waitUntil(() => performance.now() - activity.lastMs >= quietMs, timeoutMs); }

// Runs `task(i)` for i in [0, n) with at most `concurrency` at once; errors are counted.
async function bounded(n, concurrency, task) {
  let next = 0; let errors = 0; const samples = [];
  async function worker() {
    while (next < n) {
      const i = next++;
      try { await task(i); } catch (e) { errors++; if (samples.length < 5) samples.push(String((e && e.message) || e)); }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return { errors, errorSamples: samples };
}

function padText(prefix) {
  return prefix.length >= TEXT_BYTES ? prefix : prefix + ' ' + 'x'.repeat(TEXT_BYTES - prefix.length - 1);
}
// "<sender> <counter> <tUs> ..." -> [sender, counter, tUs], or null.
function parseText(text) {
  const a = text.indexOf(' '); const b = text.indexOf(' ', a + 1); let c = text.indexOf(' ', b + 1);
  if (a < 0 || b < 0) return null;
  if (c < 0) c = text.length;
  return [Number(text.slice(0, a)), Number(text.slice(a + 1, b)), Number(text.slice(b + 1, c))];
}

// Delivery checks of every member in every room: per sender, each counter once and in
// order; on Hubbub also the room's seq.
class Ledger {
  constructor(slots, senders) {
    this.senders = senders;
    this.next = new Int32Array(slots * senders); // next counter expected, per (slot, sender)
    this.lastSeq = new Float64Array(slots).fill(-1); // per slot; -1 = not checked (no seq)
    this.received = 0; this.duplicates = 0; this.outOfOrder = 0; this.seqGaps = 0; this.seqDups = 0;
    this.unparsed = 0; this.foreign = 0;
  }

  // A message for `slot`; true if it is new (counted).
  take(slot, seq, sender, counter) {
    if (seq !== null && this.lastSeq[slot] >= 0) {
      const last = this.lastSeq[slot];
      if (seq <= last) { this.seqDups++; return false; }
      if (seq !== last + 1) this.seqGaps += seq - last - 1;
      this.lastSeq[slot] = seq;
    }
    if (!(sender >= 0 && sender < this.senders)) { this.foreign++; return false; }
    const k = slot * this.senders + sender;
    const want = this.next[k];
    if (counter < want) { this.duplicates++; return false; }
    if (counter > want) this.outOfOrder++;
    this.next[k] = counter + 1;
    this.received++;
    return true;
  }

  summary(expected) {
    return {
      expected, delivered: this.received, lost: expected - this.received, duplicates: this.duplicates,
      out_of_order: this.outOfOrder, seq_gaps: this.seqGaps, seq_duplicates: this.seqDups,
      unparsed: this.unparsed, foreign: this.foreign,
    };
  }
}

function clientErrors(clients) {
  let errors = 0; const samples = [];
  for (const c of clients) {
    if (!c) continue;
    errors += c.errors;
    for (const s of c.errorSamples) if (samples.length < 5) samples.push(s);
  }
  return { error_frames: errors, error_samples: samples };
}

function closeAll(clients) { for (const c of clients) if (c) { try { c.terminate(); } catch (_) { /* gone */ } } }

// ------------------------------------------------------------------------------ rooms
async function roomsScenario() {
  const R = num('rooms', 200); const N = num('members', 25); const W = num('window', 1);
  const oneSender = Boolean(args['one-sender']); const S = oneSender ? 1 : N;
  const durationMs = num('seconds', 10) * 1000; const drainMs = num('drain-timeout', 60) * 1000;
  const slots = R * N; // slot = room * N + member; the one sender is member N - 1 (joined last)
  const senderOf = (m) => (oneSender ? (m === N - 1 ? 0 : -1) : m);
  const ledger = new Ledger(slots, S);
  const lat = new Recorder();
  const clients = new Array(slots).fill(null);
  const inflight = new Int32Array(R); const turn = new Int32Array(R); // per room
  const counters = new Int32Array(slots); // per member: its next counter
  let measuring = false; let stopping = false; let delivered = 0; let expected = 0;
  let firstSend = 0; let lastDelivery = 0; let sends = 0;

  function post(r) {
    const m = oneSender ? N - 1 : turn[r]; turn[r] = (turn[r] + 1) % N;
    const slot = r * N + m; const c = counters[slot]++;
    const t = nowUs();
    if (!firstSend) firstSend = t;
    clients[slot].send(`bench-${r}`, padText(`${senderOf(m)} ${c} ${t}`));
    inflight[r]++; sends++; expected += N;
  }
  function onMessage(slot, room, seq, text, t) {
    const p = parseText(text);
    if (!p) { ledger.unparsed++; return; }
    if (!ledger.take(slot, seq, p[0], p[1])) return;
    if (!measuring) return;
    delivered++; lastDelivery = t; lat.add(t - p[2]);
    const r = (slot / N) | 0; const m = slot - r * N;
    if (p[0] === senderOf(m) && p[0] >= 0) { // back at its sender: the window moves
      inflight[r]--;
      if (!stopping) while (inflight[r] < W) post(r);
    }
  }

  async function enter(slot) {
    const c = new Client(URL_BASE, `u${slot}`, { onMessage: (room, seq, text, t) => onMessage(slot, room, seq, text, t) });
    await c.connect(CONNECT_TIMEOUT_MS);
    clients[slot] = c;
    const j = await c.join(`bench-${(slot / N) | 0}`);
    if (j.seq !== null) ledger.lastSeq[slot] = j.seq;
  }
  const t0 = performance.now();
  // The one sender of a room joins after all its other members, as in the shared bench:
  // a server that fans out in join order then reaches it last, so W bounds whole fan-outs.
  // In batches, each announced to the members already in (presence) before the next:
  // in a big room that is a frame per member per join, and a server that queues more
  // than its outbox bound for a client that has not read them yet closes it.
  const others = [];
  for (let slot = 0; slot < slots; slot++) if (!oneSender || slot % N !== N - 1) others.push(slot);
  const batches = [];
  for (let k = 0; k < others.length; k += SETUP_BATCH) batches.push(others.slice(k, k + SETUP_BATCH));
  if (oneSender) batches.push(Array.from({ length: R }, (_, r) => r * N + N - 1));
  const setup = { errors: 0, errorSamples: [] };
  for (const batch of batches) {
    if (setup.errors) break;
    const done = await bounded(batch.length, CONNECT_CONCURRENCY, (b) => enter(batch[b]));
    setup.errors += done.errors; setup.errorSamples.push(...done.errorSamples);
    await waitQuiet(50, SETUP_TIMEOUT_MS);
  }
  const result = { rooms: R, members: N, senders_per_room: S, window: W, seconds: durationMs / 1000,
    text_bytes: TEXT_BYTES, connected: clients.filter(Boolean).length, connect_errors: setup.errors,
    connect_error_samples: setup.errorSamples };
  if (setup.errors) { closeAll(clients); return Object.assign(result, { aborted: 'not every member joined' }); }
  await waitQuiet(300, SETUP_TIMEOUT_MS);
  result.setup_s = Math.round(performance.now() - t0) / 1000;
  log(`${slots} members in ${R} rooms joined in ${result.setup_s} s`);

  const cpu = new CpuMeter(PIDS, emit).start();
  measuring = true;
  for (let r = 0; r < R; r++) for (let k = 0; k < W; k++) post(r);
  await sleep(durationMs);
  stopping = true;
  const sentBy = sends;
  const complete = await waitUntil(() => delivered >= expected, drainMs);
  const usage = cpu.stop(delivered);
  const elapsedS = (lastDelivery - firstSend) / 1e6;
  const acked = clients.reduce((n, c) => n + (c ? c.acked : 0), 0);
  Object.assign(result, usage, ledger.summary(expected), clientErrors(clients), {
    sent: sentBy, acked, drained: complete,
    elapsed_s: Math.round(elapsedS * 1000) / 1000,
    deliveries_per_s: elapsedS > 0 ? Math.round(delivered / elapsedS) : null,
    messages_per_s: elapsedS > 0 ? Math.round(sentBy / elapsedS) : null,
    latency: lat.summary(),
  });
  closeAll(clients);
  return result;
}

// ------------------------------------------------------------------------------ storm
async function stormScenario() {
  const K = num('clients', 10000); const R = num('rooms', 100);
  const concurrency = num('concurrency', 1000);
  const lat = new Recorder();
  const clients = new Array(K).fill(null);
  let joined = 0; let lastJoined = 0;
  const cpu = new CpuMeter(PIDS, emit).start();
  const t0 = performance.now();
  const res = await bounded(K, concurrency, async (i) => {
    const start = performance.now();
    const c = new Client(URL_BASE, `s${i}`, { onMessage: () => {} });
    clients[i] = c;
    await c.connect(CONNECT_TIMEOUT_MS);
    await c.join(`storm-${i % R}`);
    lastJoined = performance.now(); joined++;
    lat.add((lastJoined - start) * 1000);
  });
  const elapsedS = (lastJoined - t0) / 1000;
  const usage = cpu.stop(joined);
  closeAll(clients);
  return Object.assign({ clients: K, rooms: R, concurrency }, usage, {
    joined, connect_errors: res.errors, connect_error_samples: res.errorSamples,
    elapsed_s: Math.round(elapsedS * 1000) / 1000,
    joins_per_s: elapsedS > 0 ? Math.round(joined / elapsedS) : null,
    latency: lat.summary(), ...clientErrors(clients),
  });
}

// ------------------------------------------------------------------------------ resume
async function resumeScenario() {
  const K = num('clients', 2000); const E = num('rooms-each', 5); const Z = num('room-size', 50);
  const A = num('live', 5); const B = num('backlog', 20); const W = num('window', 5);
  const concurrency = num('concurrency', 1000);
  const R = Math.max(E, Math.round((K * E) / Z));
  const roomOf = (i, k) => (i * E + k) % R; // client i's k-th room; E distinct rooms when R >= E
  const slots = K * E; // slot = client * E + k
  const isHubbub = (args.protocol || 'hubbub') === 'hubbub';
  const ledger = new Ledger(slots, 1); // the one sender of each room is its poster
  const members = new Array(K).fill(null);
  const tokens = new Array(K).fill(null); let epoch = null;
  const posters = new Array(R).fill(null);
  const roomLast = new Float64Array(R).fill(-1); // the room's last seq (from the poster's copy)
  const inflight = new Int32Array(R); const posted = new Int32Array(R); const target = new Int32Array(R);
  const lat = new Recorder(); // per (client, room): from the storm's start to caught up
  let liveGot = 0; let backlogGot = 0; let resets = 0; let storm = false; let stormStart = 0;
  const caughtUp = new Uint8Array(slots); let caughtUpN = 0; let lastCatchUp = 0;
  const slotOfRoom = new Map(); // client -> Map(room -> slot)

  function post(r) {
    const c = posted[r]++; inflight[r]++;
    posters[r].send(`r-${r}`, padText(`0 ${c} ${nowUs()}`));
  }
  function onPosterMessage(r, seq, text) {
    const p = parseText(text);
    if (!p || p[0] !== 0) return;
    if (seq !== null) roomLast[r] = Math.max(roomLast[r], seq);
    inflight[r]--;
    while (posted[r] < target[r] && inflight[r] < W) post(r);
  }
  function markCaughtUp(slot) {
    if (caughtUp[slot]) return;
    caughtUp[slot] = 1; caughtUpN++; lastCatchUp = performance.now();
    lat.add((lastCatchUp - stormStart) * 1000);
  }
  function onMemberMessage(i, room, seq, text) {
    const slot = slotOfRoom.get(i).get(room);
    if (slot === undefined) { ledger.foreign++; return; }
    const p = parseText(text);
    if (!p) { ledger.unparsed++; return; }
    if (!ledger.take(slot, seq, p[0], p[1])) return;
    if (storm) {
      backlogGot++;
      if (seq !== null && seq >= roomLast[roomOf(i, slot % E)]) markCaughtUp(slot);
    } else liveGot++;
  }
  async function postAll(perRoom) {
    for (let r = 0; r < R; r++) { target[r] += perRoom; while (posted[r] < target[r] && inflight[r] < W) post(r); }
    return waitUntil(() => { for (let r = 0; r < R; r++) if (posted[r] < target[r] || inflight[r] > 0) return false; return true; }, SETUP_TIMEOUT_MS);
  }
  async function connectMember(i, resume) {
    const c = new Client(URL_BASE, `m${i}`, { onMessage: (room, seq, text) => onMemberMessage(i, room, seq, text) },
      resume ? tokens[i] : null);
    members[i] = c;
    await c.connect(CONNECT_TIMEOUT_MS);
    if (!resume) tokens[i] = c.guestToken;
    epoch = epoch || c.epoch;
    await Promise.all(Array.from({ length: E }, async (_, k) => {
      const slot = i * E + k; const room = `r-${roomOf(i, k)}`;
      const since = resume && isHubbub ? ledger.lastSeq[slot] : null;
      const j = await c.join(room, { since, epoch });
      if (j.reset) resets++;
      if (!resume) { if (j.seq !== null) ledger.lastSeq[slot] = j.seq; return; }
      // Peers recover nothing: a rejoin is all there is to wait for.
      if (!isHubbub || ledger.lastSeq[slot] >= roomLast[roomOf(i, k)]) markCaughtUp(slot);
    }));
  }

  for (let i = 0; i < K; i++) {
    const m = new Map();
    for (let k = 0; k < E; k++) m.set(`r-${roomOf(i, k)}`, i * E + k);
    slotOfRoom.set(i, m);
  }
  const result = { clients: K, rooms_each: E, rooms: R, room_size: Z, live_per_room: A, backlog_per_room: B, concurrency };
  // 1. Everyone in: posters first (one per room), then the members.
  const t0 = performance.now();
  const setupP = await bounded(R, CONNECT_CONCURRENCY, async (r) => {
    const c = new Client(URL_BASE, `p${r}`, { onMessage: (room, seq, text) => onPosterMessage(r, seq, text) });
    await c.connect(CONNECT_TIMEOUT_MS);
    posters[r] = c;
    await c.join(`r-${r}`);
  });
  const setupM = await bounded(K, CONNECT_CONCURRENCY, (i) => connectMember(i, false));
  if (setupP.errors || setupM.errors) {
    closeAll(posters); closeAll(members);
    return Object.assign(result, { aborted: 'not every client joined', connect_errors: setupP.errors + setupM.errors,
      connect_error_samples: setupP.errorSamples.concat(setupM.errorSamples) });
  }
  await waitQuiet(300, SETUP_TIMEOUT_MS);
  // 2. Live messages, then everyone away (their last seq kept), and the backlog posted.
  await postAll(A);
  await waitUntil(() => liveGot >= slots * A, SETUP_TIMEOUT_MS);
  result.live_delivered = liveGot; result.live_expected = slots * A;
  closeAll(members);
  await waitUntil(() => members.every((c) => c.closed), SETUP_TIMEOUT_MS);
  const backlogPosted = await postAll(B);
  result.setup_s = Math.round(performance.now() - t0) / 1000;
  log(`setup done in ${result.setup_s} s; restarting the server`);
  // 3. The server restarts; then all come back at once.
  emit({ event: 'restart' });
  const answer = (await nextStdinLine(120000)).split(' ');
  if (answer[0] !== 'restarted') throw new Error(`runner said ${answer.join(' ')}`);
  PIDS = pidList(answer[1]);
  closeAll(posters);
  storm = true;
  const expectedBacklog = isHubbub ? slots * B : 0;
  const cpu = new CpuMeter(PIDS, emit).start();
  const t1 = performance.now(); stormStart = t1;
  const res = await bounded(K, concurrency, (i) => connectMember(i, true));
  const all = await waitUntil(() => caughtUpN >= slots, SETUP_TIMEOUT_MS);
  const elapsedS = (lastCatchUp - t1) / 1000;
  const usage = cpu.stop(isHubbub ? backlogGot : slots);
  closeAll(members);
  return Object.assign(result, usage, {
    backlog_posted: backlogPosted, reconnect_errors: res.errors, reconnect_error_samples: res.errorSamples,
    caught_up: caughtUpN, caught_up_all: all, slots,
    catch_up_s: Math.round(elapsedS * 1000) / 1000,
    missed: slots * B, recovered: backlogGot, expected_recovered: expectedBacklog,
    lost: expectedBacklog - backlogGot, duplicates: ledger.duplicates, out_of_order: ledger.outOfOrder,
    seq_gaps: ledger.seqGaps, seq_duplicates: ledger.seqDups, resets,
    latency: lat.summary(), ...clientErrors(members),
  });
}

const SCENARIOS = { rooms: roomsScenario, storm: stormScenario, resume: resumeScenario };

async function main() {
  const scenario = SCENARIOS[args._[0]];
  if (!scenario) { console.error(`scenario: one of ${Object.keys(SCENARIOS).join(', ')}`); process.exit(2); }
  const hardMs = num('timeout', 1800) * 1000;
  const timer = setTimeout(() => { emit({ event: 'result', error: 'load generator timeout' }); process.exit(1); }, hardMs);
  try {
    const r = await scenario();
    emit({ event: 'result', protocol: args.protocol || 'hubbub', ...r });
  } catch (e) {
    emit({ event: 'result', error: String((e && e.stack) || e) });
  }
  clearTimeout(timer);
  setTimeout(() => process.exit(0), 200);
}

main();
