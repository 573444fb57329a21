"""Presence's bookkeeping rooms (names starting with "~", the hub's users online): known
on every process, announced to nobody, and looked up per process, not per member."""

from __future__ import annotations

import msgspec

from hubbub.presence import Event, Presence


def presence_pair() -> tuple[Presence, Presence, list[tuple[str, object, object]]]:
    told: list[tuple[str, object, object]] = []
    wire: list[bytes] = []
    a = Presence("a", lambda channel, payload: wire.append(payload), lambda *t: told.append(t), 2)
    b = Presence("b", lambda channel, payload: None, lambda *t: told.append(t), 2)
    a.wire = wire  # type: ignore[attr-defined]
    return a, b, told


async def test_a_quiet_room_is_known_everywhere_and_announced_nowhere() -> None:
    a, b, told = presence_pair()
    await a.add("~online", "ann", "Ann")
    await a.add("lobby", "ann", "Ann")
    for payload in a.wire:  # type: ignore[attr-defined]
        b.on_message(payload, lambda work: work.close())
    assert a.has("~online", "ann") and b.has("~online", "ann")
    assert not b.has("~online", "bob")
    assert [t[0] for t in told] == ["lobby", "lobby"]  # a's own, then b's: never ~online
    b.on_message(msgspec.json.encode(Event("leave", "a", "~online", "ann")), lambda w: w.close())
    assert not b.has("~online", "ann")
    await a.remove("~online", "ann")
    assert not a.has("~online", "ann")
    assert [t[0] for t in told] == ["lobby", "lobby"]
