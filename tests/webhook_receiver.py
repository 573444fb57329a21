"""A real HTTP server for webhook tests: records every POST, answers with a status the
test sets (or is not there at all while stopped)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TIMEOUT = 60.0


Answer = tuple[int, bytes]


class Receiver:
    """``POST /hook`` on 127.0.0.1; ``status`` is what it answers, or ``respond(headers,
    body)`` decides (a status and a JSON body; a backend's hooks)."""

    def __init__(self, port: int = 0) -> None:
        self.status = 200
        self.respond: Callable[[dict[str, str], bytes], Answer] | None = None
        # every try, failed ones too: its headers, body, and the status it was answered
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = dict(self.headers.items())
                status, answer = receiver.status, b""
                if receiver.respond is not None:
                    status, answer = receiver.respond(headers, body)
                with receiver._changed:
                    receiver.requests.append((headers, body, status))
                    receiver._changed.notify_all()
                self.send_response(status)
                if answer:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Gone: connections to the port are refused until :meth:`start`."""
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(TIMEOUT)

    def wait(self, predicate: Any, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; received {len(self.requests)} requests"
                self._changed.wait(left)

    def delivered(self) -> list[dict[str, Any]]:
        """The bodies of the tries answered with a 2xx, in order, once per id."""
        seen: set[str] = set()
        events = []
        for _, body, status in list(self.requests):
            event = json.loads(body)
            if 200 <= status < 300 and event["id"] not in seen:
                seen.add(event["id"])
                events.append(event)
        return events
