"""gunicorn settings of the sample service (read from the release's tree)."""

from __future__ import annotations

import os
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


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges (prometheus-client multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
