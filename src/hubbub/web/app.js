// The chat page at /: a name (or token), rooms, messages, members and the connection
// state, on HubbubClient. Whatever people type is put on the page with textContent only.
import { HubbubClient, defaultUrl } from "./hubbub.js";

const NAME = /^[\p{L}\p{N}_][\p{L}\p{N}_ .'-]{0,31}$/u; // the server's rule for names
const ROOM = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;
const PAGE = 50; // messages per history request
// The server refused who we are: back to the sign-in form, saying why.
const REFUSED = new Set(["unauthorized", "token_expired", "token_not_yet_valid", "invalid_name"]);
const STATE_TEXT = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};

const $ = (id) => document.getElementById(id);

let client = null;
let me = ""; // our display name ("" until known, when signed in with a token alone)
let current = null; // the room on screen
const rooms = new Map(); // name -> what the page knows of that room (roomState)

// For tests and the curious: the seqs the client delivered, per room, in delivery order.
window.hubbubDelivered = {};

// -- what survives a reload: name and rooms for good, a token only for this tab ----------

function load(key, storage = localStorage) {
  try {
    return storage.getItem(`hubbub.${key}`);
  } catch {
    return null; // storage disabled: the page still works, it just forgets
  }
}

function store(key, value, storage = localStorage) {
  try {
    if (value === null) storage.removeItem(`hubbub.${key}`);
    else storage.setItem(`hubbub.${key}`, value);
  } catch {
    // as above
  }
}

function savedRooms() {
  try {
    const names = JSON.parse(load("rooms")).filter((n) => typeof n === "string" && ROOM.test(n));
    if (names.length > 0) return names;
  } catch {
    // nothing saved, or not a list
  }
  return ["lobby"];
}

// -- signing in and out -----------------------------------------------------------------

function showSignIn() {
  $("chat").hidden = true;
  $("whoami").hidden = true;
  $("state").hidden = true;
  $("signin").hidden = false;
  $("name").focus();
}

function start(name, token) {
  me = name;
  // A guest keeps its guest token for good: a reload or a second tab is the same guest.
  const guestToken = token ? null : load("guest");
  client = new HubbubClient(defaultUrl(), { name, token, guestToken });
  client.on("state", ({ state }) => showState(state));
  client.on("joined", onJoined);
  client.on("message", onMessage);
  client.on("presence", onPresence);
  client.on("welcome", ({ name: known, guest_token: guestToken }) => {
    if (guestToken) store("guest", guestToken);
    me = known;
    showMe();
    renderMembers();
  });
  client.on("error", ({ code, message, room }) => {
    if (code === "name_taken") {
      // Somebody else goes by this name in that room: pick another one.
      signOut();
      $("signin-error").textContent = `Someone in #${room} is called that already; choose another name.`;
    } else if (!REFUSED.has(code)) notice(room ? `#${room}: ${message}` : message, room);
    else {
      signOut();
      $("signin-error").textContent = `The server said no: ${message}`;
    }
  });
  $("signin").hidden = true;
  $("chat").hidden = false;
  $("whoami").hidden = false;
  $("state").hidden = false;
  showMe();
  const names = savedRooms();
  for (const room of names) addRoom(room);
  client.connect();
  const last = load("room");
  select(rooms.has(last) ? last : names[0]);
  $("message").focus();
}

function showMe() {
  $("me").textContent = me ? `You are ${me}` : "Signed in with a token";
}

$("signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("name").value.trim();
  const token = $("token").value.trim();
  let problem = "";
  if (!name && !token) problem = "Enter a display name, or paste a token.";
  else if (name && !NAME.test(name)) problem = "That name has characters it cannot have.";
  $("signin-error").textContent = problem;
  if (problem) {
    $("name").focus();
    return;
  }
  store("name", name || null);
  store("token", token || null, sessionStorage);
  start(name, token);
});

function signOut() {
  client.close();
  client = null;
  rooms.clear(); // in memory only: the saved rooms come back at the next sign-in
  current = null;
  notice("");
  store("name", null);
  store("token", null, sessionStorage);
  $("name").value = me;
  $("signin-error").textContent = "";
  showSignIn();
}

$("signout").addEventListener("click", signOut);

// -- rooms ------------------------------------------------------------------------------

function roomState(name) {
  return {
    name,
    messages: new Map(), // seq -> message, from history and live
    pending: [], // {text, seq, item}: typed here, not delivered yet
    members: new Set(),
    unread: 0,
    loading: false,
    atStart: false,
  };
}

function addRoom(name) {
  if (rooms.has(name)) return;
  rooms.set(name, roomState(name));
  client.join(name).catch((error) => {
    if (error.code === "closed" || error.code === "left") return;
    notice(`Could not join ${name}: ${error.message}`);
    removeRoom(name);
  });
  saveRooms();
  renderRoomList();
}

function removeRoom(name) {
  client.leave(name);
  rooms.delete(name);
  saveRooms();
  if (current === name) select(rooms.keys().next().value ?? null);
  else renderRoomList();
}

function saveRooms() {
  store("rooms", JSON.stringify([...rooms.keys()]));
}

function select(name) {
  current = name;
  store("room", name);
  const room = rooms.get(name);
  if (room) room.unread = 0;
  $("room-title").textContent = room ? `#${name}` : "No room: join one";
  $("message").disabled = !room;
  $("send").disabled = !room;
  renderRoomList();
  renderMessages();
  renderMembers();
  if (room && room.messages.size === 0) loadOlder(room);
}

function renderRoomList() {
  const items = [...rooms.values()].map((room) => {
    const open = el("button", "open", `#${room.name}`);
    open.type = "button";
    if (room.name === current) open.setAttribute("aria-current", "true");
    if (room.unread > 0) open.append(" ", el("span", "unread", String(room.unread)));
    open.addEventListener("click", () => {
      select(room.name);
      $("message").focus();
    });
    const leave = el("button", "leave", "×");
    leave.type = "button";
    leave.title = `Leave ${room.name}`;
    leave.setAttribute("aria-label", `Leave ${room.name}`);
    leave.addEventListener("click", () => {
      removeRoom(room.name);
      $("room-name").focus();
    });
    const item = el("li");
    item.append(open, leave);
    return item;
  });
  $("room-list").replaceChildren(...items);
}

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("room-name");
  const name = input.value.trim();
  if (!ROOM.test(name)) {
    input.setCustomValidity("1 to 64 letters, digits, _ . : or -, starting with a letter or digit.");
    input.reportValidity();
    return;
  }
  input.value = "";
  addRoom(name);
  select(name);
  $("message").focus();
});
$("room-name").addEventListener("input", (event) => event.target.setCustomValidity(""));

// -- what the client reports ------------------------------------------------------------

function showState(state) {
  document.body.dataset.state = state;
  $("state").textContent = STATE_TEXT[state];
}

function onJoined({ room: name, members, reset }) {
  const room = rooms.get(name);
  if (!room) return;
  room.members = new Set(members);
  if (noticeRoom === name) notice(""); // whatever held the join up is over
  if (reset) {
    // The server's history started over: what we show belongs to a room that is gone.
    room.messages.clear();
    room.atStart = false;
    if (name === current) select(name);
  }
  if (name === current) renderMembers();
}

function onMessage(message) {
  (window.hubbubDelivered[message.room] ??= []).push(message.seq);
  const room = rooms.get(message.room);
  if (!room) return;
  addMessages(room, [message]);
  settle(room);
  if (room.name !== current) {
    room.unread += 1;
    renderRoomList();
  }
}

function onPresence({ room: name, joined, left }) {
  const room = rooms.get(name);
  if (!room) return;
  for (const who of joined) room.members.add(who);
  for (const who of left) room.members.delete(who);
  if (name === current) renderMembers();
}

// -- messages ---------------------------------------------------------------------------

function renderMessages() {
  const room = rooms.get(current);
  const seqs = room ? [...room.messages.keys()].sort((a, b) => a - b) : [];
  $("messages").replaceChildren(
    ...seqs.map((seq) => messageItem(room.messages.get(seq))),
    ...(room ? room.pending.map((entry) => entry.item) : []),
  );
  showStart(room);
  const scroller = $("scroller");
  scroller.scrollTop = scroller.scrollHeight;
}

function addMessages(room, messages) {
  const fresh = messages.filter((message) => !room.messages.has(message.seq));
  for (const message of fresh) room.messages.set(message.seq, message);
  if (room.name !== current || fresh.length === 0) return;
  const scroller = $("scroller");
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  const atBottom = fromBottom - scroller.clientHeight < 40;
  const list = $("messages");
  const firstSeq = Number(list.querySelector(".message:not(.pending)")?.dataset.seq ?? Infinity);
  for (const message of fresh) place(messageItem(message), message.seq);
  if (atBottom) scroller.scrollTop = scroller.scrollHeight;
  else if (fresh[0].seq < firstSeq) scroller.scrollTop = scroller.scrollHeight - fromBottom;
}

// Newest at the bottom, in seq order, below them what is still pending.
function place(item, seq) {
  const list = $("messages");
  let next = list.querySelector(".pending");
  let node = next ? next.previousElementSibling : list.lastElementChild;
  while (node && Number(node.dataset.seq) > seq) {
    next = node;
    node = node.previousElementSibling;
  }
  list.insertBefore(item, next);
}

function messageItem(message) {
  const item = el("li", message.from === me ? "message own" : "message");
  item.dataset.seq = String(message.seq);
  const meta = el("p", "meta");
  meta.append(el("span", "author", message.from), " ", timeOf(message.ts));
  item.append(meta, el("p", "text", message.text));
  return item;
}

function timeOf(ts) {
  const when = new Date(ts);
  const today = when.toDateString() === new Date().toDateString();
  const text = today
    ? when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : when.toLocaleString([], { dateStyle: "short", timeStyle: "short" });
  const time = el("time", "", text);
  time.dateTime = ts;
  time.title = when.toLocaleString();
  return time;
}

async function loadOlder(room) {
  if (room.loading || room.atStart) return;
  room.loading = true;
  showStart(room);
  const seqs = [...room.messages.keys()];
  const before = seqs.length > 0 ? Math.min(...seqs) : undefined;
  try {
    const page = await client.history(room.name, { before, limit: PAGE });
    // A page cut short by its byte budget is not the start: only an empty one, or seq 1.
    if (page.length === 0 || page[0].seq <= 1) room.atStart = true;
    addMessages(room, page);
  } catch (error) {
    if (error.code !== "closed" && error.code !== "left") notice(error.message);
  } finally {
    room.loading = false;
    if (room.name === current) showStart(room);
  }
}

function showStart(room) {
  $("older").hidden = !room || room.atStart;
  $("older").disabled = Boolean(room?.loading);
  $("start").hidden = !room?.atStart;
}

$("older").addEventListener("click", () => loadOlder(rooms.get(current)));
$("scroller").addEventListener("scroll", (event) => {
  if (event.target.scrollTop < 40 && rooms.has(current)) loadOlder(rooms.get(current));
});

// -- sending: shown as pending at once, replaced by the delivered message ---------------

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("message");
  const room = rooms.get(current);
  if (!room || !input.value.trim()) return;
  notice("");
  post(room, input.value);
  input.value = "";
});

function post(room, text) {
  const entry = { text, seq: null, item: pendingItem(text) };
  room.pending.push(entry);
  if (room.name === current) {
    $("messages").append(entry.item);
    $("scroller").scrollTop = $("scroller").scrollHeight;
  }
  client.send(room.name, text).then(
    (seq) => {
      entry.seq = seq;
      settle(room);
    },
    (error) => failed(room, entry, error),
  );
}

function pendingItem(text) {
  const item = el("li", "message own pending");
  const meta = el("p", "meta");
  meta.append(el("span", "author", me || "you"), " ", el("span", "status", "pending"));
  item.append(meta, el("p", "text", text));
  return item;
}

// A pending message gives way once both its ack and the message itself are in.
function settle(room) {
  room.pending = room.pending.filter((entry) => {
    const message = entry.seq !== null && room.messages.get(entry.seq);
    if (!message) return true;
    entry.item.remove();
    return false;
  });
}

function failed(room, entry, error) {
  if (error.code === "closed" || error.code === "left") return;
  entry.item.classList.add("failed");
  const status = entry.item.querySelector(".status");
  status.textContent = `not sent: ${error.message}`;
  const retry = el("button", "link", "Retry");
  retry.type = "button";
  retry.addEventListener("click", () => {
    room.pending = room.pending.filter((other) => other !== entry);
    entry.item.remove();
    post(room, entry.text);
    $("message").focus();
  });
  status.after(" ", retry);
}

// -- members and notices ----------------------------------------------------------------

function renderMembers() {
  const room = rooms.get(current);
  const names = room ? [...room.members].sort((a, b) => a.localeCompare(b)) : [];
  $("members-title").textContent = `Members (${names.length})`;
  const items = names.map((name) => {
    const item = el("li", "member");
    item.append(el("span", "name", name));
    if (name === me) item.append(" ", el("span", "you", "(you)"));
    return item;
  });
  $("member-list").replaceChildren(...items);
}

let noticeRoom = null; // the room the notice is about, if any

function notice(text, room = null) {
  $("notice").textContent = text;
  noticeRoom = room;
}

function el(tag, className = "", text = undefined) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- start ------------------------------------------------------------------------------

const savedName = load("name") ?? "";
const savedToken = load("token", sessionStorage) ?? "";
if (savedName || savedToken) start(savedName, savedToken);
else showSignIn();
