"""Rollback agents: POST /api/admin/rollback/test with the webhook secret on each agent.

The agent validates its configuration and answers with the plan it would carry out for the alert
(target sha and alembic revision, units, which guards pass or block), executing nothing.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests

from ..alertmanager import api
from ..http import describe_error, request, short_body, where
from ..model import CheckError, Outcome, Planned, SkipCheckError
from ..secrets import display_url
from ..settings import missing_secret_reason, spec_for
from .base import Check, Context

AUTH_USER = "alertmanager"  # the user Alertmanager's basic_auth sends (roles/alertmanager)
API_SUFFIXES = (
    "/api/admin/rollback/trigger",
    "/api/admin/rollback/test",
    "/api/admin/rollback/status",
    "/api/admin/rollback",
    "/healthz",
)


def agent_base(url: str) -> str:
    """The agent's base URL, also from the full webhook URL Alertmanager is configured with."""
    url = url.rstrip("/")
    for suffix in API_SUFFIXES:
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url


def agent_label(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


class NoAgents(Check):
    """The row shown when no --api-url was given."""

    name = "agents"
    group = "agents"

    def plan(self, ctx: Context) -> list[Planned]:
        raise SkipCheckError("no rollback agent: pass --api-url http://HOST:9095 (once per agent)")

    def run(self, ctx: Context) -> Outcome:
        raise SkipCheckError("no rollback agent: pass --api-url http://HOST:9095 (once per agent)")


class AgentCheck(Check):
    group = "agents"

    def __init__(self, url: str) -> None:
        self.base = agent_base(url)
        self.name = f"agent[{agent_label(self.base)}]"

    def _secret(self, ctx: Context) -> str:
        secret = ctx.settings.secret("rollback_webhook_secret")
        if secret is None:
            raise SkipCheckError(missing_secret_reason(spec_for("rollback_webhook_secret")))
        return secret.reveal()

    def plan(self, ctx: Context) -> list[Planned]:
        self._secret(ctx)
        body = {"alert_name": ctx.settings.rollback_alert}
        target = display_url(api(self.base, "/api/admin/rollback/test"), secret=False)
        return [
            Planned(self.name, f"POST {target} (basic auth {AUTH_USER}:***)", body),
            Planned(
                self.name, f"GET {display_url(api(self.base, '/api/admin/rollback/status'), secret=False)}"
            ),
        ]

    def run(self, ctx: Context) -> Outcome:
        secret = self._secret(ctx)
        alert = ctx.settings.rollback_alert
        url = api(self.base, "/api/admin/rollback/test")
        response = request(
            ctx.session,
            "POST",
            url,
            json={"alert_name": alert},
            auth=(AUTH_USER, secret),
            timeout=ctx.timeout,
        )
        body = _json(response)
        if response.status_code == 401:
            raise CheckError(
                f"{where(url)} rejected the webhook secret (HTTP 401, user {AUTH_USER!r}): "
                "Alertmanager's rollback webhooks to this agent fail too"
            )
        if response.status_code == 404 and not isinstance(body, dict):
            raise CheckError(f"{where(url)} has no /api/admin/rollback/test: not a rollback agent?")
        if response.status_code != 200 or not isinstance(body, dict):
            raise CheckError(
                f"agent refused the test of {alert}: HTTP {response.status_code}: "
                f"{_error_text(response, body)}",
                {"http_status": response.status_code, "answer": body},
            )

        plan = summarize_plan(body)
        status = self._status(ctx, secret)
        data: dict[str, Any] = {"alert_name": alert, "plan": plan, "answer": body, "status": status}
        parts = [plan["text"]]
        if status.get("text"):
            parts.append(status["text"])
        detail = f"{alert}: " + "; ".join(parts)
        if plan["would_roll_back"] is False and ctx.settings.require_rollback_ready:
            raise CheckError(f"{detail} (--require-rollback-ready)", data)
        return Outcome(detail, data)

    def _status(self, ctx: Context, secret: str) -> dict[str, Any]:
        """Version, mode and any rollback in progress; extra information, never a failure by itself."""
        url = api(self.base, "/api/admin/rollback/status")
        try:
            response = request(ctx.session, "GET", url, auth=(AUTH_USER, secret), timeout=ctx.timeout)
        except requests.RequestException as exc:
            return {"text": f"status unavailable ({describe_error(exc, url)})"}
        body = _json(response)
        if response.status_code != 200 or not isinstance(body, dict):
            return {"text": f"status unavailable (HTTP {response.status_code})"}
        bits: list[str] = []
        if body.get("version"):
            bits.append(f"agent v{body['version']}")
        if body.get("mode"):
            bits.append(f"mode {body['mode']}")
        running = body.get("rollback_in_progress") or body.get("in_progress")
        if running:
            inc = running.get("incident_id", "?") if isinstance(running, dict) else running
            bits.append(f"ROLLBACK IN PROGRESS ({inc})")
        return {
            "text": ", ".join(bits),
            "version": body.get("version"),
            "mode": body.get("mode"),
            "rollback_in_progress": running or None,
        }


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_text(response: requests.Response, body: Any) -> str:
    if isinstance(body, dict) and ("error" in body or "detail" in body):
        return f"{body.get('error', '')}: {body.get('detail', '')}".strip(": ")
    return short_body(response)


def summarize_plan(answer: dict[str, Any]) -> dict[str, Any]:
    """The plan in a few words, from the agent's /test answer (issue 3's fields)."""
    plan = answer.get("plan") if isinstance(answer.get("plan"), dict) else answer
    guards = plan.get("guards", answer.get("guards"))
    blocked: list[str] = []
    passed: list[str] = []
    if isinstance(guards, dict):
        for name, value in guards.items():
            ok = (
                value.get("passed", value.get("ok", value.get("allowed")))
                if isinstance(value, dict)
                else value
            )
            reason = value.get("reason") if isinstance(value, dict) else None
            (passed if ok else blocked).append(f"{name}" + (f" ({reason})" if reason and not ok else ""))
    elif isinstance(guards, list):
        for value in guards:
            if not isinstance(value, dict):
                continue
            name = str(value.get("name") or value.get("guard") or "?")
            ok = value.get("passed", value.get("ok", value.get("allowed")))
            reason = value.get("reason")
            (passed if ok else blocked).append(name + (f" ({reason})" if reason and not ok else ""))
    would = plan.get("would_rollback", plan.get("would_roll_back", plan.get("allowed")))
    if would is None and (passed or blocked):
        would = not blocked
    decision = plan.get("decision") or answer.get("decision") or answer.get("status")
    current = _short_sha(
        plan.get("current_sha") or (plan.get("current") or {}).get("sha")
        if isinstance(plan.get("current"), dict) or plan.get("current_sha")
        else None
    )
    target_sha = (
        plan.get("target_sha") or (plan.get("target") or {}).get("sha")
        if isinstance(plan.get("target"), dict) or plan.get("target_sha")
        else None
    )
    target_rev = (
        plan.get("target_revision") or (plan.get("target") or {}).get("revision")
        if isinstance(plan.get("target"), dict) or plan.get("target_revision")
        else None
    )
    units = plan.get("units") or []
    bits: list[str] = []
    if target_sha:
        move = f"{current}→{_short_sha(target_sha)}" if current else f"to {_short_sha(target_sha)}"
        bits.append(f"would roll back {move}" + (f" (alembic {target_rev})" if target_rev else ""))
    if units:
        bits.append(f"units {', '.join(map(str, units))}")
    if would is True:
        bits.append("guards allow a rollback")
    elif would is False:
        bits.append("guards BLOCK it: " + (", ".join(blocked) or str(decision or "see answer")))
    elif decision:
        bits.append(f"decision {decision}")
    return {
        "text": "; ".join(bits) or "plan received",
        "would_roll_back": would,
        "guards_passed": passed,
        "guards_blocked": blocked,
        "target_sha": target_sha,
        "target_revision": target_rev,
        "units": units,
    }


def _short_sha(sha: Any) -> str:
    return str(sha)[:10] if sha else "?"
