"""Slack: posts a clearly marked test message to the incoming webhook."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .. import TOOL_NAME
from ..http import request, short_body, where
from ..model import CheckError, Outcome, Planned
from ..secrets import display_url
from .base import Check, Context

# What Slack answers on errors (https://api.slack.com/messaging/webhooks#handling_errors).
SLACK_ERRORS = {
    400: "Slack rejected the payload",
    403: "the webhook token is invalid or revoked (invalid_token / action_prohibited)",
    404: "no such webhook (no_service / no_team): wrong or deleted URL",
    410: "the webhook's channel is archived or the webhook was removed",
}


def with_base(url: str, base: str | None) -> str:
    """The webhook URL with its scheme://host[:port] replaced by ``base`` (a proxy or a test server)."""
    if not base:
        return url
    target = urlsplit(url)
    new = urlsplit(base.rstrip("/"))
    return urlunsplit((new.scheme, new.netloc, new.path + target.path, target.query, ""))


def slack_payload(run_id: str, hostname: str, channel: str | None) -> dict[str, Any]:
    text = (
        f":test_tube: *[TEST] Alert pipeline test* from `{hostname}` (run `{run_id}`): "
        "checking that this webhook delivers. Not an incident, no action needed."
    )
    payload: dict[str, Any] = {
        "text": text,
        "username": TOOL_NAME,
        "attachments": [
            {
                "color": "good",
                "fallback": f"[TEST] Alert pipeline test {run_id}",
                "fields": [
                    {"title": "Run", "value": run_id, "short": True},
                    {"title": "From", "value": hostname, "short": True},
                ],
                "footer": TOOL_NAME,
            }
        ],
    }
    if channel:
        payload["channel"] = channel
    return payload


class SlackCheck(Check):
    name = "slack"
    group = "slack"

    def _url(self, ctx: Context) -> str:
        secret = ctx.secret("slack_webhook_url")
        url = with_base(secret.reveal(), ctx.settings.slack_base_url)
        if urlsplit(url).scheme not in ("http", "https"):
            raise CheckError(f"the Slack webhook URL (from {secret.source}) is not an http(s) URL")
        return url

    def _payload(self, ctx: Context) -> dict[str, Any]:
        s = ctx.settings
        return slack_payload(s.run_id, s.hostname, s.slack_channel)

    def plan(self, ctx: Context) -> list[Planned]:
        return [Planned(self.name, f"POST {display_url(self._url(ctx), secret=True)}", self._payload(ctx))]

    def run(self, ctx: Context) -> Outcome:
        url = self._url(ctx)
        # Slack does not deduplicate: retry only when the request never reached it, or on 429/5xx
        # (Slack did not post the message then).
        response = request(
            ctx.session, "POST", url, json=self._payload(ctx), timeout=ctx.timeout, idempotent=False
        )
        data = {"http_status": response.status_code, "endpoint": where(url)}
        if response.status_code == 200:
            answer = short_body(response, 40)
            return Outcome(f"test message posted via {where(url)} (Slack answered {answer!r})", data)
        known = SLACK_ERRORS.get(response.status_code, "unexpected answer")
        raise CheckError(
            f"HTTP {response.status_code} from {where(url)}: {known}: {short_body(response)}", data
        )
