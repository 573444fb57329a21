"""The chat page in Chromium through nginx (``deploy/nginx/hubbub.conf``, started by the
test over HTTPS): the page, its script and its ``wss://`` WebSocket all through the
proxy, and Hubbub logging the browser's address as nginx saw it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page

from tests.e2e.conftest import NewUser
from tests.e2e.test_chat_ui import join, say, wait_messages, wait_state
from tests.proxies import NGINX, Certificate, Nginx, require
from tests.servers import ServerProcess


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return Certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def nginx(certificate: Certificate) -> Iterator[Nginx]:
    require(NGINX)
    proxy = Nginx(certificate)
    yield proxy
    proxy.stop()


def open_chat(new_user: NewUser, proxy: Nginx, name: str) -> Page:
    # The test's certificate is self-signed: the browser is told to take it.
    page = new_user(ignore_https_errors=True)
    page.goto(proxy.https("/"))
    page.get_by_label("Display name").fill(name)
    page.get_by_label("Display name").press("Enter")
    wait_state(page, "connected")
    return page


def test_two_users_chat_through_nginx(
    start_server: Callable[..., ServerProcess], nginx: Nginx, new_user: NewUser
) -> None:
    server = start_server("--forwarded-allow-ips", "127.0.0.1")
    nginx.start_for(server.port)
    ann = open_chat(new_user, nginx, "ann")
    bob = open_chat(new_user, nginx, "bob")
    for page in (ann, bob):
        join(page, "lobby")
    say(ann, "through the proxy")
    for page in (ann, bob):
        wait_messages(page, ["through the proxy"])
    assert ann.evaluate("location.origin") == nginx.origin
    # Port 0: the address came from X-Forwarded-For, not from the socket (nginx's).
    server.wait_for_log(r'127\.0\.0\.1:0 - "WebSocket /v1/ws(\?[^"]*)?" accepted', count=2)
    # (nginx logs an upgraded request once it ends: the WebSockets are still open.)
    assert '"GET /static/hubbub.js HTTP/1.1" 200' in nginx.access_log
