"""The wheel works alone: ``python -m build`` makes an sdist and a wheel with the web
assets; the wheel, installed into a fresh venv outside the checkout, serves the UI, its
static files and ``/v1/ws``, and keeps its SQLite store in ``--data-dir``.

One test, slow (a build and a venv install): it runs in CI like every other test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.roomclient import RoomClient
from tests.servers import ServerProcess
from tests.services import missing

ROOT = Path(__file__).parent.parent
INSTALL_TIMEOUT = 900


def run(*command: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        check=False,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        env=env,
    )


def succeed(*command: str | Path, cwd: Path, env: dict[str, str]) -> str:
    result = run(*command, cwd=cwd, env=env)
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def web_assets() -> set[str]:
    """The files under src/hubbub/web, as paths inside the package (``hubbub/web/…``)."""
    web = ROOT / "src" / "hubbub" / "web"
    return {
        path.relative_to(ROOT / "src").as_posix()
        for path in web.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.headers.get("content-type", ""), response.read()


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT * 2)
async def test_the_wheel_installed_alone_serves_everything(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    # Nothing of the checkout on the path of what is run from the venv.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    # Building and installing take packages from the index pip is configured with.
    probe = run(
        sys.executable, "-m", "pip", "download", "--no-deps", "--retries", "1",
        "--dest", tmp_path / "probe", "setuptools", cwd=tmp_path, env=env,
    )  # fmt: skip
    if probe.returncode != 0:
        last = probe.stderr.strip().splitlines()[-1:] or ["no output"]
        missing(f"pip's package index (pip config list) is unreachable: {last[0]}")

    dist = tmp_path / "dist"
    succeed(sys.executable, "-m", "build", "--outdir", dist, ROOT, cwd=tmp_path, env=env)
    (wheel,) = dist.glob("hubbub-*.whl")
    (sdist,) = dist.glob("hubbub-*.tar.gz")
    assets = web_assets()
    assert {"hubbub/web/index.html", "hubbub/web/hubbub.js", "hubbub/web/tutorial/chat.html"} <= (
        assets
    )
    with zipfile.ZipFile(wheel) as archive:
        assert assets <= set(archive.namelist())
    with tarfile.open(sdist) as archive:
        top = sdist.name.removesuffix(".tar.gz")
        assert {f"{top}/src/{asset}" for asset in assets} <= set(archive.getnames())

    venv = tmp_path / "venv"
    succeed(sys.executable, "-m", "venv", venv, cwd=tmp_path, env=env)
    succeed(
        venv / "bin" / "python", "-m", "pip", "install", "--quiet",
        "-c", ROOT / "requirements.lock", wheel, cwd=tmp_path, env=env,
    )  # fmt: skip
    where = succeed(
        venv / "bin" / "python",
        "-c",
        "import hubbub; print(hubbub.__file__)",
        cwd=tmp_path,
        env=env,
    )
    assert Path(where.strip()).is_relative_to(venv), where

    data = tmp_path / "state"
    server = start_server(
        "--data-dir", str(data), command=[str(venv / "bin" / "hubbub"), "serve"], env=env
    )
    web = ROOT / "src" / "hubbub" / "web"
    status, kind, page = get(server.http("/"))
    assert (status, kind.split(";")[0]) == (200, "text/html")
    assert page == (web / "index.html").read_bytes()
    for name in ("app.js", "hubbub.js", "style.css"):
        status, kind, body = get(server.http(f"/static/{name}"))
        assert status == 200 and body == (web / name).read_bytes(), name
    status, _, tutorial = get(server.http("/tutorial/chat"))
    assert status == 200 and b"WebSocket" in tutorial

    ann = await RoomClient.open(server.ws(""), "Ann")
    bob = await RoomClient.open(server.ws(""), "Bob")
    await ann.join("lobby")
    await bob.join("lobby")
    ack = await ann.say("lobby", "from the wheel")
    await bob.has_seqs("lobby", ack["seq"])
    assert bob.texts["lobby"] == ["from the wheel"]
    await ann.close()
    await bob.close()
    assert (data / "hubbub.db").is_file()
    assert not (Path(server.workdir.name) / "data").exists()  # not the old default
