"""The gunicorn worker: gthread (a slow client holds one thread, never the worker), and a deadline
for reading each request so that clients trickling their headers or body give their thread back.

``server.threads`` threads per worker; a request not read within ``server.read_timeout`` has its
socket shut for reading (the parser sees the end of the stream and closes the connection).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

WATCH_INTERVAL = 0.25


class Worker(ThreadWorker):  # type: ignore[misc]
    read_timeout = 10.0  # set by gunicorn_conf from server.read_timeout

    def init_process(self) -> None:
        self._reading: dict[int, tuple[float, Any]] = {}
        self._reading_lock = threading.Lock()
        threading.Thread(target=self._watch, name="read-deadline", daemon=True).start()
        super().init_process()

    def handle(self, conn: Any) -> Any:
        key = id(conn)
        with self._reading_lock:
            self._reading[key] = (time.monotonic() + self.read_timeout, conn)
        try:
            return super().handle(conn)
        finally:
            with self._reading_lock:
                self._reading.pop(key, None)

    def _watch(self) -> None:
        while True:
            time.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            with self._reading_lock:
                late = [k for k, (deadline, _) in self._reading.items() if deadline <= now]
                conns = [self._reading.pop(k)[1] for k in late]
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RD)
                self.log.warning(
                    "request from %s not read within %.1fs: connection closed", conn.client, self.read_timeout
                )
