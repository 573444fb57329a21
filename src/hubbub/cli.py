"""The ``hubbub`` command: ``hubbub serve [--flags]``.

Every ``serve`` flag is a field of :class:`~hubbub.config.Settings`; a flag that is not
given falls back to its ``HUBBUB_*`` variable, then to the default.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import types
import typing
from collections.abc import Sequence
from typing import Any

import uvicorn
from pydantic import ValidationError
from uvicorn.supervisors import Multiprocess

from hubbub.app import create_app
from hubbub.auth import Authenticator, parse_ttl
from hubbub.brokers import broker_from_url
from hubbub.config import Settings
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``hubbub`` command."""
    parser = argparse.ArgumentParser(prog="hubbub", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    _add_settings_flags(serve)
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
    return parser


def create_token(args: argparse.Namespace) -> int:
    """``hubbub token create``: print a signed token."""
    given = {"jwt_secret": args.jwt_secret} if args.jwt_secret else {}
    settings = Settings(**given)
    auth = Authenticator(settings)
    try:
        ttl = parse_ttl(args.ttl)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    print(auth.create(args.user, args.name or args.user, args.rooms, ttl))
    return 0


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the given flags on top of the environment."""
    given: dict[str, Any] = {
        name: getattr(args, name)
        for name in Settings.model_fields
        if getattr(args, name, None) is not None
    }
    return Settings(**given)


def check(settings: Settings) -> None:
    """Refuse settings that cannot work, with a message that says why."""
    store_from_url(settings.store_url)  # a known scheme, its extra installed
    Authenticator(settings)  # a readable key that fits the algorithm
    broker = broker_from_url(settings.broker_url)
    if settings.workers > 1 and not broker.shared_across_processes:
        raise ConfigurationError(
            f"--workers {settings.workers} needs a broker that reaches every process; "
            f"{settings.broker_url} lives inside one process. Use e.g. "
            "--broker-url redis://127.0.0.1:6379, or --workers 1."
        )


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def serve(settings: Settings) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit status."""
    check(settings)
    # uvicorn re-raises SIGTERM/SIGINT once its graceful shutdown is done; by then the
    # stop went as asked, so the re-raised signal ends the process with status 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    if settings.workers == 1:
        config = ServerConfig(create_app(settings), settings)
        server = uvicorn.Server(config)
        server.run()
        return 0 if server.started else 3
    # Workers are spawned processes: they rebuild the same settings from the environment.
    os.environ.update(settings.to_env())
    config = ServerConfig("hubbub.app:create_app_from_env", settings, factory=True)
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
    args = build_parser().parse_args(argv)
    try:
        if args.command == "token":
            return create_token(args)
        settings = settings_from_args(args)
        return serve(settings)
    except ValidationError as exc:
        print(f"hubbub: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        print(f"hubbub: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
