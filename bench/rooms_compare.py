"""Hubbub's rooms benchmark: every scenario with every peer, in one run.

    bench/rooms-bench.sh                  # installs what is missing, then runs this
    bench/rooms-bench.sh --quick          # small sizes, one repeat: a smoke run
    bench/rooms-bench.sh --peers hubbub_sqlite,socketio_node --scenarios big_room
    bench/.venv/bin/python bench/rooms_compare.py --report bench/results/rooms-….json

Each server is pinned to one CPU (0); the Node load generator (rooms-loadgen/) and this
runner to the other (1). Every scenario and repeat gets a fresh server and a fresh store;
the order is scenario by scenario, repeat by repeat, the peers in turn, so that a drift of
the machine hits them alike. Markdown tables on stdout (ratios against Socket.IO on Node
in the same run), every run in results/rooms-<stamp>.json, the servers' and the load
generator's output beside it. Standard library only. See bench/README.md for the method.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import serverproc

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LOADGEN = BENCH / "rooms-loadgen" / "loadgen.js"
HOST = "127.0.0.1"  # the only address this benchmark talks to
BASELINE = "socketio_node"

# Hubbub as the benchmark runs it: its defaults (one process, memory broker, metrics on),
# with the per-client rate limit and error budget out of the way of a load generator
# that speaks for thousands of users from one address.
HUBBUB_FLAGS = (
    "--log-level", "warning", "--rate-per-second", "1000000", "--rate-burst", "1000000",
    "--max-errors", "1000000", "--max-connections", "50000",
)  # fmt: skip


@dataclass(frozen=True)
class Peer:
    """A server the scenarios run against."""

    name: str
    protocol: str  # what the load generator speaks to it: hubbub | socketio
    argv: tuple[str, ...]  # {port}, {python}, {bench_python}, {store} are filled in
    store: str | None = None  # sqlite | postgres | None (stores nothing)


PEERS = {
    peer.name: peer
    for peer in (
        Peer("socketio_node", "socketio", ("node", "peers/socketio_server.js", "--port", "{port}")),
        Peer(
            "python_socketio",
            "socketio",
            ("{bench_python}", "peers/python_socketio_app.py", "--port", "{port}"),
        ),
        Peer(
            "hubbub_sqlite",
            "hubbub",
            (
                "{python}",
                "-m",
                "hubbub",
                "serve",
                "--port",
                "{port}",
                *HUBBUB_FLAGS,
                "--store-url",
                "{store}",
            ),
            "sqlite",
        ),
        Peer(
            "hubbub_postgres",
            "hubbub",
            (
                "{python}",
                "-m",
                "hubbub",
                "serve",
                "--port",
                "{port}",
                *HUBBUB_FLAGS,
                "--store-url",
                "{store}",
            ),
            "postgres",
        ),
    )
}

# scenario -> (the load generator's scenario, the headline figure that picks the median run)
SCENARIOS = {
    "many_rooms": ("rooms", "deliveries_per_s"),
    "big_room": ("rooms", "deliveries_per_s"),
    "direct": ("rooms", "deliveries_per_s"),
    "join_storm": ("storm", "joins_per_s"),
    "resume_storm": ("resume", "catch_up_s"),
}


def log(msg: str) -> None:
    """A progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port free on the loopback address right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_busy(cpus: list[int], seconds: float) -> dict[str, float]:
    """How busy each of ``cpus`` was over ``seconds`` (percent), from /proc/stat."""

    def snap() -> dict[int, tuple[int, int]]:
        out = {}
        for line in Path("/proc/stat").read_text().splitlines():
            m = re.match(r"cpu(\d+) (.*)", line)
            if m and int(m.group(1)) in cpus:
                v = [int(x) for x in m.group(2).split()]
                out[int(m.group(1))] = (sum(v[:8]), v[3] + v[4])
        return out

    a = snap()
    time.sleep(seconds)
    b = snap()
    busy = {}
    for c in cpus:
        total, idle = b[c][0] - a[c][0], b[c][1] - a[c][1]
        busy[f"cpu{c}"] = round(100 * (total - idle) / total, 1) if total else 0.0
    return busy


# ----------------------------------------------------------------------------- stores
class Database:
    """A PostgreSQL database of its own for one run, dropped afterwards."""

    counter = 0

    def __init__(self, base_url: str) -> None:
        Database.counter += 1
        self.base = base_url.rstrip("/")
        self.name = f"hubbub_bench_{os.getpid()}_{Database.counter}"
        self.url = f"{self.base}/{self.name}"

    def sql(self, statement: str) -> str:
        """Run one statement in the server's ``postgres`` database; its output."""
        out = subprocess.run(
            ["psql", f"{self.base}/postgres", "-Atqc", statement],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return out.stdout

    def create(self) -> None:
        """Make the empty database."""
        self.sql(f"CREATE DATABASE {self.name}")

    def drop(self) -> None:
        """Drop it, whoever is still connected."""
        self.sql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")

    def backend_pids(self) -> list[int]:
        """The server processes serving connections to this database."""
        rows = self.sql(f"SELECT pid FROM pg_stat_activity WHERE datname = '{self.name}'")
        return [int(p) for p in rows.split()]


def postgres_reachable(base_url: str) -> str | None:
    """None if ``psql`` reaches the server; else why not."""
    if not shutil.which("psql"):
        return "psql is not installed"
    try:
        subprocess.run(
            ["psql", f"{base_url.rstrip('/')}/postgres", "-Atqc", "SELECT 1"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (subprocess.SubprocessError, OSError) as e:
        return f"PostgreSQL not reachable at {base_url}: {e}"
    return None


class DbMeter:
    """CPU of a database's backends over the load generator's measured phase (they run
    on any CPU, outside the server's process tree)."""

    def __init__(self, db: Database | None) -> None:
        self.db = db
        self.before: dict[int, float] = {}
        self.used: float | None = None

    def start(self) -> None:
        """The phase starts."""
        if self.db is not None:
            self.before = {p: serverproc.cpu_seconds([p]) for p in self.db.backend_pids()}

    def stop(self) -> None:
        """The phase ends."""
        if self.db is not None:
            now = self.db.backend_pids()
            self.used = sum(serverproc.cpu_seconds([p]) - self.before.get(p, 0.0) for p in now)


# ----------------------------------------------------------------------------- servers
class Server:
    """One peer's server process on a fixed port and store (restartable)."""

    def __init__(self, argv: list[str], port: int, cpu: int | None, log_path: Path) -> None:
        self.argv = ["taskset", "-c", str(cpu), *argv] if cpu is not None else argv
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._pids: list[int] = []

    def start(self, timeout: float) -> float:
        """Start it; returns once ``GET /readyz`` answers 200 (seconds it took)."""
        self.starts += 1
        path = (
            self.log_path.with_suffix(f".{self.starts}.log") if self.starts > 1 else self.log_path
        )
        with open(path, "wb") as logf:
            self.proc = subprocess.Popen(
                self.argv, cwd=BENCH, stdout=logf, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} (see {path})")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        self._pids = serverproc.tree_pids(self.proc.pid)
                        return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout} s (see {path})")

    def pids(self) -> list[int]:
        """The server's process tree, as it was once ready (read once: ``ps`` is not free
        on the load generator's CPU)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return self._pids

    def stop(self) -> None:
        """SIGTERM to its process group (SIGKILL if it lingers)."""
        if self.proc is not None:
            serverproc.stop(self.proc)
            self.proc = None


def command(peer: Peer, port: int, store: str, a: argparse.Namespace) -> list[str]:
    """The peer's command line for one run."""
    fill = {
        "port": str(port), "python": a.hubbub_python, "bench_python": a.bench_python,
        "store": store,
    }  # fmt: skip
    return [part.format(**fill) for part in peer.argv]


# ----------------------------------------------------------------------------- runs
def loadgen_options(scenario: str, a: argparse.Namespace) -> dict[str, Any]:
    """The load generator's options for one scenario."""
    common = {"text-bytes": a.text_bytes, "connect-timeout": a.connect_timeout}
    options: dict[str, dict[str, Any]] = {
        "many_rooms": {"rooms": a.many_rooms, "members": a.many_members, "window": a.many_window},
        "big_room": {
            "rooms": 1, "members": a.big_members, "one-sender": True, "window": a.big_window,
        },
        "direct": {"rooms": a.dm_rooms, "members": 2, "window": a.dm_window},
        "join_storm": {
            "clients": a.storm_clients, "rooms": a.storm_rooms, "concurrency": a.storm_concurrency,
        },
        "resume_storm": {
            "clients": a.resume_clients, "rooms-each": a.resume_rooms_each,
            "room-size": a.resume_room_size, "live": a.resume_live, "backlog": a.resume_backlog,
            "concurrency": a.storm_concurrency,
        },
    }  # fmt: skip
    if SCENARIOS[scenario][0] == "rooms":
        common["seconds"] = a.seconds
    return {**common, **options[scenario]}


def run_loadgen(
    scenario: str,
    peer: Peer,
    server: Server,
    *,
    db: Database | None,
    a: argparse.Namespace,
    err_path: Path,
    restart: Callable[[], None],
) -> dict[str, Any]:
    """Drive ``server`` with the load generator; its result, with the runner's figures."""
    kind = SCENARIOS[scenario][0]
    argv = [
        "node", str(LOADGEN), kind, "--protocol", peer.protocol,
        "--url", f"ws://{HOST}:{server.port}", "--pids", ",".join(map(str, server.pids())),
        "--timeout", str(a.timeout),
    ]  # fmt: skip
    for key, value in loadgen_options(scenario, a).items():
        if value is True:
            argv.append(f"--{key}")
        elif value not in (False, None):
            argv += [f"--{key}", str(value)]
    if a.loadgen_cpu is not None:
        argv = ["taskset", "-c", str(a.loadgen_cpu), *argv]
    with open(err_path, "wb") as errf:
        proc = subprocess.Popen(
            argv, cwd=BENCH, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf,
            start_new_session=True,
        )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    meter = DbMeter(db)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf, result = b"", None
    rss_peak, next_rss = 0, 0.0
    deadline = time.monotonic() + a.timeout + 60
    while result is None and time.monotonic() < deadline:
        if time.monotonic() >= next_rss:
            rss_peak = max(rss_peak, serverproc.rss_kib(server.pids()))
            next_rss = time.monotonic() + 0.25
        if not sel.select(timeout=0.25):
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf and result is None:
            line, buf = buf.split(b"\n", 1)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            kind_ = event.get("event")
            if kind_ == "result":
                result = event
            elif kind_ == "progress":
                log(f"  {event.get('msg')}")
            elif kind_ == "phase":
                (meter.start if event.get("state") == "start" else meter.stop)()
            elif kind_ == "restart":
                restart()
                proc.stdin.write(f"restarted {','.join(map(str, server.pids()))}\n".encode())
                proc.stdin.flush()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        serverproc.stop(proc)
    sel.close()
    if result is None:
        result = {"error": f"load generator ended without a result (exit {proc.returncode})"}
    result.pop("event", None)
    result["server_rss_peak_kib"] = rss_peak
    if meter.used is not None:
        result["db_cpu_s"] = round(meter.used, 2)
        units = result.get("units") or 0
        result["db_cpu_us_per_unit"] = round(meter.used * 1e6 / units, 2) if units else None
    return result


def slow_down(cpu: int | None) -> subprocess.Popen[bytes]:
    """A busy loop on the server's CPU, for the whole run: the scheduler gives it about half
    of that CPU, so a figure the server limits drops (by about half) and one the load
    generator limits does not."""
    argv = [sys.executable, "-c", "while True: pass"]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    return subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL)


def run_once(peer: Peer, scenario: str, tag: str, a: argparse.Namespace) -> dict[str, Any]:
    """One scenario against a fresh server of ``peer`` (and a fresh store)."""
    logdir: Path = a.logdir
    db: Database | None = None
    with tempfile.TemporaryDirectory(prefix="hubbub-rooms-bench-") as tmp:
        store = ""
        if peer.store == "sqlite":
            store = f"sqlite:///{tmp}/hubbub.db"
        elif peer.store == "postgres":
            db = Database(a.pg_url)
            db.create()
            store = db.url
        port = free_port()
        server = Server(
            command(peer, port, store, a), port, a.server_cpu, logdir / f"{peer.name}.{tag}.log"
        )
        hog: subprocess.Popen[bytes] | None = None
        try:
            ready_s = server.start(a.ready_timeout)
            rss_before = serverproc.rss_kib(server.pids())
            background = cpu_busy(a.watch_cpus, 0.5)
            if any(v > 15 for v in background.values()):
                log(f"  warning: CPUs busy before the load: {background}")

            def restart() -> None:
                server.stop()
                log(f"  {peer.name}: restarted in {server.start(a.ready_timeout):.2f} s")

            if a.slow_server:
                hog = slow_down(a.server_cpu)
            err_path = logdir / f"{peer.name}.{tag}.loadgen.err"
            result = run_loadgen(
                scenario, peer, server, db=db, a=a, err_path=err_path, restart=restart
            )
            result.update(
                ready_s=round(ready_s, 3),
                server_rss_before_kib=rss_before,
                cpu_busy_before_load_pct=background,
                server_alive_at_end=server.proc is not None and server.proc.poll() is None,
                command=" ".join(server.argv),
            )
            return result
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            log(f"  {peer.name}/{tag}: {e}")
            return {"error": str(e)}
        finally:
            if hog is not None:
                serverproc.stop(hog)
            server.stop()
            if db is not None:
                db.drop()


def short(scenario: str, r: dict[str, Any]) -> str:
    """One line about a run, for the progress log."""
    if "error" in r:
        return "ERROR " + str(r["error"])[:300]
    lat = r.get("latency") or {}
    gen = f"srv cpu {r.get('server_cpu_pct')}%, gen cpu {r.get('loadgen_cpu_pct')}%"
    if SCENARIOS[scenario][0] == "rooms":
        return (
            f"{r.get('deliveries_per_s')} deliv/s, {r.get('delivered')}/{r.get('expected')}, "
            f"p50 {lat.get('p50_ms')} p99 {lat.get('p99_ms')} ms, "
            f"{r.get('server_cpu_us_per_unit')} µs/deliv, {gen}"
        )
    if scenario == "join_storm":
        return (
            f"{r.get('joins_per_s')} joins/s, {r.get('joined')}/{r.get('clients')} in "
            f"{r.get('elapsed_s')} s, p99 {lat.get('p99_ms')} ms, {gen}"
        )
    return (
        f"caught up {r.get('caught_up')}/{r.get('slots')} in {r.get('catch_up_s')} s, "
        f"recovered {r.get('recovered')}/{r.get('expected_recovered')}, {gen}"
    )


def aggregate(scenario: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run by the scenario's headline figure, with every run kept."""
    key = SCENARIOS[scenario][1]
    good = sorted((r for r in runs if r.get(key) is not None), key=lambda r: float(r[key]))
    chosen = dict(good[len(good) // 2]) if good else dict(runs[-1])
    values = [float(r[key]) for r in good]
    chosen["repeats"] = {"metric": key, "values": values, "runs": len(runs), "ok": len(good)}
    chosen["all_runs"] = runs
    return chosen


def run_all(peers: list[Peer], a: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Scenario by scenario, repeat by repeat, every peer in turn."""
    out: dict[str, dict[str, Any]] = {s: {} for s in a.scenarios}
    for scenario in a.scenarios:
        runs: dict[str, list[dict[str, Any]]] = {p.name: [] for p in peers}
        for i in range(a.repeat):
            for peer in peers:
                tag = f"{scenario}.{i + 1}"
                log(f"{peer.name}: {tag} ...")
                r = run_once(peer, scenario, tag, a)
                log(f"{peer.name}: {tag} {short(scenario, r)}")
                runs[peer.name].append(r)
        for peer in peers:
            out[scenario][peer.name] = aggregate(scenario, runs[peer.name])
    return out


# ----------------------------------------------------------------------------- report
def fmt(x: Any, digits: int = 1) -> str:
    """A number for a table cell."""
    if x is None:
        return "-"
    if isinstance(x, float) and not x.is_integer():
        return f"{x:,.{digits}f}"
    return f"{int(x):,}"


def spread(r: dict[str, Any]) -> str:
    """' ±x%': half the min-max range over the median, when repeated."""
    values, key = r.get("repeats", {}).get("values", []), r.get("repeats", {}).get("metric")
    if len(values) < 2 or not r.get(key):
        return ""
    return f" ±{50 * (max(values) - min(values)) / float(r[key]):.0f}%"


def ratio(x: Any, y: Any) -> str:
    """x / y, as '1.23x'."""
    if not x or not y:
        return "-"
    return f"{x / y:.2f}x"


def checks(r: dict[str, Any]) -> str:
    """Lost, duplicated, out of order (and seq gaps): '0' when all are."""
    bad = {
        "lost": r.get("lost"),
        "dup": (r.get("duplicates") or 0) + (r.get("seq_duplicates") or 0),
        "ooo": r.get("out_of_order"),
        "gaps": r.get("seq_gaps"),
        "errors": (r.get("error_frames") or 0) + (r.get("connect_errors") or 0),
        "unacked": (r.get("sent") or 0) - (r.get("acked") or 0) if "acked" in r else 0,
    }
    shown = [f"{k} {fmt(v)}" for k, v in bad.items() if v]
    return ", ".join(shown) if shown else "0"


def flags(r: dict[str, Any]) -> str:
    """Why a figure may not be the server's own limit."""
    why = []
    if (r.get("loadgen_cpu_pct") or 0) >= 90:
        why.append("gen-bound")
    if any(v > 15 for v in (r.get("cpu_busy_before_load_pct") or {}).values()):
        why.append("busy before")
    for run in r.get("all_runs", []):
        if "error" in run:
            why.append("a run failed")
            break
    return ", ".join(why)


def seconds_p50_p99(r: dict[str, Any]) -> str:
    """The run's latency percentiles, in seconds."""
    lat = r.get("latency") or {}
    if lat.get("p50_ms") is None:
        return "-"
    return f"{lat['p50_ms'] / 1000:.2f} / {lat['p99_ms'] / 1000:.2f}"


def kib_per_connection(r: dict[str, Any]) -> float | None:
    """Server memory per connected client: RSS with all joined, less RSS at start."""
    after, before, joined = r.get("server_rss_kib"), r.get("server_rss_before_kib"), r.get("joined")
    if not (after and before and joined):
        return None
    return round((after - before) / joined, 1)


def mib(kib: Any) -> str:
    """KiB as MiB."""
    return fmt(kib / 1024, 0) if kib else "-"


def markdown(results: dict[str, Any]) -> str:
    """The tables of a run."""
    by = results["scenarios"]
    lines: list[str] = []
    base_name = BASELINE

    def base(scenario: str) -> dict[str, Any]:
        return dict(by.get(scenario, {}).get(base_name) or {})

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    def header(*names: str) -> list[str]:
        return [row(list(names)), "|---" * len(names) + "|"]

    rooms = [s for s in by if SCENARIOS[s][0] == "rooms"]
    if rooms:
        lines += header(
            "scenario", "peer", "deliveries/s", "p50 ms", "p99 ms", "lost/dup/ooo",
            "server µs/deliv", "server CPU %", "db µs/deliv", "loadgen CPU %", "RSS MiB",
            "deliv/s / Socket.IO", "µs/deliv / Socket.IO", "note",
        )  # fmt: skip
        for scenario in rooms:
            b = base(scenario)
            for name, r in by[scenario].items():
                if "error" in r:
                    lines.append(row([scenario, name, f"ERROR: {str(r['error'])[:80]}"]))
                    continue
                lat = r.get("latency") or {}
                lines.append(row([
                    scenario, name, fmt(r.get("deliveries_per_s")) + spread(r),
                    fmt(lat.get("p50_ms")), fmt(lat.get("p99_ms")), checks(r),
                    fmt(r.get("server_cpu_us_per_unit"), 2), fmt(r.get("server_cpu_pct")),
                    fmt(r.get("db_cpu_us_per_unit"), 2), fmt(r.get("loadgen_cpu_pct")),
                    mib(r.get("server_rss_peak_kib")),
                    ratio(r.get("deliveries_per_s"), b.get("deliveries_per_s")),
                    ratio(r.get("server_cpu_us_per_unit"), b.get("server_cpu_us_per_unit")),
                    flags(r),
                ]))  # fmt: skip
    if "join_storm" in by:
        b = base("join_storm")
        lines += ["", *header(
            "join storm", "clients joined", "joins/s", "all in, s", "p50 ms", "p99 ms", "errors",
            "server µs/join", "server CPU %", "db µs/join", "loadgen CPU %", "RSS MiB",
            "KiB/conn",
            "joins/s / Socket.IO", "µs/join / Socket.IO", "note",
        )]  # fmt: skip
        for name, r in by["join_storm"].items():
            if "error" in r:
                lines.append(row([name, f"ERROR: {str(r['error'])[:80]}"]))
                continue
            lat = r.get("latency") or {}
            lines.append(row([
                name, f"{fmt(r.get('joined'))}/{fmt(r.get('clients'))}",
                fmt(r.get("joins_per_s")) + spread(r), fmt(r.get("elapsed_s"), 2),
                fmt(lat.get("p50_ms")), fmt(lat.get("p99_ms")),
                fmt((r.get("connect_errors") or 0) + (r.get("error_frames") or 0)),
                fmt(r.get("server_cpu_us_per_unit")), fmt(r.get("server_cpu_pct")),
                fmt(r.get("db_cpu_us_per_unit")), fmt(r.get("loadgen_cpu_pct")),
                mib(r.get("server_rss_peak_kib")), fmt(kib_per_connection(r)),
                ratio(r.get("joins_per_s"), b.get("joins_per_s")),
                ratio(r.get("server_cpu_us_per_unit"), b.get("server_cpu_us_per_unit")),
                flags(r),
            ]))  # fmt: skip
    if "resume_storm" in by:
        b = base("resume_storm")
        lines += ["", *header(
            "resume storm", "caught up (client, room)", "all caught up in s", "p50 / p99 s",
            "missed → recovered",
            "lost/dup/ooo", "resets", "server CPU s", "server µs/recovered", "db CPU s",
            "loadgen CPU %", "RSS MiB", "time / Socket.IO", "note",
        )]  # fmt: skip
        for name, r in by["resume_storm"].items():
            if "error" in r:
                lines.append(row([name, f"ERROR: {str(r['error'])[:80]}"]))
                continue
            stores = bool(r.get("expected_recovered"))
            lines.append(row([
                name, f"{fmt(r.get('caught_up'))}/{fmt(r.get('slots'))}",
                fmt(r.get("catch_up_s"), 2) + spread(r), seconds_p50_p99(r),
                f"{fmt(r.get('missed'))} → {fmt(r.get('recovered'))}",
                checks(r) if stores else "none recovered (stores nothing)", fmt(r.get("resets")),
                fmt(r.get("server_cpu_s"), 2),
                fmt(r.get("server_cpu_us_per_unit") if stores else None, 2),
                fmt(r.get("db_cpu_s"), 2), fmt(r.get("loadgen_cpu_pct")),
                mib(r.get("server_rss_peak_kib")),
                ratio(r.get("catch_up_s"), b.get("catch_up_s")), flags(r),
            ]))  # fmt: skip
    cfg = results["config"]
    lines += [
        "",
        *(
            ["**--slow-server**: a busy loop shared the servers' CPU in every run.", ""]
            if cfg.get("slow_server")
            else []
        ),
        f"Median of {cfg['repeat']} run(s) each, every run on a fresh server and store; ±x% = "
        "half the min-max range over the median. Servers on CPU "
        f"{cfg['server_cpu']}, the load generator on CPU {cfg['loadgen_cpu']}. "
        "/ Socket.IO: this peer's figure over socketio_node's in this run (rates: > 1 is "
        "better; µs and times: < 1 is better). "
        "db: the PostgreSQL backends' CPU, on any core, not in the server's figures. "
        "gen-bound: the load generator used ≥ 90% of its core, so the server's rate is a lower "
        "bound (its µs per delivery holds). busy before: a CPU was > 15% busy before the load "
        "(something else ran). The resume storm's peers recover nothing: they store no "
        "message; their time is only to reconnect and rejoin.",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def environment(a: argparse.Namespace) -> dict[str, Any]:
    """The machine and versions, for the JSON."""

    def out(*argv: str) -> str | None:
        try:
            return subprocess.run(
                argv, capture_output=True, text=True, timeout=30, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        None,
    )

    def npm_version(folder: str, package: str) -> str | None:
        try:
            path = BENCH / folder / "node_modules" / package / "package.json"
            return str(json.loads(path.read_text())["version"])
        except (OSError, ValueError, KeyError):
            return None

    return {
        "kernel": platform.release(),
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "node": out("node", "--version"),
        "hubbub_python": out(a.hubbub_python, "--version"),
        "hubbub_commit": out("git", "-C", str(ROOT), "rev-parse", "HEAD"),
        "hubbub_dirty": bool(out("git", "-C", str(ROOT), "status", "--porcelain", "src")),
        "socket.io": npm_version("peers", "socket.io"),
        "socket.io-client": npm_version("rooms-loadgen", "socket.io-client"),
        "ws": npm_version("rooms-loadgen", "ws"),
        "python_socketio": out(
            a.bench_python,
            "-c",
            "import importlib.metadata as m; print(m.version('python-socketio'))",
        ),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


QUICK = {
    "seconds": 2, "many_rooms": 10, "many_members": 10, "big_members": 200, "dm_rooms": 100,
    "storm_clients": 500, "storm_rooms": 10, "resume_clients": 100, "resume_room_size": 10,
    "resume_live": 2, "resume_backlog": 5,
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags; sizes default to issue 16's, ``--quick`` makes them small."""
    p = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--peers", default=",".join(PEERS), help="comma list")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list")
    p.add_argument("--repeat", type=int, default=None, help="runs of each (default 3; 1 --quick)")
    p.add_argument("--quick", action="store_true", help="small sizes, one run each: a smoke run")
    p.add_argument("--report", metavar="JSON", help="print the tables of an earlier run")
    p.add_argument("--seconds", type=float, default=10, help="posting time of the room scenarios")
    p.add_argument("--text-bytes", type=int, default=64, help="length of each message text")
    p.add_argument("--many-rooms", type=int, default=200)
    p.add_argument("--many-members", type=int, default=25)
    p.add_argument("--many-window", type=int, default=4, help="messages in flight per room")
    p.add_argument("--big-members", type=int, default=5000)
    p.add_argument("--big-window", type=int, default=10, help="messages in flight (one sender)")
    p.add_argument("--dm-rooms", type=int, default=5000, help="rooms of two")
    p.add_argument("--dm-window", type=int, default=1, help="messages in flight per room")
    p.add_argument("--storm-clients", type=int, default=10000)
    p.add_argument("--storm-rooms", type=int, default=100)
    p.add_argument("--storm-concurrency", type=int, default=1000, help="connects in flight")
    p.add_argument("--resume-clients", type=int, default=2000)
    p.add_argument("--resume-rooms-each", type=int, default=5)
    p.add_argument("--resume-room-size", type=int, default=50)
    p.add_argument("--resume-live", type=int, default=5, help="messages per room while online")
    p.add_argument("--resume-backlog", type=int, default=20, help="messages per room while away")
    p.add_argument("--connect-timeout", type=float, default=30)
    p.add_argument("--timeout", type=float, default=1800, help="per run, seconds")
    p.add_argument("--ready-timeout", type=float, default=60)
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--loadgen-cpu", type=int, default=1)
    p.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    p.add_argument(
        "--slow-server",
        action="store_true",
        help="a busy loop shares the servers' CPU: shows which figures the server limits",
    )
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432")
    p.add_argument("--hubbub-python", default=str(ROOT / ".venv" / "bin" / "python"))
    p.add_argument("--bench-python", default=str(BENCH / ".venv" / "bin" / "python"))
    p.add_argument("--out", default=str(BENCH / "results"))
    a = p.parse_args(argv)
    if a.quick:
        for key, value in QUICK.items():
            if getattr(a, key) == p.get_default(key):
                setattr(a, key, value)
    if a.repeat is None:
        a.repeat = 1 if a.quick else 3
    a.scenarios = [s for s in a.scenarios.split(",") if s]
    if unknown := set(a.scenarios) - set(SCENARIOS):
        p.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    a.peer_names = [s for s in a.peers.split(",") if s]
    if unknown := set(a.peer_names) - set(PEERS):
        p.error(f"unknown peers {sorted(unknown)}; known: {', '.join(PEERS)}")
    if a.no_pin or (os.cpu_count() or 1) < 2:
        a.server_cpu = a.loadgen_cpu = None
    a.watch_cpus = [c for c in (a.server_cpu, a.loadgen_cpu) if c is not None] or [0]
    return a


def main(argv: list[str] | None = None) -> int:
    """Run everything asked; print the tables."""
    a = parse_args(argv)
    if a.report:
        print(markdown(json.loads(Path(a.report).read_text())))
        return 0
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.loadgen_cpu is not None:
        os.sched_setaffinity(0, {a.loadgen_cpu})  # the runner stays off the servers' CPU
    peers = []
    for name in a.peer_names:
        peer = PEERS[name]
        why = postgres_reachable(a.pg_url) if peer.store == "postgres" else None
        if why:
            log(f"skipping {name}: {why}")
            continue
        peers.append(peer)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(a.out)
    a.logdir = out / f"rooms-{stamp}-logs"
    a.logdir.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in vars(a).items() if k not in ("logdir",)}
    t0 = time.monotonic()
    results = {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "config": config,
        "environment": environment(a),
        "peers": [p.name for p in peers],
        "scenarios": run_all(peers, a),
    }
    results["total_s"] = round(time.monotonic() - t0, 1)
    path = out / f"rooms-{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(markdown(results))
    print(f"\nall runs: {path} (logs: {a.logdir}); {results['total_s']} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
