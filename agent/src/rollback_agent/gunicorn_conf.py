"""Gunicorn settings for the agent, read from the agent's own configuration file.

    ROLLBACK_AGENT_CONFIG=/etc/rollback-agent/config.yml \\
        gunicorn -c python:rollback_agent.gunicorn_conf rollback_agent.wsgi:app

``server.bind``, ``server.workers``, ``server.threads``, ``server.read_timeout``, ``server.timeout``,
``server.certfile``/``keyfile`` and
``log_level`` come from the YAML file. Prometheus multi-process files go to
$PROMETHEUS_MULTIPROC_DIR (default ``<state_dir>/metrics``), cleared when the master starts.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from rollback_agent.config import ConfigError, load_config
from rollback_agent.intake import Worker

try:
    _config = load_config()
except ConfigError as _exc:
    sys.stderr.write(_exc.render() + "\n")
    raise SystemExit(2) from None

_metrics_dir = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_config.state_dir / "metrics")))
try:  # every worker writes its counters there: a directory that cannot be used stops the start
    _metrics_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    tempfile.TemporaryFile(dir=_metrics_dir).close()
except OSError as _exc:
    sys.stderr.write(
        f"rollback-agent: metrics directory {_metrics_dir} cannot be written "
        f"({_exc.strerror or _exc}): fix its permissions or set PROMETHEUS_MULTIPROC_DIR\n"
    )
    raise SystemExit(2) from None

Worker.read_timeout = _config.server.read_timeout

wsgi_app = "rollback_agent.wsgi:app"
bind = [_config.server.bind]
workers = _config.server.workers
worker_class = "rollback_agent.intake.Worker"  # gthread with a deadline for reading each request
threads = _config.server.threads
timeout = _config.server.timeout
graceful_timeout = 30
keepalive = 2
proc_name = "rollback-agent"
umask = 0o027
accesslog = "-" if _config.server.access_log else None
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
errorlog = "-"
loglevel = _config.log_level
capture_output = True
control_socket_disable = True  # gunicorn's runtime control socket is not needed (and $HOME may be read-only)
if _config.server.certfile is not None and _config.server.keyfile is not None:
    certfile = str(_config.server.certfile)
    keyfile = str(_config.server.keyfile)


def on_starting(server: Any) -> None:
    """Fresh metric files for this run of the master (counters start again from zero)."""
    if _metrics_dir.exists():
        for item in _metrics_dir.glob("*.db"):
            item.unlink(missing_ok=True)
    else:
        _metrics_dir.mkdir(parents=True, mode=0o750)
    server.log.info(
        "rollback-agent: config %s, host %s, mode %s, metrics in %s",
        _config.source,
        _config.host,
        _config.mode,
        _metrics_dir,
    )


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
