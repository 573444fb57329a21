"""embed.py: a Hubbub's one life (runs nest, it runs once), its Python API, its router's
lifespan. In process; tests/test_embedded_app.py has the real servers and sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from hubbub import Hubbub, Settings, protocol
from hubbub.embed import NotStarted
from hubbub.errors import ProtocolError


@pytest.fixture
def hubbub(tmp_path: Path) -> Hubbub:
    return Hubbub(Settings(store_url=f"sqlite:///{tmp_path}/hubbub.db"))


async def test_runs_nest_and_the_last_one_out_stops_it(hubbub: Hubbub) -> None:
    assert not hubbub.running
    async with hubbub as entered:
        assert entered is hubbub and hubbub.running
        async with hubbub.lifespan(None):
            assert hubbub.running
        assert hubbub.running  # the outer run goes on
    assert not hubbub.running


async def test_concurrent_starts_start_it_once(hubbub: Hubbub) -> None:
    await asyncio.gather(hubbub.__aenter__(), hubbub.__aenter__())
    assert hubbub.running
    await hubbub.__aexit__(None, None, None)
    assert hubbub.running
    await hubbub.__aexit__(None, None, None)
    assert not hubbub.running


async def test_stopping_what_never_started_is_an_error(hubbub: Hubbub) -> None:
    with pytest.raises(RuntimeError, match="not running"):
        await hubbub.__aexit__(None, None, None)
    async with hubbub:
        pass
    with pytest.raises(RuntimeError, match="not running"):
        await hubbub.__aexit__(None, None, None)


async def test_a_hubbub_runs_once(hubbub: Hubbub) -> None:
    async with hubbub:
        pass
    with pytest.raises(RuntimeError, match="runs once"):
        async with hubbub:
            pass
    assert not hubbub.running


async def test_the_python_api_before_the_start_says_how_to_start(
    hubbub: Hubbub, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(NotStarted, match="lifespan"):
        await hubbub.publish("lobby", "hi")
    with pytest.raises(NotStarted):
        hubbub.presence("lobby")
    with pytest.raises(NotStarted):
        await hubbub.history("lobby")
    with pytest.raises(NotStarted):
        await hubbub.disconnect_user("ann")
    with pytest.raises(NotStarted):
        hubbub.send_to_user("ann", protocol.DmOpened(room="dm:x", users=["ann", "bob"]))
    # Told once in the log, however often it is asked.
    assert [r.levelname for r in caplog.records if "not started" in r.message] == ["ERROR"]


async def test_publish_then_history(hubbub: Hubbub) -> None:
    async with hubbub:
        first = await hubbub.publish("lobby", "one", data={"k": 1})
        second = await hubbub.publish("lobby", "two", sender="bot", user="bot-1", reply_to=1)
        assert (first.seq, second.seq) == (1, 2)
        assert (second.sender, second.user, second.reply_to) == ("bot", "bot-1", 1)
        assert [m.text for m in await hubbub.history("lobby")] == ["one", "two"]
        assert [m.seq for m in await hubbub.history("lobby", before=2, limit=5)] == [1]
        assert hubbub.presence("lobby") == {}
        assert await hubbub.disconnect_user("nobody") == 0
        hubbub.send_to_user("nobody", protocol.DmOpened(room="dm:x", users=["a", "b"]))


@pytest.mark.parametrize(
    ("room", "text", "sender", "data"),
    [
        ("no spaces", "hi", "server", None),
        ("lobby\n", "hi", "server", None),
        ("lobby", "", "server", None),
        ("lobby", "x" * 4001, "server", None),
        ("lobby", "hi", "", None),
        ("lobby", "hi", "server", {"big": "x" * 3000}),
    ],
)
async def test_publish_keeps_the_rules_of_send(
    hubbub: Hubbub, room: str, text: str, sender: str, data: dict[str, str] | None
) -> None:
    async with hubbub:
        with pytest.raises(ProtocolError):
            await hubbub.publish(room, text, sender=sender, data=data)


async def test_history_bounds(hubbub: Hubbub) -> None:
    async with hubbub:
        for limit, before in [(0, None), (1001, None), (10, 0), (10, 2**53 + 1)]:
            with pytest.raises(ProtocolError):
                await hubbub.history("lobby", limit=limit, before=before)


def test_including_the_router_runs_its_lifespan_with_the_apps(hubbub: Hubbub) -> None:
    app = FastAPI()
    app.include_router(hubbub.router, prefix="/chat")
    client = TestClient(app)
    # Before the application's lifespan: not ready, and the API says why.
    assert client.get("/chat/readyz").status_code == 503
    assert client.get("/chat/readyz").json()["started"] is False
    with client:
        assert hubbub.running
        ready = client.get("/chat/readyz")
        assert ready.status_code == 200 and ready.json()["started"] is True
        assert client.get("/chat/").text.startswith("<!DOCTYPE html>")
    assert not hubbub.running


def test_an_app_lifespan_of_its_own_nests_with_the_routers(hubbub: Hubbub) -> None:
    seen: list[bool] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with hubbub:  # running during the application's own start-up already
            seen.append(hubbub.running)
            yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(hubbub.router)
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
    assert seen == [True] and not hubbub.running


def test_the_router_is_one_router(hubbub: Hubbub) -> None:
    assert hubbub.router is hubbub.router


def test_the_applications_openapi_lists_hubbubs_api(hubbub: Hubbub) -> None:
    app = FastAPI()
    app.include_router(hubbub.router, prefix="/chat")
    with TestClient(app) as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert "/chat/api/v1/rooms/{room}/messages" in paths
    assert not any(path.startswith("/chat/static") for path in paths)
