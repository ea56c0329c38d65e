"""roles/monitoring_config: variables, overrides, clear errors, validation and idempotence."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from monitoring_support import REPO, Render, run_playbook

pytestmark = pytest.mark.monitoring

ROLE = REPO / "roles" / "monitoring_config"
INPUTS = {"alertmanager_rollback_webhook_urls", "alertmanager_secrets_dir", "alertmanager_templates_dir"}


def specs() -> dict[str, Any]:
    return yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]


def test_argument_specs_declare_every_default_and_nothing_else() -> None:
    defaults = set(yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()))
    entry_points = specs()
    main = set(entry_points["main"]["options"])
    only_specs, only_defaults = sorted(main - INPUTS - defaults), sorted(defaults - main)
    assert main - INPUTS == defaults, f"in defaults only: {only_defaults}; in specs only: {only_specs}"
    for name in ("rules", "alertmanager", "blackbox"):
        options = set(entry_points[name]["options"])
        assert options <= main, f"{name}: {sorted(options - main)} not in main"
        assert entry_points[f"{name}.yml"] == entry_points[name], (
            "tasks_from: <name>.yml validates the same way"
        )
        assert (ROLE / "tasks" / f"{name}.yml").is_file()
    assert set(entry_points["alertmanager"]["options"]) >= INPUTS
    for name in INPUTS:
        assert entry_points["alertmanager"]["options"][name]["required"] is True
    for name, option in entry_points["main"]["options"].items():
        assert option.get("description"), f"{name} has no description"


def test_every_default_is_documented_with_a_comment() -> None:
    lines = (ROLE / "defaults" / "main.yml").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        match = re.match(r"^(monitoring_\w+):", line)
        if not match:
            continue
        above = lines[max(0, i - 20) : i]
        # a comment directly above, or within the block of variables it introduces
        block = []
        for previous in reversed(above):
            if not previous.strip() or previous.startswith("# ==="):
                break
            block.append(previous)
        if not any(p.startswith("# ") for p in block):
            undocumented.append(match.group(1))
    assert not undocumented, f"variables without a comment in defaults/main.yml: {undocumented}"


def test_overrides_reach_the_rendered_files(render_with: Callable[..., Render]) -> None:
    render = render_with(
        monitoring_service_name="shop-api",
        monitoring_alert_prefix="Shop",
        monitoring_metrics_prefix="shop_",
        monitoring_rate_window_fast="1m",
        monitoring_alert_for_overrides={"CriticalErrorRate": "30s", "ShopSystemUnhealthy": "45s"},
        monitoring_alert_severity_overrides={"HighErrorRate": "error"},
        monitoring_error_rate_critical=0.3,
        monitoring_slack_channel_alerts="#shop-alerts",
        monitoring_component_database="db",
        monitoring_pagerduty_enabled=False,
        monitoring_email_enabled=False,
        monitoring_rollback_group_wait="1s",
        monitoring_runbook_base_url="https://wiki.example.com/runbooks",
    )
    alerts = {a["alert"]: a for a in render.alerts()}
    assert "ShopSystemUnhealthy" in alerts and "MitaSystemUnhealthy" not in alerts
    critical = alerts["CriticalErrorRate"]
    assert critical["for"] == "30s"
    assert 'shop_http_requests_total{status=~"5.."}[1m]' in critical["expr"]
    assert "> 0.3\n" in critical["expr"]
    assert critical["annotations"]["summary"].startswith("shop-api answers more than 30% of requests")
    assert alerts["ShopSystemUnhealthy"]["for"] == "45s"
    assert alerts["HighErrorRate"]["labels"]["severity"] == "error"
    assert {a["labels"]["service"] for a in alerts.values()} == {"shop-api"}
    assert alerts["ShopDatabaseUnhealthy"]["labels"]["component"] == "db"
    assert (
        critical["annotations"]["runbook_url"]
        == "https://wiki.example.com/runbooks/api-performance.md#criticalerrorrate"
    )

    config = render.alertmanager()
    receivers = {r["name"]: r for r in config["receivers"]}
    assert "pagerduty_configs" not in receivers["critical-alerts"]
    assert "email_configs" not in receivers["critical-alerts"]
    assert receivers["warning-alerts"]["slack_configs"][0]["channel"] == "#shop-alerts"
    assert config["route"]["routes"][0]["group_wait"] == "1s"
    assert any('component="db"' in r.get("matchers", []) for r in config["route"]["routes"])
    inhibit = config["inhibit_rules"][3]
    assert inhibit["source_matchers"] == ['alertname="ShopHealthMonitoringDown"']


def test_lab_style_offhours_and_slack_url_overrides(render_with: Callable[..., Render]) -> None:
    render = render_with(
        monitoring_offhours_start="18:00",
        monitoring_offhours_end="08:00",
        monitoring_offhours_location="Europe/Sofia",
        monitoring_offhours_weekend=False,
        monitoring_slack_api_url="http://127.0.0.1:9999/slack",
        monitoring_config_rule_categories=["api_performance"],
        monitoring_blackbox_health_body_regexp='"status"\\s*:\\s*"healthy"',
    )
    modules = yaml.safe_load(render.blackbox_yml.read_text())["modules"]  # validated by --config.check
    assert modules["http_health"]["http"]["fail_if_body_not_matches_regexp"] == ['"status"\\s*:\\s*"healthy"']
    config = render.alertmanager()
    assert config["global"]["slack_api_url"] == "http://127.0.0.1:9999/slack"
    assert "slack_api_url_file" not in config["global"]
    (off_hours,) = config["time_intervals"]
    assert off_hours["time_intervals"] == [
        {
            "weekdays": ["monday:friday"],
            "location": "Europe/Sofia",
            "times": [{"start_time": "18:00", "end_time": "24:00"}],
        },
        {
            "weekdays": ["monday:friday"],
            "location": "Europe/Sofia",
            "times": [{"start_time": "00:00", "end_time": "08:00"}],
        },
    ]
    assert [p.name for p in render.rules_dir.iterdir()] == ["api_performance.yml"]


def failure_text(proc: Any) -> str:
    return proc.stdout + proc.stderr


def test_an_unknown_alert_name_fails_before_anything_is_written(render_raw: Callable[..., Any]) -> None:
    proc, out = render_raw(monitoring_alert_for_overrides={"CriticalErorRate": "30s"})
    assert proc.returncode != 0
    assert "unknown alert names" in failure_text(proc) and "CriticalErorRate" in failure_text(proc)
    assert not (out / "rules").exists(), "nothing may be written when the input is wrong"


def test_a_rollback_trigger_cannot_be_demoted(render_raw: Callable[..., Any]) -> None:
    proc, _ = render_raw(
        monitoring_alert_severity_overrides={"CriticalErrorRate": "warning", "HostDown": "loud"}
    )
    text = failure_text(proc)
    assert proc.returncode != 0
    assert "rollback triggers must stay critical" in text and "CriticalErrorRate" in text
    assert "invalid severity for HostDown" in text


def test_a_wrong_type_fails_argument_validation(render_raw: Callable[..., Any]) -> None:
    proc, _ = render_raw(monitoring_error_rate_critical="twenty percent")
    assert proc.returncode != 0
    assert "monitoring_error_rate_critical" in failure_text(proc)


def test_idempotent_and_a_config_that_does_not_validate_leaves_the_old_file(
    render_raw: Callable[..., Any], tmp_path: Path
) -> None:
    target = tmp_path / "render"
    first, out = render_raw(target)
    assert first.returncode == 0, failure_text(first)
    before = (out / "rules" / "api_performance.yml").read_text()
    again, _ = render_raw(target)
    assert again.returncode == 0
    assert re.search(r"localhost\s+: ok=\d+\s+changed=0 ", again.stdout), again.stdout[-1500:]
    # A rate window promtool cannot parse: the play fails at validation, the old file stays.
    broken, _ = render_raw(target, monitoring_rate_window="5 minutes")
    assert broken.returncode != 0
    assert "failed to validate" in failure_text(broken) or "promtool" in failure_text(broken)
    assert (out / "rules" / "api_performance.yml").read_text() == before


def test_the_alertmanager_entry_point_requires_the_alertmanager_role_inputs(tmp_path: Path) -> None:
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Alertmanager entry point without its inputs",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                    "tasks": [
                        {
                            "name": "Render",
                            "ansible.builtin.include_role": {
                                "name": "monitoring_config",
                                "tasks_from": "alertmanager.yml",
                            },
                            "vars": {
                                "monitoring_config_alertmanager_dest": str(tmp_path / "am.yml"),
                                "monitoring_config_templates_dest": str(tmp_path / "templates"),
                            },
                        }
                    ],
                }
            ]
        )
    )
    proc = run_playbook(playbook, "localhost,", tmp_path / "render")
    assert proc.returncode != 0
    assert "alertmanager_secrets_dir" in failure_text(proc)
    assert not (tmp_path / "am.yml").exists()
