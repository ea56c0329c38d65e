"""Operators' own content through the roles (issue 14), rendered on the controller.

monitoring_config's rules.yml and alertmanager.yml entry points and rollback_agent's render entry
point run through ansible-playbook with the real validators (promtool check rules, amtool
check-config, run by the role before a file is put in place) and the agent's own configuration
parser: extra rule files, disabled alerts, extra receivers and routes, the removal of rule files
no longer rendered, and the agents' triggers made from the rule set under another alert prefix.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit.ansible import run_playbook

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"

PLAY = """
- hosts: app
  gather_facts: false
  vars:
    monitoring_config_owner: ""
    monitoring_config_group: ""
    alertmanager_rollback_webhook_urls: [http://app1.example.com:9095/api/admin/rollback/trigger]
    alertmanager_secrets_dir: /etc/prometheus/alertmanager_secrets
    alertmanager_templates_dir: /etc/prometheus/alertmanager_templates
  tasks:
    - ansible.builtin.include_role: {name: sre_monitoring.stack.monitoring_config, tasks_from: rules.yml}
      vars: {monitoring_config_rules_dest: "{{ render_dir }}/rules"}
    - ansible.builtin.include_role:
        name: sre_monitoring.stack.monitoring_config
        tasks_from: alertmanager.yml
      vars:
        monitoring_config_alertmanager_dest: "{{ render_dir }}/alertmanager.yml"
        monitoring_config_templates_dest: "{{ render_dir }}/templates"
    - ansible.builtin.include_role: {name: sre_monitoring.stack.rollback_agent, tasks_from: render.yml}
"""

INVENTORY = {
    "all": {
        "children": {
            "app": {
                "hosts": {"app1": {"ansible_connection": "local"}},
                "vars": {
                    "ansible_python_interpreter": sys.executable,
                    "rollback_agent_webhook_secret": "operator-test-secret-0123456789",
                },
            }
        }
    }
}

TEAM_RULES = """groups:
  - name: team
    rules:
      - alert: TeamQueueStuck
        expr: vector(1) == 0
        labels: {severity: warning, service: mita-api}
      - alert: TeamQueueGone
        expr: vector(1) == 0
        labels: {severity: error, service: mita-api}
"""

CANARY_RULES = """groups:
  - name: canary
    rules:
      - alert: << monitoring_alert_prefix >>CanaryFailing
        expr: vector(1) == 0
        for: 1m
        labels: {severity: critical, service: << monitoring_service_name >>, rollback: "true", family: canary}
"""


def render(tmp: Path, out: Path, **extra: Any) -> subprocess.CompletedProcess[str]:
    return run_playbook(tmp, PLAY, INVENTORY, {"render_dir": str(out), **extra})


def alerts(rules_dir: Path) -> dict[str, dict[str, Any]]:
    return {
        rule["alert"]: rule
        for path in rules_dir.glob("*.yml")
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups") or []
        for rule in group["rules"]
        if "alert" in rule
    }


def triggers(out: Path) -> dict[str, dict[str, Any]]:
    from rollback_agent.config import parse_config

    config = parse_config(yaml.safe_load((out / "app1" / "rollback-agent.yml").read_text()), source="app1")
    return {name: t.model_dump(mode="json") for name, t in config.triggers.items()}


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prefix Acme, an extra plain and an extra templated rule file, two disabled alerts, an
    Opsgenie-like webhook receiver with a route ahead of the severity tiers."""
    tmp = tmp_path_factory.mktemp("custom")
    (tmp / "team.yml").write_text(TEAM_RULES)
    (tmp / "canary.yml.j2").write_text(CANARY_RULES)
    out = tmp / "out"
    proc = render(
        tmp,
        out,
        monitoring_alert_prefix="Acme",
        monitoring_extra_rule_files=[str(tmp / "team.yml"), str(tmp / "canary.yml.j2")],
        monitoring_disabled_alerts=["HostDown", "TeamQueueStuck", "AcmeDatabaseConnectionIssues"],
        monitoring_extra_receivers=[
            {"name": "team-webhook", "webhook_configs": [{"url": "https://hooks.example.com/team"}]}
        ],
        monitoring_extra_routes=[{"receiver": "team-webhook", "matchers": ['team="payments"']}],
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return out


def test_default_triggers_are_the_agents_built_in_ones(tmp_path: Path) -> None:
    from rollback_agent.triggers import DEFAULT_TRIGGERS

    out = tmp_path / "out"
    proc = render(tmp_path, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    rollback = {
        name for name, rule in alerts(out / "rules").items() if rule["labels"].get("rollback") == "true"
    }
    got = triggers(out)
    assert rollback == set(DEFAULT_TRIGGERS), "the shipped rules and the agent's built-in triggers differ"
    keys = ("trigger", "auto_rollback", "confidence", "reason")
    assert {name: {k: got[name][k] for k in keys} for name in DEFAULT_TRIGGERS} == {
        name: {k: entry[k] for k in keys} for name, entry in DEFAULT_TRIGGERS.items()
    }
    assert {name for name, t in got.items() if t["auto_rollback"]} == rollback


def test_triggers_follow_the_prefix_and_the_rule_set(custom: Path) -> None:
    rules = alerts(custom / "rules")
    rollback = {name for name, rule in rules.items() if rule["labels"].get("rollback") == "true"}
    assert "AcmeSystemUnhealthy" in rollback and "AcmeCanaryFailing" in rollback
    got = triggers(custom)
    # every rollback="true" alert the rules fire is a live trigger, and nothing else is
    assert {name for name, t in got.items() if t["auto_rollback"]} == rollback
    assert got["AcmeSystemUnhealthy"]["trigger"] == "health_check_failure"
    assert got["AcmeSystemUnhealthy"]["confidence"] == "medium"
    assert got["AcmeCanaryFailing"]["trigger"] == "canary"
    # the agent's built-in names that no rule fires any more are switched off, not left waiting
    for name in ("MitaSystemUnhealthy", "MitaDatabaseConnectionIssues", "AcmeDatabaseConnectionIssues"):
        assert name not in rollback
        assert got.get(name, {"auto_rollback": False})["auto_rollback"] is False


def test_extra_rule_files_and_disabled_alerts(custom: Path) -> None:
    rules = alerts(custom / "rules")
    assert {"TeamQueueGone", "AcmeCanaryFailing"} <= set(rules)
    assert not {"HostDown", "TeamQueueStuck", "AcmeDatabaseConnectionIssues"} & set(rules)
    assert (custom / "rules" / "team.yml").is_file() and (custom / "rules" / "canary.yml").is_file()
    assert (
        "Disabled by monitoring_disabled_alerts: HostDown" in (custom / "rules" / "resources.yml").read_text()
    )
    promtool = subprocess.run(
        ["promtool", "check", "rules", *map(str, sorted((custom / "rules").glob("*.yml")))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr


def route(config: Path, *labels: str) -> list[str]:
    proc = subprocess.run(
        [AMTOOL, "config", "routes", "test", f"--config.file={config}", *labels],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return sorted(proc.stdout.strip().split(","))


def test_extra_receivers_and_routes_come_before_the_severity_tiers(custom: Path) -> None:
    config = custom / "alertmanager.yml"
    receivers = {r["name"] for r in yaml.safe_load(config.read_text())["receivers"]}
    assert "team-webhook" in receivers
    # the route ends the walk: a warning of the team goes to its webhook, not to the warning tier
    assert route(config, "team=payments", "severity=warning") == ["team-webhook"]
    assert route(config, "team=other", "severity=warning") == ["warning-alerts"]
    # the rollback route still comes first and continues
    assert route(config, "team=payments", "severity=critical", "rollback=true") == [
        "rollback-trigger",
        "team-webhook",
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"monitoring_disabled_alerts": ["HostDwn"]},
            "unknown alert names in monitoring_disabled_alerts: HostDwn",
        ),
        ({"monitoring_extra_routes": [{"receiver": "nobody", "matchers": ['team="x"']}]}, "nobody"),
    ],
)
def test_bad_content_fails_clearly_and_writes_nothing(
    tmp_path: Path, extra: dict[str, Any], message: str
) -> None:
    out = tmp_path / "out"
    proc = render(tmp_path, out, **extra)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (out / "alertmanager.yml").exists()


def test_rule_files_no_longer_rendered_are_removed(tmp_path: Path) -> None:
    (tmp_path / "team.yml").write_text(TEAM_RULES)
    out = tmp_path / "out"
    first = render(tmp_path, out, monitoring_extra_rule_files=[str(tmp_path / "team.yml")])
    assert first.returncode == 0, first.stdout[-3000:]
    assert (out / "rules" / "team.yml").is_file()
    again = render(tmp_path, out)
    assert again.returncode == 0, again.stdout[-3000:]
    assert not (out / "rules" / "team.yml").exists()
    assert (out / "rules" / "resources.yml").is_file()
