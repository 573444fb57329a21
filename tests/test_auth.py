"""auth.py: every token case, guest rules and names, as plain function calls."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hubbub.auth import Authenticator, AuthError, parse_ttl
from hubbub.config import Settings
from hubbub.errors import ConfigurationError

SECRET = "s" * 64


def token(claims: dict[str, Any], key: Any = SECRET, algorithm: str = "HS256") -> str:
    base = {"sub": "alice", "name": "Alice", "rooms": ["lobby", "team-*"],
            "exp": int(time.time()) + 3600}  # fmt: skip
    return jwt.encode({**base, **claims}, key, algorithm=algorithm)


def refused(auth: Authenticator, value: str) -> str:
    with pytest.raises(AuthError) as caught:
        auth.verify(value)
    return caught.value.code


@pytest.fixture
def auth() -> Authenticator:
    return Authenticator(Settings(jwt_secret=SECRET))


def test_a_valid_token_gives_its_identity_and_rooms(auth: Authenticator) -> None:
    identity = auth.verify(token({"read": ["news"]}))
    assert (identity.user, identity.name, identity.guest) == ("alice", "Alice", False)
    assert identity.can_read("lobby") and identity.can_write("team-red")
    assert identity.can_read("news") and not identity.can_write("news")
    assert not identity.can_read("teams") and not identity.can_read("other")
    assert identity.expires_at is not None and identity.expires_at > time.time()


def test_name_defaults_to_the_user_id(auth: Authenticator) -> None:
    raw = jwt.encode({"sub": "bob", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    identity = auth.verify(raw)
    assert identity.name == "bob" and identity.read == ()


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({"exp": int(time.time()) - 10}, "token_expired"),
        # Built at collection, maybe many minutes before the test runs: far ahead.
        ({"nbf": int(time.time()) + 10 * 365 * 86400}, "token_not_yet_valid"),
        ({"sub": None}, "unauthorized"),
        ({"rooms": "lobby"}, None),  # a comma-separated string is accepted too
        ({"rooms": [1, 2]}, "unauthorized"),
        ({"name": 7}, "unauthorized"),
    ],
)
def test_claims_are_checked(auth: Authenticator, claims: dict[str, Any], code: str | None) -> None:
    raw = token(claims)
    if code is None:
        assert auth.verify(raw).can_read("lobby")
    else:
        assert refused(auth, raw) == code


def test_alg_none_forged_and_malformed_tokens_are_refused(auth: Authenticator) -> None:
    unsigned = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, None, algorithm="none")
    assert refused(auth, unsigned) == "unauthorized"
    assert refused(auth, token({}, key="x" * 64)) == "unauthorized"  # another secret
    assert refused(auth, token({}, algorithm="HS512")) == "unauthorized"  # another algorithm
    for garbage in ["", "a.b.c", "not a token", token({})[:-5] + "AAAAA", "\x00" * 10]:
        assert refused(auth, garbage) == "unauthorized"
    missing_exp = jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")
    assert refused(auth, missing_exp) == "unauthorized"


def pem_public(private: Any) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def hmac_token(key: bytes) -> str:
    """An HS256 token signed by hand (PyJWT itself refuses a PEM key as an HMAC secret)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "eve", "exp": int(time.time()) + 60}).encode())
    signature = b64(hmac.new(key, header + b"." + body, hashlib.sha256).digest())
    return (header + b"." + body + b"." + signature).decode()


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_public_key_algorithms(tmp_path: Path, algorithm: str) -> None:
    private = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    key_file = tmp_path / "key.pub"
    key_file.write_text(pem_public(private))
    auth = Authenticator(Settings(jwt_public_key=str(key_file), jwt_algorithm=algorithm))
    assert auth.verify(token({}, key=private, algorithm=algorithm)).user == "alice"
    # The classic confusion: an HS256 token whose HMAC key is the public key's text.
    assert refused(auth, hmac_token(key_file.read_bytes())) == "unauthorized"
    other = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    assert refused(auth, token({}, key=other, algorithm=algorithm)) == "unauthorized"
    assert not auth.guests  # a key is configured: no guests unless asked


GUEST_SECRET = "g" * 64


def test_guests_default_on_without_tokens_and_off_with_them() -> None:
    embedded = Authenticator(Settings(), guest_secret=lambda: GUEST_SECRET)
    assert embedded.guests and not embedded.tokens
    guest = embedded.guest("Ann Lee")
    assert guest.guest and guest.user.startswith("guest:") and guest.can_write("anything")
    assert guest.name == "Ann Lee"
    with pytest.raises(AuthError):
        embedded.verify(token({}))
    secured = Authenticator(Settings(jwt_secret=SECRET))
    with pytest.raises(AuthError) as caught:
        secured.guest("Ann")
    assert caught.value.code == "unauthorized"
    both = Authenticator(Settings(jwt_secret=SECRET, guests=True, guest_rooms="lobby, public-*"))
    visitor = both.guest("Visitor")
    assert visitor.can_read("public-1") and not visitor.can_read("team-red")


def test_two_guests_of_one_name_are_two_users_and_a_guest_token_brings_one_back() -> None:
    auth = Authenticator(Settings(), guest_secret=lambda: GUEST_SECRET)
    first, second = auth.guest("Zed"), auth.guest("Zed")
    assert first.user != second.user  # the second person is not the first
    held = auth.guest_token(first)
    assert held is not None
    assert auth.guest(None, held) == first  # the same person again, from any process
    renamed = auth.guest("Zeddy", held)
    assert (renamed.user, renamed.name) == (first.user, "Zeddy")


def test_a_guest_token_is_refused_as_a_user_token_even_under_one_secret() -> None:
    # The same secret for both: only the token's type tells them apart.
    same = Authenticator(Settings(jwt_secret=SECRET, guests=True), guest_secret=lambda: SECRET)
    held = same.guest_token(same.guest("Zed"))
    assert held is not None
    assert refused(same, held) == "unauthorized"
    with pytest.raises(AuthError):
        same.guest(None, token({"sub": "guest:000000000001", "name": "Zed"}))


def test_a_user_token_may_not_claim_a_guest_id(auth: Authenticator) -> None:
    assert refused(auth, token({"sub": "guest:9b1f0c33e2a4"})) == "unauthorized"


def test_guest_tokens_are_no_user_tokens_and_forgeries_are_refused() -> None:
    auth = Authenticator(
        Settings(jwt_secret=SECRET, guests=True), guest_secret=lambda: GUEST_SECRET
    )
    held = auth.guest_token(auth.guest("Zed"))
    assert held is not None
    assert refused(auth, held) == "unauthorized"  # not a user token
    user_token = token({"sub": "guest:000000000000", "name": "Zed"})
    forged = jwt.encode(
        {"sub": "guest:1", "name": "Zed", "typ": "hubbub-guest", "exp": int(time.time()) + 60},
        "not the secret" * 4,
        algorithm="HS256",
    )
    expired = jwt.encode(
        {"sub": "guest:1", "name": "Zed", "typ": "hubbub-guest", "exp": int(time.time()) - 60},
        GUEST_SECRET,
        algorithm="HS256",
    )
    for bad in (user_token, forged, expired, "garbage", held[:-2]):
        with pytest.raises(AuthError) as caught:
            auth.guest(None, bad)
        assert caught.value.code == "unauthorized", bad


@pytest.mark.parametrize(
    "name",
    [
        "",
        " lead",
        "x" * 33,
        "<b>",
        "a\nb",
        "semi;colon",
        "alice\n",
        "\u3164",
        "Ann\u200b",
        "\u0410lice",
        "Ann\ufe0f",
        "\u115f\u1160",
        "alice ",
        "alice\u3000",
        "al  ice",
        "a\u0661ice",
    ],
)
def test_bad_guest_names_are_refused(name: str) -> None:
    with pytest.raises(AuthError) as caught:
        Authenticator(Settings()).guest(name)
    assert caught.value.code == "invalid_name"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("\uff21lice", "Alice"),
        ("\u0410\u043b\u0438\u0441\u0430", "\u0410\u043b\u0438\u0441\u0430"),
        ("O'Neil", "O'Neil"),
        ("e\u0301", "\u00e9"),
        ("\u5c71\u7530\u305f\u308d\u3046", "\u5c71\u7530\u305f\u308d\u3046"),
    ],
)
def test_guest_names_are_normalised(given: str, kept: str) -> None:
    assert Authenticator(Settings()).guest(given).name == kept


def test_token_names_are_normalised_and_may_not_hide_characters(auth: Authenticator) -> None:
    assert auth.verify(token({"name": "\uff21lice, PhD"})).name == "Alice, PhD"
    assert auth.verify(token({"name": " Ann\u3000 Lee "})).name == "Ann Lee"  # no twins
    for hidden in ["Alice\n", "\u3164", "Al\u200bice", "   "]:
        assert refused(auth, token({"name": hidden})) == "unauthorized", hidden


@pytest.mark.parametrize("exp", [10**400, 2**53 + 1, 1e300])
def test_an_exp_out_of_range_is_refused(auth: Authenticator, exp: int | float) -> None:
    assert refused(auth, token({"exp": exp})) == "unauthorized"


def test_an_infinite_exp_is_refused(auth: Authenticator) -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(b'{"sub":"a","exp":1e400}').rstrip(b"=")
    signature = hmac.new(SECRET.encode(), header + b"." + body, hashlib.sha256).digest()
    raw = b".".join([header, body, base64.urlsafe_b64encode(signature).rstrip(b"=")])
    assert refused(auth, raw.decode()) == "unauthorized"


def test_created_tokens_verify() -> None:
    auth = Authenticator(Settings(jwt_secret=SECRET))
    identity = auth.verify(auth.create("carol", "Carol", "lobby,team-*", 60))
    assert identity.name == "Carol" and identity.can_write("team-blue")


def test_configuration_mistakes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        Authenticator(Settings(jwt_secret=SECRET, jwt_algorithm="RS256"))
    key = tmp_path / "k.pub"
    key.write_text("x")
    with pytest.raises(ConfigurationError):
        Authenticator(Settings(jwt_public_key=str(key), jwt_algorithm="HS256"))
    with pytest.raises(ValueError):
        Settings(jwt_secret="too short")


def test_ttl_parsing() -> None:
    assert [parse_ttl(t) for t in ["90", "90s", "15m", "1h", "2d"]] == [90, 90, 900, 3600, 172800]
    with pytest.raises(ValueError):
        parse_ttl("soon")
