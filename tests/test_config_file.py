"""configfile.py: the TOML file below the HUBBUB_* variables and the flags, over real
processes (``hubbub config show|check|example``, ``hubbub serve --config``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hubbub.config import Settings
from hubbub.configfile import is_secret, load, render_example
from tests.roomclient import RoomClient
from tests.servers import ServerProcess
from tests.services import service_url

DOCS = Path(__file__).parent.parent / "docs" / "operations.md"
_ORIGIN = re.compile(r"^(?:# )?(\w+)(?: = .*?| \(unset\))\s+# (.+)$")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any HUBBUB_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("HUBBUB_")}
    return {**env, **extra}


def hubbub(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubbub", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=clean_env(**env),
    )


def show(*args: str, **env: str) -> tuple[dict[str, Any], dict[str, str], str]:
    """``hubbub config show ARGS``: the values (read back as TOML), the origin of each
    setting, and the whole output."""
    result = hubbub("config", "show", *args, **env)
    assert result.returncode == 0, result.stderr
    values = tomllib.loads(result.stdout)
    origins = {
        m.group(1): m.group(2)
        for line in result.stdout.splitlines()
        if (m := _ORIGIN.match(line)) and m.group(1) in Settings.model_fields
    }
    assert set(origins) == set(Settings.model_fields), result.stdout
    return values, origins, result.stdout


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- precedence ---------------------------------------------------------------------


def test_flag_over_variable_over_file_over_default(tmp_path: Path) -> None:
    config = write(
        tmp_path / "hubbub.toml",
        'port = 1111\nmax_text_chars = 11\nrate_burst = 7\nlog_level = "warning"\n',
    )
    values, origins, _ = show(
        "--config", str(config), "--port", "3333", HUBBUB_PORT="2222", HUBBUB_MAX_TEXT_CHARS="22"
    )
    assert (values["port"], origins["port"]) == (3333, "flag --port, over the file")
    assert (values["max_text_chars"], origins["max_text_chars"]) == (
        22,
        "env HUBBUB_MAX_TEXT_CHARS, over the file",
    )
    assert (values["rate_burst"], origins["rate_burst"]) == (7, "file")
    assert (values["log_level"], origins["log_level"]) == ("warning", "file")
    assert (values["host"], origins["host"]) == ("127.0.0.1", "default")
    # A variable without a file, and a flag over a variable.
    values, origins, _ = show("--rate-burst", "9", HUBBUB_RATE_BURST="8", HUBBUB_HOST="0.0.0.0")
    assert (values["rate_burst"], origins["rate_burst"]) == (9, "flag --rate-burst")
    assert (values["host"], origins["host"]) == ("0.0.0.0", "env HUBBUB_HOST")


def test_config_flag_over_the_variable_that_names_a_file(tmp_path: Path) -> None:
    named = write(tmp_path / "named.toml", "port = 1001\n")
    flagged = write(tmp_path / "flagged.toml", "port = 1002\n")
    values, origins, output = show(HUBBUB_CONFIG=str(named))
    assert (values["port"], origins["port"]) == (1001, "file")
    assert f"# Config file: {named} (from HUBBUB_CONFIG)." in output
    values, _, output = show("--config", str(flagged), HUBBUB_CONFIG=str(named))
    assert values["port"] == 1002
    assert f"# Config file: {flagged} (from --config)." in output
    _, origins, output = show()
    assert "# Config file: none" in output
    assert set(origins.values()) == {"default"}


async def test_a_running_server_follows_the_precedence(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    config = write(
        tmp_path / "hubbub.toml",
        "port = 1\n"  # the test's --port 0 wins
        "max_text_chars = 5\n"  # the variable says 8, the flag 6
        "max_rooms_per_connection = 1\n"  # the variable says 2
        'guest_rooms = "lobby,team-*"\n'  # only here
        'data_dir = "state"\n',  # only here
    )
    server = start_server(
        "--config", str(config), "--max-text-chars", "6",
        env={"HUBBUB_MAX_TEXT_CHARS": "8", "HUBBUB_MAX_ROOMS_PER_CONNECTION": "2"},
    )  # fmt: skip
    assert server.port not in (0, 1)
    ann = await RoomClient.open(server.ws(""), "Ann")
    mark = len(ann.frames)
    await ann.send(type="join", room="other")
    assert (await ann.next_of("error", mark))["code"] == "forbidden"  # guest_rooms: file
    await ann.join("lobby")
    await ann.join("team-a")
    mark = len(ann.frames)
    await ann.send(type="join", room="team-b")
    assert (await ann.next_of("error", mark))["code"] == "too_many_rooms"  # 2: variable
    assert (await ann.say("lobby", "123456"))["seq"] == 1
    mark = len(ann.frames)
    await ann.send(type="send", room="lobby", text="1234567", ref="long")
    error = await ann.next_of("error", mark, ref="long")
    assert error["code"] == "text_too_long"  # 6: the flag
    await ann.close()
    assert (Path(server.workdir.name) / "state" / "hubbub.db").is_file()


async def test_workers_get_the_files_settings(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    # Worker processes rebuild their settings from HUBBUB_* variables (Settings.to_env),
    # so the file's values reach every one of them.
    config = write(
        tmp_path / "hubbub.toml",
        f'broker_url = "{service_url("redis")}"\napi_key = "key-from-the-file"\n'
        "max_text_chars = 5\n",
    )
    server = start_server("--config", str(config), "--workers", "2")
    pids = set()
    for _ in range(40):  # each request a new connection, spread over the workers
        pids.add(server.readyz()["pid"])
        assert api_status(server, "key-from-the-file") == 200
    assert len(pids) == 2, pids
    clients = [await RoomClient.open(server.ws(""), f"u{i}") for i in range(6)]
    for i, client in enumerate(clients):
        await client.join("lobby")
        mark = len(client.frames)
        await client.send(type="send", room="lobby", text="123456", ref=i)
        assert (await client.next_of("error", mark, ref=i))["code"] == "text_too_long"
    for client in clients:
        await client.close()


def api_status(server: ServerProcess, key: str) -> int:
    request = urllib.request.Request(
        server.http("/api/v1/rooms"), headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        status: int = response.status
        return status


def test_settings_reach_workers_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.upper().startswith("HUBBUB_"):
            monkeypatch.delenv(name)
    config = write(tmp_path / "c.toml", 'api_key = "k"\nping_interval = 3\ndata_dir = "/srv/x"\n')
    loaded = load({"port": 0}, str(config)).settings
    for key, value in loaded.to_env().items():
        monkeypatch.setenv(key, value)
    assert Settings() == loaded
    assert loaded.store_url == "sqlite:////srv/x/hubbub.db"


# -- show: secrets ----------------------------------------------------------------------


def test_show_redacts_secrets(tmp_path: Path) -> None:
    config = write(
        tmp_path / "hubbub.toml",
        'api_key = "api-key-value"\n'
        'webhook_secret = "webhook-secret-value"\n'
        'webhook_urls = "https://hooks.example/in?token=hook-token-value"\n'
        'broker_url = "redis://:broker-password-value@10.0.0.5:6379/0"\n'
        'store_url = "postgresql://hubbub:store-password-value@db/hubbub"\n'
        'jwt_public_key = "/etc/hubbub/public.pem"\n',
    )
    values, origins, output = show(
        "--config", str(config), HUBBUB_JWT_SECRET="jwt-secret-value-" + "x" * 32
    )
    for word in ("api-key", "webhook-secret", "hook-token", "broker-password", "store-password"):
        assert f"{word}-value" not in output
    assert "jwt-secret-value" not in output
    assert values["api_key"] == values["webhook_secret"] == values["jwt_secret"] == "***"
    assert origins["jwt_secret"] == "env HUBBUB_JWT_SECRET"
    assert values["broker_url"] == "redis://:***@10.0.0.5:6379/0"
    assert values["store_url"] == "postgresql://hubbub:***@db/hubbub"
    assert values["webhook_urls"] == "https://hooks.example/in?token=***"
    assert values["jwt_public_key"] == "/etc/hubbub/public.pem"  # a file's name, public


def test_every_credential_setting_counts_as_secret() -> None:
    secret = {name for name in Settings.model_fields if is_secret(name)}
    assert {"api_key", "jwt_secret", "webhook_secret"} <= secret
    assert not secret & {"jwt_public_key", "ssl_keyfile", "ssl_certfile", "session_cookie"}


# -- check ------------------------------------------------------------------------------


def test_check_accepts_a_good_file(tmp_path: Path) -> None:
    config = write(tmp_path / "ok.toml", 'port = 9000\nping_interval = 5\nlog_format = "json"\n')
    result = hubbub("config", "check", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{config}: ok (3 settings given)\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_txt_chars = 3\n", "unknown key 'max_txt_chars': did you mean 'max_text_chars'?"),
        ("max-text-chars = 3\n", "unknown key 'max-text-chars': did you mean 'max_text_chars'?"),
        ("[server]\nport = 1\n", "unknown key 'server': the file has no tables"),
        ("zzz = 1\n", "unknown key 'zzz': hubbub config example lists them"),
        ('port = "8000"\n', 'port: Input should be a valid integer (got string "8000")'),
        ("port = 70000\n", "port: Input should be less than or equal to 65535 (got integer 70000)"),
        ("compression = 1\n", "compression: Input should be a valid boolean (got integer 1)"),
        ('log_level = "loud"\n', "log_level: Input should be "),
        ('broker_url = "nowhere"\n', "broker_url: Value error, a broker URL looks like scheme://"),
        ("port = \n", "is not TOML: Invalid value (at line 1, column 8)"),
    ],
)
def test_check_refuses_with_the_key_and_the_file(tmp_path: Path, text: str, message: str) -> None:
    config = write(tmp_path / "bad.toml", text)
    result = hubbub("config", "check", str(config))
    assert result.returncode == 2
    assert str(config) in result.stderr and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    # serve refuses it the same way, before it binds anything.
    served = hubbub("serve", "--config", str(config))
    assert (served.returncode, served.stderr) == (result.returncode, result.stderr)


def test_check_lists_every_problem_at_once(tmp_path: Path) -> None:
    config = write(tmp_path / "bad.toml", "prot = 1\nworkers = 0\nhost = 5\n")
    result = hubbub("config", "check", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines()[1:] == [
        "  unknown key 'prot': did you mean 'port'?",
        "  workers: Input should be greater than or equal to 1 (got integer 0)",
        "  host: Input should be a valid string (got integer 5)",
    ]


def test_check_refuses_what_serve_would(tmp_path: Path) -> None:
    config = write(tmp_path / "hooks.toml", 'webhook_urls = "https://hooks.example/in"\n')
    result = hubbub("config", "check", str(config))
    assert result.returncode == 2
    assert "--webhook-urls needs --webhook-secret" in result.stderr
    # ... with the variables in force: here the secret comes from one.
    result = hubbub("config", "check", str(config), HUBBUB_WEBHOOK_SECRET="s")
    assert result.returncode == 0, result.stderr


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    result = hubbub("serve", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert f"cannot read the config file {tmp_path / 'nope.toml'}" in result.stderr
    result = hubbub("config", "show", HUBBUB_CONFIG=str(tmp_path / "nope.toml"))
    assert result.returncode == 2 and "cannot read the config file" in result.stderr


def test_token_create_reads_the_secret_from_the_file(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", f'jwt_secret = "{"s" * 40}"\n')
    result = hubbub("token", "create", "--user", "alice", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".") == 2  # header.claims.signature


# -- the example ------------------------------------------------------------------------


def docs_example() -> str:
    section = DOCS.read_text().split("\n## Configuration file\n", 1)[1]
    match = re.search(r"```toml\n(.*?)```", section, re.S)
    assert match, "no ```toml block in docs/operations.md's Configuration file section"
    return match.group(1)


def check_example(text: str, tmp_path: Path) -> None:
    """``text`` loads, names every setting (set, or commented out when unset by default)
    and sets each to its default."""
    data = tomllib.loads(text)
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    # store_url is commented out: set, it would hold the store in place of data_dir.
    assert data == {k: v for k, v in defaults.items() if v is not None and k != "store_url"}
    assert '\n# store_url = "sqlite:///data/hubbub.db"\n' in text
    for name, value in defaults.items():
        if value is None:
            assert f"\n# {name} = (unset by default" in text, name
    config = write(tmp_path / "example.toml", text)
    result = hubbub("config", "check", str(config))
    assert result.returncode == 0, result.stderr
    _, origins, _ = show("--config", str(config))
    assert {name for name, origin in origins.items() if origin == "file"} == set(data)


def test_the_example_in_the_docs_is_complete_and_loads(tmp_path: Path) -> None:
    # When it fails after a setting changed: hubbub config example > the block in the docs.
    check_example(docs_example(), tmp_path)


def test_config_example_prints_every_setting(tmp_path: Path) -> None:
    result = hubbub("config", "example")
    assert result.returncode == 0, result.stderr
    assert result.stdout == render_example()
    check_example(result.stdout, tmp_path)


# -- --data-dir -----------------------------------------------------------------------


def test_the_default_store_stays_where_it_was() -> None:
    # Deployments started before --data-dir keep finding data/hubbub.db.
    assert Settings().store_url == "sqlite:///data/hubbub.db"
    assert Settings(data_dir="/var/lib/hubbub").store_url == "sqlite:////var/lib/hubbub/hubbub.db"
    assert Settings(data_dir="rel").store_url == "sqlite:///rel/hubbub.db"
    assert Settings(data_dir="~/h").store_url == f"sqlite:///{Path.home()}/h/hubbub.db"
    # A store URL given wins over the data directory.
    given = Settings(data_dir="/var/lib/hubbub", store_url="sqlite:///else.db")
    assert given.store_url == "sqlite:///else.db"


def test_show_says_the_store_follows_the_data_dir(tmp_path: Path) -> None:
    values, origins, _ = show("--data-dir", str(tmp_path))
    assert values["store_url"] == f"sqlite:///{tmp_path}/hubbub.db"
    assert origins["store_url"] == "default (hubbub.db in data_dir)"
