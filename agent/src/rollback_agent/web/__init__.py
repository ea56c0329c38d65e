"""The Flask application factory; the routes live in blueprints split by concern."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app, request

from rollback_agent import metrics
from rollback_agent.config import Config, load_config
from rollback_agent.service import Agent

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # 1 MiB


def create_app(config: Config | str | None = None, *, agent: Agent | None = None) -> Flask:
    """Build the app from a Config, a config file path, or $ROLLBACK_AGENT_CONFIG.

    Raises ConfigError (naming the key at fault) when the configuration is unusable.
    """
    if agent is None:
        cfg = config if isinstance(config, Config) else load_config(config)
        agent = Agent(cfg)
    app = Flask("rollback_agent")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.config["JSON_SORT_KEYS"] = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["rollback_agent"] = agent

    from rollback_agent.web import admin, errors, ops, webhook

    errors.register(app)
    app.register_blueprint(ops.bp)
    app.register_blueprint(webhook.bp)
    app.register_blueprint(admin.bp)

    agent.store.initialize()
    interrupted = agent.recover()
    if interrupted:
        log.warning("marked interrupted at start: %s", ", ".join(interrupted))
    return app


def agent_of(app: Flask) -> Agent:
    return app.extensions["rollback_agent"]  # type: ignore[no-any-return]


def require_auth() -> Any:
    """before_request of the /api/admin/ blueprints."""
    from rollback_agent.web import auth

    agent = agent_of(current_app)
    if not auth.check(request, agent.config.auth.username, agent.secrets.webhook):
        if request.endpoint == "webhook.trigger":
            metrics.WEBHOOKS.labels(outcome="unauthorized").inc()
        return auth.unauthorized()
    return None
