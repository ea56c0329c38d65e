"""Filters of roles/monitoring_config over rendered Prometheus rule files (YAML texts)."""

from __future__ import annotations

from typing import Any

import yaml


def _groups(text: str) -> list[dict[str, Any]]:
    doc = yaml.safe_load(text) or {}
    groups = doc.get("groups") if isinstance(doc, dict) else None
    return groups if isinstance(groups, list) else []


def rule_alerts(texts: dict[str, str]) -> list[dict[str, Any]]:
    """Every alerting rule of the rule files {name: text}, each with the key `file` (its file)."""
    return [
        {**rule, "file": name}
        for name, text in texts.items()
        for group in _groups(text)
        for rule in group.get("rules") or []
        if isinstance(rule, dict) and "alert" in rule
    ]


def without_alerts(text: str, names: list[str]) -> str:
    """The rule file without the alerting rules named in `names` (unchanged when it has none)."""
    groups = _groups(text)
    if not any(r.get("alert") in names for g in groups for r in g.get("rules") or []):
        return text
    kept = [{**g, "rules": [r for r in g.get("rules") or [] if r.get("alert") not in names]} for g in groups]
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    gone = {r["alert"] for g in groups for r in g.get("rules") or [] if r.get("alert") in names}
    disabled = ", ".join(sorted(gone))
    body = yaml.safe_dump({"groups": [g for g in kept if g["rules"]]}, sort_keys=False, width=1000)
    return f"{header}# Disabled by monitoring_disabled_alerts: {disabled}\n{body}"


# What the rollback agents need to know of each rollback="true" alert of the shipped rules
# (docs/contracts.md, "Rollback triggers"), by alert name without monitoring_alert_prefix. The
# agent has the same seven built in under the default prefix (Mita); the integration tests check
# that both agree.
TRIGGER_DETAILS: dict[str, dict[str, Any]] = {
    "CriticalErrorRate": {
        "trigger": "error_rate_threshold",
        "confidence": "high",
        "reason": "Error rate exceeded 20% for 2 minutes",
    },
    "CriticalP95Latency": {
        "trigger": "latency_degradation",
        "confidence": "high",
        "reason": "P95 latency exceeded 1.0 s for 2 minutes",
    },
    "SystemUnhealthy": {
        "trigger": "health_check_failure",
        "confidence": "medium",
        "reason": "Overall health check reports the system unhealthy",
    },
    "DatabaseConnectionIssues": {
        "trigger": "database_connection_failure",
        "confidence": "high",
        "reason": "Database connection failures",
    },
    "TransactionProcessingFailure": {
        "trigger": "transaction_processing_failure",
        "confidence": "high",
        "reason": "Transactions are failing",
    },
    "RedisConnectionFailure": {
        "trigger": "external_service_failure",
        "confidence": "high",
        "reason": "Redis is unreachable",
    },
    "UserRegistrationDown": {
        "trigger": "business_metric_failure",
        "confidence": "medium",
        "reason": "User registrations stopped",
    },
}
# The shipped alerts whose names carry the prefix, and the prefix the agent's built-in names use.
PREFIXED = {"SystemUnhealthy", "DatabaseConnectionIssues"}
AGENT_PREFIX = "Mita"


def rollback_triggers(alerts: list[dict[str, Any]], prefix: str) -> dict[str, dict[str, Any]]:
    """The rollback agents' `triggers`: one entry per rollback="true" alert of `alerts` (shipped
    details, or for another rule its `family` label, `rollback_confidence` label or high, and a
    reason naming the alert), and every built-in name of the agent that no rule fires any more
    switched off (auto_rollback: false), so a changed prefix or a disabled alert cannot leave the
    agents waiting for names that never come."""
    out: dict[str, dict[str, Any]] = {}
    for alert in alerts:
        name, labels = alert["alert"], alert.get("labels") or {}
        base = name[len(prefix) :] if prefix and name.startswith(prefix) else name
        details = TRIGGER_DETAILS.get(base if base in PREFIXED else name) or {
            "trigger": labels.get("family", "alert_rule"),
            "confidence": labels.get("rollback_confidence", "high"),
            "reason": f"{name} fired (rule file {alert.get('file', '?')})",
        }
        out[name] = {
            "trigger": details["trigger"],
            "auto_rollback": True,
            "confidence": details["confidence"],
            "reason": details["reason"],
        }
    for base, details in TRIGGER_DETAILS.items():
        builtin = AGENT_PREFIX + base if base in PREFIXED else base
        if builtin not in out:
            out[builtin] = {
                "trigger": details["trigger"],
                "auto_rollback": False,
                "confidence": details["confidence"],
                "reason": details["reason"],
            }
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "rule_alerts": rule_alerts,
            "without_alerts": without_alerts,
            "rollback_triggers": rollback_triggers,
        }
