"""The background rollback process: ``python -m rollback_agent.runner --config F --incident ID --lock-fd N``
(``--ready-fd N``: closed once the downgrade's preview is recorded, see ``preview``).

Started by the gunicorn worker that accepted the webhook, with the operation lock's descriptor
inherited. It does not depend on the worker: gunicorn can restart its workers meanwhile. If this
process dies, the kernel drops the lock and the next agent start marks the incident interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading

from rollback_agent import preview
from rollback_agent.config import ConfigError, load_config
from rollback_agent.host import Host
from rollback_agent.locking import LockBusyError, adopt
from rollback_agent.logs import configure_logging
from rollback_agent.rollback import execute
from rollback_agent.state import FAILED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rollback-agent-runner", description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--incident", required=True)
    parser.add_argument("--lock-fd", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, help="closed once the downgrade's preview is recorded")
    args = parser.parse_args(argv)
    if args.ready_fd is not None:
        preview.announce_to(args.ready_fd)
    os.umask(0o027)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    # Heavy imports needed only later (Slack, the health check) load while the rollback starts.
    threading.Thread(target=importlib.import_module, args=("requests",), daemon=True).start()
    host = Host(config)
    try:
        lock = adopt(args.lock_fd, config.lock_path)
    except LockBusyError as exc:
        host.store.finish_incident(
            args.incident,
            FAILED,
            failed_step="initiated",
            error=f"the rollback process did not get the operation lock ({exc})",
        )
        return 1
    with lock:
        result = execute(host, args.incident, lock)
    # The result is recorded and the lock is free; now give Slack some time (never the rollback).
    host.notifier.flush(timeout=60.0)
    return 0 if result == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
