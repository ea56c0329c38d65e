"""PagerDuty: an Events API v2 test event (trigger with a dedup key, then resolve) per routing key."""

from __future__ import annotations

from typing import Any

import requests

from .. import TOOL_NAME
from ..http import describe_error, request, short_body, where
from ..model import CheckError, Outcome, Planned
from .base import Check, Context


def dedup_key(run_id: str, tier: str) -> str:
    return f"{TOOL_NAME}-{run_id}-{tier}"


def trigger_event(routing_key: str, run_id: str, tier: str, hostname: str) -> dict[str, Any]:
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(run_id, tier),
        "payload": {
            "summary": f"[TEST] Alert pipeline test {run_id} from {hostname}: not an incident, "
            "resolves itself",
            "source": hostname,
            "severity": tier,
            "component": TOOL_NAME,
            "group": "monitoring",
            "class": "pipeline-test",
            "custom_details": {
                "run_id": run_id,
                "routing_key": f"{tier} routing key",
                "note": f"Sent by {TOOL_NAME}; resolved a moment later. No action needed.",
            },
        },
        "client": TOOL_NAME,
    }


def resolve_event(routing_key: str, run_id: str, tier: str) -> dict[str, Any]:
    return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key(run_id, tier)}


class PagerDutyCheck(Check):
    group = "pagerduty"

    def __init__(self, tier: str) -> None:
        self.tier = tier  # "critical" or "error": which routing key and which event severity
        self.name = f"pagerduty:{tier}"
        self.key_name = f"pagerduty_{tier}_key"

    def _key(self, ctx: Context) -> str:
        return ctx.secret(self.key_name).reveal()

    def plan(self, ctx: Context) -> list[Planned]:
        key, s = self._key(ctx), ctx.settings
        return [
            Planned(
                self.name, f"POST {s.pagerduty_url}", trigger_event(key, s.run_id, self.tier, s.hostname)
            ),
            Planned(self.name, f"POST {s.pagerduty_url}", resolve_event(key, s.run_id, self.tier)),
        ]

    def _send(self, ctx: Context, event: dict[str, Any]) -> dict[str, Any]:
        url = ctx.settings.pagerduty_url
        # The dedup key makes a repeat harmless: retry on timeouts, 429 and 5xx too.
        response = request(ctx.session, "POST", url, json=event, timeout=ctx.timeout)
        action = event["event_action"]
        if response.status_code != 202:
            raise CheckError(f"{action}: {_explain(response)}", {"http_status": response.status_code})
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise CheckError(
                f"{action}: HTTP 202 but the answer is not JSON: {short_body(response, 80)}"
            ) from None
        if not isinstance(body, dict):
            raise CheckError(f"{action}: HTTP 202 but the answer is not a JSON object")
        if body.get("status") != "success":
            raise CheckError(
                f"{action}: PagerDuty answered status {body.get('status')!r}: {body.get('message')}"
            )
        if body.get("dedup_key") not in (None, event["dedup_key"]):
            raise CheckError(f"{action}: PagerDuty answered another dedup key ({body.get('dedup_key')!r})")
        return body

    def run(self, ctx: Context) -> Outcome:
        key, s = self._key(ctx), ctx.settings
        trigger = trigger_event(key, s.run_id, self.tier, s.hostname)
        self._send(ctx, trigger)
        try:
            self._send(ctx, resolve_event(key, s.run_id, self.tier))
        except (CheckError, requests.RequestException) as exc:
            detail = exc.detail if isinstance(exc, CheckError) else describe_error(exc, s.pagerduty_url)
            raise CheckError(
                f"triggered, but the resolve failed ({detail}): resolve incident "
                f"{trigger['dedup_key']} by hand"
            ) from None
        data = {"dedup_key": trigger["dedup_key"], "endpoint": where(s.pagerduty_url)}
        return Outcome(
            f"test event {trigger['dedup_key']} triggered and resolved "
            f"({self.tier} routing key, {where(s.pagerduty_url)})",
            data,
        )


def _explain(response: requests.Response) -> str:
    code = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        errors = "; ".join(str(e) for e in body.get("errors") or [])
        message = body.get("message") or body.get("status") or ""
        text = f"{message}{': ' + errors if errors else ''}"
    else:
        text = short_body(response)
    hints = {
        400: "invalid event or routing key",
        401: "unauthorised",
        403: "forbidden",
        404: "wrong Events API URL",
        429: "rate limited (after retries)",
    }
    hint = hints.get(code, "server error" if code >= 500 else "unexpected answer")
    return f"HTTP {code} ({hint}): {text}".rstrip(": ")
