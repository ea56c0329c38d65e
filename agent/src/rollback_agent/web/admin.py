"""GET /api/admin/rollback/status, /history, /incidents/<id> and POST /api/admin/rollback/test."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from rollback_agent.web import agent_of, require_auth
from rollback_agent.web.errors import error_response

bp = Blueprint("admin", __name__, url_prefix="/api/admin/rollback")
bp.before_request(require_auth)


def _limit(default: int) -> int | tuple[Response, int]:
    raw = request.args.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= 500:
        return error_response(400, f"limit must be a whole number from 1 to 500, got {raw!r}")
    return int(raw)


@bp.get("/status")
def status() -> Any:
    limit = _limit(10)
    if isinstance(limit, tuple):
        return limit
    return jsonify(agent_of(current_app).status(history=limit))


@bp.get("/history")
def history() -> Any:
    limit = _limit(50)
    if isinstance(limit, tuple):
        return limit
    agent = agent_of(current_app)
    agent.recover()
    return jsonify(
        {
            "host": agent.config.host,
            "incidents": agent.status(history=limit)["history"],
            "deploys": [d.as_dict() for d in agent.store.deploys(limit)],
        }
    )


@bp.get("/incidents/<incident_id>")
def incident(incident_id: str) -> Any:
    agent = agent_of(current_app)
    found = agent.store.incident(incident_id) if len(incident_id) <= 64 else None
    if found is None:
        return error_response(404, f"no incident {incident_id[:64]!r}")
    return jsonify(found)


@bp.post("/test")
def test() -> Any:
    body: Any = request.get_json(silent=True) if request.is_json else None
    labels: Any = {}
    if isinstance(body, dict):
        name = body.get("alert_name")
        labels = body.get("labels", {})
    elif request.is_json:
        return error_response(
            400, 'the body must be a JSON object such as {"alert_name": "CriticalErrorRate"}'
        )
    else:
        name = request.form.get("alert_name") or request.args.get("alert_name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        return error_response(400, "alert_name is required: a non-empty string (JSON body or form field)")
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        return error_response(400, "labels must be an object of string values")
    return jsonify(agent_of(current_app).simulate(name.strip(), labels))
