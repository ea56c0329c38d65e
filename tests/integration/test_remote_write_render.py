"""prometheus_remote_write through roles/prometheus' render entry point (issue 14).

The role writes prometheus.yml on the controller, validated by the real promtool (check config
--syntax-only: the secret files it names exist only on the host). The endpoints' secrets must be
named by file, never written into prometheus.yml; malformed entries fail with a clear message.
"""

from __future__ import annotations

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

PLAY = """
- hosts: monitoring
  gather_facts: false
  tasks:
    - ansible.builtin.file:
        path: "{{ render_dir }}/{{ inventory_hostname }}/default"
        state: directory
        mode: "0755"
      delegate_to: localhost
    - ansible.builtin.include_role: {name: sre_monitoring.stack.prometheus, tasks_from: render.yml}
"""

ENDPOINTS = [
    {
        "name": "mimir",
        "url": "https://mimir.example.com/api/v1/push",
        "basic_auth": {"username": "tenant1", "password": "mimir-password-in-the-vault"},
        "headers": {"X-Scope-OrgID": "tenant1"},
        "tls_config": {"ca_file": "/etc/ssl/certs/ca-certificates.crt"},
        "queue_config": {"capacity": 2500, "max_shards": 10, "max_samples_per_send": 500},
        "write_relabel_configs": [{"source_labels": ["__name__"], "regex": "go_.*", "action": "drop"}],
    },
    {
        "name": "victoria",
        "url": "http://vm.example.com:8428/api/v1/write",
        "bearer_token": "vm-token-in-the-vault",
    },
    {
        "name": "thanos",
        "url": "https://receive.example.com/api/v1/receive",
        "bearer_token_file": "/etc/thanos/token",
    },
]


def render(tmp: Path, endpoints: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    inventory = {
        "monitoring": {
            "hosts": {"mon1": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}
        }
    }
    return run_playbook(
        tmp, PLAY, inventory, {"render_dir": str(tmp / "out"), "prometheus_remote_write": endpoints}
    )


def test_remote_write_endpoints_are_rendered_with_secrets_in_files(tmp_path: Path) -> None:
    proc = render(tmp_path, ENDPOINTS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    text = (tmp_path / "out" / "mon1" / "prometheus.yml").read_text()
    assert "mimir-password-in-the-vault" not in text and "vm-token-in-the-vault" not in text
    assert "mimir-password-in-the-vault" not in proc.stdout and "vm-token-in-the-vault" not in proc.stdout
    config = yaml.safe_load(text)
    rw = {e["name"]: e for e in config["remote_write"]}
    assert rw["mimir"]["basic_auth"] == {
        "username": "tenant1",
        "password_file": "/etc/prometheus/remote-write/mimir.password",
    }
    assert rw["mimir"]["queue_config"]["max_shards"] == 10
    assert rw["mimir"]["write_relabel_configs"][0]["action"] == "drop"
    assert rw["mimir"]["headers"] == {"X-Scope-OrgID": "tenant1"}
    assert rw["victoria"]["authorization"] == {
        "type": "Bearer",
        "credentials_file": "/etc/prometheus/remote-write/victoria.token",
    }
    assert rw["thanos"]["authorization"]["credentials_file"] == "/etc/thanos/token"
    # every replica keeps its own replica label: the receiver deduplicates on it
    assert config["global"]["external_labels"]["replica"] == "mon1"
    promtool = subprocess.run(
        ["promtool", "check", "config", "--syntax-only", str(tmp_path / "out" / "mon1" / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr


def test_no_remote_write_section_by_default(tmp_path: Path) -> None:
    proc = render(tmp_path, [])
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "remote_write" not in yaml.safe_load((tmp_path / "out" / "mon1" / "prometheus.yml").read_text())


@pytest.mark.parametrize(
    "endpoint",
    [
        {"name": "no url"},
        {"name": "x", "url": "mimir.example.com"},
        {
            "name": "x",
            "url": "https://a/",
            "basic_auth": {"username": "u", "password": "p", "password_file": "/f"},
        },
        {"name": "x", "url": "https://a/", "bearer_token": "t", "bearer_token_file": "/f"},
    ],
)
def test_malformed_endpoints_fail_clearly(tmp_path: Path, endpoint: dict[str, Any]) -> None:
    proc = render(tmp_path, [endpoint])
    assert proc.returncode != 0
    assert "prometheus_remote_write: every entry needs a unique name" in proc.stdout
    assert not (tmp_path / "out" / "mon1" / "prometheus.yml").exists()


GRAFANA_PLAY = """
- hosts: monitoring
  gather_facts: false
  tasks:
    - ansible.builtin.include_role: {name: sre_monitoring.stack.grafana, tasks_from: render.yml}
"""


def test_grafana_gets_the_long_term_store_as_a_second_datasource(tmp_path: Path) -> None:
    inventory = {"monitoring": {"hosts": {"mon1": {"ansible_host": "169.254.10.11"}}}}
    extra = {
        "render_dir": str(tmp_path / "out"),
        "grafana_longterm_datasource_url": "https://mimir.example.com/prometheus",
    }
    proc = run_playbook(tmp_path, GRAFANA_PLAY, inventory, extra)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    path = tmp_path / "out" / "mon1" / "grafana" / "provisioning/datasources/sre-monitoring.yaml"
    datasources = {d["uid"]: d for d in yaml.safe_load(path.read_text())["datasources"]}
    assert datasources["prometheus"]["isDefault"] is True
    assert datasources["prometheus"]["url"] == "http://169.254.10.11:9090"
    assert datasources["prometheus-longterm"] == {
        "name": "Long-term storage",
        "uid": "prometheus-longterm",
        "type": "prometheus",
        "access": "proxy",
        "orgId": 1,
        "url": "https://mimir.example.com/prometheus",
        "isDefault": False,
        "editable": False,
        "jsonData": {"httpMethod": "POST", "timeInterval": "15s"},
    }
