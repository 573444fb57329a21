"""Backups of the store while the server runs, and a restore (docs/operations.md,
"Backups"): SQLite with ``VACUUM INTO`` and the online backup API (what the ``sqlite3``
shell's ``.backup`` uses), PostgreSQL with ``pg_dump``/``pg_restore``. A restored store
gets a new epoch (its ``epoch`` row deleted), so clients that saw later messages start
over instead of missing the ones that reuse their ``seq``; guests stay who they were."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg

from tests.roomclient import RoomClient
from tests.servers import ServerProcess
from tests.services import missing, temporary_database

TIMEOUT = 60


async def post(server: ServerProcess, texts: list[str]) -> tuple[dict[str, Any], RoomClient]:
    """Guest pat says ``texts`` in lobby; the welcome and the (open) client."""
    pat = await RoomClient.open(server.ws(""), "pat")
    welcome = await pat.next_of("welcome")
    await pat.join("lobby")
    for text in texts:
        await pat.say("lobby", text)
    return welcome, pat


async def check_restored(server: ServerProcess, before: dict[str, Any], texts: list[str]) -> None:
    """The restored server has ``texts`` in lobby, a new epoch, and pat's guest token."""
    guest = quote(before["guest_token"])
    pat = await RoomClient.open(server.ws(""), query=f"guest={guest}")
    welcome = await pat.next_of("welcome")
    assert welcome["user"] == before["user"]  # the same guest: the secret was kept
    assert welcome["epoch"] != before["epoch"]
    mark = len(pat.frames)
    # A client that saw more than the backup resumes with the old epoch: it starts over.
    await pat.send(type="join", room="lobby", since=len(texts) + 1, epoch=before["epoch"])
    joined = await pat.next_of("joined", mark, room="lobby")
    assert joined["reset"] is True and joined["seq"] == len(texts)
    await pat.close()
    reader = await RoomClient.open(server.ws(""), "quinn")
    await reader.join("lobby", since=0)
    await reader.has_seqs("lobby", len(texts))
    assert reader.texts["lobby"] == texts
    await reader.close()


async def test_a_running_sqlite_store_is_backed_up_and_restored(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    live = tmp_path / "live" / "hubbub.db"
    server = start_server("--store-url", f"sqlite:///{live}")
    welcome, pat = await post(server, ["one", "two"])
    # While it runs (WAL mode: readers see the last commit, writers go on).
    vacuumed, copied = tmp_path / "vacuumed.db", tmp_path / "copied.db"
    with sqlite3.connect(live) as db:
        db.execute("VACUUM INTO ?", (str(vacuumed),))
        with sqlite3.connect(copied) as target:
            db.backup(target)
    backups = [vacuumed, copied]
    shell = shutil.which("sqlite3")
    if shell is not None:  # the guide's command, where Debian's sqlite3 is installed
        backups.append(tmp_path / "shell.db")
        command = [shell, str(live), f".backup '{backups[-1]}'"]
        await asyncio.to_thread(subprocess.run, command, check=True, timeout=TIMEOUT)
    await pat.say("lobby", "three")  # after the backup: lost by the restore
    await pat.close()
    server.stop()

    for backup in backups:
        restored = tmp_path / backup.stem / "hubbub.db"
        restored.parent.mkdir()
        shutil.copy(backup, restored)
        with sqlite3.connect(restored) as db:
            db.execute("DELETE FROM meta WHERE key = 'epoch'")
        again = start_server("--store-url", f"sqlite:///{restored}")
        await check_restored(again, welcome, ["one", "two"])
        again.stop()


async def test_a_running_postgresql_store_is_backed_up_with_pg_dump(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    pg_dump, pg_restore = shutil.which("pg_dump"), shutil.which("pg_restore")
    if pg_dump is None or pg_restore is None:
        missing("pg_dump and pg_restore are not installed (Debian's postgresql-client)")
    assert pg_dump is not None and pg_restore is not None
    async with temporary_database() as live, temporary_database() as restored:
        server = start_server("--store-url", live)
        welcome, pat = await post(server, ["one", "two"])
        dump = tmp_path / "hubbub.dump"
        await asyncio.to_thread(
            subprocess.run,
            [pg_dump, "--format=custom", f"--file={dump}", live],
            check=True,
            timeout=TIMEOUT,
        )
        await pat.say("lobby", "three")
        await pat.close()
        server.stop()
        await asyncio.to_thread(
            subprocess.run,
            [pg_restore, "--no-owner", f"--dbname={restored}", str(dump)],
            check=True,
            timeout=TIMEOUT,
        )
        conn = await asyncpg.connect(restored)
        try:
            await conn.execute("DELETE FROM hubbub_meta WHERE key = 'epoch'")
        finally:
            await conn.close()
        again = start_server("--store-url", restored)
        await check_restored(again, welcome, ["one", "two"])
        again.stop()
