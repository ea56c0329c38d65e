"""gunicorn settings of the sample service (read from the release's tree)."""

from __future__ import annotations

import os
import time
from typing import Any

bind = os.environ.get("BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("THREADS", "8"))
timeout = 30
graceful_timeout = 10
accesslog = None
errorlog = "-"
loglevel = "info"
wsgi_app = "sample_app:create_app()"


def on_starting(server: Any) -> None:
    """Record the master's start time for process_start_time_seconds (multiprocess mode)."""
    os.environ.setdefault("SAMPLE_APP_STARTED_AT", str(time.time()))


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges (prometheus-client multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
