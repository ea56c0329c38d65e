"""POST /api/admin/rollback/trigger: Alertmanager's webhook."""

from __future__ import annotations

import json

from flask import Blueprint, Response, current_app, jsonify, request

from rollback_agent import metrics
from rollback_agent.decisions import handle_webhook
from rollback_agent.payload import PayloadError, parse_webhook
from rollback_agent.web import host_of, require_auth
from rollback_agent.web.errors import error_response

bp = Blueprint("webhook", __name__, url_prefix="/api/admin/rollback")
bp.before_request(require_auth)


@bp.post("/trigger")
def trigger() -> tuple[Response, int]:
    host = host_of(current_app)
    raw = request.get_data(cache=False)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        metrics.WEBHOOKS.labels(outcome="invalid").inc()
        return error_response(400, f"the body is not valid JSON: {exc}", "invalid_payload")
    try:
        payload = parse_webhook(data)
    except PayloadError as exc:
        metrics.WEBHOOKS.labels(outcome="invalid").inc()
        return error_response(400, str(exc), "invalid_payload")
    decision = handle_webhook(host, payload, remote=request.remote_addr)
    return jsonify(decision.as_dict(host.config.host)), decision.http_status
