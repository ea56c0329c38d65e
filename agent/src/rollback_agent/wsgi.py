"""WSGI entry point: ``gunicorn -c python:rollback_agent.gunicorn_conf rollback_agent.wsgi:app``.

The configuration file comes from $ROLLBACK_AGENT_CONFIG (default /etc/rollback-agent/config.yml).
"""

from __future__ import annotations

import logging
import os

from rollback_agent.web import create_app

os.umask(0o027)
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
app = create_app()
logging.getLogger().setLevel(app.extensions["rollback_agent"].config.log_level.upper())
