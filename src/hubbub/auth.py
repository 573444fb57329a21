"""Who a connection is, and which rooms it may read and write.

Identity comes from a signed JWT (PyJWT) or, where the settings allow guests, from a
chosen display name. Token claims:

- ``sub``: the user id (required); ``name``: the display name (defaults to ``sub``)
- ``exp``: expiry (required); ``nbf``/``iat`` honoured when present
- ``rooms``: room patterns the user may read and write (``lobby``, ``team-*``);
  ``read`` / ``write``: patterns for one of the two only; ``moderate``: patterns of
  the rooms the user moderates

Patterns are shell-style (``fnmatch``, case-sensitive). Only the configured algorithm
is accepted, so ``alg: none`` and a token signed for another key type are refused.

A guest gets a *guest token* with its identity: a JWT signed with the deployment's own
secret (made with the store, so every process verifies it), never with the user-token
key, and marked as a guest's, so neither kind passes for the other.
"""

from __future__ import annotations

import fnmatch
import math
import re
import secrets
import time
import unicodedata
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from hubbub.config import Settings
from hubbub.errors import ConfigurationError, HubbubError

GUEST_NAME = re.compile(r"\w[\w .'-]{0,31}")  # matched whole (fullmatch)
TOKEN_NAME_MAX = 64
GUEST_TOKEN_TYPE = "hubbub-guest"
GUEST_TOKEN_TTL = 30 * 86400
GUEST_PREFIX = "guest:"
MAX_EXP = 2**53  # an exp beyond this (the year 285 million) is not a date but an attack
# Letters or fillers that show nothing (NFKC turns U+3164 into U+1160, a "letter").
INVISIBLE = frozenset(
    {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x2800, 0x3164, 0xFFA0, 0x1D159}
    | set(range(0x180B, 0x1810))  # Mongolian variation selectors and vowel separator
    | set(range(0xFE00, 0xFE10))  # variation selectors
    | set(range(0xE0100, 0xE01F0))
    | set(range(0x1D173, 0x1D17B))
)
# Categories that are never part of a name: controls, format characters (U+200B, bidi
# marks), unassigned, private use, surrogates, line and paragraph separators.
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp"})
# Scripts that are written together (Japanese mixes them); any other mix is refused.
EAST_ASIAN = frozenset(
    {"CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA", "HANGUL", "IDEOGRAPHIC", "BOPOMOFO"}
)


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
    moderate: tuple[str, ...] = ()  # rooms the token makes the user a moderator of

    def moderates(self, room: str) -> bool:
        """Whether the token makes the user a moderator of ``room``."""
        return any(fnmatch.fnmatchcase(room, pattern) for pattern in self.moderate)

    def can_read(self, room: str) -> bool:
        """Whether the user may join ``room`` and see its messages and history."""
        return any(fnmatch.fnmatchcase(room, pattern) for pattern in self.read)

    def can_write(self, room: str) -> bool:
        """Whether the user may post in ``room``."""
        return any(fnmatch.fnmatchcase(room, pattern) for pattern in self.write)


def trusted_origin(headers: Mapping[str, str], scheme: str, allowed: Collection[str]) -> bool:
    """Whether a browser page at the request's ``Origin`` may use the user's cookies:
    an origin in ``allowed``, or the server's own (``Origin`` is the ``Host`` asked for).
    Without an ``Origin`` header, False."""
    origin = headers.get("origin")
    if origin is None:
        return False
    if origin in allowed:
        return True
    host = headers.get("host")
    http = "https" if scheme in ("wss", "https") else "http"
    return host is not None and origin == f"{http}://{host}"


def patterns(value: str) -> tuple[str, ...]:
    """``"a, b-*"`` → ``("a", "b-*")``."""
    return tuple(p.strip() for p in value.split(",") if p.strip())


def name_key(name: str) -> str:
    """What two display names are compared by: ``Ann``, ``ann`` and full-width ``Ann`` are one."""
    return unicodedata.normalize("NFKC", name).casefold()


def _hidden(c: str) -> bool:
    return (
        ord(c) in INVISIBLE
        or unicodedata.category(c) in HIDDEN_CATEGORIES
        or (c.isspace() and c != " ")
    )


def _has_hidden(name: str) -> bool:
    return any(_hidden(c) for c in name)


def _scripts(name: str) -> set[str]:
    # The script of a letter or digit is the first word of its Unicode name (LATIN,
    # CYRILLIC, ARABIC-INDIC …); ASCII digits (DIGIT …) and modifiers belong to any.
    scripts = set()
    for c in name:
        if unicodedata.category(c) in ("Lu", "Ll", "Lt", "Lo", "Lm", "Nd"):
            word = unicodedata.name(c, "?").split(" ", 1)[0]
            if word in ("DIGIT", "MODIFIER"):
                continue
            scripts.add("EAST ASIAN" if word in EAST_ASIAN else word)
    return scripts


def valid_name(name: str) -> str:
    """``name`` in NFKC if it is an acceptable guest name, else :class:`AuthError`."""
    name = unicodedata.normalize("NFKC", name)
    # Trailing or doubled spaces (NFKC makes U+3000, U+00A0 … spaces) would make a twin.
    if not GUEST_NAME.fullmatch(name) or _has_hidden(name) or name.endswith(" ") or "  " in name:
        raise AuthError(
            "invalid_name",
            "a name is 1-32 letters, digits, spaces or _ . ' - and starts with a letter or digit",
        )
    if len(_scripts(name)) > 1:
        raise AuthError("invalid_name", "a name may not mix scripts (such as Latin and Cyrillic)")
    return name


def token_name(name: str) -> str:
    """A token's display name in NFKC (at most 64 characters), unless it hides
    characters; then :class:`AuthError`."""
    # Spaces collapsed and trimmed, so that "Ann " and "Ann  Lee" are no twins.
    words = unicodedata.normalize("NFKC", name).split(" ")
    name = " ".join(word for word in words if word)[:TOKEN_NAME_MAX]
    if not name or _has_hidden(name):
        raise AuthError("unauthorized", "the token's name is empty or has invisible characters")
    return name


class Authenticator:
    """Verifies tokens and makes guests, as the settings say."""

    def __init__(self, settings: Settings, guest_secret: Callable[[], str] | None = None) -> None:
        """``guest_secret`` gives the deployment's secret once the store has started."""
        self.guest_secret = guest_secret
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
        except (ValueError, TypeError, OverflowError) as exc:  # wrong keys, malformed input
            raise AuthError("unauthorized", f"invalid token: {exc}") from None
        if claims.get("typ") == GUEST_TOKEN_TYPE:
            raise AuthError("unauthorized", "a guest token is no user token")
        user, name = claims.get("sub"), claims.get("name", claims.get("sub"))
        if not isinstance(user, str) or not user or not isinstance(name, str):
            raise AuthError("unauthorized", "the token's sub and name must be strings")
        if user.startswith(GUEST_PREFIX):
            raise AuthError("unauthorized", f"a user id may not start with {GUEST_PREFIX!r}")
        try:
            rooms = _claim_patterns(claims, "rooms")
            read = rooms + _claim_patterns(claims, "read")
            write = rooms + _claim_patterns(claims, "write")
            moderate = _claim_patterns(claims, "moderate")
        except TypeError as exc:
            raise AuthError("unauthorized", str(exc)) from None
        return Identity(
            user=user,
            name=token_name(name),
            read=read,
            write=write,
            expires_at=_expiry(claims),
            moderate=moderate,
        )

    def guest(self, name: str | None, token: str | None = None) -> Identity:
        """A guest: the one ``token`` (a guest token) names, or a new one called ``name``.

        Each new guest is a user of its own; the same guest comes back with its guest
        token (a reload, a second tab), optionally with a new ``name``. Two people who
        pick one name are two users (a room refuses the second: ``name_taken``).
        """
        if not self.guests:
            raise AuthError("unauthorized", "guests are not allowed here; send a token")
        if token is not None:
            user, held = self._verify_guest(token)
            name = held if name is None else name
        elif name is not None:
            user = GUEST_PREFIX + secrets.token_hex(6)
        else:
            raise AuthError("invalid_name", "a guest needs a name")
        return Identity(
            user=user,
            name=valid_name(name),
            read=self.guest_rooms,
            write=self.guest_rooms,
            guest=True,
        )

    def guest_token(self, identity: Identity) -> str | None:
        """A fresh guest token for ``identity`` (a guest), if the deployment can sign."""
        if not identity.guest or self.guest_secret is None:
            return None
        now = int(time.time())
        claims = {"sub": identity.user, "name": identity.name, "typ": GUEST_TOKEN_TYPE,
                  "iat": now, "exp": now + GUEST_TOKEN_TTL}  # fmt: skip
        return jwt.encode(claims, self.guest_secret(), algorithm="HS256")

    def _verify_guest(self, token: str) -> tuple[str, str]:
        if self.guest_secret is None:
            raise AuthError("unauthorized", "this server issues no guest tokens")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.guest_secret(),
                algorithms=["HS256"],
                options={"require": ["exp", "sub", "typ"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("unauthorized", "the guest token has expired") from None
        except (jwt.InvalidTokenError, ValueError, TypeError, OverflowError) as exc:
            raise AuthError("unauthorized", f"invalid guest token: {exc}") from None
        user, name = claims.get("sub"), claims.get("name")
        if (
            claims.get("typ") != GUEST_TOKEN_TYPE
            or not isinstance(user, str)
            or not user.startswith(GUEST_PREFIX)
            or not isinstance(name, str)
        ):
            raise AuthError("unauthorized", "invalid guest token")
        return user, name

    def create(self, user: str, name: str, rooms: str, ttl: float) -> str:
        """A token signed with the configured secret (``hubbub token create``)."""
        if not self.secret or not self.algorithm.startswith("HS"):
            raise ConfigurationError("creating tokens needs --jwt-secret (HS256)")
        now = int(time.time())
        claims = {"sub": user, "name": name, "rooms": list(patterns(rooms)), "iat": now,
                  "exp": now + int(ttl)}  # fmt: skip
        return jwt.encode(claims, self.secret, algorithm=self.algorithm)


def _expiry(claims: dict[str, Any]) -> float:
    exp = claims["exp"]  # PyJWT checked it is a number in the future
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not 0 < exp <= MAX_EXP:
        raise AuthError("unauthorized", "the token's exp is out of range")
    if not math.isfinite(exp):
        raise AuthError("unauthorized", "the token's exp is out of range")
    return float(exp)


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
