"""A TCP proxy in front of a real server that holds back chosen client commands.

Every byte goes through unchanged and in order; a client→server chunk that contains
every marker of one of ``rules`` is written upstream ``hold`` seconds late, and everything the
client sends after it waits behind it (one pump per direction keeps byte order). So a
broker client behind it sees its SUBSCRIBE (LISTEN, SUB) take effect late, as on a slow
network. The proxy runs on the test's event loop: start servers that use it from a
thread (``asyncio.to_thread``), since starting one blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit

WAIT_TIMEOUT = 30


class SlowProxy:
    """Listens on a free loopback port and forwards to ``url``'s host and port.

    A held chunk goes on after ``hold`` seconds, or, with ``release``, once that event
    is set (for a test that decides itself when the command takes effect).
    """

    def __init__(
        self,
        url: str,
        rules: list[tuple[bytes, ...]],
        hold: float,
        release: asyncio.Event | None = None,
    ) -> None:
        self.target = urlsplit(url)
        self.rules = rules
        self.hold = hold
        self.release = release
        self.held: list[bytes] = []  # chunks held back so far (forwarded or not yet)
        self.forwarded: list[bytes] = []  # of those, the ones written upstream
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> SlowProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        """``url`` with the proxy's address in place of the server's."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        netloc = f"127.0.0.1:{port}"
        if self.target.username:
            netloc = self.target.netloc.rsplit("@", 1)[0] + "@" + netloc
        return urlunsplit(self.target._replace(netloc=netloc))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._pumps:
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    def sever(self) -> None:
        """Drop every connection through the proxy at once (new ones are still served)."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def wait(self, chunks: list[bytes], marker: bytes) -> None:
        """Wait until one of ``chunks`` (:attr:`held` or :attr:`forwarded`) contains
        ``marker``."""
        async with asyncio.timeout(WAIT_TIMEOUT):
            while not any(marker in chunk for chunk in chunks):
                self._changed.clear()
                await self._changed.wait()

    def _note(self, chunks: list[bytes], chunk: bytes) -> None:
        chunks.append(chunk)
        self._changed.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.target.hostname, self.target.port
            )
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        for task in (
            asyncio.create_task(self._pump(reader, up_writer, slow=True)),
            asyncio.create_task(self._pump(up_reader, writer, slow=False)),
        ):
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slow: bool
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                slowed = slow and any(all(m in chunk for m in rule) for rule in self.rules)
                if slowed:
                    self._note(self.held, chunk)
                    # The fault this proxy injects.
                    if self.release is not None:
                        await self.release.wait()
                    else:
                        await asyncio.sleep(self.hold)
                writer.write(chunk)
                await writer.drain()
                if slowed:
                    self._note(self.forwarded, chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
