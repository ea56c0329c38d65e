"""roles/rollback_agent and roles/grafana on the controller, without containers.

The roles' render entry points run through ansible-playbook on an inventory made here, and what
they write is checked by the real consumers: the agent's own configuration parser (pydantic,
unknown keys refused) for rollback-agent.yml, YAML for Grafana's provisioning files. The role's
preflight is run too (against the controller itself), to show that two hosts running the
migrations of one database stop the play. The wheel build is checked for reproducibility, which
the role's idempotence rests on.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from testkit.ansible import run_playbook

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

INVENTORY = {
    "all": {
        "children": {
            "monitoring": {"hosts": {"mon1": {"ansible_host": "169.254.10.11"},
                                     "mon2": {"ansible_host": "169.254.10.12"}}},
            "app": {
                "hosts": {
                    "app1": {"ansible_host": "169.254.10.21"},
                    "app2": {"ansible_host": "169.254.10.22"},
                    "app3": {"ansible_host": "169.254.10.23", "rollback_agent_database": "billing"},
                    "app4": {"ansible_host": "169.254.10.24", "rollback_agent_database": "billing"},
                },
                "vars": {
                    "rollback_agent_webhook_secret": "render-test-secret-0123456789",
                    "rollback_agent_slack_webhook_url": "https://hooks.slack.com/services/T0/B0/renderSecret",
                    "rollback_agent_migrations_environment_file": "/etc/app/env",
                },
            },
        }
    }
}

RENDER_PLAY = """
- hosts: app
  gather_facts: false
  tasks:
    - ansible.builtin.include_role: {name: sre_monitoring.stack.rollback_agent, tasks_from: render.yml}
- hosts: monitoring
  gather_facts: false
  tasks:
    - ansible.builtin.include_role: {name: sre_monitoring.stack.grafana, tasks_from: render.yml}
"""

APP_RENDER_PLAY = RENDER_PLAY.split("- hosts: monitoring")[0]

PREFLIGHT_PLAY = """
- hosts: app
  gather_facts: true
  tasks:
    - ansible.builtin.include_role: {name: sre_monitoring.stack.rollback_agent, tasks_from: preflight.yml}
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("render")
    out = tmp / "out"
    proc = run_playbook(tmp, RENDER_PLAY, INVENTORY, {"render_dir": str(out)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for secret in ("render-test-secret", "renderSecret"):
        assert secret not in proc.stdout + proc.stderr
    return out


@pytest.mark.parametrize("host", ["app1", "app2", "app3", "app4"])
def test_rendered_agent_config_is_accepted_by_the_agent(rendered: Path, host: str) -> None:
    from rollback_agent.config import parse_config

    text = (rendered / host / "rollback-agent.yml").read_text()
    assert "render-test-secret" not in text
    assert "renderSecret" not in text
    config = parse_config(yaml.safe_load(text), source=host)
    assert config.host == host
    assert str(config.auth.password_file) == "/etc/rollback-agent/webhook-secret"
    assert config.notify.slack is not None
    assert str(config.notify.slack.webhook_url_file) == "/etc/rollback-agent/slack-url"
    assert config.server.bind == "0.0.0.0:9095"
    assert config.services.restart_command == ["/usr/bin/systemctl", "--no-ask-password", "restart"]
    assert config.services.units == ["app.service"]


def test_migrations_run_on_one_host_per_database(rendered: Path) -> None:
    with_migrations = {
        host for host in ("app1", "app2", "app3", "app4")
        if "migrations" in yaml.safe_load((rendered / host / "rollback-agent.yml").read_text())
    }
    # app1 and app2 share the default database, app3 and app4 "billing": the first of each.
    assert with_migrations == {"app1", "app3"}


def test_no_fleet_section_unless_enabled(rendered: Path) -> None:
    config = yaml.safe_load((rendered / "app2" / "rollback-agent.yml").read_text())
    assert "fleet" not in config  # every host rolls back at once, as before


@pytest.fixture(scope="module")
def fleet_rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five app hosts, fleet on, two per wave after the canary; app5 over TLS on another port."""
    inventory = json.loads(json.dumps(INVENTORY))
    app = inventory["all"]["children"]["app"]
    app["hosts"]["app5"] = {"ansible_host": "169.254.10.25", "rollback_agent_port": 9195,
                            "rollback_agent_tls_cert_file": "/etc/ssl/app5.crt",
                            "rollback_agent_tls_key_file": "/etc/ssl/app5.key"}
    app["vars"].update(rollback_agent_fleet_enabled=True, rollback_agent_max_parallel=2,
                       rollback_agent_fleet_on_peer_unreachable="abort",
                       rollback_agent_fleet_ca_file="/etc/ssl/fleet-ca.pem")
    tmp = tmp_path_factory.mktemp("fleet-render")
    out = tmp / "out"
    proc = run_playbook(tmp, APP_RENDER_PLAY, inventory, {"render_dir": str(out)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_fleet_waves_and_peers_from_the_inventory(fleet_rendered: Path) -> None:
    from rollback_agent.config import parse_config

    hosts = ("app1", "app2", "app3", "app4", "app5")
    configs = {h: parse_config(yaml.safe_load((fleet_rendered / h / "rollback-agent.yml").read_text()),
                               source=h) for h in hosts}
    # The migration host (first of the group) alone in wave 0, then two per wave in inventory order.
    assert {h: c.fleet.wave for h, c in configs.items() if c.fleet} == {
        "app1": 0, "app2": 1, "app3": 1, "app4": 2, "app5": 2}
    app2 = configs["app2"].fleet
    assert app2 is not None
    assert [(p.host, p.url) for p in app2.peers] == [
        ("app1", "http://169.254.10.21:9095"), ("app3", "http://169.254.10.23:9095"),
        ("app4", "http://169.254.10.24:9095"), ("app5", "https://169.254.10.25:9195")]
    assert app2.on_peer_unreachable == "abort" and app2.wave_timeout == 300.0
    assert str(app2.ca_file) == "/etc/ssl/fleet-ca.pem"
    assert "app5" not in [p.host for p in configs["app5"].fleet.peers]  # type: ignore[union-attr]


def test_fleet_wave_host_var_wins(tmp_path: Path) -> None:
    inventory = json.loads(json.dumps(INVENTORY))
    app = inventory["all"]["children"]["app"]
    app["vars"]["rollback_agent_fleet_enabled"] = True
    app["hosts"]["app4"]["rollback_agent_wave"] = 7
    out = tmp_path / "out"
    proc = run_playbook(tmp_path, APP_RENDER_PLAY, inventory, {"render_dir": str(out)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    waves = {h: yaml.safe_load((out / h / "rollback-agent.yml").read_text())["fleet"]["wave"]
             for h in ("app1", "app2", "app3", "app4")}
    assert waves == {"app1": 0, "app2": 1, "app3": 1, "app4": 7}  # no max_parallel: one wave after the canary


def test_rendered_polkit_rule_names_exactly_the_units(rendered: Path) -> None:
    rule = (rendered / "app1" / "rollback-agent" / "60-rollback-agent.rules").read_text()
    assert 'subject.user !== "rollback-agent"' in rule
    assert '["app.service"]' in rule
    assert 'action.lookup("verb") === "restart"' in rule
    unit = (rendered / "app1" / "rollback-agent" / "rollback-agent.service").read_text()
    assert "NoNewPrivileges=yes" in unit
    assert "ReadWritePaths=/var/lib/rollback-agent /srv/app" in unit
    assert "ExecStart=/opt/rollback-agent/venv/bin/rollback-agent $ARGS" in unit
    env = (rendered / "app1" / "rollback-agent" / "default-rollback-agent").read_text()
    assert 'ARGS="--config /etc/rollback-agent/config.yml serve"' in env


@pytest.mark.parametrize(("host", "address"), [("mon1", "169.254.10.11"), ("mon2", "169.254.10.12")])
def test_grafana_datasource_reads_the_local_prometheus(rendered: Path, host: str, address: str) -> None:
    base = rendered / host / "grafana"
    datasources = yaml.safe_load((base / "provisioning/datasources/sre-monitoring.yaml").read_text())
    assert datasources["datasources"] == [{
        "name": "Prometheus", "uid": "prometheus", "type": "prometheus", "access": "proxy", "orgId": 1,
        "url": f"http://{address}:9090", "isDefault": True, "editable": False,
        "jsonData": {"httpMethod": "POST", "timeInterval": "15s"},
    }]
    provider = yaml.safe_load((base / "provisioning/dashboards/sre-monitoring.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards/sre-monitoring"
    ini = (base / "grafana.ini").read_text()
    assert "admin_password = $__file{/etc/grafana/secrets/admin_password}" in ini
    dropin = (base / "systemd/grafana-server.service.d-50-sre-monitoring.conf").read_text()
    assert "ProtectSystem=strict" in dropin
    assert "ProcSubset" not in dropin


def test_two_migration_hosts_for_one_database_stop_the_play(tmp_path: Path) -> None:
    inventory = json.loads(json.dumps(INVENTORY))
    app = inventory["all"]["children"]["app"]
    app["vars"]["ansible_connection"] = "local"
    app["vars"]["ansible_python_interpreter"] = sys.executable
    app["hosts"]["app2"]["rollback_agent_migrations_enabled"] = True
    proc = run_playbook(tmp_path, PREFLIGHT_PLAY, inventory)
    assert proc.returncode != 0
    assert "Several hosts would run the migrations of one database" in proc.stdout
    assert "'app1': 'default'" in proc.stdout and "'app2': 'default'" in proc.stdout


def test_agent_wheel_build_is_reproducible(tmp_path: Path) -> None:
    build = REPO / "roles" / "rollback_agent" / "files" / "build_wheel.py"
    digests = []
    for name in ("a", "b"):
        proc = subprocess.run([sys.executable, str(build), str(REPO / "agent"), str(tmp_path / name)],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        wheel = Path(result["wheel"])
        assert wheel.name.startswith("rollback_agent-") and wheel.suffix == ".whl"
        assert hashlib.sha256(wheel.read_bytes()).hexdigest() == result["sha256"]
        digests.append(result["sha256"])
    assert digests[0] == digests[1]
