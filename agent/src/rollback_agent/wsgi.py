"""WSGI entry point: ``gunicorn -c python:rollback_agent.gunicorn_conf rollback_agent.wsgi:app``.

The configuration file comes from $ROLLBACK_AGENT_CONFIG (default /etc/rollback-agent/config.yml).
Each worker that imports it checkpoints the state database's WAL from a thread of its own
(``Checkpointer``) and runs a ``Ticker`` (corroboration re-checks, verification deadlines,
recovery of rollbacks whose process died);
``ROLLBACK_AGENT_TICKER=0`` switches it off.
"""

from __future__ import annotations

import os

from rollback_agent.checkpoints import Checkpointer
from rollback_agent.config import load_config
from rollback_agent.logs import configure_logging
from rollback_agent.recovery import PeriodicRecovery
from rollback_agent.ticker import Ticker, register
from rollback_agent.web import create_app, host_of

os.umask(0o027)
_config = load_config()
configure_logging(_config.log_level)
app = create_app(_config)
checkpointer = Checkpointer(host_of(app).store).start()  # checkpoints off the request threads
if os.environ.get("ROLLBACK_AGENT_TICKER", "1") != "0":
    register("recovery", PeriodicRecovery())  # rollbacks whose process died, every 30 s
    ticker = Ticker(host_of(app)).start()
