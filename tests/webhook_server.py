"""A real local HTTP server that receives webhook deliveries, for the destination tests:
it keeps every request (headers, raw body) and answers with what ``respond`` decides."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    status: int  # what the server answered
    method: str = "POST"

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def messages(self) -> list[dict]:
        data = self.json
        return data if isinstance(data, list) else [data]

    @property
    def keys(self) -> list[str]:
        return self.headers.get("idempotency-key", "").split(",")


class WebhookServer:
    """``respond(n, request) -> (status, headers)`` or ``(status, headers, body)``: n
    counts requests from 0."""

    def __init__(self, respond: Callable[[int, Received], tuple[int, dict]] | None = None,
                 delay: float = 0.0):  # fmt: skip
        self.respond = respond or (lambda n, r: (200, {}))
        self.delay = delay
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                               body, 0, self.command)  # fmt: skip
                if server.delay:
                    time.sleep(server.delay)
                with server._lock:
                    n = len(server.requests)
                    status, headers, *answer = server.respond(n, got)
                    got.status = status
                    server.requests.append(got)
                default = b'{"ok": true}' if status < 300 else b'{"error": "nope"}'
                reply = answer[0] if answer else default
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_PUT = do_PATCH = do_DELETE = do_GET = do_POST  # noqa: N815 (as above)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hook"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def delivered(self) -> list[tuple[str, dict]]:
        """(idempotency key, message) of every message in a 2xx answer, in arrival order."""
        with self._lock:
            return [(k, m) for r in self.requests if r.status < 300
                    for k, m in zip(r.keys, r.messages, strict=True)]  # fmt: skip
