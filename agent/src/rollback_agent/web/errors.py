"""Every error leaves the API as JSON: ``{"error": <code>, "detail": <text>}``."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from rollback_agent import metrics
from rollback_agent.state import IncidentIdTakenError

log = logging.getLogger(__name__)

CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    500: "internal_error",
    503: "unavailable",
}


def error_response(status: int, detail: str, error: str | None = None) -> tuple[Response, int]:
    body = jsonify({"error": error or CODES.get(status, "error"), "detail": detail})
    return body, status


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        detail = exc.description or exc.name
        if status == 413:
            detail = f"the body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes"
            if request.endpoint == "webhook.trigger":
                metrics.WEBHOOKS.labels(outcome="too_large").inc()
        response, code = error_response(status, detail)
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response, code

    @app.errorhandler(RecursionError)
    def _nested(_exc: RecursionError) -> tuple[Response, int]:
        # json.loads of "[[[[..." recurses once per level: the body is refused, not a 500.
        if request.endpoint == "webhook.trigger":
            metrics.WEBHOOKS.labels(outcome="invalid").inc()
        return error_response(400, "the JSON body is nested too deeply", "invalid_payload")

    @app.errorhandler(IncidentIdTakenError)
    def _collision(exc: IncidentIdTakenError) -> tuple[Response, int]:
        log.warning("%s: nothing recorded, the sender is asked to retry", exc)
        if request.endpoint == "webhook.trigger":
            metrics.WEBHOOKS.labels(outcome="error").inc()
        response, status = error_response(503, f"{exc}; nothing was recorded, send it again")
        response.headers["Retry-After"] = "1"
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unexpected error")
        if request.endpoint == "webhook.trigger":
            metrics.WEBHOOKS.labels(outcome="error").inc()
        return error_response(500, f"internal error ({type(exc).__name__}); see the agent's log")
