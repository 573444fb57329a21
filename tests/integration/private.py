"""Throw-away broker servers on free ports, so fault tests never touch the shared ones.

Each keeps its port across ``kill``/``start``, so clients reconnect to the same URL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
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


class PrivateNats(PrivateService):
    """A core-NATS server (no JetStream, so nothing on disk) on a free port."""

    executable = "/usr/sbin/nats-server"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        if not Path(self.executable).is_file():
            missing(f"{self.executable} is not installed")
        self.url = f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.executable, "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_accepting(self.port, self.process)


class PrivatePostgres(PrivateService):
    """A throw-away PostgreSQL cluster, initialised once and run as the ``postgres`` user.

    PostgreSQL refuses to run as root, so when we are root every server command goes
    through ``runuser``. The cluster lives in a directory of its own under the system
    temp dir, not in ``workdir``: pytest's base temp dir is private to root, so the
    ``postgres`` user could not reach anything inside it. Its log goes to ``workdir``.
    """

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        servers = sorted(
            Path("/usr/lib/postgresql").glob("*/bin/postgres"),
            key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
        )
        if not servers:
            missing("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres)")
        self.bindir = servers[-1].parent
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.log = workdir / "postgres.log"
        self.home = Path(tempfile.mkdtemp(prefix="hubbub-pg-"))
        self.datadir = self.home / "pgdata"
        self.socketdir = self.home / "run"
        try:
            self.socketdir.mkdir()
            if self.as_owner:
                for path in (self.home, self.socketdir):
                    shutil.chown(path, "postgres", "postgres")
            self._run(
                "initdb",
                "-D",
                str(self.datadir),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",  # a throw-away cluster needs no durability
            )
        except BaseException:
            shutil.rmtree(self.home, ignore_errors=True)
            raise

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [*self.as_owner, str(self.bindir / program), *args],
            cwd=self.home,  # the postgres user may not be allowed into our working dir
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(f"{program} failed ({done.returncode}):\n{output}")

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("the private PostgreSQL is running already")
        self._release_remains()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *self.as_owner,
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.datadir),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.socketdir),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                ],
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_accepting(self.port, self.process)
        # Accepting TCP is not accepting sessions: crash recovery after a kill comes first.
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-t", "1", "-d", self.url],
                check=False,
            )
            if ready.returncode == 0:
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.process.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres on port {self.port} never became ready")
            time.sleep(0.05)  # polling: pg_isready has nothing to wait on

    def kill(self) -> None:
        """SIGKILL the postmaster and every process it started, all at once.

        Killing only ``runuser`` would orphan the server, and killing only the postmaster
        would leave its backends serving their clients until they noticed. Each process is
        stopped before its children are listed, so that none can start another meanwhile.
        ``runuser`` is spared, to reap the postmaster and exit by itself; it stops itself
        when its child stops (as a shell would), hence the SIGCONT.
        """
        if self.process is None:
            return
        frozen: list[int] = []
        pending = _children(self.process.pid) if self.as_owner else [self.process.pid]
        while pending:
            pid = pending.pop()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                frozen.append(pid)
                pending.extend(_children(pid))
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.as_owner:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
        try:
            self.process.wait(READY_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(READY_TIMEOUT)
        self.process = None

    def stop(self) -> None:
        self.kill()
        self._release_remains()
        shutil.rmtree(self.home, ignore_errors=True)

    def _release_remains(self) -> None:
        """Clean up after a killed server: wait until its last process has let go of its
        shared memory (postgres refuses to start while one holds it), remove that segment
        and the lock files naming the dead postmaster, whose pid may be reused by now."""
        pidfile = self.datadir / "postmaster.pid"
        if not pidfile.exists():
            return
        lines = pidfile.read_text().splitlines()
        segment = lines[6].split() if len(lines) > 6 else []
        if len(segment) == 2 and all(part.isdigit() for part in segment):
            key, shmid = int(segment[0]), int(segment[1])
            deadline = time.monotonic() + READY_TIMEOUT
            while (attached := _shm_attached(key, shmid)) is not None and attached > 0:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"a killed postgres still holds shared memory {shmid}")
                time.sleep(0.05)  # polling: nothing signals that the last holder exited
            if attached == 0:
                subprocess.run(["ipcrm", "-m", str(shmid)], check=False, capture_output=True)
        pidfile.unlink(missing_ok=True)
        for lock in self.socketdir.glob(".s.PGSQL.*"):
            lock.unlink(missing_ok=True)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux ``/proc``)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The command name, in parentheses, may hold spaces: fields follow its ")".
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) == pid:
                children.append(int(stat.parent.name))
    return children


def _shm_attached(key: int, shmid: int) -> int | None:
    """How many processes attach SysV shared memory segment ``shmid`` (with ``key``);
    None when there is no such segment."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[0]) == key and int(fields[1]) == shmid:
                return int(fields[6])
    return None


SERVICES: dict[str, type[PrivateService]] = {
    "redis": PrivateRedis,
    "nats": PrivateNats,
    "postgres": PrivatePostgres,
}


def private(name: str, workdir: Path) -> PrivateService:
    """A private instance of ``name`` (not started yet)."""
    return SERVICES[name](workdir)
