"""Who a connection is, and which rooms it may read and write.

Identity comes from a signed JWT (PyJWT) or, where the settings allow guests, from a
chosen display name. Token claims:

- ``sub``: the user id (required); ``name``: the display name (defaults to ``sub``)
- ``exp``: expiry (required); ``nbf``/``iat`` honoured when present
- ``rooms``: room patterns the user may read and write (``lobby``, ``team-*``);
  ``read`` / ``write``: patterns for one of the two only

Patterns are shell-style (``fnmatch``, case-sensitive). Only the configured algorithm
is accepted, so ``alg: none`` and a token signed for another key type are refused.
"""

from __future__ import annotations

import fnmatch
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from hubbub.config import Settings
from hubbub.errors import ConfigurationError, HubbubError

NAME = re.compile(r"^\w[\w .'-]{0,31}$")


class AuthError(HubbubError):
    """A refused identity; ``code`` goes into the ``error`` frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Identity:
    """A connected user: a token's claims, or a guest's name."""

    user: str
    name: str
    read: tuple[str, ...]
    write: tuple[str, ...]
    guest: bool = False
    expires_at: float | None = None

    def can_read(self, room: str) -> bool:
        """Whether the user may join ``room`` and see its messages and history."""
        return any(fnmatch.fnmatchcase(room, pattern) for pattern in self.read)

    def can_write(self, room: str) -> bool:
        """Whether the user may post in ``room``."""
        return any(fnmatch.fnmatchcase(room, pattern) for pattern in self.write)


def patterns(value: str) -> tuple[str, ...]:
    """``"a, b-*"`` → ``("a", "b-*")``."""
    return tuple(p.strip() for p in value.split(",") if p.strip())


def valid_name(name: str) -> str:
    """``name`` if it is an acceptable display name, else :class:`AuthError`."""
    if not NAME.match(name):
        raise AuthError(
            "invalid_name",
            "a name is 1-32 letters, digits, spaces or _ . ' - and starts with a letter or digit",
        )
    return name


class Authenticator:
    """Verifies tokens and makes guests, as the settings say."""

    def __init__(self, settings: Settings) -> None:
        self.algorithm = settings.jwt_algorithm
        self.guest_rooms = patterns(settings.guest_rooms)
        key_file = settings.jwt_public_key
        self.verify_key: str | None
        if key_file:
            if self.algorithm.startswith("HS"):
                raise ConfigurationError("--jwt-public-key needs --jwt-algorithm RS256 or ES256")
            self.verify_key = Path(key_file).read_text()
        elif settings.jwt_secret:
            if not self.algorithm.startswith("HS"):
                raise ConfigurationError(f"{self.algorithm} needs --jwt-public-key, not a secret")
            self.verify_key = settings.jwt_secret
        else:
            self.verify_key = None
        self.secret = settings.jwt_secret
        # Guests: on for the embedded defaults, off once tokens are configured, unless asked.
        self.guests = settings.guests if settings.guests is not None else self.verify_key is None

    @property
    def tokens(self) -> bool:
        """Whether tokens can be verified at all."""
        return self.verify_key is not None

    def verify(self, token: str) -> Identity:
        """The identity in ``token``, or :class:`AuthError` saying why not."""
        if self.verify_key is None:
            raise AuthError("unauthorized", "this server accepts no tokens")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.verify_key,
                algorithms=[self.algorithm],
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token_not_yet_valid", "the token is not valid yet") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError("unauthorized", f"invalid token: {exc}") from None
        except (ValueError, TypeError) as exc:  # keys of the wrong kind, malformed input
            raise AuthError("unauthorized", f"invalid token: {exc}") from None
        user, name = claims.get("sub"), claims.get("name", claims.get("sub"))
        if not isinstance(user, str) or not user or not isinstance(name, str):
            raise AuthError("unauthorized", "the token's sub and name must be strings")
        try:
            rooms = _claim_patterns(claims, "rooms")
            read = rooms + _claim_patterns(claims, "read")
            write = rooms + _claim_patterns(claims, "write")
        except TypeError as exc:
            raise AuthError("unauthorized", str(exc)) from None
        return Identity(
            user=user, name=name[:64], read=read, write=write, expires_at=float(claims["exp"])
        )

    def guest(self, name: str) -> Identity:
        """The guest called ``name``.

        A guest is its name: a reconnecting guest (or a second tab) is the same user, so
        resuming never collides with the guest's own stale presence. Guests are not
        authenticated, so two people who pick the same guest name share one identity;
        a name held by a token user in a room is refused (``name_taken``).
        """
        if not self.guests:
            raise AuthError("unauthorized", "guests are not allowed here; send a token")
        return Identity(
            user=f"guest:{valid_name(name)}",
            name=valid_name(name),
            read=self.guest_rooms,
            write=self.guest_rooms,
            guest=True,
        )

    def create(self, user: str, name: str, rooms: str, ttl: float) -> str:
        """A token signed with the configured secret (``hubbub token create``)."""
        if not self.secret or not self.algorithm.startswith("HS"):
            raise ConfigurationError("creating tokens needs --jwt-secret (HS256)")
        now = int(time.time())
        claims = {"sub": user, "name": name, "rooms": list(patterns(rooms)), "iat": now,
                  "exp": now + int(ttl)}  # fmt: skip
        return jwt.encode(claims, self.secret, algorithm=self.algorithm)


def _claim_patterns(claims: dict[str, Any], key: str) -> tuple[str, ...]:
    value = claims.get(key, [])
    if isinstance(value, str):
        return patterns(value)
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise TypeError(f"the token's {key} must be a list of room patterns")
    return tuple(value)


def parse_ttl(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d`` → seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 15m, 1h, 7d)")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
