"""A real HTTP receiver for webhooks and alerts, verifying every delivery with the reference
``standardwebhooks`` library (not our own code)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


class Receiver:
    """Collects verified deliveries; ``fail`` first attempts are answered 503."""

    def __init__(self, secret: str, *, fail: int = 0) -> None:
        self.secret = secret
        self.fail = fail
        self.received: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.rejected = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                code = outer.take(body, headers)
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def take(self, body: bytes, headers: dict[str, str]) -> int:
        with self.lock:
            if self.fail > 0:
                self.fail -= 1
                return 503
            try:
                Webhook(self.secret).verify(body, headers)
            except Exception:
                self.rejected += 1
                return 401
            self.received.append(json.loads(body))
            self.ids.append(headers["webhook-id"])
            return 204

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
