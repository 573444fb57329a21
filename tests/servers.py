"""A real ``hubbub serve`` process on a free port, for tests that talk over real sockets."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

_RUNNING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
_STARTED = re.compile(r"Application startup complete")
START_TIMEOUT = 30.0


class ServerProcess:
    """``python -m hubbub serve --port 0 ARGS`` (or another ``command`` taking the same
    ``--host``/``--port``/``--log-level``) with its output captured line by line."""

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, command: list[str] | None = None
    ) -> None:
        self.command = command or [sys.executable, "-m", "hubbub", "serve"]
        self.args = ["--host", "127.0.0.1", "--port", "0", "--log-level", "info", *args]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.port = 0
        self.workdir = tempfile.TemporaryDirectory(prefix="hubbub-test-")
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> ServerProcess:
        self._proc = subprocess.Popen(
            [*self.command, *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self.env,
            cwd=self.workdir.name,  # the default SQLite store lands here
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        match = self.wait_for_log(_RUNNING, START_TIMEOUT)
        self.port = int(match.group(1))
        # With --workers N the socket is bound first; each worker listens once it started.
        workers = (
            int(self.args[self.args.index("--workers") + 1]) if "--workers" in self.args else 1
        )
        self.wait_for_log(_STARTED, START_TIMEOUT, count=workers)
        if workers > 1:
            # A worker logs its start-up before it listens on the socket the parent bound
            # (until then a connection is refused): wait until one does.
            self._wait_accepting()
        return self

    def _wait_accepting(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5):
                    return
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # polling: a listen() has no event to wait on

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def signal(self, signum: int) -> None:
        assert self._proc is not None
        self._proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit; returns its exit status."""
        assert self._proc is not None
        code = self._proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self.workdir.cleanup()
        return code

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; SIGKILL if it does not exit in time."""
        assert self._proc is not None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self.wait(timeout)
                raise
        return self.wait(timeout)

    # -- observation -----------------------------------------------------------

    @property
    def log(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def wait_for_log(
        self, pattern: str | re.Pattern[str], timeout: float = 20.0, count: int = 1
    ) -> re.Match[str]:
        """Block until ``count`` lines matching ``pattern`` have been printed; the first."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        with self._changed:
            found: list[re.Match[str]] = []

            def seen() -> bool:
                found[:] = [m for line in self._lines if (m := regex.search(line))]
                exited = self._proc is not None and self._proc.poll() is not None
                return len(found) >= count or (exited and not self._reader_alive())

            if not self._changed.wait_for(seen, timeout) or len(found) < count:
                raise AssertionError(f"no log line matching {regex.pattern!r}; log:\n{self.log}")
            return found[0]

    def _reader_alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def rss_kib(self) -> int:
        """Resident memory of the server process."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert match
        return int(match.group(1))

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def http(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def readyz(self) -> dict[str, Any]:
        """The body of ``/readyz`` (which must answer 200)."""
        with urllib.request.urlopen(self.http("/readyz"), timeout=10) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body
