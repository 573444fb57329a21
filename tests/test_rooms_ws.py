"""``/v1/ws`` over real sockets against a real server with its SQLite store."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.rawws import OP_TEXT, RawWebSocket, frame
from tests.roomclient import RoomClient
from tests.servers import ServerProcess


async def test_join_send_ack_and_everyone_gets_the_message(server: ServerProcess) -> None:
    ann = await RoomClient.open(server.ws(""), "ann")
    bob = await RoomClient.open(server.ws(""), "bob")
    joined = await ann.join("lobby")
    welcome = await ann.next_of("welcome")
    assert joined == {
        "type": "joined",
        "room": "lobby",
        "seq": 0,
        "members": ["ann"],
        "epoch": welcome["epoch"],
        "people": [{"user": welcome["user"], "name": "ann"}],
    }
    assert (await bob.join("lobby"))["members"] == ["ann", "bob"]
    ack = await ann.say("lobby", "hello", ref="r1")
    assert ack == {"type": "ack", "room": "lobby", "seq": 1, "ref": "r1"}
    for client in (ann, bob):
        message = await client.next_of("message", seq=1)
        assert message["from"] == "ann" and message["text"] == "hello"
        assert message["ts"].endswith("Z")
    await bob.say("lobby", "hi ann")
    await ann.has_seqs("lobby", 2)
    assert ann.messages["lobby"] == bob.messages["lobby"] == [1, 2]
    await ann.close()
    await bob.close()


async def test_rooms_are_separate(server: ServerProcess) -> None:
    ann = await RoomClient.open(server.ws(""), "ann")
    await ann.join("a")
    await ann.join("b")
    await ann.say("a", "to a")
    await ann.say("b", "to b")
    await ann.say("b", "to b again")
    await ann.has_seqs("b", 2)
    assert ann.texts == {"a": ["to a"], "b": ["to b", "to b again"]}
    mark = len(ann.frames)
    await ann.send(type="leave", room="a")
    assert await ann.next_of("left", mark) == {"type": "left", "room": "a"}
    await ann.send(type="send", room="a", text="gone", ref="g")
    assert (await ann.next_of("error", mark))["code"] == "not_joined"
    await ann.close()


async def test_history_pages_backwards(server: ServerProcess) -> None:
    ann = await RoomClient.open(server.ws(""), "ann")
    await ann.join("h")
    for i in range(1, 26):
        await ann.say("h", f"m{i}")
    mark = len(ann.frames)
    await ann.send(type="history", room="h", limit=10)
    page = await ann.next_of("history", mark)
    assert [m["seq"] for m in page["messages"]] == list(range(16, 26))
    mark = len(ann.frames)
    await ann.send(type="history", room="h", before=16, limit=10)
    page = await ann.next_of("history", mark)
    assert [m["seq"] for m in page["messages"]] == list(range(6, 16))
    assert page["messages"][0]["text"] == "m6" and page["messages"][0]["from"] == "ann"
    mark = len(ann.frames)
    await ann.send(type="history", room="h", before=6)
    page = await ann.next_of("history", mark)
    assert [m["seq"] for m in page["messages"]] == [1, 2, 3, 4, 5]
    await ann.close()


async def test_resume_with_since_gets_exactly_what_was_missed(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--rate-per-second", "10000", "--rate-burst", "10000")
    writer = await RoomClient.open(server.ws(""), "writer")
    reader = await RoomClient.open(server.ws(""), "reader")
    await writer.join("r")
    await reader.join("r")
    for i in range(10):
        await writer.say("r", f"before {i}")
    await reader.has_seqs("r", 10)
    await reader.close()
    for i in range(500):  # more than one backlog page
        await writer.send(type="send", room="r", text=f"missed {i}")
    await writer.has_seqs("r", 510)
    back = await RoomClient.open(server.ws(""), "reader")
    joined = await back.join("r", since=10)
    assert joined["seq"] == 510
    for i in range(5):  # live messages racing with the backlog
        await writer.send(type="send", room="r", text=f"live {i}")
    await back.has_seqs("r", 515)
    assert back.messages["r"] == list(range(11, 516))
    assert back.texts["r"][:2] == ["missed 0", "missed 1"]
    await writer.close()
    await back.close()


async def test_join_without_since_gets_only_new_messages(server: ServerProcess) -> None:
    ann = await RoomClient.open(server.ws(""), "ann")
    await ann.join("n")
    await ann.say("n", "old")
    late = await RoomClient.open(server.ws(""), "late")
    assert (await late.join("n"))["seq"] == 1
    await ann.say("n", "new")
    await late.has_seqs("n", 2)
    assert late.messages["n"] == [2]
    await ann.close()
    await late.close()


async def test_bad_frames_get_error_frames_and_the_connection_stays(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--max-text-chars", "10", "--max-rooms-per-connection", "2")
    c = await RoomClient.open(server.ws(""), "c")
    await c.join("a")
    cases = [
        ("{", "bad_json"),
        ('{"type":"dance"}', "unknown_type"),
        ('{"type":"join"}', "bad_frame"),
        ('{"type":"join","room":"no spaces"}', "bad_frame"),
        ('{"type":"send","room":"a","text":"01234567890"}', "text_too_long"),
        ('{"type":"send","room":"a","text":"nul\\u0000"}', "bad_frame"),
        ('{"type":"send","room":"zzz","text":"x"}', "not_joined"),
        ('{"type":"history","room":"zzz"}', "not_joined"),
    ]
    for raw, code in cases:
        mark = len(c.frames)
        await c.ws.send(raw)
        error = await c.next_of("error", mark)
        assert error["code"] == code, (raw, error)
    await c.join("b")
    mark = len(c.frames)
    await c.send(type="join", room="c")
    assert (await c.next_of("error", mark))["code"] == "too_many_rooms"
    assert (await c.say("a", "still ok"))["seq"] == 1
    await c.close()


async def test_rate_limit_answers_with_an_error_and_keeps_the_connection(
    start_server: Callable[..., ServerProcess],
) -> None:
    # One token in 1000 s: none comes back while the test runs, however slow the machine.
    server = start_server("--rate-per-second", "0.001", "--rate-burst", "3")
    c = await RoomClient.open(server.ws(""), "c")
    await c.join("a")  # 1 token
    for i in range(3):  # 2 tokens left: the third is refused, and says which it was
        await c.send(type="send", room="a", text=str(i), ref=i)
    error = await c.next_of("error")
    assert error == {
        "type": "error",
        "code": "rate_limited",
        "message": error["message"],
        "ref": 2,
        "room": "a",
    }
    assert not c.closed
    await c.close()


async def test_repeated_abuse_closes_with_1008(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--max-errors", "3")
    c = await RoomClient.open(server.ws(""), "c")
    for _ in range(10):
        await c.ws.send("garbage")
    await c.wait(lambda: c.closed)
    assert c.close_code == 1008
    assert sum(f["type"] == "error" for f in c.frames) >= 3


async def test_oversized_and_binary_frames_close(server: ServerProcess) -> None:
    big = await RoomClient.open(server.ws(""), "big", max_size=None)
    await big.send(type="send", room="a", text="x" * 70_000)
    await big.wait(lambda: big.closed)
    assert big.close_code == 1009
    binary = await RoomClient.open(server.ws(""), "bin")
    await binary.ws.send(b"\x00")
    await binary.wait(lambda: binary.closed)
    assert binary.close_code == 1003
    ok = await RoomClient.open(server.ws(""), "ok")  # others are still served
    await ok.join("a")
    assert (await ok.say("a", "fine"))["seq"] == 1
    await ok.close()


async def test_invalid_name_is_refused(server: ServerProcess) -> None:
    bad = await RoomClient.open(server.ws(""), "<script>")
    await bad.wait(lambda: bad.closed)
    assert bad.close_code == 1008


def test_sends_in_one_write_are_stored_and_acked_in_order(server: ServerProcess) -> None:
    # More frames in one TCP write than the connection lets wait before it stops reading.
    raw = RawWebSocket(server.port, "/v1/ws?name=burst")
    assert json.loads(raw.recv_frame()[1])["type"] == "welcome"
    raw.send_text(json.dumps({"type": "join", "room": "burst"}))
    assert json.loads(raw.recv_frame()[1])["type"] == "joined"
    count = 45  # under the default burst of 50
    raw.send(
        b"".join(
            frame(
                OP_TEXT,
                json.dumps({"type": "send", "room": "burst", "text": str(i), "ref": i}).encode(),
            )
            for i in range(count)
        )
    )
    acks, messages = [], []
    while len(acks) < count or len(messages) < count:
        reply = json.loads(raw.recv_frame()[1])
        if reply["type"] in ("ack", "message"):  # (the first join's membership push aside)
            (acks if reply["type"] == "ack" else messages).append(reply)
    assert [(a["ref"], a["seq"]) for a in acks] == [(i, i + 1) for i in range(count)]
    assert [m["text"] for m in messages] == [str(i) for i in range(count)]
    raw.close()


async def test_empty_text_is_refused_as_in_the_http_api(server: ServerProcess) -> None:
    ann = await RoomClient.open(server.ws(""), "ann")
    await ann.join("lobby")
    mark = len(ann.frames)
    await ann.send(type="send", room="lobby", text="", ref="e")
    assert (await ann.next_of("error", mark)) == {
        "type": "error",
        "code": "bad_frame",
        "message": "text is empty",
        "ref": "e",
        "room": "lobby",
    }
    await ann.close()
