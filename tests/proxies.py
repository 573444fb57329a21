"""Reverse proxies in front of a real Hubbub: Debian's nginx and Caddy, each started as a
process of the test's own on free unprivileged ports, with a config written from the
file under ``deploy/`` that the docs show (``scripts/proxies`` installs them)."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.services import missing

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
NGINX_CONF = DEPLOY / "nginx" / "hubbub.conf"
CADDYFILE = DEPLOY / "caddy" / "Caddyfile"
NGINX = "/usr/sbin/nginx"
CADDY = "/usr/bin/caddy"
START_TIMEOUT = 30.0


def require(binary: str) -> None:
    """Skip (fail in CI) unless ``binary`` is installed."""
    if shutil.which(binary) is None:
        missing(f"{binary} is not installed (scripts/proxies installs it from Debian)")


def render(template: str, replacements: dict[str, str]) -> str:
    """``template`` with each key replaced by its value; each key must occur exactly once,
    so that a change of the file under ``deploy/`` cannot leave a test running another
    config than it thinks."""
    for old, new in replacements.items():
        count = template.count(old)
        assert count == 1, f"{old!r} occurs {count} times in the template, not once"
        template = template.replace(old, new)
    return template


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, made for this run."""

    def __init__(self, folder: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        self.cert = folder / "cert.pem"
        self.key = folder / "key.pem"
        self.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def client_context(self) -> ssl.SSLContext:
        """A client's TLS context that trusts this certificate (and checks the name)."""
        return ssl.create_default_context(cafile=str(self.cert))


class ProxyProcess:
    """A proxy process with its own folder; its ports are chosen before it starts, so
    that Hubbub can be told the public origin first."""

    name = "proxy"

    def __init__(self, certificate: Certificate) -> None:
        self.certificate = certificate
        self.folder = Path(tempfile.mkdtemp(prefix=f"hubbub-{self.name}-"))
        self.folder.chmod(0o755)
        self.https_port = free_port()
        self.http_port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._output = self.folder / "output.log"

    @property
    def origin(self) -> str:
        """The public origin: what a browser's page through this proxy has."""
        return f"https://127.0.0.1:{self.https_port}"

    def ws(self, path: str) -> str:
        return f"wss://127.0.0.1:{self.https_port}{path}"

    def https(self, path: str) -> str:
        return f"{self.origin}{path}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def start(self) -> ProxyProcess:
        with self._output.open("wb") as output:
            self._proc = subprocess.Popen(
                self.command(),
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.folder,
                env=self.env(),
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.https_port), timeout=5):
                    return self
            except ConnectionRefusedError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} did not start:\n{self.output}") from None
                time.sleep(0.05)  # polling: a listen() has no event to wait on

    @property
    def output(self) -> str:
        return self._output.read_text(errors="replace") if self._output.exists() else ""

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        shutil.rmtree(self.folder, ignore_errors=True)


class Nginx(ProxyProcess):
    """``nginx`` in the foreground with ``deploy/nginx/hubbub.conf`` inside a minimal
    main config: the upstream, the listening ports, the certificate (and, if asked, the
    read timeout) substituted."""

    name = "nginx"

    def __init__(self, certificate: Certificate) -> None:
        super().__init__(certificate)
        self.upstream_port = 0
        self.read_timeout: str | None = None

    def site(self) -> str:
        """The site config this run uses: the deploy file, substituted."""
        replacements = {
            "server 127.0.0.1:8000;": f"server 127.0.0.1:{self.upstream_port};",
            "listen 80;": f"listen 127.0.0.1:{self.http_port};",
            "listen [::]:80;": "",
            "listen 443 ssl;": f"listen 127.0.0.1:{self.https_port} ssl;",
            "listen [::]:443 ssl;": "",
            "/etc/letsencrypt/live/chat.example.com/fullchain.pem": str(self.certificate.cert),
            "/etc/letsencrypt/live/chat.example.com/privkey.pem": str(self.certificate.key),
        }
        if self.read_timeout is not None:
            replacements["proxy_read_timeout 60s;"] = f"proxy_read_timeout {self.read_timeout};"
        return render(NGINX_CONF.read_text(), replacements)

    def command(self) -> list[str]:
        folder = self.folder
        temp = folder / "temp"
        temp.mkdir(mode=0o777)
        temp.chmod(0o777)  # the workers run as nobody when the master is root
        (folder / "hubbub.conf").write_text(self.site())
        (folder / "nginx.conf").write_text(
            f"""worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format hubbub '$remote_addr "$request" $status';
    access_log {folder}/access.log hubbub;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {folder}/hubbub.conf;
}}
"""
        )
        conf = str(folder / "nginx.conf")
        check = subprocess.run(
            [NGINX, "-t", "-q", "-p", str(folder), "-e", "stderr", "-c", conf],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert check.returncode == 0, f"nginx -t refused the config:\n{check.stderr}"
        return [NGINX, "-p", str(folder), "-e", "stderr", "-c", conf, "-g", "daemon off;"]

    def start_for(self, upstream_port: int, read_timeout: str | None = None) -> Nginx:
        self.upstream_port = upstream_port
        self.read_timeout = read_timeout
        self.start()
        return self

    @property
    def access_log(self) -> str:
        path = self.folder / "access.log"
        return path.read_text() if path.exists() else ""

    @property
    def error_log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text() if path.exists() else ""


class Caddy(ProxyProcess):
    """``caddy run`` with ``deploy/caddy/Caddyfile``: the site's address (with the test's
    certificate instead of one from an ACME CA) and the upstream substituted; no admin
    endpoint."""

    name = "caddy"

    def __init__(self, certificate: Certificate) -> None:
        super().__init__(certificate)
        self.upstream_port = 0

    def site(self) -> str:
        return render(
            CADDYFILE.read_text(),
            {
                "chat.example.com {": f"https://127.0.0.1:{self.https_port} {{\n"
                f"    tls {self.certificate.cert} {self.certificate.key}",
                "reverse_proxy 127.0.0.1:8000": f"reverse_proxy 127.0.0.1:{self.upstream_port}",
            },
        )

    def command(self) -> list[str]:
        caddyfile = self.folder / "Caddyfile"
        # Global options first: no admin endpoint (port 2019) and no HTTP->HTTPS redirect
        # server on port 80 (both would collide with other runs).
        caddyfile.write_text(
            "{\n    admin off\n    auto_https disable_redirects\n}\n\n" + self.site()
        )
        return [CADDY, "run", "--config", str(caddyfile), "--adapter", "caddyfile"]

    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.folder),
            "XDG_CONFIG_HOME": str(self.folder / "config"),
            "XDG_DATA_HOME": str(self.folder / "data"),
            "PATH": "/usr/bin:/bin",
        }

    def start_for(self, upstream_port: int) -> Caddy:
        self.upstream_port = upstream_port
        self.start()
        return self
