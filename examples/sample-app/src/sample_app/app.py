"""The application factory (gunicorn: ``sample_app:create_app()``)."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify

from sample_app import api, errors, metrics
from sample_app.config import Settings
from sample_app.health import HealthChecker
from sample_app.release import FEATURES, RELEASE
from sample_app.storage import make_engine, make_redis


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = Flask(__name__)
    app.config["BALANCE_CACHE_TTL"] = settings.balance_cache_ttl
    engine = make_engine(settings)
    cache = make_redis(settings)
    checker = HealthChecker(engine, cache, observe=metrics.observe_check)
    app.extensions["sample_app.engine"] = engine
    app.extensions["sample_app.redis"] = cache
    app.extensions["sample_app.health"] = checker

    errors.init_app(app)
    metrics.init_app(app, checker, settings.service_name)
    app.register_blueprint(api.bp)

    @app.get("/health")
    def health() -> tuple[Response, int]:
        report = checker.check()
        body = report.as_dict() | {"release": RELEASE, "service": settings.service_name}
        return jsonify(body), 200 if report.status != "unhealthy" else 503

    @app.get("/version")
    def version() -> Response:
        return jsonify(release=RELEASE, features=list(FEATURES))

    return app
