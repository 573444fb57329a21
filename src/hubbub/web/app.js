// The chat page at /: a name (or token), rooms, messages, members and the connection
// state, on HubbubClient. Whatever people type is put on the page with textContent (or as
// text nodes) only; links are <a> elements built with DOM calls, and only http(s) ones.
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
const PALETTE = ["👍", "❤️", "😂", "🎉", "😮", "😢"]; // fully-qualified, as the server keeps them
const TYPING_EVERY = 2500; // ms between our typing notices (the server passes one per 2 s)
// Refusals that only say the room is gone (we left it, or a moderator took us out).
const GONE = new Set(["closed", "left", "kicked", "banned"]);
const ROLES = ["member", "moderator", "owner"];
const LINK = /\bhttps?:\/\/[^\s<>"]+/giu;
const ANNOUNCE_AT_ONCE = 3; // more live messages than this in a burst: one summary instead

const $ = (id) => document.getElementById(id);

let client = null;
let me = ""; // our display name ("" until known, when signed in with a token alone)
let myUser = null; // our user id, from welcome: what tells our own messages
let current = null; // the room on screen
const rooms = new Map(); // name -> what the page knows of that room (roomState)
const people = new Map(); // user id -> display name, from everything the server said
let composing = null; // {kind: "reply" | "edit", room, seq, draft}: what Enter will do
let palette = null; // {room, seq}: the message whose emoji palette is open
let typingSent = { room: null, at: 0 }; // our last typing notice
let joins = 0; // counts answered joins, to tell which rooms a room list already knew of
let polls = 0; // counts room lists asked for
// Rooms that left this tab's list -> the count of lists asked by then: those answers may
// still hold the room and must not bring it back (Infinity: none may, until the server
// says the membership changed).
const dropped = new Map();
let memberMenu = null; // {room, user, arming}: the member whose moderation menu is open
let announcing = { timer: null, queue: [] };

// For tests and the curious: the seqs the client delivered, per room, in delivery order
// (messages only), and every event of the rooms' seq streams as [type, seq].
window.hubbubDelivered = {};
window.hubbubEvents = {};

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
  $("drawers").hidden = true;
  $("signin").hidden = false;
  updateTitle();
  $("name").focus();
}

function start(name, token) {
  me = name;
  myUser = null;
  // A guest keeps its guest token for good: a reload or a second tab is the same guest.
  const guestToken = token ? null : load("guest");
  client = new HubbubClient(defaultUrl(), { name, token, guestToken, outbox: outboxKey(token) });
  client.on("state", ({ state }) => {
    showState(state);
    if (state === "connected") refreshRooms();
  });
  client.on("joined", onJoined);
  client.on("message", onMessage);
  client.on("edit", onChange);
  client.on("delete", onChange);
  client.on("reaction", onChange);
  client.on("moderation", onModeration);
  client.on("presence", onPresence);
  client.on("read", onRead);
  client.on("receipt", onReceipt);
  client.on("typing", onTyping);
  client.on("left", onRemoved);
  client.on("membership", onMembership);
  client.on("dm", ({ room, users }) => {
    openedDm(room, users, false);
    refreshRooms();
  });
  client.on("welcome", ({ name: known, user, guest_token: guestToken }) => {
    if (guestToken) store("guest", guestToken);
    const changed = (user ?? null) !== myUser;
    me = known;
    myUser = user ?? null;
    if (myUser) people.set(myUser, known);
    showMe();
    renderMembers();
    if (changed && current) renderMessages(); // which messages are ours changed
  });
  client.on("error", ({ code, message, room }) => {
    if (code === "banned") return; // said by the join's own refusal (addRoom)
    if (code === "name_taken") {
      // Somebody else goes by this name in that room: pick another one.
      signOut();
      $("signin-error").textContent = `Someone in #${room} is called that already; choose another name.`;
    } else if (!REFUSED.has(code)) notice(room ? `${label(room)}: ${message}` : message, room);
    else {
      signOut();
      $("signin-error").textContent = `The server said no: ${message}`;
    }
  });
  $("signin").hidden = true;
  $("chat").hidden = false;
  $("whoami").hidden = false;
  $("state").hidden = false;
  $("drawers").hidden = false;
  showMe();
  const names = savedRooms();
  for (const room of names) addRoom(room);
  client.connect(); // once connected (every time), the room list is asked for
  const last = load("room");
  select(rooms.has(last) ? last : names[0]);
  $("message").focus();
}

// Messages not acknowledged yet survive a reload, kept per user and shared by the user's
// tabs: a guest is this browser's one guest (its guest token is kept for good), a token's
// user is its `sub`. (Read, not verified: the server does that.)
function outboxKey(token) {
  if (!token) return "hubbub.outbox.guest";
  try {
    const payload = token.split(".")[1].replaceAll("-", "+").replaceAll("_", "/");
    const bytes = Uint8Array.from(atob(payload), (char) => char.charCodeAt(0));
    const { sub } = JSON.parse(new TextDecoder().decode(bytes));
    // encodeURIComponent leaves no "/" in the key: one user's key never begins another's.
    return typeof sub === "string" ? `hubbub.outbox.user.${encodeURIComponent(sub)}` : null;
  } catch {
    return null; // not a JWT we can read: unsent messages live in this page only
  }
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
  for (const room of rooms.values()) clearTyping(room);
  rooms.clear(); // in memory only: the saved rooms come back at the next sign-in
  dropped.clear();
  current = null;
  memberMenu = null;
  composing = null;
  palette = null;
  notice("");
  store("name", null);
  store("token", null, sessionStorage);
  $("name").value = me;
  $("signin-error").textContent = "";
  closeDrawers();
  showSignIn();
}

$("signout").addEventListener("click", signOut);

// -- rooms ------------------------------------------------------------------------------

function roomState(name) {
  return {
    name,
    messages: new Map(), // seq -> message (in its current state), from history and live
    pending: [], // {text, replyTo, seq, item}: typed here, not delivered yet
    // user id (or "~name" when the server did not say) -> {name, user, role, muted}
    members: new Map(),
    typing: new Map(), // user id -> {name, timer}
    notes: new Map(), // seq -> moderation event, shown as a line among the messages
    receipts: new Map(), // user id -> {name, seq}: how far each other member has read
    dm: null, // [{user, name}] of a direct-message room, everyone in it
    role: "member", // ours
    banned: false, // a moderator banned us (the `left` that follows is no mere kick)
    joinedAs: 0, // the count of joins when this room's last one was answered (0: never)
    // Unread: the server's count up to baseSeq, plus what came live since, not read.
    readSeq: 0,
    baseSeq: 0,
    baseUnread: 0,
    counted: new Set(), // seqs of live messages counted unread, above baseSeq
    lineAfter: null, // the "new messages" line goes after this seq
    orphans: [], // changes of messages not held, that came while a history page was asked
    paged: false, // a history page was asked for (live messages alone are not the room)
    loading: false,
    atStart: false,
  };
}

function unread(room) {
  return room.baseUnread + room.counted.size;
}

function label(name) {
  const room = rooms.get(name);
  if (!name.startsWith("dm:")) return `#${name}`;
  const others = (room?.dm ?? []).filter((p) => p.user !== myUser).map((p) => p.name);
  return others.length > 0 ? `@${others.join(", ")}` : "Direct message";
}

function addRoom(name) {
  if (rooms.has(name)) return;
  const room = roomState(name);
  rooms.set(name, room);
  client.join(name).catch((error) => {
    if (error.code === "banned") {
      dropped.set(name, Infinity); // until an unban says otherwise
      removedFrom(name, "banned");
      return;
    }
    if (GONE.has(error.code)) return;
    notice(`Could not join ${label(name)}: ${error.message}`);
    removeRoom(name);
  });
  // What was typed before a reload (here or in another tab) and not acknowledged yet.
  for (const unsent of client.pending(name)) {
    showPending(room, unsent.text, unsent.replyTo, unsent.sent);
  }
  saveRooms();
  renderRoomList();
}

// `forget`: the user left it (on every device), rather than the page dropping it.
function removeRoom(name, { forget = false } = {}) {
  const room = rooms.get(name);
  if (!room) return;
  dropped.set(name, Math.max(dropped.get(name) ?? 0, polls)); // those answers may list it
  client.leave(name, { forget }); // (nothing is sent for a room the client forgot already)
  clearTyping(room);
  rooms.delete(name);
  saveRooms();
  if (current === name) select(rooms.keys().next().value ?? null);
  else renderRoomList();
}

function saveRooms() {
  store("rooms", JSON.stringify([...rooms.keys()]));
}

function select(name) {
  if (current !== name) {
    stopTyping();
    cancelComposing(false);
    palette = null;
    const before = rooms.get(current);
    if (before) before.lineAfter = null; // the line shows what was new when one came in
  }
  current = name;
  store("room", name);
  const room = rooms.get(name);
  if (room && unread(room) > 0 && room.lineAfter === null) room.lineAfter = room.readSeq;
  $("room-title").textContent = room ? label(name) : "No room: join one";
  $("message").disabled = !room;
  $("send").disabled = !room;
  renderMessages();
  renderMembers();
  renderTyping();
  if (room && !room.paged) loadOlder(room);
  markRead(room);
  renderRoomList();
}

function renderRoomList() {
  const items = [...rooms.values()].map((room) => {
    const name = label(room.name);
    const open = el("button", "open", name);
    open.type = "button";
    if (room.name === current) open.setAttribute("aria-current", "true");
    const count = unread(room);
    if (count > 0) {
      open.append(" ", el("span", "unread", count >= 1000 ? "999+" : String(count)));
      open.setAttribute("aria-label", `${name}, ${count} unread`);
    }
    open.addEventListener("click", () => {
      select(room.name);
      closeDrawers();
      $("message").focus();
    });
    const leave = el("button", "leave", "×");
    leave.type = "button";
    leave.title = `Leave ${name}`;
    leave.setAttribute("aria-label", `Leave ${name}`);
    leave.addEventListener("click", () => {
      removeRoom(room.name, { forget: true });
      $("room-name").focus();
    });
    const item = el("li");
    if (room.dm) item.className = "dm";
    item.append(open, leave);
    return item;
  });
  $("room-list").replaceChildren(...items);
  if (current && rooms.has(current)) $("room-title").textContent = label(current);
  updateTitle();
}

// The tab's title counts what is unread in every room, like "(3) Hubbub".
function updateTitle() {
  let total = 0;
  let elsewhere = 0;
  for (const room of rooms.values()) {
    total += unread(room);
    if (room.name !== current) elsewhere += unread(room);
  }
  document.title = total > 0 ? `(${total}) Hubbub` : "Hubbub";
  const badge = $("rooms-unread");
  badge.hidden = elsewhere === 0;
  badge.textContent = String(elsewhere);
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
  dropped.delete(name); // asked for again, by hand
  addRoom(name);
  select(name);
  closeDrawers();
  $("message").focus();
});
$("room-name").addEventListener("input", (event) => event.target.setCustomValidity(""));

// The user's rooms as the server keeps them: the same on every device and tab. Asked for
// on every connection and whenever the server says the list changed (membership, dm):
// rooms joined elsewhere (and direct messages others opened) come in; rooms left go.
function refreshRooms() {
  if (!client || client.state !== "connected") return;
  const known = joins; // rooms joined by now are in the answer, unless left elsewhere
  const poll = ++polls;
  client.listRooms().then(
    (list) => applyRoomList(list, known, poll),
    () => {}, // closed, or refused for now: the next one will do
  );
}

function applyRoomList(list, known, poll) {
  if (!client) return;
  const listed = new Set();
  for (const summary of list) {
    listed.add(summary.room);
    if (dropped.has(summary.room)) {
      if (dropped.get(summary.room) >= poll) continue; // asked before it left the list
      dropped.delete(summary.room); // joined again since
    }
    if (!rooms.has(summary.room)) addRoom(summary.room);
    const room = rooms.get(summary.room);
    if (summary.dm) {
      room.dm = summary.dm;
      for (const person of summary.dm) people.set(person.user, person.name);
    }
    room.role = summary.role ?? "member";
    if (summary.read >= room.readSeq) {
      // What the server counted is what we had not read: take it, and what came since.
      room.readSeq = summary.read;
      room.baseSeq = summary.seq;
      room.baseUnread = summary.unread;
      for (const seq of room.counted) if (seq <= summary.seq) room.counted.delete(seq);
    }
    if (room.name === current && unread(room) > 0 && room.lineAfter === null) {
      room.lineAfter = room.readSeq;
      renderMessages();
    }
  }
  for (const room of [...rooms.values()]) {
    if (!listed.has(room.name) && room.joinedAs > 0 && room.joinedAs <= known) {
      removeRoom(room.name); // left on another device
    }
  }
  markRead(rooms.get(current));
  renderRoomList();
  renderMembers(); // our role may have changed
}

// The user became a member of a room, or stopped being one, on some device: the list
// changed. Gone: it leaves this tab too (no forget of our own: it is ended already).
function onMembership({ room: name, member, reason }) {
  if (!client) return;
  // Lists asked before this may be from before the change: none of them decides the room.
  if (!member || dropped.has(name)) dropped.set(name, polls);
  if (!member && (reason === "kicked" || reason === "banned")) removedFrom(name, reason);
  else if (!member) removeRoom(name);
  refreshRooms();
}

// -- read state -------------------------------------------------------------------------

function reading() {
  return document.visibilityState === "visible" && document.hasFocus();
}

// What is on screen in a focused tab has been read: tell the server (and so every tab).
function markRead(room) {
  if (!room || room.name !== current || !client || !reading()) return;
  const last = client.lastSeq(room.name);
  if (last === null) return; // not joined yet: marked once it is
  if (last > room.readSeq) {
    room.readSeq = last;
    client.read(room.name, last);
  }
  // Cleared here only once we hold all the server counted (a backlog may be on its way).
  if (unread(room) > 0 && last >= room.baseSeq) {
    room.baseUnread = 0;
    room.baseSeq = last;
    room.counted.clear();
    renderRoomList();
  }
}

function onRead({ room: name, seq, unread: count }) {
  const room = rooms.get(name);
  if (!room || seq < room.readSeq) return;
  room.readSeq = seq;
  room.baseUnread = count;
  room.baseSeq = Math.max(room.baseSeq, client.lastSeq(name) ?? seq, seq);
  room.counted.clear();
  renderRoomList();
}

// Another member has read up to `seq` (direct messages; rooms with receipts on).
function onReceipt({ room: name, user, name: who, seq }) {
  const room = rooms.get(name);
  if (!room || !user || user === myUser || seq <= (room.receipts.get(user)?.seq ?? -1)) return;
  room.receipts.set(user, { name: who ?? people.get(user) ?? user, seq });
  updateSeen(room);
}

// Under the last of our messages each other member has read: who has. Quiet: a line in
// the message, not read out as it changes.
function seenMarks(room) {
  const ours = [...room.messages.values()]
    .filter((message) => own(message) && !message.deleted)
    .map((message) => message.seq)
    .sort((a, b) => a - b);
  const readers = new Map(); // seq -> names
  for (const [user, { name, seq }] of room.receipts) {
    if (user === myUser) continue;
    let last = null;
    for (const mine of ours) {
      if (mine > seq) break;
      last = mine;
    }
    if (last !== null) readers.set(last, [...(readers.get(last) ?? []), name]);
  }
  const twoOfUs = room.dm?.length === 2;
  const marks = new Map();
  for (const [seq, names] of readers) {
    names.sort((a, b) => a.localeCompare(b));
    marks.set(seq, twoOfUs ? "Seen" : `Seen by ${names.join(", ")}`);
  }
  return marks;
}

// Put the "Seen" lines where they belong now, changing only those that moved.
function updateSeen(room) {
  if (room.name !== current) return;
  const list = $("messages");
  const lines = list.querySelectorAll("li.message > .seen");
  if (room.receipts.size === 0 && lines.length === 0) return;
  const scroller = $("scroller");
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
  const marks = seenMarks(room);
  for (const line of lines) {
    if (marks.get(Number(line.parentElement.dataset.seq)) !== line.textContent) line.remove();
  }
  for (const [seq, text] of marks) {
    const item = list.querySelector(`li.message:not(.pending)[data-seq="${seq}"]`);
    if (!item || item.querySelector(":scope > .seen")) continue;
    item.append(el("p", "seen", text));
  }
  if (atBottom) scroller.scrollTop = scroller.scrollHeight;
}

// A tab in the background reads nothing; once the user comes back to it, what it shows is.
window.addEventListener("focus", () => markRead(rooms.get(current)));
document.addEventListener("visibilitychange", () => markRead(rooms.get(current)));

// -- what the client reports ------------------------------------------------------------

function showState(state) {
  document.body.dataset.state = state;
  $("state").textContent = STATE_TEXT[state];
}

function onJoined({ room: name, members, people: who, reset }) {
  const room = rooms.get(name);
  if (!room) return;
  room.joinedAs = ++joins;
  room.members = new Map();
  if (who) for (const person of who) addMember(room, person.name, person.user, person);
  else for (const member of members) addMember(room, member, null);
  if (noticeRoom === name) notice(""); // whatever held the join up is over
  if (reset) {
    // The server's history started over: what we show belongs to a room that is gone.
    room.messages.clear();
    room.notes.clear();
    room.receipts.clear();
    room.atStart = false;
    room.paged = false;
    room.readSeq = room.baseSeq = room.baseUnread = 0;
    room.counted.clear();
    if (name === current) select(name);
  }
  if (name === current) {
    renderMembers();
    markRead(room);
  }
}

function record(event) {
  (window.hubbubEvents[event.room] ??= []).push([event.type, event.seq]);
}

// A moderator's action: what it changes of the members (and of us), and a quiet line
// among the messages saying who did what.
function onModeration(event) {
  record(event);
  const room = rooms.get(event.room);
  if (!room) return;
  if (event.user) people.set(event.user, event.from);
  const member = room.members.get(event.member);
  if (event.action === "mute" || event.action === "unmute") {
    if (member) member.muted = event.action === "mute";
  } else if (event.action === "role" && ROLES.includes(event.role)) {
    if (member) member.role = event.role;
    if (event.member === myUser) room.role = event.role;
  } else if (event.action === "ban" && event.member === myUser) {
    room.banned = true;
  }
  room.notes.set(event.seq, event);
  if (room.name === current) {
    const scroller = $("scroller");
    const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
    place(noteItem(event), event.seq);
    if (atBottom) scroller.scrollTop = scroller.scrollHeight;
    renderMembers();
  }
}

const DONE = { kick: "kicked", ban: "banned", unban: "unbanned", mute: "muted", unmute: "unmuted" };
const AS_ROLE = { member: "a member", moderator: "a moderator", owner: "an owner" };

function noteText(event) {
  const who = event.user && event.user === myUser ? "You" : event.from;
  const whom = event.member === myUser ? "you" : (people.get(event.member) ?? event.member);
  let text = `${who} ${DONE[event.action] ?? event.action} ${whom}`;
  if (event.action === "role") text = `${who} made ${whom} ${AS_ROLE[event.role] ?? event.role}`;
  return event.reason ? `${text}: ${event.reason}` : text;
}

function noteItem(event) {
  const item = el("li", "system");
  item.dataset.seq = String(event.seq);
  item.append(el("span", "", noteText(event)), " ", timeOf(event.ts));
  return item;
}

function own(message) {
  return message.user ? message.user === myUser : message.from === me;
}

function onMessage(message) {
  record(message);
  (window.hubbubDelivered[message.room] ??= []).push(message.seq);
  const room = rooms.get(message.room);
  if (!room) return;
  if (message.user) people.set(message.user, message.from);
  stoppedTyping(room, message.user);
  const mine = own(message);
  const shown = room.name === current;
  if (!mine && !message.deleted && message.seq > Math.max(room.readSeq, room.baseSeq)) {
    if (!(shown && reading())) {
      room.counted.add(message.seq);
      if (shown && room.lineAfter === null) room.lineAfter = room.readSeq;
    }
  }
  addMessages(room, [message]);
  settle(room);
  if (shown) {
    if (!mine) announce(message);
    markRead(room);
  }
  renderRoomList();
}

// An edit, delete or reaction: a "set" on the message it targets, so applying it again
// changes nothing. Changes of a message deleted already, or not held, are ignored (a
// history page brings messages in their current state).
function onChange(event) {
  record(event);
  const room = rooms.get(event.room);
  if (!room) return;
  if (!room.messages.has(event.target)) {
    if (room.loading) room.orphans.push(event); // it may be in the page on its way
    return;
  }
  if (event.type === "delete" && room.counted.delete(event.target)) renderRoomList();
  if (apply(room.messages.get(event.target), event)) refresh(room, event.target);
}

function apply(message, event) {
  if (message.deleted) return false;
  if (event.type === "delete" || (event.type === "edit" && event.deleted)) {
    message.deleted = true;
    message.text = "";
    delete message.data;
    delete message.reactions;
    delete message.edited;
  } else if (event.type === "edit") {
    message.text = event.text;
    message.edited = event.ts;
    if (event.data !== undefined) message.data = event.data;
  } else if (event.type === "reaction") {
    const reactions = (message.reactions ??= {});
    const users = (reactions[event.emoji] ??= []);
    const at = users.indexOf(event.user);
    if (event.added && at < 0) users.push(event.user);
    if (!event.added && at >= 0) users.splice(at, 1);
    if (users.length === 0) delete reactions[event.emoji];
    people.set(event.user, event.from);
  }
  return true;
}

function onPresence({ room: name, joined, left, joined_people: came, left_people: went }) {
  const room = rooms.get(name);
  if (!room) return;
  if (came) for (const person of came) addMember(room, person.name, person.user, person);
  else for (const who of joined) addMember(room, who, null);
  if (went) for (const person of went) removeMember(room, person.name, person.user);
  else for (const who of left) removeMember(room, who, null);
  if (name === current) renderMembers();
}

// `role` (when not "member") and `muted`: as the server knew them when it said who came.
function addMember(room, name, user, { role = "member", muted = false } = {}) {
  if (user) {
    people.set(user, name);
    room.members.delete(`~${name}`);
  }
  room.members.set(user ?? `~${name}`, { name, user, role, muted: muted === true });
}

function removeMember(room, name, user) {
  if (user) {
    room.members.delete(user);
    stoppedTyping(room, user);
  } else {
    for (const [key, member] of room.members) {
      if (member.name !== name) continue;
      room.members.delete(key);
      stoppedTyping(room, member.user);
    }
  }
}

// The server took this connection out of a room (`left` with a reason: a kick, or a ban).
function onRemoved({ room: name }) {
  const room = rooms.get(name);
  if (!room) return;
  // The membership's own news (membership) says when lists may bring it back.
  dropped.set(name, Infinity);
  removedFrom(name, room.banned ? "banned" : "kicked");
}

// A moderator took us out of `name`: say so, and drop it (not rejoined by itself, nor
// after a reconnection, nor after a reload). A ban said after a kick's notice replaces it.
function removedFrom(name, reason) {
  const room = rooms.get(name);
  if (!room && !(reason === "banned" && noticeRoom === name)) return;
  const what = room ? label(name) : noticeLabel;
  if (room) removeRoom(name);
  notice(
    reason === "banned"
      ? `You are banned from ${what}.`
      : `You were removed from ${what} by a moderator.`,
    name,
    what,
  );
}

// -- messages ---------------------------------------------------------------------------

function renderMessages() {
  const room = rooms.get(current);
  const seqs = room ? [...room.messages.keys(), ...room.notes.keys()].sort((a, b) => a - b) : [];
  const items = seqs.map((seq) => {
    const message = room.messages.get(seq);
    return message ? messageItem(room, message) : noteItem(room.notes.get(seq));
  });
  if (room && room.lineAfter !== null) {
    const at = seqs.findIndex((seq) => seq > room.lineAfter);
    if (at >= 0) items.splice(at, 0, newLine(room.lineAfter));
  }
  $("messages").replaceChildren(...items, ...(room ? room.pending.map((entry) => entry.item) : []));
  if (room) updateSeen(room);
  showStart(room);
  const scroller = $("scroller");
  scroller.scrollTop = scroller.scrollHeight;
}

// The "new messages" line: placed by its seq like a message, just after `after`.
function newLine(after) {
  const item = el("li", "new-line");
  item.dataset.seq = String(after + 0.5);
  item.append(el("span", "", "New messages"));
  return item;
}

function addMessages(room, messages) {
  const fresh = messages.filter((message) => !room.messages.has(message.seq));
  for (const message of fresh) {
    room.messages.set(message.seq, message);
    if (message.user) people.set(message.user, message.from);
  }
  if (room.name !== current || fresh.length === 0) return;
  const scroller = $("scroller");
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  const atBottom = fromBottom - scroller.clientHeight < 40;
  const list = $("messages");
  const firstSeq = Number(list.querySelector(".message:not(.pending)")?.dataset.seq ?? Infinity);
  if (room.lineAfter !== null && !list.querySelector(".new-line")) {
    if (fresh.some((message) => message.seq > room.lineAfter)) {
      place(newLine(room.lineAfter), room.lineAfter + 0.5);
    }
  }
  for (const message of fresh) place(messageItem(room, message), message.seq);
  // Replies shown before what they quote came in: now they can quote it.
  for (const message of fresh) {
    for (const reply of list.querySelectorAll(`li.message[data-reply-to="${message.seq}"]`)) {
      reply.replaceWith(messageItem(room, room.messages.get(Number(reply.dataset.seq))));
    }
  }
  updateSeen(room);
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

// Show message `seq` again as it is now (and the replies quoting it), where it is.
function refresh(room, seq) {
  if (room.name !== current) return;
  const list = $("messages");
  const scroller = $("scroller");
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
  const shown = list.querySelector(`li.message[data-seq="${seq}"]`);
  if (shown) swap(shown, messageItem(room, room.messages.get(seq)));
  for (const reply of list.querySelectorAll(`li.message[data-reply-to="${seq}"]`)) {
    swap(reply, messageItem(room, room.messages.get(Number(reply.dataset.seq))));
  }
  updateSeen(room);
  if (atBottom) scroller.scrollTop = scroller.scrollHeight;
}

// Replace a message's item, keeping the keyboard focus on the same control if it is there.
function swap(old, fresh) {
  const focused = old.contains(document.activeElement) ? document.activeElement : null;
  old.replaceWith(fresh);
  if (!focused) return;
  const action = focused.dataset.action;
  const same = action && fresh.querySelector(`[data-action="${CSS.escape(action)}"]`);
  (same || fresh.querySelector("button") || $("message")).focus();
}

function messageItem(room, message) {
  const mine = own(message);
  const item = el("li", "message");
  item.classList.toggle("own", mine);
  item.classList.toggle("deleted", Boolean(message.deleted));
  item.dataset.seq = String(message.seq);
  if (message.reply_to !== undefined) {
    item.dataset.replyTo = String(message.reply_to);
    item.append(quote(room, message.reply_to));
  }
  const meta = el("p", "meta");
  meta.append(el("span", "author", message.from), " ", timeOf(message.ts));
  if (message.edited && !message.deleted) {
    const edited = el("span", "edited", "(edited)");
    edited.title = `edited ${new Date(message.edited).toLocaleString()}`;
    meta.append(" ", edited);
  }
  item.append(meta);
  if (message.deleted) {
    item.append(el("p", "text tombstone", "message deleted"));
    return item;
  }
  item.append(textOf(message.text));
  const reactions = reactionBar(room, message);
  if (reactions) item.append(reactions);
  item.append(actionBar(room, message, mine));
  return item;
}

// What a reply quotes: who wrote it and how it began.
function quote(room, seq) {
  const original = room.messages.get(seq);
  const box = el("p", "quote");
  box.append(el("span", "visually-hidden", "In reply to "));
  if (!original) {
    box.append(el("span", "quote-text", "an earlier message"));
  } else if (original.deleted) {
    box.append(el("span", "quote-text", "a deleted message"));
  } else {
    const text = original.text.length > 100 ? `${original.text.slice(0, 100)}…` : original.text;
    box.append(el("span", "quote-author", original.from), ": ", el("span", "quote-text", text));
  }
  return box;
}

// A message's text, with its http(s) links as links; everything else as text nodes.
function textOf(text) {
  const paragraph = el("p", "text");
  let at = 0;
  for (const match of text.matchAll(LINK)) {
    let url = match[0].replace(/[.,;:!?'’”»]+$/u, "");
    // A closing bracket belongs to the link only if the link opened one.
    while (/[)\]}]$/.test(url) && count(url, url.at(-1)) > count(url, OPENING[url.at(-1)])) {
      url = url.slice(0, -1);
    }
    const href = safeHref(url);
    if (!href) continue;
    paragraph.append(text.slice(at, match.index));
    const link = document.createElement("a");
    link.href = href;
    link.textContent = url;
    link.rel = "noopener noreferrer";
    link.target = "_blank";
    paragraph.append(link);
    at = match.index + url.length;
  }
  paragraph.append(text.slice(at));
  return paragraph;
}

const OPENING = { ")": "(", "]": "[", "}": "{" };

function count(text, char) {
  return text.split(char).length - 1;
}

function safeHref(candidate) {
  try {
    const url = new URL(candidate);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

function reactionBar(room, message) {
  const entries = Object.entries(message.reactions ?? {}).filter(([, users]) => users.length > 0);
  if (entries.length === 0) return null;
  const bar = el("div", "reactions");
  for (const [emoji, users] of entries) {
    const mine = users.includes(myUser);
    const button = el("button", "reaction");
    button.type = "button";
    button.dataset.action = `reaction:${emoji}`;
    button.append(el("span", "emoji", emoji), " ", el("span", "count", String(users.length)));
    button.setAttribute("aria-pressed", String(mine));
    const names = users.map((user) => (user === myUser ? "you" : (people.get(user) ?? user)));
    button.title = `${names.join(", ")} reacted with ${emoji}`;
    button.setAttribute("aria-label", `${emoji} ${users.length}: ${names.join(", ")}`);
    button.addEventListener("click", () => react(room, message.seq, emoji));
    bar.append(button);
  }
  return bar;
}

function actionBar(room, message, mine) {
  const bar = el("div", "actions");
  bar.append(action("reply", "Reply", () => startComposing("reply", room, message.seq)));
  const open = palette?.room === room.name && palette.seq === message.seq;
  const reactButton = action("react", "React", () => togglePalette(room, message.seq));
  reactButton.setAttribute("aria-expanded", String(open));
  bar.append(reactButton);
  if (mine) bar.append(action("edit", "Edit", () => startComposing("edit", room, message.seq)));
  if (mine || room.role !== "member") {
    const remove = action("delete", "Delete", () => {
      if (remove.dataset.armed !== "yes") {
        // Asked twice rather than with confirm(): nothing blocks the page.
        remove.dataset.armed = "yes";
        remove.textContent = "Really delete?";
        return;
      }
      client.delete(room.name, message.seq).catch((error) => {
        // Sent again after a reconnection, a delete that was done is refused: it is done.
        if (error.code !== "message_deleted") failedChange("Not deleted", error);
      });
    });
    remove.addEventListener("blur", () => {
      remove.dataset.armed = "";
      remove.textContent = "Delete";
    });
    bar.append(remove);
  }
  if (open) {
    const choices = el("span", "palette");
    choices.setAttribute("role", "group");
    choices.setAttribute("aria-label", "Choose a reaction");
    for (const emoji of PALETTE) {
      const choice = action(`emoji:${emoji}`, emoji, () => {
        palette = null;
        react(room, message.seq, emoji);
        refresh(room, message.seq);
        $("scroller").querySelector(`li[data-seq="${message.seq}"] [data-action="react"]`)?.focus();
      });
      choice.setAttribute("aria-label", `React with ${emoji}`);
      choices.append(choice);
    }
    bar.append(choices);
  }
  return bar;
}

function action(name, text, onClick) {
  const button = el("button", `action ${name.split(":")[0]}`, text);
  button.type = "button";
  button.dataset.action = name;
  button.addEventListener("click", onClick);
  return button;
}

function togglePalette(room, seq) {
  const open = palette?.room === room.name && palette.seq === seq;
  const before = palette;
  palette = open ? null : { room: room.name, seq };
  if (before && !open) refresh(rooms.get(before.room) ?? room, before.seq);
  refresh(room, seq);
  if (!open) {
    $("scroller").querySelector(`li[data-seq="${seq}"] .palette button`)?.focus();
  }
}

// Escape closes an open palette, back on its React button.
$("messages").addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || !palette) return;
  const { room, seq } = palette;
  palette = null;
  refresh(rooms.get(room), seq);
  $("scroller").querySelector(`li[data-seq="${seq}"] [data-action="react"]`)?.focus();
});

// One's own reaction with `emoji`, on or off.
function react(room, seq, emoji) {
  const message = room.messages.get(seq);
  const mine = Boolean(message?.reactions?.[emoji]?.includes(myUser));
  client.react(room.name, seq, emoji, { remove: mine }).catch((error) => {
    failedChange(mine ? "Reaction not taken back" : "Not reacted", error);
  });
}

function failedChange(what, error) {
  if (GONE.has(error.code)) return;
  notice(`${what}: ${error.message}`);
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
  room.paged = true;
  showStart(room);
  const seqs = [...room.messages.keys()];
  const before = seqs.length > 0 ? Math.min(...seqs) : undefined;
  try {
    const page = await client.history(room.name, { before, limit: PAGE });
    // A page cut short by its byte budget is not the start: only an empty one, or seq 1.
    if (page.length === 0 || page[0].seq <= 1) room.atStart = true;
    addMessages(room, page);
    // Changes that came while the page was on its way, in seq order: the page may show
    // the state from before them; applying one again changes nothing.
    for (const event of room.orphans.splice(0)) {
      const message = room.messages.get(event.target);
      if (message && apply(message, event)) refresh(room, event.target);
    }
  } catch (error) {
    if (!GONE.has(error.code)) notice(error.message);
  } finally {
    room.loading = false;
    room.orphans = [];
    settle(room); // a message acknowledged as sent before this page may be in this page
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

// Read out messages that arrive while the page is open, not the history loaded with a
// room; a burst (a resumed backlog) is summed up in one line.
function announce(message) {
  announcing.queue.push(message);
  if (announcing.timer) return;
  announcing.timer = setTimeout(() => {
    const queue = announcing.queue;
    announcing = { timer: null, queue: [] };
    const lines =
      queue.length > ANNOUNCE_AT_ONCE
        ? [`${queue.length} new messages`]
        : queue.map((m) => (m.deleted ? `${m.from}: message deleted` : `${m.from}: ${m.text}`));
    const live = $("live");
    for (const line of lines) live.append(el("p", "", line));
    while (live.childElementCount > ANNOUNCE_AT_ONCE) live.firstElementChild.remove();
  }, 300);
}

// -- the composer: send, reply, edit; shown as pending at once, replaced when delivered --

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("message");
  const room = rooms.get(current);
  if (!room || !input.value.trim()) return;
  notice("");
  if (composing?.kind === "edit") {
    const { seq, draft } = composing;
    const before = room.messages.get(seq);
    if (before && !before.deleted && before.text !== input.value) {
      client.edit(room.name, seq, input.value).catch((error) => failedChange("Not edited", error));
    }
    composing = null;
    showComposing();
    input.value = draft;
  } else {
    const replyTo = composing?.kind === "reply" ? composing.seq : undefined;
    composing = null;
    showComposing();
    post(room, input.value, replyTo);
    input.value = "";
    typingSent = { room: null, at: 0 }; // the server says we stopped when the message is in
  }
  fitComposer();
});

$("message").addEventListener("keydown", (event) => {
  const input = event.target;
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault(); // Enter sends; Shift+Enter is a new line
    $("composer").requestSubmit();
  } else if (event.key === "Escape" && composing) {
    event.preventDefault();
    cancelComposing(true);
  } else if (event.key === "ArrowUp" && input.value === "" && !composing) {
    const room = rooms.get(current);
    const last = room && [...room.messages.values()].filter((m) => own(m) && !m.deleted).at(-1);
    if (last) {
      event.preventDefault();
      startComposing("edit", room, last.seq);
    }
  }
});

$("message").addEventListener("input", () => {
  fitComposer();
  if (composing?.kind !== "edit") noteTyping();
});

$("composing-cancel").addEventListener("click", () => cancelComposing(true));

// The field grows with its lines, up to what the stylesheet allows.
function fitComposer() {
  const input = $("message");
  input.style.height = "auto";
  input.style.height = `${input.scrollHeight + 2}px`;
}

function startComposing(kind, room, seq) {
  const message = room.messages.get(seq);
  if (!message || message.deleted) return;
  const input = $("message");
  const draft = composing ? composing.draft : input.value;
  composing = { kind, room: room.name, seq, draft };
  if (kind === "edit") input.value = message.text;
  else if (composing.draft !== input.value) input.value = draft;
  showComposing();
  fitComposer();
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

function cancelComposing(focus) {
  if (!composing) return;
  const { kind, draft } = composing;
  composing = null;
  if (kind === "edit") $("message").value = draft;
  showComposing();
  fitComposer();
  if (focus) $("message").focus();
}

function showComposing() {
  const bar = $("composing");
  const room = composing && rooms.get(composing.room);
  const message = room?.messages.get(composing.seq);
  bar.hidden = !message;
  if (!message) return;
  const text = message.text.length > 80 ? `${message.text.slice(0, 80)}…` : message.text;
  const what = $("composing-text");
  if (composing.kind === "edit") what.replaceChildren("Editing your message (Esc cancels)");
  else what.replaceChildren("Replying to ", el("strong", "", message.from), `: ${text}`);
}

function post(room, text, replyTo) {
  showPending(room, text, replyTo, client.send(room.name, text, { replyTo }));
}

// A message on its way, shown as pending until `sent` says it is stored.
function showPending(room, text, replyTo, sent) {
  const entry = { text, replyTo, seq: null, item: pendingItem(room, text, replyTo) };
  room.pending.push(entry);
  if (room.name === current) {
    $("messages").append(entry.item);
    $("scroller").scrollTop = $("scroller").scrollHeight;
  }
  sent.then(
    (seq) => {
      entry.seq = seq;
      settle(room);
    },
    (error) => failed(room, entry, error),
  );
}

function pendingItem(room, text, replyTo) {
  const item = el("li", "message own pending");
  if (replyTo !== undefined) item.append(quote(room, replyTo));
  const meta = el("p", "meta");
  meta.append(el("span", "author", me || "you"), " ", el("span", "status", "pending"));
  item.append(meta, el("p", "text", text));
  return item;
}

// A pending message gives way once both its ack and the message itself are in, or once
// the ack says it is further back than the history loaded (a message sent before a
// reload, whose ack was lost: its repeat's ack has the first seq).
function settle(room) {
  room.pending = room.pending.filter((entry) => {
    if (entry.seq === null) return true;
    if (!room.messages.has(entry.seq) && !beforeLoaded(room, entry.seq)) return true;
    entry.item.remove();
    return false;
  });
}

// Message `seq` came before this page joined the room, and before the oldest loaded.
function beforeLoaded(room, seq) {
  if (!room.paged || room.loading || seq > (client?.lastSeq(room.name) ?? -Infinity)) return false;
  return seq < Math.min(...room.messages.keys());
}

function failed(room, entry, error) {
  if (GONE.has(error.code)) return;
  if (error.code === "muted") {
    notice(`You are muted in ${label(room.name)}: your message was not sent.`, room.name);
  }
  entry.item.classList.add("failed");
  const status = entry.item.querySelector(".status");
  // (expired: it went a day ago or more, unanswered; the server may have it, or not.)
  status.textContent =
    error.code === "expired"
      ? "not confirmed: sent a day ago, never answered"
      : `not sent: ${error.message}`;
  const retry = el("button", "link", "Retry");
  retry.type = "button";
  retry.addEventListener("click", () => {
    room.pending = room.pending.filter((other) => other !== entry);
    entry.item.remove();
    post(room, entry.text, entry.replyTo);
    $("message").focus();
  });
  status.after(" ", retry);
}

// -- typing -----------------------------------------------------------------------------

// While the user types: a notice now and then (an empty field says we stopped).
function noteTyping() {
  const room = rooms.get(current);
  if (!room) return;
  if ($("message").value.trim() === "") {
    stopTyping();
    return;
  }
  const now = Date.now();
  if (typingSent.room === room.name && now - typingSent.at < TYPING_EVERY) return;
  client.typing(room.name);
  typingSent = { room: room.name, at: now };
}

function stopTyping() {
  if (typingSent.room && rooms.has(typingSent.room)) client.typing(typingSent.room, true);
  typingSent = { room: null, at: 0 };
}

function onTyping({ room: name, user, name: who, expires_in: expires, stop }) {
  const room = rooms.get(name);
  if (!room || (myUser && user === myUser)) return;
  clearTimeout(room.typing.get(user)?.timer);
  if (stop) room.typing.delete(user);
  else {
    // It ends by itself unless renewed: a typist whose connection died says nothing more.
    const timer = setTimeout(() => stoppedTyping(room, user), (expires ?? 5) * 1000);
    room.typing.set(user, { name: who, timer });
  }
  if (name === current) renderTyping();
}

function stoppedTyping(room, user) {
  const typist = user && room.typing.get(user);
  if (!typist) return;
  clearTimeout(typist.timer);
  room.typing.delete(user);
  if (room.name === current) renderTyping();
}

function clearTyping(room) {
  for (const { timer } of room.typing.values()) clearTimeout(timer);
  room.typing.clear();
}

function renderTyping() {
  const room = rooms.get(current);
  const names = room ? [...room.typing.values()].map((typist) => typist.name) : [];
  let text = "";
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = `${names[0]}, ${names[1]} and ${names.length - 2} more are typing…`;
  $("typing").textContent = text;
}

// -- members, direct messages and notices -----------------------------------------------

function renderMembers() {
  const room = rooms.get(current);
  const members = room ? [...room.members.values()] : [];
  members.sort((a, b) => a.name.localeCompare(b.name));
  $("members-title").textContent = `Members (${members.length})`;
  const menuOf = memberMenu?.room === current ? room.members.get(memberMenu.user) : null;
  if (!menuOf || !mayModerate(room, menuOf)) memberMenu = null; // nothing to act on now
  // The list is drawn anew: the keyboard focus stays on the same control, if it is there.
  const focused = $("member-list").contains(document.activeElement) ? document.activeElement : null;
  const items = members.map((member, index) => {
    const item = el("li", "member");
    item.append(el("span", "name", member.name));
    if (member.role !== "member") item.append(" ", el("span", "badge", member.role));
    if (member.muted) item.append(" ", el("span", "badge", "muted"));
    const self = member.user ? member.user === myUser : member.name === me;
    if (self) item.append(" ", el("span", "you", "(you)"));
    else if (member.user) {
      const write = el("button", "dm-start", "Message");
      write.type = "button";
      write.dataset.member = member.user;
      write.dataset.action = "dm";
      write.setAttribute("aria-label", `Send ${member.name} a direct message`);
      write.addEventListener("click", () => startDm(member));
      item.append(" ", write);
      if (mayModerate(room, member)) item.append(" ", ...memberActions(room, member, index));
    }
    return item;
  });
  $("member-list").replaceChildren(...items);
  if (focused?.dataset.member) {
    const { member, action: name } = focused.dataset;
    const controls = [...$("member-list").querySelectorAll("button")].filter(
      (button) => button.dataset.member === member,
    );
    (controls.find((button) => button.dataset.action === name) ?? controls.at(-1))?.focus();
  }
}

// Moderators act on members, owners on moderators too; nobody on an owner.
function mayModerate(room, member) {
  const mine = ROLES.indexOf(room.role);
  return mine >= ROLES.indexOf("moderator") && ROLES.indexOf(member.role) < mine;
}

// A member's moderation menu: its button, and while open, its actions.
function memberActions(room, member, index) {
  const open = memberMenu?.user === member.user;
  const toggle = el("button", "member-actions", "⋯");
  toggle.type = "button";
  toggle.dataset.member = member.user;
  toggle.dataset.action = "menu";
  toggle.setAttribute("aria-label", `Actions for ${member.name}`);
  toggle.setAttribute("aria-expanded", String(open));
  toggle.addEventListener("click", () => {
    memberMenu = open ? null : { room: room.name, user: member.user, arming: false };
    renderMembers();
    const first = open ? null : $("member-list").querySelector(".member-menu button");
    (first ?? toggleOf(member.user))?.focus();
  });
  if (!open) return [toggle];
  const menu = el("div", "member-menu");
  menu.id = `member-menu-${index}`;
  menu.setAttribute("role", "group");
  menu.setAttribute("aria-label", `Actions for ${member.name}`);
  toggle.setAttribute("aria-controls", menu.id);
  const item = (action, text, onClick) => {
    const button = el("button", `action ${action}`, text);
    button.type = "button";
    button.dataset.member = member.user;
    button.dataset.action = action;
    button.addEventListener("click", onClick);
    menu.append(button);
  };
  const act = (action) => () => moderate(room, member, action);
  if (member.muted) item("unmute", "Unmute", act("unmute"));
  else item("mute", "Mute", act("mute"));
  item("kick", "Kick", act("kick"));
  if (memberMenu.arming) item("ban", `Really ban ${member.name}?`, act("ban"));
  else {
    // Asked twice, like a delete: nothing blocks the page.
    item("ban", "Ban", () => {
      memberMenu.arming = true;
      renderMembers();
    });
  }
  if (room.role === "owner") {
    if (member.role === "moderator") item("member", "Make member", act("member"));
    else item("moderator", "Make moderator", act("moderator"));
  }
  return [toggle, menu];
}

function toggleOf(user) {
  return [...$("member-list").querySelectorAll(".member-actions")].find(
    (button) => button.dataset.member === user,
  );
}

// Escape closes an open member menu, back on its button.
$("member-list").addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || !memberMenu) return;
  event.stopPropagation(); // (the phone's drawer stays open)
  const { user } = memberMenu;
  memberMenu = null;
  renderMembers();
  toggleOf(user)?.focus();
});

const ACTION_TEXT = {
  mute: "muted",
  unmute: "unmuted",
  kick: "removed",
  ban: "banned",
  moderator: "made a moderator",
  member: "made a member",
};

function moderate(room, member, action) {
  memberMenu = null;
  renderMembers();
  toggleOf(member.user)?.focus();
  const done =
    action === "moderator" || action === "member"
      ? client.setRole(room.name, member.user, action)
      : client.moderate(room.name, member.user, action);
  done.catch((error) => failedChange(`${member.name} was not ${ACTION_TEXT[action]}`, error));
}

function startDm(member) {
  client.openDm([member.user]).then(
    ({ room, users }) => {
      openedDm(room, users, true);
      closeDrawers();
      $("message").focus();
    },
    (error) => failedChange(`No direct message with ${member.name}`, error),
  );
}

// A direct-message room we opened (`show` it), or heard of.
function openedDm(name, users, show) {
  if (!client || !ROOM.test(name)) return;
  dropped.delete(name); // made a member again, by whoever opened it
  addRoom(name);
  const room = rooms.get(name);
  room.dm ??= users.map((user) => ({ user, name: people.get(user) ?? user }));
  if (show) select(name);
  else renderRoomList();
}

let noticeRoom = null; // the room the notice is about, if any
let noticeLabel = ""; // ... and what it was called then

function notice(text, room = null, about = room ? label(room) : "") {
  $("notice").textContent = text;
  noticeRoom = room;
  noticeLabel = about;
}

function el(tag, className = "", text = undefined) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- phones: the room and member lists slide in over the messages -------------------------

const DRAWERS = { "show-rooms": "rooms-pane", "show-members": "members-pane" };

function openDrawer(toggleId) {
  closeDrawers();
  const pane = $(DRAWERS[toggleId]);
  pane.classList.add("open");
  $(toggleId).setAttribute("aria-expanded", "true");
  (pane.querySelector("[aria-current='true']") ?? pane.querySelector("button, input"))?.focus();
}

function closeDrawers() {
  for (const [toggleId, paneId] of Object.entries(DRAWERS)) {
    $(paneId).classList.remove("open");
    $(toggleId).setAttribute("aria-expanded", "false");
  }
}

for (const toggleId of Object.keys(DRAWERS)) {
  $(toggleId).addEventListener("click", () => {
    if ($(DRAWERS[toggleId]).classList.contains("open")) closeDrawers();
    else openDrawer(toggleId);
  });
  $(DRAWERS[toggleId]).addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || !$(DRAWERS[toggleId]).classList.contains("open")) return;
    closeDrawers();
    $(toggleId).focus();
  });
}
document.querySelector("main.room").addEventListener("pointerdown", closeDrawers);

// -- start ------------------------------------------------------------------------------

const savedName = load("name") ?? "";
const savedToken = load("token", sessionStorage) ?? "";
if (savedName || savedToken) start(savedName, savedToken);
else showSignIn();
