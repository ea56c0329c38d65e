"""The Flask application factory; the routes live in blueprints split by concern."""

from __future__ import annotations

import io
import logging
from typing import Any

from flask import Flask, current_app, request

from rollback_agent import metrics
from rollback_agent.config import Config, load_config
from rollback_agent.host import Host
from rollback_agent.recovery import recover

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # 1 MiB


def create_app(config: Config | str | None = None, *, host: Host | None = None) -> Flask:
    """Build the app from a Config, a config file path, or $ROLLBACK_AGENT_CONFIG.

    Raises ConfigError (naming the key at fault) when the configuration is unusable.
    """
    if host is None:
        cfg = config if isinstance(config, Config) else load_config(config)
        host = Host(cfg)
    app = Flask("rollback_agent")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.wsgi_app = BodyLimit(app.wsgi_app, MAX_BODY)  # type: ignore[method-assign]
    app.config["JSON_SORT_KEYS"] = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["rollback_agent"] = host

    from rollback_agent.web import admin, errors, ops, webhook

    errors.register(app)
    app.register_blueprint(ops.bp)
    app.register_blueprint(webhook.bp)
    app.register_blueprint(admin.bp)

    host.store.initialize()
    interrupted = recover(host)
    if interrupted:
        log.warning("marked interrupted at start: %s", ", ".join(interrupted))
    return app


class BodyLimit:
    """Chunked bodies (no Content-Length) read here, at most ``limit + 1`` bytes, and handed on with
    their length: over the limit they get the same 413 as a body announced too large."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if (
            environ.get("CONTENT_LENGTH") in (None, "")
            and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        ):
            stream = environ["wsgi.input"]
            body, size = [], 0
            while size <= self.limit:
                chunk = stream.read(min(65536, self.limit + 1 - size))
                if not chunk:
                    break
                body.append(chunk)
                size += len(chunk)
            environ["wsgi.input"] = io.BytesIO(b"".join(body))
            environ["CONTENT_LENGTH"] = str(size)
            del environ["HTTP_TRANSFER_ENCODING"]  # werkzeug ignores the length of a chunked body
        return self.app(environ, start_response)


def host_of(app: Flask) -> Host:
    return app.extensions["rollback_agent"]  # type: ignore[no-any-return]


def require_auth() -> Any:
    """before_request of the /api/admin/ blueprints."""
    from rollback_agent.web import auth

    host = host_of(current_app)
    if not auth.check(request, host.config.auth.username, host.secrets.webhook):
        if request.endpoint == "webhook.trigger":
            metrics.WEBHOOKS.labels(outcome="unauthorized").inc()
        return auth.unauthorized()
    return None
