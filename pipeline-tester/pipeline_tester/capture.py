"""The local receiver that --e2e starts: records the Alertmanager webhooks (v4) that reach it."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)
MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Delivery:
    received_at: float  # time.monotonic()
    receiver: str
    status: str  # firing | resolved (of the notification)
    alerts: list[dict[str, Any]]


class _Handler(BaseHTTPRequestHandler):
    server: CaptureServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY:
            self._answer(413 if length > MAX_BODY else 400, {"error": "bad length"})
            return
        try:
            body = json.loads(self.rfile.read(length))
            delivery = Delivery(
                time.monotonic(),
                str(body.get("receiver", "")),
                str(body.get("status", "")),
                list(body.get("alerts") or []),
            )
        except (ValueError, AttributeError, TypeError):
            self._answer(400, {"error": "not an Alertmanager webhook payload"})
            return
        self.server.record(delivery)
        self._answer(200, {"status": "recorded"})

    def do_GET(self) -> None:
        self._answer(405, {"error": "POST Alertmanager webhooks here"})

    def _answer(self, code: int, body: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("capture: " + format, *args)


class CaptureServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int) -> None:
        super().__init__((host, port), _Handler)
        self._deliveries: list[Delivery] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self.serve_forever, name="capture", daemon=True)

    def start(self) -> CaptureServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def record(self, delivery: Delivery) -> None:
        with self._changed:
            self._deliveries.append(delivery)
            self._changed.notify_all()

    def find(self, label: str, value: str, status: str = "firing") -> Delivery | None:
        """The first delivery holding an alert with ``label=value`` in ``status``."""
        with self._changed:
            for delivery in self._deliveries:
                for alert in delivery.alerts:
                    if (alert.get("labels") or {}).get(label) == value and alert.get("status") == status:
                        return delivery
        return None

    def wait(self, seconds: float) -> None:
        with self._changed:
            self._changed.wait(seconds)
