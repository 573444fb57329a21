// A browser client for Hubbub's /v1/ws room protocol (docs/protocol.md): reconnects by
// itself, resumes every room where it stopped, and hands each message to the application
// once and in order. No dependencies; docs/client.md shows how to use it.

const ROOM = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;
// The frame that answers each request (when it is not refused).
const ANSWER = {
  join: "joined",
  leave: "left",
  send: "ack",
  history: "history",
  ping: "pong",
  edit: "ack",
  delete: "ack",
  react: "ack",
  moderate: "ack",
  role: "ack",
  rooms: "rooms",
  dm: "dm",
};
// What a room's seq stream holds: each is delivered once, in seq order, as an event of
// its own type, and moves the room's last seq (so a resume's since counts them all).
const EVENTS = new Set(["message", "edit", "delete", "reaction", "moderation"]);
// Refusals of the connection itself: the server closes it next (1008), and trying again
// with the same name or token would only be refused again.
const REFUSED = new Set(["unauthorized", "token_expired", "token_not_yet_valid", "invalid_name"]);
// A membership ended by a moderator: the server takes every connection of the user out of
// the room, so the client forgets it without a leave of its own (which would be refused).
const REMOVED = new Set(["kicked", "banned"]);
// What a read or a typing notice (which get no answer when done) may be refused with. A
// refusal without a ref that is none of these is for a request that waits for its answer
// (a join refused with banned, say), not for a silent one written before it.
const SILENT_REFUSALS = new Set(["not_joined", "unavailable", "rate_limited", "bad_frame"]);
// Join refusals that mean "not now" rather than "never": the join is tried again later.
// ("name_taken" is not one of them: a guest comes back as itself with its guest token, so
// the name is someone else's.)
const RETRY_LATER = new Set(["unavailable", "rate_limited"]);
// A send's id, as the server takes it (docs/protocol.md, "Sent once").
const SEND_ID = /^[A-Za-z0-9_.:-]{1,64}$/;
// How long the server keeps a send's id at least: a send first written longer ago than
// this may have been stored with an id the server has forgotten, so it is not sent again.
const ID_KEPT_MS = 24 * 60 * 60 * 1000;

/** A refused request, a closed client or a left room; `code` says which. */
export class HubbubError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "HubbubError";
    this.code = code;
  }
}

/** The address of /v1/ws on the host that served this page (wss: under https:). */
export function defaultUrl(where = window.location) {
  return `${where.protocol === "https:" ? "wss" : "ws"}://${where.host}${new URL("../v1/ws", import.meta.url).pathname}`;
}

/**
 * One connection to /v1/ws, kept up until close().
 *
 * Events (an EventTarget; `on(type, fn)` passes `event.detail` to fn):
 *   message, edit, delete, reaction, moderation   a room's events (its seq stream), each
 *            once, in seq order per room, as the server sends them
 *   joined   {room, seq, members, people, resumed, reset}   after every (re)join
 *   presence {room, joined, left, joined_people, left_people}
 *   read     {room, seq, unread}                what the user has read, from any device
 *   receipt  {room, user, name, seq}           another member has read up to seq
 *   typing   {room, user, name, expires_in | stop}
 *   left     {room, reason}                    the server removed us from a room (kicked)
 *   membership {room, member, reason?}         the user joined or stopped being a member
 *            of a room, on any device (reason on false: forgot | kicked | banned)
 *   dm       {room, users}                     a dm frame no openDm() was waiting for
 *   welcome  {user, name, guest, expires, guest_token, epoch}   who the server takes us for
 *            (a guest's guest_token is what brings it back as itself: keep it)
 *   error    {code, message, room?}           a refusal no promise was waiting for
 *   state    {state, previous}                connecting | connected | reconnecting | offline
 *
 * Every send carries an id of its own, so that the server stores it once however often it
 * goes. With `outbox` (a key in localStorage, or {key, storage}) the sends not acknowledged
 * yet are kept there too, and a client made later with the same key (after a reload, in
 * another tab) sends them again once their rooms are joined: see pending().
 */
export class HubbubClient extends EventTarget {
  constructor(
    url,
    {
      name,
      token,
      guestToken,
      outbox,
      backoffMin = 250,
      backoffMax = 5000,
      heartbeat = 15000,
    } = {},
  ) {
    super();
    this._base = new URL(url);
    if (name) this._base.searchParams.set("name", name);
    if (token) this._base.searchParams.set("token", token);
    this.guestToken = (!token && guestToken) || null; // updated by every welcome
    this.name = name || null;
    this.epoch = null; // the server's deployment, from welcome
    this.state = "offline";
    this.backoffMin = backoffMin;
    this.backoffMax = backoffMax;
    this.heartbeat = heartbeat;
    // room -> {last: seq delivered up to, ready: joined on this connection,
    //          waiters: join() promises, refusals: join refusals in a row}
    this._rooms = new Map();
    this._queue = []; // requests not written yet (no connection, or their room not joined yet)
    this._inflight = []; // requests written and not answered yet, oldest first
    this._held = []; // sends restored from the outbox whose rooms are not joined here yet
    this._outbox = new Outbox(outbox);
    this._sends = 0;
    this._ws = null;
    this._refs = 0;
    this._attempt = 0;
    this._timer = null;
    this._pinger = null;
    this._heard = false;
    this._refusal = null; // the server's reason, when it refuses the connection itself
    this._closed = false;
    this._onOnline = () => this._retryNow();
    // (Handled here too: one for a room never joined again is rejected only by close().)
    for (const [id, kept] of this._outbox.restore()) this._post(id, kept).catch(() => {});
  }

  /** Where the next connection goes: as this guest again, once the server gave a token. */
  get url() {
    const target = new URL(this._base);
    if (this.guestToken) target.searchParams.set("guest", this.guestToken);
    return target.href;
  }

  /** Start connecting; from now on the client reconnects by itself until close(). */
  connect() {
    if (this._closed) throw closedError();
    if (!this._ws && !this._timer) {
      window.addEventListener("online", this._onOnline);
      this._open();
    }
    return this;
  }

  /** Stop for good: every queued or unanswered request is rejected with code "closed". */
  close() {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._timer);
    window.removeEventListener("online", this._onOnline);
    const ws = this._ws;
    this._forget(ws);
    ws?.close(1000);
    const error = closedError();
    for (const request of [...this._inflight, ...this._queue, ...this._held]) request.reject(error);
    for (const room of this._rooms.values()) for (const w of room.waiters) w.reject(error);
    this._inflight = [];
    this._queue = [];
    this._held = [];
    this._setState("offline");
  }

  /** The rooms joined (or being joined), in the order they were joined. */
  get rooms() {
    return [...this._rooms.keys()];
  }

  /** Join `room` (and rejoin it after every reconnection); resolves with the `joined` detail. */
  join(room) {
    if (this._closed) return Promise.reject(closedError());
    if (!ROOM.test(room)) return Promise.reject(new HubbubError("bad_room", `bad room name: ${room}`));
    let entry = this._rooms.get(room);
    if (!entry) {
      entry = { last: null, epoch: null, ready: false, waiters: [], refusals: 0 };
      this._rooms.set(room, entry);
      // What an earlier page left unsent in this room goes first, once it is joined.
      this._queue.push(...this._held.filter((request) => request.frame.room === room));
      this._held = this._held.filter((request) => request.frame.room !== room);
    }
    const joined = new Promise((resolve, reject) => entry.waiters.push({ resolve, reject }));
    if (this.state === "connected") this._sendJoin(room, entry);
    return joined;
  }

  /** Leave `room`: no more of its messages; its queued requests are rejected. `forget`:
   * end the user's membership too (the room leaves the user's list on every device). */
  leave(room, { forget = false } = {}) {
    if (!this._rooms.has(room)) return;
    this._forgetRoom(room, new HubbubError("left", `left room ${room}`));
    const frame = forget ? { type: "leave", room, forget: true } : { type: "leave", room };
    if (this.state === "connected") this._write({ frame, ...IGNORE });
  }

  /** The seq of the last event delivered in `room` (or its seq when first joined); null
   * before its first join is answered or when not joined. */
  lastSeq(room) {
    return this._rooms.get(room)?.last ?? null;
  }

  /** Post `text` to a joined room, optionally as a reply to message `replyTo` and with
   * application `data` (a JSON object); resolves with the message's seq once stored (the
   * first one's, when the server had it already). `id`: the send's own (a random UUID by
   * default): sent again under it, it is stored once. */
  send(room, text, { replyTo, data, id = newId() } = {}) {
    if (this._closed) return Promise.reject(closedError());
    if (!this._rooms.has(room)) {
      return Promise.reject(new HubbubError("not_joined", `join ${room} first`));
    }
    if (!SEND_ID.test(id)) return Promise.reject(new HubbubError("bad_frame", `bad send id: ${id}`));
    const kept = { room, text, at: Date.now(), n: this._sends++, written: null };
    if (replyTo !== undefined && replyTo !== null) kept.reply_to = replyTo;
    if (data !== undefined && data !== null) kept.data = data;
    this._outbox.keep(id, kept); // before anything else: a reload now must not lose it
    return this._post(id, kept);
  }

  /** The sends of `room` not acknowledged yet, oldest first: this client's own and those
   * restored from the outbox (an earlier page's, or another tab's), as
   * [{id, room, text, replyTo, data, sent}]; `sent` is the promise send() returned (for a
   * restored one, a promise like it). */
  pending(room) {
    return [...this._held, ...this._inflight, ...this._queue]
      .filter((request) => request.kept && request.frame.room === room)
      .sort((a, b) => a.kept.at - b.kept.at || a.kept.n - b.kept.n)
      .map(({ frame, kept, sent }) => ({
        id: frame.id,
        room,
        text: kept.text,
        replyTo: kept.reply_to,
        data: kept.data,
        sent,
      }));
  }

  /** Replace the text (and `data`, if given) of one's own message `seq`; resolves with
   * the seq of the edit event. */
  edit(room, seq, text, { data } = {}) {
    const frame = { type: "edit", room, seq, text, ref: this._ref() };
    if (data !== undefined && data !== null) frame.data = data;
    return this._request(frame).then((ack) => ack.seq);
  }

  /** Delete message `seq` (one's own, or any as a moderator); resolves with the seq of
   * the delete event. */
  delete(room, seq) {
    return this._request({ type: "delete", room, seq, ref: this._ref() }).then((ack) => ack.seq);
  }

  /** Add (or with `remove`, take back) one's `emoji` on message `seq`; resolves with the
   * seq of the reaction event, or null when nothing changed (it was there already). */
  react(room, seq, emoji, { remove = false } = {}) {
    const frame = { type: "react", room, seq, emoji, ref: this._ref() };
    if (remove) frame.remove = true;
    return this._request(frame).then((ack) => ack.seq ?? null);
  }

  /** Tell the server the user has read `room` up to `seq`; every connection of the user
   * then gets a `read` event. Fire and forget: it waits for the room like a send. */
  read(room, seq) {
    if (this._closed || !this._rooms.has(room)) return;
    this._request({ type: "read", room, seq }, { silent: true }).catch(() => {});
  }

  /** Say the user is typing in `room` (or has `stop`ped). Fire and forget, and only now:
   * it is dropped when the room is not joined on a live connection. */
  typing(room, stop = false) {
    if (this._closed || !this._rooms.get(room)?.ready) return;
    const frame = stop ? { type: "typing", room, stop: true } : { type: "typing", room };
    this._write({ frame, ...IGNORE, silent: true });
  }

  /** The user's rooms, from the server: resolves with [{room, seq, read, unread, role, dm?}].
   * (Not `rooms()`: `rooms` is the list of the rooms this client joined.) */
  listRooms() {
    return this._request({ type: "rooms", ref: this._ref() }).then((answer) => answer.rooms);
  }

  /** The direct-message room of the user and `users` (ids); resolves with {room, users}.
   * Join it to read and write it. */
  openDm(users) {
    return this._request({ type: "dm", users, ref: this._ref() }).then(({ room, users: all }) => ({
      room,
      users: all,
    }));
  }

  /** A moderator's `action` (kick, ban, unban, mute, unmute) on member `user` of `room`;
   * resolves with the seq of the moderation event. */
  moderate(room, user, action, reason) {
    const frame = { type: "moderate", room, user, action, ref: this._ref() };
    if (reason !== undefined && reason !== null) frame.reason = reason;
    return this._request(frame).then((ack) => ack.seq);
  }

  /** An owner makes member `user` of `room` a "moderator" or a "member" again; resolves
   * with the seq of the moderation event. */
  setRole(room, user, role) {
    return this._request({ type: "role", room, user, role, ref: this._ref() }).then(
      (ack) => ack.seq,
    );
  }

  /** Up to `limit` messages of a joined room with seq < `before` (or the newest), ascending. */
  history(room, { before, limit } = {}) {
    return this._request({ type: "history", room, before, limit }).then((page) => page.messages);
  }

  /** `fn(detail)` on every event of `type`; returns a function that stops it. */
  on(type, fn) {
    const listener = (event) => fn(event.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  // -- requests ---------------------------------------------------------------------

  _ref() {
    return `c${++this._refs}`;
  }

  // A request, sent again on the next connection if this one drops before the answer. One
  // about a room waits until its room is joined on the current connection; one about no
  // room (rooms, dm) until there is a connection. A `silent` one gets no answer when done.
  _request(frame, { silent = false } = {}) {
    if (this._closed) return Promise.reject(closedError());
    if (frame.room !== undefined && !this._rooms.has(frame.room)) {
      return Promise.reject(new HubbubError("not_joined", `join ${frame.room} first`));
    }
    return new Promise((resolve, reject) => {
      const request = { frame, resolve, reject, again: true, silent };
      const ready =
        frame.room === undefined ? this.state === "connected" : this._rooms.get(frame.room).ready;
      if (ready) this._write(request);
      else this._queue.push(request);
    });
  }

  _write(request) {
    const { kept } = request;
    if (kept?.written === null) {
      kept.written = Date.now();
      this._outbox.keep(request.frame.id, kept);
    } else if (kept && Date.now() - kept.written > ID_KEPT_MS) {
      const message = "written over a day ago and never acknowledged: it may have been stored";
      request.reject(new HubbubError("expired", message));
      return;
    }
    this._inflight.push(request);
    this._ws.send(JSON.stringify(request.frame));
  }

  // Write what waited for `room` to be joined, in the order it was asked.
  _flush(room) {
    const waiting = this._queue;
    this._queue = waiting.filter((request) => request.frame.room !== room);
    for (const request of waiting) if (request.frame.room === room) this._write(request);
  }

  // A send kept in the outbox until it is answered (a refusal is an answer; closing the
  // client is not). It waits like any request about a room; one restored from the outbox
  // for a room not joined here waits in _held until join() (and is not refused for it).
  _post(id, kept) {
    const frame = { type: "send", room: kept.room, text: kept.text, ref: this._ref(), id };
    if (kept.reply_to !== undefined) frame.reply_to = kept.reply_to;
    if (kept.data !== undefined) frame.data = kept.data;
    const request = { frame, kept, again: true, silent: false };
    request.sent = new Promise((resolve, reject) => {
      request.resolve = (ack) => {
        this._outbox.drop(id);
        resolve(ack.seq);
      };
      request.reject = (error) => {
        if (error.code !== "closed") this._outbox.drop(id);
        reject(error);
      };
    });
    const entry = this._rooms.get(kept.room);
    if (!entry) this._held.push(request);
    else if (entry.ready) this._write(request);
    else this._queue.push(request);
    return request.sent;
  }

  _sendJoin(room, entry) {
    const frame = { type: "join", room };
    if (entry.last !== null) {
      frame.since = entry.last; // resume right after the last delivered
      if (entry.epoch) frame.epoch = entry.epoch; // ... of the history it belongs to
    }
    this._write({
      frame,
      resolve: (joined) => this._onJoined(joined, frame.since),
      reject: (error) => this._onJoinRefused(room, error),
    });
  }

  // An answer goes to the request in flight of its kind with its ref (ack, rooms and dm
  // carry the ref of their request), or without one to the oldest of its kind and room.
  // Frames of kinds this client does not know are ignored. True if it answered one.
  _answer(frame) {
    const index = this._inflight.findIndex(
      ({ frame: asked }) =>
        ANSWER[asked.type] === frame.type &&
        (asked.ref !== undefined ? asked.ref === frame.ref : asked.room === frame.room),
    );
    if (index < 0) return false;
    this._take(index).resolve(frame);
    return true;
  }

  // Take the request in flight at `index` out. The silent ones written before it are done
  // too: the server handles a connection's frames one at a time and answers each in turn
  // (and those it did not refuse get no answer).
  _take(index) {
    const [request] = this._inflight.splice(index, 1);
    if (request) this._inflight = this._inflight.filter((r, i) => i >= index || !r.silent);
    return request;
  }

  // A refusal carries the ref of the refused frame when it had one. Otherwise it is the
  // oldest request in flight that it can be for: the server handles a connection's frames
  // one at a time and answers each in turn.
  _refused(frame) {
    if (REFUSED.has(frame.code)) {
      this._refusal = frame; // acted on when the connection closes
      return;
    }
    let index;
    if (frame.ref !== undefined) index = this._inflight.findIndex((r) => r.frame.ref === frame.ref);
    else if (SILENT_REFUSALS.has(frame.code)) index = 0;
    else index = this._inflight.findIndex((r) => !r.silent);
    const request = index >= 0 ? this._take(index) : undefined;
    if (request) request.reject(new HubbubError(frame.code, frame.message));
    else this._emit("error", frame);
  }

  // -- rooms ------------------------------------------------------------------------

  _onJoined(frame, since) {
    const entry = this._rooms.get(frame.room);
    if (!entry) return; // left while the join was on its way
    // The server says our since was of another deployment (epoch); an older server says
    // it only by a last seq below ours. Either way the room's history started over.
    const reset = since !== undefined && (frame.reset === true || frame.seq < since);
    if (entry.last === null || reset) entry.last = frame.seq;
    if (frame.epoch) entry.epoch = frame.epoch;
    entry.ready = true;
    entry.refusals = 0;
    this._flush(frame.room); // before anyone hears of the join and asks for more
    const detail = { ...frame, resumed: since !== undefined, reset };
    for (const w of entry.waiters.splice(0)) w.resolve(detail);
    this._emit("joined", detail);
  }

  _onJoinRefused(room, error) {
    const entry = this._rooms.get(room);
    if (!entry) return;
    this._emit("error", { code: error.code, message: error.message, room });
    if (RETRY_LATER.has(error.code)) {
      const again = () => {
        if (this._rooms.get(room) === entry && this.state === "connected") this._sendJoin(room, entry);
      };
      setTimeout(again, this._backoff(entry.refusals++));
    } else {
      this._forgetRoom(room, error);
    }
  }

  // No more of `room`: whatever waits for it is rejected with `error`.
  _forgetRoom(room, error) {
    const entry = this._rooms.get(room);
    this._rooms.delete(room);
    for (const w of entry.waiters) w.reject(error);
    const waiting = this._queue;
    this._queue = waiting.filter((request) => request.frame.room !== room);
    for (const request of waiting) if (request.frame.room === room) request.reject(error);
  }

  // An event of a room's seq stream (a message, edit, delete, reaction or moderation).
  _onEvent(event) {
    const entry = this._rooms.get(event.room);
    // Once and in order: nothing after leaving, nothing at or below what was delivered.
    if (!entry || (entry.last !== null && event.seq <= entry.last)) return;
    entry.last = event.seq;
    this._emit(event.type, event);
  }

  // A moderator removed this connection from `room` (`left` with a reason): forget it.
  _onRemoved(frame) {
    if (!this._rooms.has(frame.room)) return; // left by ourselves meanwhile
    this._forgetRoom(frame.room, new HubbubError(frame.reason, `removed from ${frame.room}`));
    this._emit("left", frame);
  }

  // The user's membership of `room` began or ended, on some device. Ended by a kick or a
  // ban, the room is forgotten here at once, whether its `left` came already or not.
  _onMembership(frame) {
    if (frame.member === false && REMOVED.has(frame.reason) && this._rooms.has(frame.room)) {
      this._forgetRoom(frame.room, new HubbubError(frame.reason, `removed from ${frame.room}`));
    }
    this._emit("membership", frame);
  }

  // -- the connection ---------------------------------------------------------------

  _open() {
    this._timer = null;
    if (this.state === "offline") this._setState("connecting"); // the first attempt
    const ws = new WebSocket(this.url);
    this._ws = ws;
    ws.onopen = () => this._onOpen();
    ws.onmessage = (event) => this._onFrame(JSON.parse(event.data));
    ws.onclose = (event) => this._onClose(event);
  }

  _onOpen() {
    // Requests for a room go once it is joined again (see _onJoined); the others now.
    for (const [room, entry] of this._rooms) this._sendJoin(room, entry);
    this._flush(undefined);
    this._startHeartbeat();
    this._setState("connected");
  }

  _onFrame(frame) {
    this._heard = true;
    this._attempt = 0; // the server answers: the next drop starts the backoff afresh
    if (EVENTS.has(frame.type)) return this._onEvent(frame);
    switch (frame.type) {
      case "presence":
      case "receipt":
      case "typing":
        if (this._rooms.has(frame.room)) this._emit(frame.type, frame);
        return;
      case "read": // for any room of the user's, joined here or not
        return this._emit("read", frame);
      case "membership": // likewise
        return this._onMembership(frame);
      case "left":
        if (frame.reason !== undefined) return this._onRemoved(frame);
        return this._answer(frame);
      case "dm":
        if (!this._answer(frame)) this._emit("dm", frame);
        return;
      case "welcome":
        this.name = frame.name;
        if (frame.guest_token) this.guestToken = frame.guest_token;
        if (frame.epoch) this.epoch = frame.epoch;
        return this._emit("welcome", frame);
      case "error":
        return this._refused(frame);
      default:
        return this._answer(frame);
    }
  }

  _onClose(event) {
    this._forget(this._ws);
    // No answer comes on this socket any more. Requests go again on the next one, before
    // anything asked since; joins are redone anyway; leaves, pings and typing are done.
    this._queue = [...this._inflight.filter((request) => request.again), ...this._queue];
    this._inflight = [];
    for (const entry of this._rooms.values()) entry.ready = false;
    const refusal = this._refusal;
    this._refusal = null;
    if (this._closed) return;
    // A guest token this server cannot take (expired, or of another deployment): come back
    // as a new guest under the same name rather than not at all.
    if (event.code === 1008 && refusal?.code === "unauthorized" && this.guestToken) {
      this.guestToken = null;
      if (this._base.searchParams.has("name")) {
        this._setState("reconnecting");
        this._timer = setTimeout(() => this._open(), 0);
        return;
      }
    }
    // Refused for who we are (older servers say only "invalid name" in the close): stop.
    if (event.code === 1008 && (refusal || event.reason === "invalid name")) {
      const { code, message } = refusal ?? { code: "invalid_name", message: "invalid name" };
      this._emit("error", { code, message });
      this.close();
      return;
    }
    this._setState("reconnecting");
    this._timer = setTimeout(() => this._open(), this._backoff(this._attempt++));
  }

  // Exponential backoff with "equal jitter": half of it fixed, half random, never above
  // backoffMax, so that clients dropped together do not come back together.
  _backoff(attempt) {
    const ceiling = Math.min(this.backoffMax, this.backoffMin * 2 ** attempt);
    return ceiling / 2 + (Math.random() * ceiling) / 2;
  }

  _retryNow() {
    if (!this._timer) return;
    clearTimeout(this._timer);
    this._open();
  }

  // Every `heartbeat` ms a ping; a whole period without any frame means the link is dead
  // (a half-open TCP connection may never report its close).
  _startHeartbeat() {
    this._heard = true;
    this._pinger = setInterval(() => {
      if (!this._heard) {
        const ws = this._ws;
        this._onClose({ code: 4000, reason: "no answer" });
        ws.close();
        return;
      }
      this._heard = false;
      this._write({ frame: { type: "ping" }, ...IGNORE });
    }, this.heartbeat);
  }

  // Detach from a socket, so that nothing it still reports reaches the client.
  _forget(ws) {
    clearInterval(this._pinger);
    this._pinger = null;
    if (ws) ws.onopen = ws.onmessage = ws.onclose = null;
    if (ws === this._ws) this._ws = null;
  }

  _setState(state) {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    this._emit("state", { state, previous });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

const IGNORE = { resolve() {}, reject() {} };

/**
 * The sends not acknowledged yet, kept in a Storage (localStorage by default) under `key`,
 * one item each (`key/id`): tabs that share the storage add and remove their own items
 * and never write over each other's. Without a key it keeps nothing; a storage that
 * refuses (disabled, full) keeps what it can, and the client works on without it.
 */
class Outbox {
  constructor(option) {
    const { key, storage } = typeof option === "string" ? { key: option } : (option ?? {});
    this.prefix = key ? `${key}/` : null;
    try {
      this.storage = this.prefix ? (storage ?? window.localStorage) : null;
    } catch {
      this.storage = null; // localStorage itself refused (storage disabled)
    }
  }

  keep(id, kept) {
    this._try(() => this.storage?.setItem(this.prefix + id, JSON.stringify(kept)));
  }

  drop(id) {
    this._try(() => this.storage?.removeItem(this.prefix + id));
  }

  // What earlier pages and other tabs kept under the key, oldest first, as [id, kept].
  // (An id has no "/", so a longer key that begins with this one is not taken for it.)
  restore() {
    const found = [];
    this._try(() => {
      const names = [];
      for (let i = 0; i < (this.storage?.length ?? 0); i++) names.push(this.storage.key(i));
      for (const name of names) {
        const id = name?.startsWith(this.prefix) ? name.slice(this.prefix.length) : null;
        if (id === null || !SEND_ID.test(id)) continue;
        const kept = readKept(this.storage.getItem(name));
        if (kept) found.push([id, kept]);
        else this.storage.removeItem(name); // unreadable: nothing could ever send it
      }
    });
    return found.sort(([, a], [, b]) => a.at - b.at || a.n - b.n);
  }

  _try(action) {
    try {
      action();
    } catch {
      // the storage refused: the outbox lives in memory only
    }
  }
}

function readKept(text) {
  try {
    const kept = JSON.parse(text);
    const valid =
      typeof kept?.room === "string" &&
      ROOM.test(kept.room) &&
      typeof kept.text === "string" &&
      Number.isFinite(kept.at) &&
      (kept.written === null || Number.isFinite(kept.written));
    return valid ? { n: 0, ...kept } : null;
  } catch {
    return null;
  }
}

// A random UUID. crypto.randomUUID exists in secure contexts only (https:, localhost and
// 127.0.0.1), not on a page served over plain http from elsewhere; getRandomValues does.
function newId() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
  bytes[8] = (bytes[8] & 0x3f) | 0x80; // the RFC 9562 variant
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function closedError() {
  return new HubbubError("closed", "the client is closed");
}
