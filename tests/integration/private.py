"""Throw-away broker servers on free ports, so fault tests never touch the shared ones.

Each keeps its port across ``kill``/``start``, so clients reconnect to the same URL.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path

from tests.services import missing

READY_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_accepting(port: int, process: subprocess.Popen[bytes] | None = None) -> None:
    """Block until something accepts TCP connections on ``port`` (bounded)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"server on port {port} exited: {process.returncode}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing accepts on port {port}") from None
            time.sleep(0.05)  # polling a port that has no event to wait on


class PrivateService(ABC):
    """A server process this test owns."""

    url: str

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @abstractmethod
    def start(self) -> None:
        """Start (again) on ``self.port``; return once it accepts connections."""

    def kill(self) -> None:
        """SIGKILL: the server vanishes without saying goodbye."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(READY_TIMEOUT)
            self.process = None

    def stop(self) -> None:
        """Stop for good and remove what it left on disk."""
        self.kill()


class PrivateRedis(PrivateService):
    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        if shutil.which("redis-server") is None:
            missing("redis-server is not installed")
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "warning",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_accepting(self.port, self.process)


SERVICES: dict[str, type[PrivateService]] = {"redis": PrivateRedis}


def private(name: str, workdir: Path) -> PrivateService:
    """A private instance of ``name`` (not started yet)."""
    return SERVICES[name](workdir)
