"""The files under ``deploy/`` that docs/operations.md shows: the systemd units (checked
with ``systemd-analyze verify``, and their commands run as real processes: served,
stopped with SIGTERM to the main process only, as ``KillMode=mixed`` does, socket
activation on an inherited descriptor 3), and the docs showing each file verbatim.

systemd itself does not run in this sandbox (PID 1 is no systemd), so nothing here
starts a unit through it."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from hubbub.config import Settings
from tests.servers import ServerProcess
from tests.services import missing, service_url

ROOT = Path(__file__).resolve().parents[1]
SYSTEMD = ROOT / "deploy" / "systemd"
UNIT = SYSTEMD / "hubbub.service"
SOCKET_UNIT = SYSTEMD / "hubbub.socket"
SOCKET_DROP_IN = SYSTEMD / "hubbub.service.d" / "socket.conf"
OPERATIONS = ROOT / "docs" / "operations.md"
HUBBUB = str(Path(sys.executable).with_name("hubbub"))
INSTALLED = "/opt/hubbub/bin/hubbub"
STATE = "/var/lib/hubbub"
TIMEOUT = 30


def directives(path: Path, name: str) -> list[str]:
    """Every value of ``name=`` in a unit file, in order."""
    return [
        line.split("=", 1)[1]
        for line in path.read_text().splitlines()
        if line.startswith(f"{name}=")
    ]


def exec_start(path: Path) -> list[str]:
    """The unit's (last) ``ExecStart`` as an argv, with this checkout's ``hubbub``."""
    command = [value for value in directives(path, "ExecStart") if value][-1]
    assert command.count(INSTALLED) == 1
    return shlex.split(command.replace(INSTALLED, HUBBUB))


def environment(state: Path) -> dict[str, str]:
    """The service's ``Environment=`` variables (the socket drop-in keeps them), with a
    state directory of the test's own."""
    variables = dict(
        item.split("=", 1)
        for value in directives(UNIT, "Environment")
        for item in shlex.split(value)
    )
    assert variables["HUBBUB_DATA_DIR"] == STATE
    return {**variables, "HUBBUB_DATA_DIR": str(state)}


# -- systemd-analyze -----------------------------------------------------------------------


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing("systemd-analyze is not installed (Debian's systemd package)")
    assert analyze is not None
    units = tmp_path / "units"
    shutil.copytree(SYSTEMD, units)
    # verify checks that the command exists: the one this checkout has.
    for unit in (units / "hubbub.service", units / "hubbub.service.d" / "socket.conf"):
        unit.write_text(unit.read_text().replace(INSTALLED, HUBBUB))
    result = subprocess.run(
        [
            analyze,
            "verify",
            "--man=no",
            str(units / "hubbub.service"),
            str(units / "hubbub.socket"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    # Warnings (unknown keys, bad values) leave the status 0: none may be printed either.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_stop_timeout_and_file_limit_fit_the_defaults() -> None:
    settings = Settings()
    # systemd kills what is left after TimeoutStopSec: a graceful stop takes at most
    # --shutdown-timeout plus --close-timeout.
    stop = int(directives(UNIT, "TimeoutStopSec")[0])
    assert stop >= 2 * (settings.shutdown_timeout + settings.close_timeout)
    assert int(directives(UNIT, "LimitNOFILE")[0]) > settings.max_connections + 1000
    assert directives(UNIT, "Restart") == ["on-failure"]
    assert directives(UNIT, "KillMode") == ["mixed"]


# -- the units' commands, run ----------------------------------------------------------------


def test_the_units_command_serves_and_stops_gracefully(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    # ServerProcess adds --host 127.0.0.1 --port 0: later flags win, the rest is the unit's.
    server = start_server(command=exec_start(UNIT), env=environment(tmp_path))
    with (
        connect(server.ws("/ws/1"), open_timeout=TIMEOUT) as talker,
        connect(server.ws("/ws/2"), open_timeout=TIMEOUT) as watcher,
    ):
        for i in range(50):
            talker.send(f"line {i}")
        while watcher.recv(TIMEOUT) != "Client #1 says: line 49":
            pass
        server.signal(signal.SIGTERM)
        assert server.wait(TIMEOUT) == 0
        heard = []
        with pytest.raises(ConnectionClosed):
            while True:
                heard.append(talker.recv(TIMEOUT))
        # Flushed: everything queued for the talker, then 1001.
        assert [m for m in heard if str(m).startswith("Client #1")][-1] == "Client #1 says: line 49"
        assert talker.protocol.close_rcvd is not None
        assert talker.protocol.close_rcvd.code == 1001
    assert (tmp_path / "hubbub.db").exists()  # the store in the state directory


def test_signalling_only_the_main_process_stops_every_worker_gracefully(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    # KillMode=mixed: SIGTERM goes to the main process only; it stops its workers.
    server = start_server(
        "--workers", "2", "--broker-url", service_url("redis"),
        command=exec_start(UNIT), env=environment(tmp_path),
    )  # fmt: skip
    with contextlib.ExitStack() as stack:
        clients: list[ClientConnection] = []
        held: dict[int, int] = {}  # connections per worker, as each says
        while len([n for n in held.values() if n]) < 2 and len(clients) < 64:
            url = server.ws(f"/v1/ws?name=u{len(clients)}")
            clients.append(stack.enter_context(connect(url, open_timeout=TIMEOUT)))
            for _ in range(8):  # whichever worker answers tells its own count
                body = server.readyz()
                held[body["pid"]] = body["connections"]
        assert len([n for n in held.values() if n]) == 2, held  # both workers hold some
        server.signal(signal.SIGTERM)
        assert server.wait(TIMEOUT) == 0
        for ws in clients:
            with pytest.raises(ConnectionClosed):
                while True:
                    ws.recv(TIMEOUT)
            assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1001


class InheritedSocketServer:
    """``hubbub serve --fd 3`` with a listening socket made here as its descriptor 3,
    as systemd's socket activation hands it over."""

    def __init__(self, argv: list[str], env: dict[str, str], workdir: Path) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        fd = self.listener.fileno()
        assert "--fd" in argv and argv[argv.index("--fd") + 1] == "3"
        # A trampoline moves our descriptor to 3, then becomes hubbub.
        move = (
            f"import os, sys; os.dup2({fd}, 3); os.close({fd}); os.execv(sys.argv[1], sys.argv[1:])"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", move, *argv],
            pass_fds=(fd,),
            cwd=workdir,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.listener.close()  # the server's now
        self.lines: list[str] = []
        self._started = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if "Application startup complete" in line:
                self._started.set()
        self._started.set()

    def wait_started(self) -> None:
        assert self._started.wait(TIMEOUT) and self.proc.poll() is None, "".join(self.lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(TIMEOUT)
            self._reader.join(TIMEOUT)
            assert self.proc.stdout is not None
            self.proc.stdout.close()


@pytest.fixture
def inherited(tmp_path: Path) -> Iterator[Callable[[list[str]], InheritedSocketServer]]:
    started: list[InheritedSocketServer] = []

    def start(argv: list[str]) -> InheritedSocketServer:
        server = InheritedSocketServer(argv, environment(tmp_path), tmp_path)
        started.append(server)
        server.wait_started()
        return server

    yield start
    for server in started:
        if not server.proc.stdout or not server.proc.stdout.closed:
            server.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_socket_activation_serves_on_the_inherited_socket(
    inherited: Callable[[list[str]], InheritedSocketServer], tmp_path: Path, workers: int
) -> None:
    argv = exec_start(SOCKET_DROP_IN)
    if workers > 1:
        argv += ["--workers", str(workers), "--broker-url", service_url("redis")]
    server = inherited(argv)
    with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=TIMEOUT) as ws:
        ws.send("hi")
        assert ws.recv(TIMEOUT) == "Message text was: hi"
        port = ws.socket.getsockname()[1]
    assert server.stop() == 0
    log = "".join(server.lines)
    # The client's own address, as on a socket Hubbub bound itself.
    assert re.search(rf'127\.0\.0\.1:{port} - "WebSocket /ws" accepted', log), log
    assert "Traceback" not in log


def test_the_socket_unit_listens_where_the_service_would() -> None:
    (listen,) = directives(SOCKET_UNIT, "ListenStream")
    # The service listens where the defaults say, as the socket does.
    assert "--host" not in directives(UNIT, "ExecStart")[0]
    assert listen == f"{Settings().host}:{Settings().port}"
    assert "--fd 3" in directives(SOCKET_DROP_IN, "ExecStart")[-1]


# -- the docs show these files ------------------------------------------------------------------


def fenced_blocks(markdown: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^```[a-z]*\n(.*?)^```$", markdown, re.M | re.S)]


@pytest.mark.parametrize(
    "path",
    [
        "deploy/nginx/hubbub.conf",
        "deploy/caddy/Caddyfile",
        "deploy/systemd/hubbub.service",
        "deploy/systemd/hubbub.socket",
        "deploy/systemd/hubbub.service.d/socket.conf",
    ],
)
def test_the_deployment_guide_shows_the_file_the_tests_run(path: str) -> None:
    text = (ROOT / path).read_text()
    assert text in fenced_blocks(OPERATIONS.read_text()), (
        f"docs/operations.md must show {path} verbatim, in a fenced block of its own"
    )
