'use strict';
// One client connection of each protocol the benchmark speaks, behind one interface:
//
//   const c = new Client(url, name, { onMessage(room, seq, text, tUs), onClose(code) });
//   await c.connect(timeoutMs);                 // identified (Hubbub: welcome; Socket.IO: connect)
//   await c.join(room, { since, epoch });       // -> { seq, epoch, reset } (Socket.IO: seq null)
//   c.send(room, text);                         // acks are counted in c.acked
//   c.terminate();
//
// Hubbub: its /v1/ws protocol (docs/protocol.md) over the `ws` package. Socket.IO: the
// `socket.io-client` package (Socket.IO 4, WebSocket transport only), whose Node
// transport is the same `ws` package at the same version (package-lock.json), so both
// protocols cost the load generator the same WebSocket layer.

const { WebSocket } = require('ws');
const { io } = require('socket.io-client');
const { performance } = require('perf_hooks');
const { nowUs } = require('./measure');

// When the last frame of any kind arrived on any connection: setup is over when it is quiet.
const activity = { lastMs: 0 };

// Hubbub frames the load generator needs no field of (a big room's joins bring one
// presence frame per member per join): skipped on their first bytes, not decoded.
const SKIPPED = [Buffer.from('{"type":"presence"'), Buffer.from('{"type":"membership"')];
const skipped = (data) => SKIPPED.some((p) => data.length > p.length && data.compare(p, 0, p.length, 0, p.length) === 0);

class HubbubClient {
  constructor(url, name, handlers, guestToken = null) {
    const who = guestToken ? `guest=${encodeURIComponent(guestToken)}` : `name=${encodeURIComponent(name)}`;
    this.url = `${url}/v1/ws?${who}`;
    this.name = name;
    this.handlers = handlers;
    this.pending = new Map(); // room -> { resolve, reject } of a join not yet answered
    this.acked = 0; this.errors = 0; this.errorSamples = [];
    this.guestToken = null; this.epoch = null; this.ws = null; this.closed = false;
  }

  connect(timeoutMs) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, { perMessageDeflate: false, handshakeTimeout: timeoutMs, maxPayload: 0 });
      this.ws = ws;
      let settled = false;
      const timer = setTimeout(() => fail(new Error('no welcome in time')), timeoutMs);
      const fail = (e) => { if (settled) return; settled = true; clearTimeout(timer); ws.terminate(); reject(e); };
      this._welcome = (frame) => {
        if (settled) return;
        settled = true; clearTimeout(timer);
        this.guestToken = frame.guest_token || null; this.epoch = frame.epoch || null;
        resolve(this);
      };
      ws.on('message', (data) => {
        activity.lastMs = performance.now();
        if (!skipped(data)) this._onFrame(data.toString());
      });
      ws.on('error', (e) => fail(e));
      ws.on('close', (code) => {
        this.closed = true;
        fail(new Error(`closed before welcome (${code})`));
        for (const p of this.pending.values()) p.reject(new Error(`closed (${code})`));
        this.pending.clear();
        if (this.handlers.onClose) this.handlers.onClose(code);
      });
    });
  }

  _onFrame(text) {
    const frame = JSON.parse(text);
    switch (frame.type) {
      case 'message':
        this.handlers.onMessage(frame.room, frame.seq, frame.text, nowUs());
        break;
      case 'ack':
        this.acked++;
        break;
      case 'joined': {
        const p = this.pending.get(frame.room);
        if (p) { this.pending.delete(frame.room); p.resolve({ seq: frame.seq, epoch: frame.epoch, reset: Boolean(frame.reset) }); }
        break;
      }
      case 'welcome':
        this._welcome(frame);
        break;
      case 'error': {
        this.errors++;
        if (this.errorSamples.length < 3) this.errorSamples.push(`${frame.code}: ${frame.message}`);
        const p = frame.room && this.pending.get(frame.room);
        if (p) { this.pending.delete(frame.room); p.reject(new Error(frame.code)); }
        break;
      }
      default:
        break;
    }
  }

  join(room, { since = null, epoch = null } = {}) {
    return new Promise((resolve, reject) => {
      this.pending.set(room, { resolve, reject });
      const frame = { type: 'join', room };
      if (since !== null) { frame.since = since; if (epoch) frame.epoch = epoch; }
      this.ws.send(JSON.stringify(frame));
    });
  }

  send(room, text) { this.ws.send(JSON.stringify({ type: 'send', room, text })); }

  terminate() { if (this.ws) this.ws.terminate(); }
}

class SocketIOClient {
  constructor(url, name, handlers) {
    this.url = url; this.name = name; this.handlers = handlers;
    this.acked = 0; this.errors = 0; this.errorSamples = []; this.socket = null; this.closed = false;
    this.guestToken = null; this.epoch = null;
  }

  connect(timeoutMs) {
    return new Promise((resolve, reject) => {
      const socket = io(this.url, {
        transports: ['websocket'], forceNew: true, reconnection: false, perMessageDeflate: false,
        timeout: timeoutMs, query: { name: this.name },
      });
      this.socket = socket;
      let settled = false;
      socket.once('connect', () => { settled = true; resolve(this); });
      socket.once('connect_error', (e) => { if (!settled) { settled = true; socket.close(); reject(e); } });
      socket.on('message', (m) => {
        activity.lastMs = performance.now();
        this.handlers.onMessage(m.room, null, m.text, nowUs());
      });
      socket.on('presence', () => { activity.lastMs = performance.now(); });
      socket.on('disconnect', (reason) => {
        this.closed = true;
        if (this.handlers.onClose) this.handlers.onClose(reason);
      });
    });
  }

  async join(room) {
    const answer = await this.socket.emitWithAck('join', { room });
    if (answer && answer.error) throw new Error(answer.error);
    return { seq: null, epoch: null, reset: false };
  }

  send(room, text) {
    this.socket.emit('send', { room, text }, (answer) => {
      if (answer && answer.error) {
        this.errors++;
        if (this.errorSamples.length < 3) this.errorSamples.push(answer.error);
      } else this.acked++;
    });
  }

  terminate() { if (this.socket) this.socket.disconnect(); }
}

const PROTOCOLS = { hubbub: HubbubClient, socketio: SocketIOClient };

module.exports = { PROTOCOLS, activity };
