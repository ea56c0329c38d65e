"""Rollback agents: POST /api/admin/rollback/test with the webhook secret on each agent.

The agent validates its configuration and answers with what a firing alert would cause now
(``would``: accepted, blocked, dry_run, in_progress or ignored, with a reason) and the plan (from/to
sha and alembic revision, units, each guard). It executes nothing. See agent/README.md.
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import requests
from prometheus_client.parser import text_string_to_metric_families

from ..alertmanager import api
from ..http import describe_error, request, short_body, where
from ..model import CheckError, Outcome, Planned, SkipCheckError
from ..secrets import display_url
from .base import Check, Context

AUTH_USER = "alertmanager"  # the user Alertmanager's basic_auth sends (roles/alertmanager)
API_SUFFIXES = (
    "/api/admin/rollback/trigger",
    "/api/admin/rollback/test",
    "/api/admin/rollback/status",
    "/api/admin/rollback",
    "/healthz",
    "/metrics",
)
WEBHOOK_METRIC = "rollback_agent_webhooks_total"
# Webhook outcomes that mean the agent got Alertmanager's request but refused it.
REJECTED = frozenset({"unauthorized", "invalid", "too_large", "error"})
NO_AGENT = "no rollback agent: pass --api-url http://HOST:9095 (once per agent)"
# Decisions that mean "the rollback path works, but it would not roll back right now".
NOT_READY = {
    "blocked": "guards BLOCK it",
    "dry_run": "agent in dry_run mode: would record and notify only",
    "in_progress": "a rollback or deploy is running NOW",
}


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
        raise SkipCheckError(NO_AGENT)

    def run(self, ctx: Context) -> Outcome:
        raise SkipCheckError(NO_AGENT)


class AgentCheck(Check):
    group = "agents"

    def __init__(self, url: str) -> None:
        self.base = agent_base(url)
        self.name = f"agent[{agent_label(self.base)}]"

    def _secret(self, ctx: Context) -> str:
        return ctx.secret("rollback_webhook_secret").reveal()

    def plan(self, ctx: Context) -> list[Planned]:
        self._secret(ctx)
        test_url = display_url(api(self.base, "/api/admin/rollback/test"), secret=False)
        status_url = display_url(api(self.base, "/api/admin/rollback/status"), secret=False)
        return [
            Planned(
                self.name,
                f"POST {test_url} (basic auth {AUTH_USER}:***)",
                {"alert_name": ctx.settings.rollback_alert},
            ),
            Planned(self.name, f"GET {status_url}"),
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
        answer = _json(response)
        if response.status_code == 401:
            raise CheckError(
                f"{where(url)} rejected the webhook secret (HTTP 401 for user {AUTH_USER!r}): "
                "Alertmanager's rollback webhooks to this agent are refused too"
            )
        if response.status_code == 404 and not isinstance(answer, dict):
            raise CheckError(f"{where(url)} has no /api/admin/rollback/test: not a rollback agent?")
        if response.status_code != 200 or not isinstance(answer, dict):
            raise CheckError(
                f"agent refused the test of {alert}: HTTP {response.status_code}: "
                f"{_error_text(response, answer)}",
                {"http_status": response.status_code},
            )

        plan = summarize(answer)
        status = self._status(ctx, secret)
        data: dict[str, Any] = {"alert_name": alert, "would": plan["would"], "plan": plan, "status": status}
        detail = f"{alert}: {plan['text']}" + (f" [{status['text']}]" if status.get("text") else "")
        if plan["config_problems"]:
            raise CheckError(
                f"{alert}: configuration checks fail on the agent: {'; '.join(plan['config_problems'])}", data
            )
        if plan["would"] == "ignored":
            raise CheckError(f"agent would ignore {alert}: {plan['reason']}", data)
        if plan["would"] in NOT_READY and ctx.settings.require_rollback_ready:
            raise CheckError(f"{detail} (--require-rollback-ready)", data)
        return Outcome(detail, data)

    def _status(self, ctx: Context, secret: str) -> dict[str, Any]:
        """Version, mode and deployed sha: extra information, never a failure by itself."""
        url = api(self.base, "/api/admin/rollback/status")
        try:
            response = request(ctx.session, "GET", url, auth=(AUTH_USER, secret), timeout=ctx.timeout)
        except requests.RequestException as exc:
            return {"text": f"status unavailable: {describe_error(exc, url)}"}
        body = _json(response)
        if response.status_code != 200 or not isinstance(body, dict):
            return {"text": f"status unavailable: HTTP {response.status_code}"}
        agent: dict[str, Any] = body["agent"] if isinstance(body.get("agent"), dict) else {}
        deployment: dict[str, Any] = body["deployment"] if isinstance(body.get("deployment"), dict) else {}
        bits = [
            f"{k} {v}"
            for k, v in (
                ("host", agent.get("host")),
                ("agent", agent.get("version")),
                ("mode", agent.get("mode")),
            )
            if v
        ]
        if deployment.get("sha"):
            bits.append(f"deployed {str(deployment['sha'])[:10]}")
        fleet = self._fleet(ctx, secret) if isinstance(body.get("fleet"), dict) else None
        if fleet is not None:
            bits.append(fleet["text"])
        return {
            "text": ", ".join(bits),
            "host": agent.get("host"),
            "version": agent.get("version"),
            "mode": agent.get("mode"),
            "deployed_sha": deployment.get("sha"),
            "in_progress": body.get("in_progress"),
            "fleet": fleet,
        }

    def _fleet(self, ctx: Context, secret: str) -> dict[str, Any]:
        """The agent's wave, and whether its fleet peers answer it now (it asks them: ?peers=1)."""
        url = api(self.base, "/api/admin/rollback/fleet")
        try:
            response = request(
                ctx.session, "GET", url + "?peers=1", auth=(AUTH_USER, secret), timeout=ctx.timeout + 15
            )
        except requests.RequestException as exc:
            return {"text": f"fleet unavailable: {describe_error(exc, url)}"}
        body = _json(response)
        if response.status_code != 200 or not isinstance(body, dict):
            return {"text": f"fleet unavailable: HTTP {response.status_code}"}
        answers = [a for a in body.get("peer_answers") or [] if isinstance(a, dict)]
        silent = [a for a in answers if not a.get("answered")]
        text = f"wave {body.get('wave')}, peers answering {len(answers) - len(silent)}/{len(answers)}"
        if silent:
            text += " (" + "; ".join(f"{a.get('host')}: {a.get('error')}" for a in silent) + ")"
        return {
            "text": text,
            "wave": body.get("wave"),
            "peers": {str(a.get("host")): bool(a.get("answered")) for a in answers},
        }


def summarize(answer: dict[str, Any]) -> dict[str, Any]:
    """The agent's /test answer in a few words, plus what the check decides on."""
    plan: dict[str, Any] = answer["plan"] if isinstance(answer.get("plan"), dict) else {}
    would = str(answer.get("would") or "unknown")
    reason = str(answer.get("reason") or "")
    guards = [g for g in plan.get("guards") or [] if isinstance(g, dict)]
    blocking = [
        f"{g.get('name')}: {g.get('detail')}" for g in guards if not g.get("ok") and g.get("enforced", True)
    ]
    checks = [c for c in answer.get("checks") or [] if isinstance(c, dict)]
    problems = [f"{c.get('name')}: {c.get('detail')}" for c in checks if not c.get("ok")]

    bits: list[str] = []
    if plan.get("to_sha"):
        move = f"{_short(plan.get('from_sha'))}→{_short(plan.get('to_sha'))}"
        revisions = ""
        if plan.get("from_revision") or plan.get("to_revision"):
            revisions = f", alembic {plan.get('from_revision') or '-'}→{plan.get('to_revision') or '-'}"
        bits.append(f"would roll back {move}{revisions}")
    if plan.get("units"):
        bits.append(f"restart {', '.join(map(str, plan['units']))}")
    if would == "accepted":
        bits.append(f"guards allow it ({len(guards)} checked)")
    elif would in NOT_READY:
        bits.append(f"{NOT_READY[would]}: {reason}")
    else:
        bits.append(f"decision {would}: {reason}")
    return {
        "text": "; ".join(bits),
        "would": would,
        "reason": reason,
        "blocking_guards": blocking,
        "config_problems": problems,
        "from_sha": plan.get("from_sha"),
        "to_sha": plan.get("to_sha"),
        "to_revision": plan.get("to_revision"),
        "units": plan.get("units") or [],
    }


def webhook_counters(session: requests.Session, base: str, timeout: float) -> Counter[str]:
    """The agent's rollback_agent_webhooks_total by outcome, from its /metrics (no auth needed)."""
    response = request(session, "GET", api(base, "/metrics"), timeout=timeout)
    if response.status_code != 200:
        raise CheckError(f"GET {where(base)}/metrics: HTTP {response.status_code}")
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == WEBHOOK_METRIC:
                counts[sample.labels.get("outcome", "")] += int(sample.value)
    return counts


def _short(sha: Any) -> str:
    return str(sha)[:10] if sha else "?"


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_text(response: requests.Response, body: Any) -> str:
    if isinstance(body, dict) and ("error" in body or "detail" in body):
        return f"{body.get('error', '')}: {body.get('detail', '')}".strip(": ")
    return short_body(response)
