"""TLS of Hubbub's own (--ssl-certfile, --ssl-keyfile): HTTPS and wss:// over real sockets,
with a self-signed certificate for 127.0.0.1 that the test makes."""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

import tests.servers
from tests.roomclient import RoomClient
from tests.servers import ServerProcess

SECRET = "t" * 64


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key: two PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return make_certificate(tmp_path)


@pytest.fixture
def trusting(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """A client context that trusts the test's certificate (and nothing else)."""
    return ssl.create_default_context(cafile=str(certificate[0]))


@pytest.fixture
def tls_server(
    start_server: Callable[..., ServerProcess],
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> ServerProcess:
    # uvicorn announces "Uvicorn running on https://…" with TLS; ServerProcess reads http.
    monkeypatch.setattr(
        tests.servers, "_RUNNING", re.compile(r"Uvicorn running on https://127\.0\.0\.1:(\d+)")
    )
    certfile, keyfile = certificate
    return start_server(
        "--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile),
        "--jwt-secret", SECRET, "--guests", "true",
    )  # fmt: skip


def get(url: str, context: ssl.SSLContext) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30, context=context) as response:
        return response.status, response.read()


def test_https_serves_health_and_the_page(
    tls_server: ServerProcess, trusting: ssl.SSLContext
) -> None:
    base = f"https://127.0.0.1:{tls_server.port}"
    assert get(f"{base}/healthz", trusting) == (200, b'{"status":"ok"}')
    status, page = get(f"{base}/", trusting)
    assert status == 200 and b"<html" in page.lower()
    # Plain HTTP to the TLS port gets no page.
    with pytest.raises(OSError):
        get(f"http://127.0.0.1:{tls_server.port}/healthz", trusting)
    # A client that does not trust the certificate refuses it.
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        get(f"{base}/healthz", ssl.create_default_context())


async def test_wss_join_and_send(tls_server: ServerProcess, trusting: ssl.SSLContext) -> None:
    url = f"wss://127.0.0.1:{tls_server.port}"
    ann = await RoomClient.open(url, "Ann", ssl=trusting)
    bob = await RoomClient.open(url, "Bob", ssl=trusting)
    await ann.join("lobby")
    await bob.join("lobby")
    ack = await ann.say("lobby", "over TLS")
    await bob.has_seqs("lobby", ack["seq"])
    assert bob.texts["lobby"] == ["over TLS"]
    await ann.close()
    await bob.close()


async def test_the_servers_own_origin_is_https(
    tls_server: ServerProcess, trusting: ssl.SSLContext
) -> None:
    # HttpEntry tells wss:// from the transport: a cookie upgrade from the page the server
    # served (https://host) is trusted, one claiming the http:// origin is not.
    token = jwt.encode(
        {"sub": "carol", "name": "Carol", "rooms": ["*"], "exp": int(time.time() + 3600)},
        SECRET,
        algorithm="HS256",
    )
    cookie = {"Cookie": f"hubbub_session={token}"}
    host = f"127.0.0.1:{tls_server.port}"
    async with connect(
        f"wss://{host}/v1/ws",
        ssl=trusting,
        additional_headers=cookie,
        origin=Origin(f"https://{host}"),
    ) as ws:
        welcome = json.loads(await ws.recv())
        assert (welcome["type"], welcome["user"]) == ("welcome", "carol")
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            f"wss://{host}/v1/ws",
            ssl=trusting,
            additional_headers=cookie,
            origin=Origin(f"http://{host}"),
        ):
            pass
    assert refused.value.response.status_code == 403


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubbub", "serve", "--port", "0", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_a_key_without_a_certificate_is_refused(certificate: tuple[Path, Path]) -> None:
    result = run_serve("--ssl-keyfile", str(certificate[1]))
    assert result.returncode == 2
    assert "--ssl-keyfile needs --ssl-certfile" in result.stderr


def test_a_certificate_that_does_not_load_is_refused(
    certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    (tmp_path / "other").mkdir()
    _, other_key = make_certificate(tmp_path / "other")  # not the certificate's key
    result = run_serve("--ssl-certfile", str(certificate[0]), "--ssl-keyfile", str(other_key))
    assert result.returncode == 2
    assert "cannot load the TLS certificate" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_serve("--ssl-certfile", str(tmp_path / "missing.pem"))
    assert result.returncode == 2
    assert "cannot load the TLS certificate from" in result.stderr
