"""A refused setting's value is not printed when it is a secret (a short jwt_secret is
still someone's secret), from a flag, a variable or the config file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SECRET = "tooshort-but-real-secret"


def hubbub(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubbub", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, **env},
        check=False,
    )


def test_a_refused_secret_is_named_not_shown(tmp_path: Path) -> None:
    (tmp_path / "hubbub.toml").write_text(f'jwt_secret = "{SECRET}"\n')
    for done in (
        hubbub("serve", "--port", "0", "--jwt-secret", SECRET, cwd=tmp_path),
        hubbub("serve", "--port", "0", cwd=tmp_path, HUBBUB_JWT_SECRET=SECRET),
        hubbub("config", "check", str(tmp_path / "hubbub.toml"), cwd=tmp_path),
    ):
        assert done.returncode == 2, done.stderr
        assert "jwt_secret" in done.stderr and "32 characters" in done.stderr
        assert SECRET not in done.stderr + done.stdout


def test_config_show_hides_every_credential_a_url_can_carry() -> None:
    from hubbub.configfile import shown

    cases = {
        ("broker_url", "redis://:pw@10.0.0.5:6379/0"): "redis://:***@10.0.0.5:6379/0",
        ("store_url", "postgresql://u:p@ss@db/x"): "postgresql://u:***@db/x",  # an @ in it
        ("broker_url", "nats://u:pa,ss@n"): "nats://u:***@n",  # a comma in it
        ("webhook_urls", "https://a/in?token=t,https://apitoken@b/hook"): (
            "https://a/in?token=***,https://***@b/hook"  # a user name alone may be a token
        ),
        (
            "connect_hook_url",
            "https://x/h?sig=s1&code=c2&ok=2",
        ): "https://x/h?sig=***&code=***&ok=2",
    }
    for (name, value), expected in cases.items():
        assert shown(name, value) == expected
