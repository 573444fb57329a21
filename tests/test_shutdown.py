"""SIGTERM and SIGINT: stop accepting, flush, close every client with 1001, exit 0."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.rawws import RawWebSocket
from tests.servers import ServerProcess

TIMEOUT = 10


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_closes_clients_with_1001_after_flushing_and_exits_0(
    start_server: Callable[..., ServerProcess], signum: int
) -> None:
    server = start_server("--shutdown-timeout", "2", "--close-timeout", "1")
    with (
        connect(server.ws("/ws/1"), open_timeout=TIMEOUT) as chat,
        connect(server.ws("/ws/3"), open_timeout=TIMEOUT) as watcher,
        connect(server.ws("/ws"), open_timeout=TIMEOUT) as echo,
    ):
        # A stalled reader with a full socket must not hold the shutdown up past its bound.
        stalled = RawWebSocket(server.port, "/ws/2", rcvbuf=4096)
        echo.send("last words")
        for i in range(300):
            chat.send(f"{i}:" + "z" * 4000)
        # Everything sent has been read by the server before the signal (else a busy
        # server may stop first): the echo answered, and another member heard the last
        # chat line. What chat and the stalled reader have not read is still queued.
        assert echo.recv(TIMEOUT) == "Message text was: last words"
        last = "Client #1 says: 299:" + "z" * 4000
        while watcher.recv(TIMEOUT) != last:
            pass
        server.signal(signum)
        assert server.wait(TIMEOUT * 3) == 0

        received = []
        with pytest.raises(ConnectionClosed):
            while True:
                received.append(chat.recv(TIMEOUT))
        says = [m for m in received if isinstance(m, str) and m.startswith("Client #1 says")]
        assert says == [f"Client #1 says: {i}:" + "z" * 4000 for i in range(300)]
        assert chat.protocol.close_rcvd is not None
        assert chat.protocol.close_rcvd.code == 1001

        with pytest.raises(ConnectionClosed):
            echo.recv(TIMEOUT)
        assert echo.protocol.close_rcvd is not None
        assert echo.protocol.close_rcvd.code == 1001
        stalled.close()
    assert "Traceback" not in server.log
    with pytest.raises(ConnectionRefusedError):  # no longer accepting
        RawWebSocket(server.port, "/ws")
