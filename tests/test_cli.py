"""cli.py and config.py: flags over HUBBUB_* variables over defaults; refusals are clear."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hubbub.cli import build_parser, settings_from_args
from hubbub.config import Settings


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubbub", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_defaults_bind_localhost_8000_with_the_memory_broker() -> None:
    settings = Settings()
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert settings.broker_url == "memory://"
    assert settings.max_frame_bytes == 65536


def test_flags_override_environment_which_overrides_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUBBUB_PORT", "9001")
    monkeypatch.setenv("HUBBUB_OUTBOX_MAX_BYTES", "4096")
    args = build_parser().parse_args(["serve", "--port", "9002", "--log-level", "warning"])
    settings = settings_from_args(args)
    assert settings.port == 9002
    assert settings.outbox_max_bytes == 4096
    assert settings.log_level == "warning"


def test_settings_round_trip_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(port=1234, ping_timeout=2.5, broker_url="memory://x")
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    assert Settings() == settings


def test_workers_with_the_memory_broker_are_refused() -> None:
    result = run_cli("serve", "--workers", "2")
    assert result.returncode == 2
    assert "--workers 2 needs a broker that reaches every process" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_broker_scheme_is_refused() -> None:
    result = run_cli("serve", "--broker-url", "kafka://localhost")
    assert result.returncode == 2
    assert "unknown broker URL scheme 'kafka'" in result.stderr


def test_invalid_setting_is_refused() -> None:
    result = run_cli("serve", "--port", "70000")
    assert result.returncode == 2
    assert "invalid settings" in result.stderr and "port" in result.stderr


def test_help_lists_every_setting_with_its_variable() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    for name in Settings.model_fields:
        assert f"HUBBUB_{name.upper()}" in result.stdout


def test_an_app_that_cannot_be_imported_is_refused() -> None:
    result = run_cli("serve", "--port", "0", "--app", "no_such_module:app")
    assert result.returncode == 3  # the server did not start
    assert 'Could not import module "no_such_module"' in result.stderr


def test_factory_needs_an_app() -> None:
    result = run_cli("serve", "--factory")
    assert result.returncode == 2
    assert "--factory needs --app" in result.stderr
