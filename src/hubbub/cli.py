"""The ``hubbub`` command: ``hubbub serve [--flags]``, ``hubbub config show|check|example``.

Every ``serve`` flag is a field of :class:`~hubbub.config.Settings`; a flag that is not
given falls back to its ``HUBBUB_*`` variable, then to the configuration file that
``--config`` or ``HUBBUB_CONFIG`` names (:mod:`hubbub.configfile`), then to the default.
``hubbub config show`` prints what is in force and where each value came from. With ``--app
module:attr`` (uvicorn's import string; ``--factory``: a function that returns it),
``serve`` runs an application of one's own that includes ``Hubbub(...).router``, on
Hubbub's transport; its ``Hubbub()`` gets the same settings, through ``HUBBUB_*``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import sys
import tempfile
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError
from uvicorn.supervisors import Multiprocess

from hubbub.app import create_app
from hubbub.auth import Authenticator, parse_ttl
from hubbub.brokers import broker_from_url
from hubbub.config import Settings
from hubbub.configfile import CONFIG_VARIABLE, load, read, render_example, render_show
from hubbub.errors import ConfigurationError
from hubbub.metrics import MULTIPROC_DIR
from hubbub.server import ServerConfig
from hubbub.stores import store_from_url

logger = logging.getLogger("hubbub")


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = f"HUBBUB_{name.upper()}"
        help_text = f"{field.description} [env {env}; default {field.default}]"
        annotation = field.annotation
        if typing.get_origin(annotation) is typing.Literal:
            parser.add_argument(
                flag, dest=name, choices=typing.get_args(annotation), help=help_text
            )
        elif annotation is bool:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, help=help_text
            )
        elif annotation in (int, float):
            assert isinstance(annotation, type)
            parser.add_argument(flag, dest=name, type=annotation, help=help_text)
        else:
            assert annotation is str or isinstance(annotation, types.UnionType)
            parser.add_argument(flag, dest=name, help=help_text)


def _add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"configuration file (TOML), below the variables and flags [env {CONFIG_VARIABLE}]",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``hubbub`` command."""
    parser = argparse.ArgumentParser(prog="hubbub", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    _add_config_flag(serve)
    _add_settings_flags(serve)
    serve.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        help="run this application (an import string, as uvicorn's) instead of Hubbub's "
        "whole server; it includes Hubbub(...).router, whose Hubbub() reads these settings "
        "from the HUBBUB_* variables that serve sets from its flags",
    )
    serve.add_argument(
        "--factory",
        action="store_true",
        help="--app names a function that takes no arguments and returns the application",
    )
    serve.add_argument(
        "--app-dir",
        default=".",
        help="directory to import --app from, put first on the import path [default: .]",
    )
    config = commands.add_parser("config", help="the configuration file and the settings")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser(
        "show",
        help="print every setting in force (as serve would run with these flags) and where "
        "each value came from: default, file, env or flag; secrets as ***",
    )
    _add_config_flag(show)
    _add_settings_flags(show)
    check_file = config_commands.add_parser(
        "check",
        help="check a configuration file (and the settings it makes with the HUBBUB_* "
        "variables set): exit status 0, else 2 and what is wrong",
    )
    check_file.add_argument("file", metavar="FILE")
    config_commands.add_parser(
        "example", help="print a configuration file with every setting at its default"
    )
    token = commands.add_parser("token", help="tokens for /v1/ws")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser(
        "create", help="print a token signed with --jwt-secret / HUBBUB_JWT_SECRET"
    )
    create.add_argument("--user", required=True, help="user id (the sub claim)")
    create.add_argument("--name", help="display name (default: the user id)")
    create.add_argument("--rooms", default="*", help="room patterns, comma-separated")
    create.add_argument("--ttl", default="1h", help="lifetime: 90s, 15m, 1h, 7d")
    create.add_argument("--jwt-secret", dest="jwt_secret", help="[env HUBBUB_JWT_SECRET]")
    _add_config_flag(create)
    return parser


def create_token(args: argparse.Namespace) -> int:
    """``hubbub token create``: print a signed token."""
    given = {"jwt_secret": args.jwt_secret} if args.jwt_secret else {}
    settings = load(given, args.config).settings
    auth = Authenticator(settings)
    try:
        ttl = parse_ttl(args.ttl)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    print(auth.create(args.user, args.name or args.user, args.rooms, ttl))
    return 0


def flags_given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags."""
    return {
        name: getattr(args, name)
        for name in Settings.model_fields
        if getattr(args, name, None) is not None
    }


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the given flags on top of the environment, on top of the
    configuration file (``--config``, ``HUBBUB_CONFIG``), on top of the defaults."""
    return load(flags_given(args), getattr(args, "config", None)).settings


def config_command(args: argparse.Namespace) -> int:
    """``hubbub config show|check|example``."""
    if args.config_command == "example":
        print(render_example(), end="")
    elif args.config_command == "show":
        print(render_show(load(flags_given(args), args.config)), end="")
    else:
        given = read(Path(args.file))
        check(load({}, args.file).settings)
        print(f"{args.file}: ok ({len(given)} settings given)")
    return 0


def check(settings: Settings) -> None:
    """Refuse settings that cannot work, with a message that says why."""
    store_from_url(settings.store_url)  # a known scheme, its extra installed
    Authenticator(settings)  # a readable key that fits the algorithm
    check_tls(settings)
    if settings.webhook_targets and not settings.webhook_secret:
        raise ConfigurationError(
            "--webhook-urls needs --webhook-secret: receivers check each request's "
            "signature with it (docs/webhooks.md)"
        )
    hooks = [url for url in (settings.connect_hook_url, settings.publish_hook_url) if url]
    if hooks and not settings.webhook_secret:
        raise ConfigurationError(
            "the hooks need --webhook-secret: the backend checks each call's signature "
            "with it (docs/hooks.md)"
        )
    for url in (*settings.webhook_targets, *hooks):
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"a webhook URL is http:// or https://, not {url!r}")
    broker = broker_from_url(settings.broker_url)
    if settings.workers > 1 and not broker.shared_across_processes:
        raise ConfigurationError(
            f"--workers {settings.workers} needs a broker that reaches every process; "
            f"{settings.broker_url} lives inside one process. Use e.g. "
            "--broker-url redis://127.0.0.1:6379, or --workers 1."
        )


def check_tls(settings: Settings) -> None:
    """Refuse a key without a certificate, and a certificate (or key) that does not load,
    before uvicorn would fail on it with a traceback."""
    if settings.ssl_certfile is None:
        if settings.ssl_keyfile is not None:
            raise ConfigurationError("--ssl-keyfile needs --ssl-certfile (the certificate)")
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            settings.ssl_certfile, settings.ssl_keyfile
        )
    except OSError as exc:  # ssl.SSLError is one too
        files = " and ".join(filter(None, (settings.ssl_certfile, settings.ssl_keyfile)))
        raise ConfigurationError(f"cannot load the TLS certificate from {files}: {exc}") from None


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def serve(
    settings: Settings, app: str | None = None, *, factory: bool = False, app_dir: str = "."
) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit status. ``app``: the import
    string of an application of one's own to run instead of Hubbub's (``factory``: of a
    function that returns it), imported from ``app_dir``."""
    check(settings)
    if app is not None:
        # What uvicorn's --app-dir does; spawned workers inherit the import path.
        sys.path.insert(0, os.path.abspath(app_dir))
        # The application builds its own Hubbub(): it reads the settings from here.
        os.environ.update(settings.to_env())
    # uvicorn re-raises SIGTERM/SIGINT once its graceful shutdown is done; by then the
    # stop went as asked, so the re-raised signal ends the process with status 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    if settings.workers == 1:
        target: Any = create_app(settings) if app is None else app
        config = ServerConfig(target, settings, factory=factory)
        server = uvicorn.Server(config)
        server.run()
        return 0 if server.started else 3
    # Workers are spawned processes: they rebuild the same settings from the environment.
    os.environ.update(settings.to_env())
    if app is None:
        app, factory = "hubbub.app:create_app_from_env", True
    config = ServerConfig(app, settings, factory=factory)
    # Each worker keeps its metrics in files here; /metrics, answered by any one of them,
    # adds them all up. Fresh for every run, so no old run's counts leak in.
    with tempfile.TemporaryDirectory(prefix="hubbub-metrics-") as metrics_dir:
        os.environ[MULTIPROC_DIR] = metrics_dir
        try:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        finally:
            del os.environ[MULTIPROC_DIR]
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hubbub`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve" and args.factory and args.app is None:
        parser.error("--factory needs --app")
    try:
        if args.command == "token":
            return create_token(args)
        if args.command == "config":
            return config_command(args)
        settings = settings_from_args(args)
        return serve(settings, args.app, factory=args.factory, app_dir=args.app_dir)
    except ValidationError as exc:
        # Without the values given: a secret that is too short must not be printed.
        problems = "\n".join(
            f"  {'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        print(f"hubbub: invalid settings:\n{problems}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        print(f"hubbub: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
