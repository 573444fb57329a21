"""Opening the SQLite store while another process holds the file's write lock (workers
starting together on a new file): it waits for the lock instead of failing."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from hubbub.stores import store_from_url


async def test_a_store_opens_while_another_process_holds_the_write_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "hubbub.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE other (x)")  # a file not in WAL mode yet, as a new one
    holder.execute("BEGIN IMMEDIATE")  # what another worker's migration holds
    holder.execute("INSERT INTO other VALUES (1)")
    waiting = asyncio.Event()
    loop = asyncio.get_running_loop()

    class Told(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "write lock" in record.getMessage():
                loop.call_soon_threadsafe(waiting.set)

    told = Told(logging.DEBUG)
    logging.getLogger("hubbub.stores.sqlite").addHandler(told)
    caplog.set_level(logging.DEBUG, "hubbub.stores.sqlite")
    store = store_from_url(f"sqlite:///{path}")
    starting = asyncio.create_task(store.start())
    try:
        # It must wait (and say so), not fail: SQLite refuses a journal-mode change at
        # once, without its busy timeout, while another connection holds the lock.
        word = asyncio.create_task(waiting.wait())
        await asyncio.wait({starting, word}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        word.cancel()
        assert waiting.is_set(), starting.exception() if starting.done() else "no word"
        holder.execute("COMMIT")
        await asyncio.wait_for(starting, 60)
        assert (await store.append("r", "ann", "hi", "2026-12-01T00:00:00.000Z")).seq == 1
    finally:
        logging.getLogger("hubbub.stores.sqlite").removeHandler(told)
        holder.close()
        if starting.done() and not starting.exception():
            await store.stop()
