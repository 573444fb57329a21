"""What both bench scripts need of the server process: start it pinned, wait until it
is ready, read its CPU time and memory, stop it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def start(port: int, *flags: str) -> subprocess.Popen[str]:
    """``hubbub serve --port PORT FLAGS…``, pinned to CPU 0 when there are two CPUs or
    more (this process then moves to the others); returns once ``/readyz`` answers 200
    (a worker is up and its broker connected)."""
    command = [
        sys.executable, "-m", "hubbub", "serve", "--port", str(port), "--log-level", "warning",
        *flags,
    ]  # fmt: skip
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))
    server = subprocess.Popen(command, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            stop(server)
            raise SystemExit("the server did not start")
        time.sleep(0.1)


def stop(server: subprocess.Popen[str]) -> None:
    """SIGTERM to the server's process group; SIGKILL if it is not gone in 30 s."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    children = [int(p) for p in out.stdout.split()]
    return [pid] + [q for c in children for q in tree_pids(c)]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids``."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except FileNotFoundError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def rss_kib(pids: list[int]) -> int:
    """Resident memory (VmRSS) of ``pids`` together, in KiB."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        except (FileNotFoundError, AttributeError):
            pass
    return total
