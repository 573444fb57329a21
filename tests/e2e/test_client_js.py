"""``web/hubbub.js`` on its own, in Chromium: closing, the exactly-once check, and the chat
protocol's events and requests."""

from __future__ import annotations

import itertools
import json
import re
import urllib.request
from collections.abc import Callable
from typing import Any

from playwright.sync_api import Page, WebSocketRoute, expect
from websockets.sync.client import connect

from tests.e2e.conftest import wait_js
from tests.servers import ServerProcess

TIMEOUT_MS = 10_000
RECONNECT_MS = 30_000
NewPage = Callable[[], Page]

CLOSING = """async () => {
  const { HubbubClient, defaultUrl } = await import("/static/hubbub.js");
  const outcome = (promise) => promise.then((value) => ["ok", value], (e) => [e.name, e.code]);

  const client = new HubbubClient(defaultUrl(), { name: "probe" });
  const states = [];
  client.on("state", ({ state }) => states.push(state));
  const joined = client.join("r");  // asked before connecting: waits, then goes
  client.connect();
  const members = (await joined).members;
  const first = await outcome(client.send("r", "one"));
  client.close();
  const afterClose = await outcome(client.send("r", "two"));

  const idle = new HubbubClient(defaultUrl(), { name: "idle" });
  idle.join("r");
  const queued = outcome(idle.send("r", "never connected"));  // waits for a connection
  idle.close();
  const unjoined = await outcome(new HubbubClient(defaultUrl()).send("nowhere", "x"));
  return { states, members, first, afterClose, queued: await queued, unjoined };
}"""


def test_a_closed_client_rejects_what_it_holds_and_what_comes_later(
    server: ServerProcess, new_page: NewPage
) -> None:
    page = new_page()
    page.goto(server.http("/"))
    result = page.evaluate(CLOSING)
    assert result == {
        "states": ["connecting", "connected", "offline"],
        "members": ["probe"],
        "first": ["ok", 1],
        "afterClose": ["HubbubError", "closed"],
        "queued": ["HubbubError", "closed"],
        "unjoined": ["HubbubError", "not_joined"],
    }


def test_a_message_at_or_below_the_last_seq_is_not_delivered_again(
    server: ServerProcess, new_page: NewPage
) -> None:
    page = new_page()
    sockets: list[WebSocketRoute] = []

    def relay(socket: WebSocketRoute) -> None:
        socket.connect_to_server()
        sockets.append(socket)

    page.route_web_socket(re.compile(r"/v1/ws\b"), relay)
    page.goto(server.http("/"))
    page.get_by_label("Display name").fill("ann")
    page.get_by_label("Display name").press("Enter")
    texts = page.locator("#messages li.message:not(.pending) .text")
    message = page.get_by_label("Message", exact=True)
    message.fill("one")
    message.press("Enter")
    expect(texts).to_have_text(["one"], timeout=TIMEOUT_MS)

    stale = {"type": "message", "room": "lobby", "from": "mallory", "ts": "2026-01-01T00:00:00Z"}
    for seq in (1, 0):  # a repeat of seq 1, and one from before it
        sockets[-1].send(json.dumps({**stale, "seq": seq, "text": f"stale {seq}"}))
    message.fill("two")
    message.press("Enter")
    expect(texts).to_have_text(["one", "two"], timeout=TIMEOUT_MS)
    assert page.evaluate("window.hubbubDelivered.lobby") == [1, 2]


# -- the chat protocol: events in the seq stream, and the requests answered by ref -------

KEY = "api-key-for-client-tests"
READER = """async () => {
  const { HubbubClient, defaultUrl } = await import("/static/hubbub.js");
  const options = { name: "reader", backoffMin: 50, backoffMax: 200 };
  const client = new HubbubClient(defaultUrl(), options);
  window.seen = [];
  window.states = [];
  for (const type of ["message", "edit", "delete", "reaction", "moderation"]) {
    client.on(type, (event) => window.seen.push([event.type, event.seq]));
  }
  client.on("state", ({ state }) => window.states.push(state));
  window.reader = client;
  client.connect();
  await client.join("r");
}"""


REFS = itertools.count(1)


def ask(ws: Any, **frame: Any) -> dict[str, Any]:
    """Send a frame with a ref over a plain socket; its ack (an error fails the test)."""
    ref = f"w{next(REFS)}"
    ws.send(json.dumps({**frame, "ref": ref}))
    while True:
        answer = json.loads(ws.recv(10))
        if answer.get("ref") == ref:
            assert answer["type"] == "ack", answer
            return dict(answer)


def test_a_resume_after_every_kind_of_event_delivers_each_once_in_order(
    start_server: Callable[..., ServerProcess], new_page: NewPage
) -> None:
    server = start_server("--api-key", KEY)
    page = new_page()
    from_page: list[dict[str, Any]] = []
    routes: list[tuple[WebSocketRoute, WebSocketRoute]] = []
    down: list[bool] = []  # while set, every new connection is closed at once

    def relay(socket: WebSocketRoute) -> None:
        if down:
            socket.close()
            return
        upstream = socket.connect_to_server()

        def forward(message: str | bytes) -> None:
            from_page.append(json.loads(message))
            upstream.send(message)

        socket.on_message(forward)
        routes.append((socket, upstream))

    page.route_web_socket(re.compile(r"/v1/ws\b"), relay)
    page.goto(server.http("/"))  # (the chat page connects nobody until someone signs in)
    page.evaluate(READER)
    with connect(server.ws("/v1/ws?name=writer")) as writer:
        user = json.loads(writer.recv(10))["user"]
        writer.send(json.dumps({"type": "join", "room": "r"}))
        one = ask(writer, type="send", room="r", text="one")["seq"]
        wait_js(page, "n => window.seen.length === n", 1, TIMEOUT_MS)

        down.append(True)
        for socket, upstream in routes:
            socket.close()
            upstream.close()
        wait_js(page, "() => window.states.includes('reconnecting')", None, TIMEOUT_MS)
        # While the reader is away: one of each kind of event.
        two = ask(writer, type="send", room="r", text="two")["seq"]
        ask(writer, type="edit", room="r", seq=one, text="one!")
        ask(writer, type="react", room="r", seq=one, emoji="👍")
        assert "seq" not in ask(writer, type="react", room="r", seq=one, emoji="👍")  # no event
        ask(writer, type="react", room="r", seq=one, emoji="👍", remove=True)
        ask(writer, type="delete", room="r", seq=two)
        request = urllib.request.Request(
            server.http(f"/api/v1/rooms/r/roles/{user}"),
            data=json.dumps({"role": "moderator"}).encode(),
            method="PUT",
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        three = ask(writer, type="send", room="r", text="three")["seq"]
        assert three == one + 7

        down.clear()
        wait_js(page, "n => window.seen.length >= n", 8, RECONNECT_MS)
        expected = [
            ["message", one],
            ["message", two],  # (as it is now: deleted)
            ["edit", one + 2],
            ["reaction", one + 3],
            ["reaction", one + 4],
            ["delete", one + 5],
            ["moderation", one + 6],
            ["message", three],
        ]
        assert page.evaluate("window.seen") == expected
        joins = [f for f in from_page if f["type"] == "join"]
        assert joins[-1]["since"] == one  # resumed after the last event seen
        assert page.evaluate("window.reader.lastSeq('r')") == three

        # Nothing at or below the last seq is delivered again, whatever its type.
        socket = routes[-1][0]
        stale = {"room": "r", "user": user, "from": "writer", "ts": "2026-01-01T00:00:00Z"}
        socket.send(json.dumps({**stale, "type": "edit", "seq": three, "target": one, "text": "x"}))
        socket.send(json.dumps({**stale, "type": "delete", "seq": one + 5, "target": one}))
        four = ask(writer, type="send", room="r", text="four")["seq"]
        wait_js(page, "n => window.seen.length === n", 9, TIMEOUT_MS)
        assert page.evaluate("window.seen")[8:] == [["message", four]]


CHAT_REQUESTS = """async () => {
  const { HubbubClient, defaultUrl } = await import("/static/hubbub.js");
  const outcome = (promise) => promise.then((value) => ["ok", value], (e) => [e.name, e.code]);
  const heard = (client, type, test = () => true) =>
    new Promise((resolve) => {
      const stop = client.on(type, (detail) => {
        if (test(detail)) { stop(); resolve(detail); }
      });
    });
  const welcomed = (client) => heard(client, "welcome");
  const ann = new HubbubClient(defaultUrl(), { name: "ann" });
  const bob = new HubbubClient(defaultUrl(), { name: "bob" });
  const annId = welcomed(ann), bobId = welcomed(bob);
  ann.connect();
  bob.connect();
  const rooms = ann.listRooms();  // asked before connecting: waits, then goes
  const [me, other] = [(await annId).user, (await bobId).user];
  const before = await rooms;
  await ann.join("chat");
  const joined = await bob.join("chat");
  const replied = heard(bob, "message", (m) => m.text === "again");
  const first = await ann.send("chat", "hello");
  const reply = await ann.send("chat", "again", { replyTo: first, data: { n: 1 } });
  const edited = heard(bob, "edit");
  const edit = await ann.edit("chat", first, "hello!");
  const react = await bob.react("chat", first, "👍");
  const same = await bob.react("chat", first, "👍");
  const notYours = await outcome(bob.edit("chat", first, "mine"));
  const typing = heard(bob, "typing");
  ann.typing("chat");
  const read = heard(bob, "read");  // every connection of the user that read it
  bob.read("chat", react);
  const dm = await ann.openDm([other]);
  const list = await bob.listRooms();
  const removed = await bob.delete("chat", reply).then(() => "ok", (e) => e.code);
  const deleted = await ann.delete("chat", reply);
  const kinds = { typing: (await typing).name, read: await read, edit: (await edited).text };
  ann.close();
  bob.close();
  return {
    mine: me !== other, before, people: joined.people.map((p) => p.name),
    reply: [(await replied).reply_to === first, (await replied).data], edit: edit === reply + 1,
    react: react === reply + 2, same, notYours, kinds, dm: [dm.room.slice(0, 3), dm.users.length],
    listed: list.map((r) => r.room).sort(), removed, deleted: deleted === reply + 3,
  };
}"""


def test_the_chat_requests_resolve_with_their_answers(
    server: ServerProcess, new_page: NewPage
) -> None:
    page = new_page()
    page.goto(server.http("/"))
    result = page.evaluate(CHAT_REQUESTS)
    dm_room = result.pop("listed")
    assert dm_room[0] == "chat" and dm_room[1].startswith("dm:")
    assert result == {
        "mine": True,
        "before": [],
        "people": ["ann", "bob"],
        "reply": [True, {"n": 1}],
        "edit": True,
        "react": True,
        "same": None,  # there already: no event, an ack without seq
        "notYours": ["HubbubError", "not_yours"],
        "kinds": {
            "typing": "ann",
            "read": {"type": "read", "room": "chat", "seq": 4, "unread": 0},
            "edit": "hello!",
        },
        "dm": ["dm:", 2],
        "removed": "not_yours",
        "deleted": True,
    }


MEMBERSHIP = """async () => {
  const { HubbubClient, defaultUrl } = await import("/static/hubbub.js");
  const client = new HubbubClient(defaultUrl(), { name: "kim", backoffMin: 50, backoffMax: 200 });
  window.heard = [];
  client.on("membership", (m) => window.heard.push(m));
  client.on("left", (m) => window.heard.push({ left: m.room }));
  window.kim = client;
  client.connect();
  await client.join("r");
  await client.join("s");
}"""


def test_membership_pushes_are_events_and_a_kick_forgets_the_room_with_no_leave(
    server: ServerProcess, new_page: NewPage
) -> None:
    page = new_page()
    from_page: list[dict[str, Any]] = []
    sockets: list[WebSocketRoute] = []

    def relay(socket: WebSocketRoute) -> None:
        upstream = socket.connect_to_server()

        def forward(message: str | bytes) -> None:
            from_page.append(json.loads(message))
            upstream.send(message)

        socket.on_message(forward)
        sockets.append(socket)

    page.route_web_socket(re.compile(r"/v1/ws\b"), relay)
    page.goto(server.http("/"))
    page.evaluate(MEMBERSHIP)
    # The server's own: r and s are new in kim's list. Then ours.
    wait_js(page, "n => window.heard.length === n", 2, TIMEOUT_MS)
    assert all(m["member"] for m in page.evaluate("window.heard.splice(0)"))
    pushes = [
        {"type": "membership", "room": "elsewhere", "member": True},  # joined on no tab here
        {"type": "membership", "room": "s", "member": False, "reason": "forgot"},
        {"type": "membership", "room": "r", "member": False, "reason": "kicked"},
        {"type": "left", "room": "r", "reason": "kicked"},  # after the push: nothing new
    ]
    for frame in pushes:
        sockets[-1].send(json.dumps(frame))
    wait_js(page, "n => window.heard.length === n", 3, TIMEOUT_MS)
    assert page.evaluate("window.heard") == pushes[:3]
    # A forget elsewhere is the application's to act on; a kick the client's own.
    assert page.evaluate("window.kim.rooms") == ["s"]
    refused = page.evaluate("window.kim.send('r', 'x').then(() => 'sent', (e) => e.code)")
    assert refused == "not_joined"
    assert not [f for f in from_page if f["type"] == "leave"]

    # Nor is it joined again on the next connection.
    mark = len(from_page)
    sockets[-1].close()
    wait_js(page, "() => window.kim.state === 'reconnecting'", None, TIMEOUT_MS)
    wait_js(page, "() => window.kim.state === 'connected'", None, RECONNECT_MS)
    page.evaluate("window.kim.send('s', 'back').then(() => window.kim.close())")
    assert [f["room"] for f in from_page[mark:] if f["type"] == "join"] == ["s"]


REFUSED_WITHOUT_REF = """async () => {
  const { HubbubClient, defaultUrl } = await import("/static/hubbub.js");
  const client = new HubbubClient(defaultUrl(), { name: "lee" });
  client.connect();
  await client.join("r");
  const seq = await client.send("r", "one");
  client.read("r", seq);  // in flight, and never answered
  client.typing("r");  // likewise
  const refused = client.join("closed-to-lee").then(() => "joined", (e) => e.code);
  const late = new Promise((resolve) => setTimeout(() => resolve("no answer"), 10000));
  const outcome = await Promise.race([refused, late]);
  const still = await client.send("r", "two").then(() => "sent", (e) => e.code);
  client.close();
  return [outcome, still];
}"""


def test_a_refusal_without_a_ref_goes_to_the_request_that_can_get_it(
    server: ServerProcess, new_page: NewPage
) -> None:
    # A join's refusal has no ref: the silent read and typing notice written before the
    # join (done, with no answer) are not what it refuses.
    page = new_page()

    def relay(socket: WebSocketRoute) -> None:
        upstream = socket.connect_to_server()

        def forward(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame["type"] == "join" and frame["room"] == "closed-to-lee":
                refusal = {"type": "error", "code": "banned", "message": "you are banned"}
                socket.send(json.dumps(refusal))
            else:
                upstream.send(message)

        socket.on_message(forward)

    page.route_web_socket(re.compile(r"/v1/ws\b"), relay)
    page.goto(server.http("/"))
    assert page.evaluate(REFUSED_WITHOUT_REF) == ["banned", "sent"]


# -- sent once: every send has an id; the outbox keeps the unacknowledged ones ------------

LOST_ACK = """async () => {
  // As on a page served over plain http from elsewhere (no secure context): no randomUUID.
  delete Crypto.prototype.randomUUID;
  const { HubbubClient, defaultUrl } = await import("/static/hubbub.js");
  const options = { name: "may", backoffMin: 50, backoffMax: 200 };
  const client = new HubbubClient(defaultUrl(), options);
  client.connect();
  await client.join("r");
  const seq = await client.send("r", "once");  // its ack is lost, and its connection
  const next = await client.send("r", "twice?");
  const texts = (await client.history("r")).map((m) => m.text);
  const left = client.pending("r");
  client.close();
  return { seq, next, texts, left };
}"""


def test_a_send_whose_ack_is_lost_goes_again_under_its_id_and_is_stored_once(
    server: ServerProcess, new_page: NewPage
) -> None:
    page = new_page()
    from_page: list[dict[str, Any]] = []
    to_page: list[dict[str, Any]] = []
    lost: list[dict[str, Any]] = []

    def relay(socket: WebSocketRoute) -> None:
        upstream = socket.connect_to_server()

        def up(message: str | bytes) -> None:
            from_page.append(json.loads(message))
            upstream.send(message)

        def down(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame["type"] == "ack" and not lost:
                lost.append(frame)  # stored, but the page never hears it
                socket.close()
                upstream.close()
                return
            to_page.append(frame)
            socket.send(message)

        socket.on_message(up)
        upstream.on_message(down)

    page.route_web_socket(re.compile(r"/v1/ws\b"), relay)
    page.goto(server.http("/"))
    result = page.evaluate(LOST_ACK)
    assert result == {"seq": 1, "next": 2, "texts": ["once", "twice?"], "left": []}
    first, again, other = [f for f in from_page if f["type"] == "send"]
    assert first == again and first["text"] == "once"  # the same frame: ref and id
    v4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    assert re.fullmatch(v4, first["id"]) and re.fullmatch(v4, other["id"])
    assert other["id"] != first["id"]
    assert lost == [{"type": "ack", "room": "r", "seq": 1, "ref": first["ref"]}]
    acks = [f for f in to_page if f["type"] == "ack"]
    assert acks == [
        {"type": "ack", "room": "r", "seq": 1, "ref": first["ref"], "repeat": True},
        {"type": "ack", "room": "r", "seq": 2, "ref": other["ref"]},
    ]


OUTBOX = """async () => {
  const { HubbubClient, defaultUrl } = await import("/static/hubbub.js");
  localStorage.clear();
  const day = 24 * 60 * 60 * 1000;
  const url = defaultUrl();
  const outcome = (promise) => promise.then((value) => ["ok", value], (e) => [e.name, e.code]);
  // Written a day ago and more, never answered: the server may have forgotten its id.
  const old = { room: "r", text: "a day old", at: 1, n: 0, written: Date.now() - day - 1000 };
  localStorage.setItem("box/old-one", JSON.stringify(old));
  localStorage.setItem("box/bad", "{not json");
  const first = new HubbubClient(url, { name: "kay", outbox: "box" });
  first.join("r");
  const never = outcome(first.send("r", "typed offline"));  // never connected
  const others = new HubbubClient(url, { name: "kay", outbox: "box.other" });
  others.join("r");
  others.send("r", "kept for box.other").catch(() => {});
  const nested = new HubbubClient(url, { name: "kay", outbox: { key: "box/inner" } });
  nested.join("r");
  nested.send("r", "kept for box/inner").catch(() => {});
  const stored = (id) => localStorage.getItem(`box/${id}`) !== null;
  const kept = first.pending("r").map((p) => [p.text, stored(p.id)]);
  for (const client of [first, others, nested]) client.close();  // as a page that goes away

  const second = new HubbubClient(url, { name: "kay", outbox: "box" });
  const restored = second.pending("r");  // before the room is joined, or any connection
  second.connect();
  second.join("r");
  const results = await Promise.all(restored.map((p) => outcome(p.sent)));
  const texts = (await second.history("r")).map((m) => m.text);
  const left = second.pending("r").length;
  second.close();
  const keys = Object.keys(localStorage).map((k) => k.replace(/[0-9a-f-]{36}$/, "ID")).sort();
  return {
    kept, never: await never, restored: restored.map((p) => p.text), results, texts, left, keys,
  };
}"""


def test_the_outbox_keeps_unacknowledged_sends_for_the_next_client_with_its_key(
    server: ServerProcess, new_page: NewPage
) -> None:
    page = new_page()
    page.goto(server.http("/"))
    assert page.evaluate(OUTBOX) == {
        "kept": [["a day old", True], ["typed offline", True]],
        "never": ["HubbubError", "closed"],  # closed, not refused: kept for the next one
        "restored": ["a day old", "typed offline"],
        "results": [["HubbubError", "expired"], ["ok", 1]],
        "texts": ["typed offline"],
        "left": 0,
        # What the other keys keep is theirs; the unreadable item is gone.
        "keys": ["box.other/ID", "box/inner/ID"],
    }
