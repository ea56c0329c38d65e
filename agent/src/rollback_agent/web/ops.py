"""Unauthenticated endpoints for operations: GET /healthz, GET /metrics, GET /openapi.yaml."""

from __future__ import annotations

from importlib import resources
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST

from rollback_agent import __version__
from rollback_agent.report import render_metrics
from rollback_agent.web import host_of
from rollback_agent.web.errors import error_response

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    host = host_of(current_app)
    try:
        host.store.journal_mode()
    except Exception as exc:
        return error_response(503, f"state database unusable: {type(exc).__name__}: {exc}")
    return jsonify(
        {
            "status": "ok",
            "version": __version__,
            "host": host.config.host,
            "mode": host.config.mode,
            "rollback_in_progress": host.in_progress() is not None,
            # Rollbacks that could not restore the host: no automatic rollback until resolved.
            "stuck": [inc.id for inc in host.store.stuck_incidents()],
        }
    )


@bp.get("/metrics")
def metrics() -> Response:
    return Response(render_metrics(host_of(current_app)), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/openapi.yaml")
def openapi() -> Response:
    text = resources.files("rollback_agent").joinpath("openapi.yaml").read_text(encoding="utf-8")
    return Response(text, mimetype="application/yaml")
