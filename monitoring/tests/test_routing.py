"""The Alertmanager routing tree, checked with amtool on the configuration that
`playbooks/render.yml` writes for the production inventory (see conftest.production_render)."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from monitoring_support import Render

pytestmark = pytest.mark.monitoring

SEVERITY_RECEIVER = {
    "critical": "critical-alerts",
    "error": "error-alerts",
    "warning": "warning-alerts",
    "info": "blackhole",
}
COMPONENT_RECEIVER = {
    "database": "database-alerts",
    "security": "security-alerts",
    "finance": "finance-alerts",
    "deployment": "deployment-alerts",
}


def routes_test(amtool: str, config: str, labels: dict[str, str], expected: list[str]) -> None:
    """`amtool config routes test --verify.receivers=...`: exits non-zero on a mismatch."""
    cmd = [
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={config}",
        f"--verify.receivers={','.join(expected)}",
        *(f"{k}={v}" for k, v in labels.items()),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    got = f"{proc.stdout.strip()} {proc.stderr.strip()}"
    assert proc.returncode == 0, f"labels {labels}: expected {','.join(expected)}, amtool says {got}"


# The outcomes of issue 5, as label sets an alert carries.
OUTCOMES = [
    pytest.param(
        {"alertname": "CriticalMemoryUsage", "severity": "critical", "component": "infrastructure"},
        ["critical-alerts"],
        id="critical",
    ),
    pytest.param(
        {"alertname": "CriticalErrorRate", "severity": "critical", "component": "api", "rollback": "true"},
        ["rollback-trigger", "critical-alerts"],
        id="critical-rollback",
    ),
    pytest.param(
        {
            "alertname": "MitaDatabaseConnectionIssues",
            "severity": "critical",
            "component": "database",
            "rollback": "true",
        },
        ["rollback-trigger", "database-alerts", "critical-alerts"],
        id="critical-rollback-database",
    ),
    pytest.param(
        {
            "alertname": "TransactionProcessingFailure",
            "severity": "critical",
            "component": "finance",
            "rollback": "true",
        },
        ["rollback-trigger", "finance-alerts", "critical-alerts"],
        id="critical-rollback-finance",
    ),
    pytest.param(
        {"alertname": "MitaComponentUnhealthy", "severity": "error", "component": "system"},
        ["error-alerts"],
        id="error",
    ),
    pytest.param(
        {"alertname": "HighErrorRate", "severity": "warning", "component": "api"},
        ["warning-alerts"],
        id="warning",
    ),
    pytest.param(
        {"alertname": "Watchdog", "severity": "info", "component": "monitoring"}, ["blackhole"], id="info"
    ),
    pytest.param(
        {"alertname": "DatabaseConnectionsHigh", "severity": "warning", "component": "database"},
        ["database-alerts", "warning-alerts"],
        id="database-warning",
    ),
    pytest.param(
        {"alertname": "DatabaseDown", "severity": "critical", "component": "database"},
        ["database-alerts", "critical-alerts"],
        id="database-critical",
    ),
    pytest.param(
        {"alertname": "AuthenticationBruteForce", "severity": "error", "component": "security"},
        ["security-alerts", "error-alerts"],
        id="security-error",
    ),
    pytest.param(
        {"alertname": "RevenueProcessingIssue", "severity": "critical", "component": "finance"},
        ["finance-alerts", "critical-alerts"],
        id="finance-critical",
    ),
    pytest.param(
        {"alertname": "RollbackFailed", "severity": "critical", "component": "deployment"},
        ["deployment-alerts", "critical-alerts"],
        id="deployment-critical",
    ),
    pytest.param(
        {"alertname": "AnyDatabaseInfo", "severity": "info", "component": "database"},
        ["blackhole"],
        id="database-info-notifies-no-one",
    ),
    pytest.param(
        {"alertname": "NotATrigger", "severity": "warning", "component": "api", "rollback": "true"},
        ["warning-alerts"],
        id="rollback-label-needs-critical",
    ),
    pytest.param(
        {"alertname": "RuleWithoutSeverity", "component": "api"},
        ["warning-alerts"],
        id="unknown-severity-falls-back-to-slack",
    ),
]


@pytest.mark.parametrize(("labels", "expected"), OUTCOMES)
def test_routing_outcomes(
    amtool: str, production_render: Render, labels: dict[str, str], expected: list[str]
) -> None:
    routes_test(amtool, str(production_render.alertmanager_yml), {"service": "mita-api", **labels}, expected)


def expected_receivers(labels: dict[str, str]) -> list[str]:
    """The routing policy of monitoring/README.md, written independently of the config."""
    severity = labels["severity"]
    receivers = []
    if severity == "critical" and labels.get("rollback") == "true":
        receivers.append("rollback-trigger")
    if severity != "info" and labels["component"] in COMPONENT_RECEIVER:
        receivers.append(COMPONENT_RECEIVER[labels["component"]])
    receivers.append(SEVERITY_RECEIVER[severity])
    return receivers


def test_every_alert_of_the_rules_routes_by_the_policy(
    amtool: str, production_render: Render, default_render: Render
) -> None:
    alerts = default_render.alerts()
    for alert in alerts:
        labels = {"alertname": alert["alert"], **alert["labels"]}
        routes_test(amtool, str(production_render.alertmanager_yml), labels, expected_receivers(labels))
    assert len(alerts) >= 50


def test_config_passes_amtool_check_config_with_the_templates(
    amtool: str, production_render: Render, default_render: Render, tmp_path: Path
) -> None:
    def check(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True)

    for render in (production_render, default_render):
        proc = check(render.alertmanager_yml)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # With the templates where the config expects them: amtool parses them too.
    templates = tmp_path / "templates"
    shutil.copytree(default_render.templates_dir, templates)
    config = default_render.alertmanager()
    config["templates"] = [str(templates / "*.tmpl")]
    local = tmp_path / "alertmanager.yml"
    local.write_text(yaml.safe_dump(config))
    proc = check(local)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # ... and the check is real: a broken template fails it.
    with (templates / "slack.tmpl").open("a") as broken:
        broken.write('{{ define "broken" }}{{ if }}{{ end }}\n')
    proc = check(local)
    assert proc.returncode != 0 and "slack.tmpl" in proc.stdout + proc.stderr


Route = dict[str, Any]


def walk(route: Route, parents: tuple[Route, ...] = ()) -> list[tuple[Route, tuple[Route, ...]]]:
    found = [(route, parents)]
    for child in route.get("routes", []):
        found += walk(child, (*parents, route))
    return found


def severities_matched(route: dict[str, Any]) -> set[str]:
    for matcher in route.get("matchers", []):
        parsed = re.match(r'^(\w+)\s*(=~|!=|!~|=)\s*"(.*)"$', matcher)
        assert parsed, f"matcher {matcher!r} is not in the form name op \"value\""
        name, op, value = parsed.groups()
        if name == "severity":
            if op == "=":
                return {value}
            if op == "=~":
                return {s for s in SEVERITY_RECEIVER if re.fullmatch(value, s)}
    return set(SEVERITY_RECEIVER)


def test_grouping_timing_and_the_rollback_route(production_render: Render) -> None:
    route = production_render.alertmanager()["route"]
    assert route["group_wait"] == "30s"
    assert route["group_interval"] == "5m"
    assert route["repeat_interval"]
    first = route["routes"][0]
    assert first["receiver"] == "rollback-trigger"
    assert first["continue"] is True
    assert sorted(first["matchers"]) == ['rollback="true"', 'severity="critical"']
    wait = first["group_wait"]
    assert re.fullmatch(r"\d+s", wait) and int(wait[:-1]) <= 10, f"rollback group_wait {wait} is not short"
    for child in route["routes"]:
        if child["receiver"] in SEVERITY_RECEIVER.values() and child["receiver"] != "blackhole":
            assert child.get("repeat_interval"), f"{child['receiver']} has no repeat_interval"


def test_only_warnings_are_ever_muted(production_render: Render) -> None:
    config = production_render.alertmanager()
    names = {t["name"] for t in config["time_intervals"]}
    assert names == {"off-hours"}
    warning_routes_muted = []
    for route, parents in walk(config["route"]):
        muted = bool(route.get("mute_time_intervals")) or any(p.get("mute_time_intervals") for p in parents)
        severities = severities_matched(route)
        for parent in parents:
            severities &= severities_matched(parent)
        if muted:
            assert severities == {"warning"}, f"route {route.get('matchers')} mutes {severities}"
        if severities == {"warning"} and route.get("receiver", "") != "":
            warning_routes_muted.append(muted)
        assert not route.get("active_time_intervals"), "no route may be restricted to active intervals"
    assert warning_routes_muted, "no route takes warnings"
    assert all(warning_routes_muted), "every route that takes warnings mutes off-hours"


def in_interval(interval: dict[str, Any], when: datetime) -> bool:
    """Alertmanager's time_interval semantics (weekdays, times, location) for one instant."""
    local = when.astimezone(ZoneInfo(interval.get("location", "UTC")))
    days = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
    if "weekdays" in interval:
        wanted = set()
        for spec in interval["weekdays"]:
            first, _, last = spec.partition(":")
            wanted |= set(range(days.index(first), days.index(last or first) + 1))
        if local.weekday() not in wanted:
            return False
    if "times" in interval:
        minute = local.hour * 60 + local.minute

        def minutes(hhmm: str) -> int:
            hours, mins = hhmm.split(":")
            return int(hours) * 60 + int(mins)

        spans = [(minutes(t["start_time"]), minutes(t["end_time"])) for t in interval["times"]]
        if not any(start <= minute < end for start, end in spans):
            return False
    return True


@pytest.mark.parametrize(
    ("when", "muted"),
    [
        ("2026-11-30 15:59", False),  # Monday, business hours
        ("2026-11-30 16:00", True),  # Monday evening
        ("2026-12-01 05:59", True),  # Tuesday night
        ("2026-12-01 06:00", False),  # Tuesday morning
        ("2026-12-02 10:00", False),  # Wednesday
        ("2026-12-04 23:30", True),  # Friday night
        ("2026-12-05 12:00", True),  # Saturday
        ("2026-12-06 23:59", True),  # Sunday
        ("2026-11-30 00:30", True),  # Monday before 06:00
    ],
)
def test_off_hours_cover_16_to_06_utc_on_weekdays_and_the_weekend(
    production_render: Render, when: str, muted: bool
) -> None:
    (off_hours,) = production_render.alertmanager()["time_intervals"]
    instant = datetime.strptime(when, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc)
    assert any(in_interval(i, instant) for i in off_hours["time_intervals"]) is muted


def test_inhibition(production_render: Render) -> None:
    rules = production_render.alertmanager()["inhibit_rules"]
    critical = [r for r in rules if 'severity="critical"' in r.get("source_matchers", [])]
    assert critical, "a critical alert must inhibit"
    rule = critical[0]
    assert 'family=~".+"' in rule["source_matchers"], "alerts without a family must not inhibit everything"
    assert rule["target_matchers"] == ['severity=~"warning|error"']
    assert {"family", "service", "instance"} <= set(rule["equal"])
    for rule in rules:
        assert rule.get("equal"), f"an inhibition without `equal` mutes across services: {rule}"


def test_no_secret_is_inlined(production_render: Render) -> None:
    config = production_render.alertmanager()
    text = production_render.alertmanager_yml.read_text()
    for key in ("slack_api_url:", "routing_key:", "service_key:", "auth_password:", "password:", "api_url:"):
        assert f" {key}" not in text, f"{key} is inlined: secrets must come from *_file options"
    glob = config["global"]
    assert glob["slack_api_url_file"].endswith("/slack_webhook_url")
    assert glob["smtp_auth_password_file"].endswith("/sendgrid_api_key")
    assert glob["smtp_smarthost"] == "smtp.sendgrid.net:587"
    assert glob["smtp_auth_username"] == "apikey"
    assert glob["smtp_require_tls"] is True
    receivers = {r["name"]: r for r in config["receivers"]}
    critical = receivers["critical-alerts"]["pagerduty_configs"][0]
    assert critical["routing_key_file"].endswith("/pagerduty_critical_key")
    assert critical["severity"] == "critical"
    error = receivers["error-alerts"]["pagerduty_configs"][0]
    assert error["routing_key_file"].endswith("/pagerduty_error_key")
    assert error["severity"] == "error"
    hooks = receivers["rollback-trigger"]["webhook_configs"]
    assert hooks, "the rollback receiver has no webhook"
    for hook in hooks:
        assert hook["url"].endswith("/api/admin/rollback/trigger")
        auth = hook["http_config"]["basic_auth"]
        assert auth["username"] == "alertmanager"
        assert auth["password_file"].endswith("/rollback_webhook_secret")
    assert receivers["blackhole"].keys() == {"name"}, "info alerts must notify no one"


def test_channels_and_mentions(production_render: Render) -> None:
    receivers = {r["name"]: r for r in production_render.alertmanager()["receivers"]}

    def channels(name: str) -> list[str]:
        return [c["channel"] for c in receivers[name].get("slack_configs", [])]

    assert channels("critical-alerts") == ["#mita-alerts", "#mita-incidents"]
    assert channels("error-alerts") == ["#mita-alerts", "#mita-incidents"]
    assert channels("warning-alerts") == ["#mita-alerts"]
    assert channels("rollback-trigger") == ["#mita-deployments"]
    assert channels("database-alerts") == ["#mita-database"]
    assert channels("security-alerts") == ["#mita-security"]
    assert channels("finance-alerts") == ["#mita-finance-team"]
    assert "<!here>" in receivers["critical-alerts"]["slack_configs"][0]["pretext"]
    assert "<!channel>" in receivers["error-alerts"]["slack_configs"][0]["pretext"]
    assert "pretext" not in receivers["warning-alerts"]["slack_configs"][0]
    assert receivers["critical-alerts"]["email_configs"][0]["to"]
    assert "email_configs" not in receivers["error-alerts"]
