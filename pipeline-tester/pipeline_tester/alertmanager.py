"""A small client for the Alertmanager v2 API and its /metrics (what the checks need)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .http import request, short_body
from .model import CheckError

NOTIFY_METRICS = (
    "alertmanager_notification_requests_total",
    "alertmanager_notification_requests_failed_total",
)


def api(base: str, path: str) -> str:
    return urljoin(base.rstrip("/") + "/", path.lstrip("/"))


def _expect_json(response: requests.Response, what: str) -> Any:
    if response.status_code != 200:
        raise CheckError(f"{what}: HTTP {response.status_code} {short_body(response)}")
    try:
        return response.json()
    except ValueError:
        raise CheckError(f"{what}: answer is not JSON ({short_body(response, 80)})") from None


def get_status(session: requests.Session, base: str, timeout: float) -> dict[str, Any]:
    response = request(session, "GET", api(base, "/api/v2/status"), timeout=timeout)
    if response.status_code == 404:
        raise CheckError(f"{base} has no /api/v2/status: not an Alertmanager >= 0.16?")
    body = _expect_json(response, "GET /api/v2/status")
    if not isinstance(body, dict) or "versionInfo" not in body:
        raise CheckError("GET /api/v2/status: not an Alertmanager status document")
    return body


def post_alerts(session: requests.Session, base: str, alerts: list[dict[str, Any]], timeout: float) -> None:
    response = request(session, "POST", api(base, "/api/v2/alerts"), json=alerts, timeout=timeout)
    if response.status_code != 200:
        raise CheckError(
            f"Alertmanager refused the alert: HTTP {response.status_code} {short_body(response)}"
        )


def find_alerts(
    session: requests.Session,
    base: str,
    matchers: dict[str, str],
    timeout: float,
) -> list[dict[str, Any]]:
    params = [("filter", f'{k}="{v}"') for k, v in matchers.items()]
    response = request(session, "GET", api(base, "/api/v2/alerts"), params=params, timeout=timeout)
    body = _expect_json(response, "GET /api/v2/alerts")
    if not isinstance(body, list):
        raise CheckError("GET /api/v2/alerts: expected a list")
    return body


def notification_counters(session: requests.Session, base: str, timeout: float) -> Counter[tuple[str, str]]:
    """(metric, integration) -> value of Alertmanager's notification request counters."""
    response = request(session, "GET", api(base, "/metrics"), timeout=timeout)
    if response.status_code != 200:
        raise CheckError(f"GET /metrics: HTTP {response.status_code}")
    counters: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name in NOTIFY_METRICS:
                counters[(sample.name, sample.labels.get("integration", ""))] += int(sample.value)
    return counters


def parse_started(value: str) -> dt.datetime | None:
    """Alertmanager's ``uptime`` field is its start time (RFC 3339)."""
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None


def human_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


@dataclass(frozen=True)
class RunningConfig:
    """What the tester reads from the config Alertmanager reports (secrets come back as <secret>)."""

    receivers: dict[str, Counter[str]]  # receiver name -> integration kind -> number of configs
    webhook_urls: dict[str, list[str]]  # receiver name -> webhook URLs (not secret in 0.25)
    inhibit_rules: int
    time_intervals: int

    @classmethod
    def parse(cls, original: str) -> RunningConfig:
        try:
            doc = yaml.safe_load(original) or {}
        except yaml.YAMLError as exc:
            raise CheckError(f"the running configuration is not valid YAML: {exc}") from None
        if not isinstance(doc, dict):
            raise CheckError("the running configuration is not a mapping")
        receivers: dict[str, Counter[str]] = {}
        webhooks: dict[str, list[str]] = {}
        for receiver in doc.get("receivers") or []:
            kinds: Counter[str] = Counter()
            for key, value in receiver.items():
                if key.endswith("_configs") and isinstance(value, list):
                    kinds[key.removesuffix("_configs")] += len(value)
            name = str(receiver.get("name"))
            receivers[name] = kinds
            webhooks[name] = [
                str(w.get("url"))
                for w in receiver.get("webhook_configs") or []
                if isinstance(w, dict) and w.get("url") not in (None, "<secret>")
            ]
        return cls(
            receivers=receivers,
            webhook_urls=webhooks,
            inhibit_rules=len(doc.get("inhibit_rules") or []),
            time_intervals=len(doc.get("time_intervals") or []) + len(doc.get("mute_time_intervals") or []),
        )

    def webhooks(self, receiver_names: list[str]) -> list[str]:
        return [url for name in receiver_names for url in self.webhook_urls.get(name, [])]

    def integrations(self, receiver_names: list[str]) -> Counter[str]:
        total: Counter[str] = Counter()
        for name in receiver_names:
            total.update(self.receivers.get(name, Counter()))
        return total
