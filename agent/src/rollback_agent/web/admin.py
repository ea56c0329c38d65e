"""GET .../status, /history, /incidents/<id>, /fleet; POST .../test; POST and DELETE .../freeze."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from rollback_agent import fleet, report
from rollback_agent.decisions import simulate
from rollback_agent.freeze import FreezeError, freeze, unfreeze
from rollback_agent.web import host_of, require_auth
from rollback_agent.web.errors import error_response

bp = Blueprint("admin", __name__, url_prefix="/api/admin/rollback")
bp.before_request(require_auth)


def _limit(default: int) -> int | tuple[Response, int]:
    raw = request.args.get("limit", str(default))
    # ASCII digits only: str.isdigit() accepts '²', which int() then refuses (a 500 before)
    if not re.fullmatch(r"[0-9]{1,3}", raw) or not 1 <= int(raw) <= 500:
        return error_response(400, f"limit must be a whole number from 1 to 500, got {raw!r}")
    return int(raw)


@bp.get("/status")
def status() -> Any:
    limit = _limit(10)
    if isinstance(limit, tuple):
        return limit
    return jsonify(report.status(host_of(current_app), history=limit))


@bp.get("/history")
def history() -> Any:
    limit = _limit(50)
    if isinstance(limit, tuple):
        return limit
    host = host_of(current_app)
    return jsonify({"host": host.config.host, **report.history(host, limit)})


@bp.get("/fleet")
def fleet_view() -> Any:
    """What peers of the fleet ask (``?from_sha=``: the incident about that release) and fleet-status."""
    from_sha = request.args.get("from_sha") or None
    if from_sha is not None and not re.fullmatch(r"[0-9a-f]{7,64}", from_sha):
        return error_response(400, f"from_sha must be a hexadecimal commit sha, got {from_sha[:80]!r}")
    host = host_of(current_app)
    data = fleet.view(host, from_sha)
    if request.args.get("peers") == "1":  # the pipeline tester: do this agent's peers answer it?
        data["peer_answers"] = [
            {k: a.get(k) for k in ("host", "url", "answered", "wave", "error")} for a in fleet.ask_peers(host)
        ]
    return jsonify(data)


@bp.get("/incidents/<incident_id>")
def incident(incident_id: str) -> Any:
    host = host_of(current_app)
    found = host.store.incident(incident_id) if len(incident_id) <= 64 else None
    if found is None:
        return error_response(404, f"no incident {incident_id[:64]!r}")
    return jsonify(report.incident_detail(host, found))


@bp.post("/test")
def test() -> Any:
    body: Any = request.get_json(silent=True) if request.is_json else None
    labels: Any = {}
    status: Any = "firing"
    if isinstance(body, dict):
        name = body.get("alert_name")
        labels = body.get("labels", {})
        status = body.get("status", "firing")
    elif request.is_json:
        return error_response(
            400, 'the body must be a JSON object such as {"alert_name": "CriticalErrorRate"}'
        )
    else:
        name = request.form.get("alert_name") or request.args.get("alert_name")
        status = request.form.get("status") or request.args.get("status") or "firing"
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        return error_response(400, "alert_name is required: a non-empty string (JSON body or form field)")
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        return error_response(400, "labels must be an object of string values")
    if status not in ("firing", "resolved"):
        return error_response(400, 'status must be "firing" (the default) or "resolved"')
    return jsonify(simulate(host_of(current_app), name.strip(), labels, status).as_dict())


@bp.post("/freeze")
def freeze_now() -> Any:
    body: Any = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error_response(
            400, 'the body must be a JSON object such as {"for": "2h", "reason": "db upgrade"}'
        )
    try:
        data = freeze(host_of(current_app), body.get("for"), body.get("reason"))
    except FreezeError as exc:
        return error_response(400, str(exc))
    return jsonify({"freeze": data})


@bp.delete("/freeze")
def unfreeze_now() -> Any:
    return jsonify({"freeze": None, "was_frozen": unfreeze(host_of(current_app))})
