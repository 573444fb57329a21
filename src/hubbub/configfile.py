"""The configuration file of the ``hubbub`` command: TOML, one key per setting.

A file is named by ``--config FILE`` or, failing that, ``HUBBUB_CONFIG``; nothing is
looked for elsewhere, so what is in force never depends on which directory a process
happened to start in. Its keys are the names of the :class:`~hubbub.config.Settings`
fields (``max_text_chars``; one spelling, so that one grep finds every use), at the top
level. It sits below the variables and the flags: a flag wins over its ``HUBBUB_*``
variable, which wins over the file, which wins over the default.

The file is checked on its own before anything else is: an unknown key is an error that
names the nearest valid one, and values are taken as TOML types them (``port = "8000"``
is refused, not read as a number), each error naming the file and the key.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import textwrap
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from hubbub.config import Settings
from hubbub.errors import ConfigurationError
from hubbub.logs import redact

CONFIG_VARIABLE = "HUBBUB_CONFIG"
"""The variable that names a configuration file when ``--config`` does not."""

SECRET_WORDS = frozenset({"secret", "password", "token"})


def is_secret(name: str) -> bool:
    """Whether a setting holds a credential, by its name: a secret, a password, a token,
    or a key other than a public key (``api_key``; not ``jwt_public_key``, a file's name,
    nor ``ssl_keyfile``)."""
    words = set(name.split("_"))
    return bool(words & SECRET_WORDS) or (name.endswith("_key") and "public" not in words)


def shown(name: str, value: object) -> object:
    """``value`` as it may be printed: a secret as ``***``, URLs without their password
    nor credential parameters (logs.py's list)."""
    if value is None:
        return None
    if is_secret(name):
        return "***"
    if isinstance(value, str) and "://" in value:
        urls = value.split(",") if name == "webhook_urls" else [value]  # a list of URLs
        return ",".join(redact(_without_credentials(url)) for url in urls)
    return value


def _without_credentials(url: str) -> str:
    """``url`` with its user-info's password (or a lone user name, which may be a
    token) as ``***``: everything up to the authority's last ``@``."""
    scheme, sep, rest = url.partition("://")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority = rest[:end]
    if not sep or "@" not in authority:
        return url
    userinfo, host = authority.rsplit("@", 1)
    user = userinfo.split(":", 1)[0] + ":" if ":" in userinfo else ""
    return f"{scheme}://{user}***@{host}{rest[end:]}"


Kind = Literal["default", "file", "env", "flag"]


@dataclass(frozen=True)
class Origin:
    """Where the value of one setting came from."""

    kind: Kind
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.detail}" if self.detail else self.kind


@dataclass(frozen=True)
class Loaded:
    """The settings in force, where each came from, and the file read (if any)."""

    settings: Settings
    origins: Mapping[str, Origin]
    path: Path | None
    named_by: str | None  # "--config" or CONFIG_VARIABLE


class _FileSettings(Settings):
    # The file alone, strictly typed (TOML has types), without the variables.
    model_config = SettingsConfigDict(strict=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def locate(config: str | None) -> tuple[Path | None, str | None]:
    """The file named by ``--config`` (``config``), else by ``HUBBUB_CONFIG``, and which of
    the two named it; ``(None, None)`` when neither does."""
    if config:
        return Path(config), "--config"
    variable = os.environ.get(CONFIG_VARIABLE)
    if variable:
        return Path(variable), CONFIG_VARIABLE
    return None, None


def read(path: Path) -> dict[str, Any]:
    """The settings a file gives, checked on their own (keys, types, bounds); a
    :class:`ConfigurationError` naming the file, and each key that is wrong, otherwise."""
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigurationError(f"cannot read the config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"the config file {path} is not TOML: {exc}") from None
    problems = [(key, _unknown(key, value)) for key, value in data.items() if key not in _FIELDS]
    known = {key: value for key, value in data.items() if key in _FIELDS}
    try:
        _FileSettings(**known)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            key = str(error["loc"][0]) if error["loc"] else ""
            message = error["msg"]
            if not isinstance(error["input"], dict | list) and not is_secret(key):
                message += f" (got {_toml_type(error['input'])} {_literal(error['input'])})"
            problems.append((key, f"{key}: {message}" if key else message))
    if problems:
        order = {key: i for i, key in enumerate(data)}  # as the file says them
        problems.sort(key=lambda problem: order.get(problem[0], len(order)))
        raise ConfigurationError(
            f"invalid config file {path}:\n" + "\n".join(f"  {p}" for _, p in problems)
        )
    return known


def load(flags: Mapping[str, Any], config: str | None = None) -> Loaded:
    """The settings in force: ``flags`` (the ones given on the command line) over the
    ``HUBBUB_*`` variables, over the file that ``config`` or ``HUBBUB_CONFIG`` names,
    over the defaults; and where each value came from."""
    path, named_by = locate(config)
    from_file = read(path) if path is not None else {}
    from_env = EnvSettingsSource(Settings)()
    # Init arguments win over the variables in pydantic-settings: pass the file's values
    # only where no variable is set, so that a variable wins over the file.
    given = {key: value for key, value in from_file.items() if key not in from_env}
    given.update(flags)
    settings = Settings(**given)
    origins: dict[str, Origin] = {}
    for name in _FIELDS:
        over = ", over the file" if name in from_file else ""
        if name in flags:
            origins[name] = Origin("flag", "--" + name.replace("_", "-") + over)
        elif name in from_env:
            origins[name] = Origin("env", f"HUBBUB_{name.upper()}{over}")
        elif name in from_file:
            origins[name] = Origin("file")
        else:
            origins[name] = Origin("default")
    if origins["store_url"].kind == "default" and origins["data_dir"].kind != "default":
        origins["store_url"] = Origin("default", "(hubbub.db in data_dir)")
    return Loaded(settings, origins, path, named_by)


def render_show(loaded: Loaded) -> str:
    """``hubbub config show``: every setting in force as TOML, each with where it came from
    (``default``, ``file``, ``env VARIABLE``, ``flag --FLAG``), secrets as ``***``."""
    if loaded.path is None:
        named = f"none (--config FILE or {CONFIG_VARIABLE} names one)"
    else:
        named = f"{loaded.path} (from {loaded.named_by})"
    entries: list[tuple[str, str]] = []
    for name in _FIELDS:
        value = shown(name, getattr(loaded.settings, name))
        text = f"# {name} (unset)" if value is None else f"{name} = {_literal(value)}"
        entries.append((text, str(loaded.origins[name])))
    width = max(len(text) for text, _ in entries)
    lines = [
        "# The settings in force, and where each came from (hubbub config show).",
        f"# Config file: {named}.",
        *(f"{text.ljust(width)}  # {origin}" for text, origin in entries),
    ]
    return "\n".join(lines) + "\n"


def render_example() -> str:
    """``hubbub config example``: a configuration file with every setting at its default,
    each under its description, flag and variable."""
    lines = [
        "# Hubbub's configuration file (hubbub config example): every setting at its default.",
        "# hubbub serve --config FILE (or HUBBUB_CONFIG=FILE) reads it; a HUBBUB_* variable",
        "# or a flag wins over it. Keys are the settings' names; delete the ones you keep at",
        "# their default.",
    ]
    for name, field in Settings.model_fields.items():
        flag, variable = "--" + name.replace("_", "-"), f"HUBBUB_{name.upper()}"
        about = f"{field.description} ({flag}, {variable})"
        lines.append("")
        lines += textwrap.wrap(about, 88, initial_indent="# ", subsequent_indent="# ")
        if field.default is None:
            lines.append(f"# {name} = (unset by default; {_expected(field.annotation)})")
        elif name == "store_url":  # set here, it would hold the store in place of data_dir
            lines.append(f"# {name} = {_literal(field.default)}")
        else:
            lines.append(f"{name} = {_literal(field.default)}")
    return "\n".join(lines) + "\n"


# --- helpers of the above --------------------------------------------------------------

_FIELDS = tuple(Settings.model_fields)


def _unknown(key: str, value: object) -> str:
    wanted = key.replace("-", "_").lower()
    if wanted in _FIELDS:
        return f"unknown key {key!r}: did you mean {wanted!r}? (keys are the settings' names)"
    if isinstance(value, dict):
        return f"unknown key {key!r}: the file has no tables, every key is at its top level"
    nearest = difflib.get_close_matches(wanted, _FIELDS, n=1, cutoff=0.6)
    hint = f"did you mean {nearest[0]!r}?" if nearest else "hubbub config example lists them"
    return f"unknown key {key!r}: {hint}"


def _literal(value: object) -> str:
    """``value`` as a TOML literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        # A JSON string is a TOML basic string, once DEL (which TOML wants escaped) is.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    return repr(value)


def _toml_type(value: object) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array"}
    return names.get(type(value), "table" if isinstance(value, dict) else type(value).__name__)


def _expected(annotation: Any) -> str:
    kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) and len(kinds) == 1:
        annotation = kinds[0]
    words = {str: "a string", bool: "true or false", int: "an integer", float: "a number"}
    return words.get(annotation, "a value")
