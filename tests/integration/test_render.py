"""playbooks/render.yml on the example production inventory, and the real tools on its output.

Renders every configuration of inventories/production into a temporary folder without a vault
and without touching a host, then checks what it wrote with promtool (`check config`, which
also loads the rendered rule files) and amtool (`check-config`, with the rendered templates),
and checks that the generated scrape configuration, Alertmanager cluster and rollback webhook
targets follow the inventory. A broken variable must fail the render at the validating tool.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INVENTORY = ROOT / "inventories" / "production"
MONITORING = ["mon1", "mon2"]
APPS = ["app1", "app2"]
ALL_HOSTS = ["mon1", "mon2", "app1", "app2", "db1", "cache1"]


def render(render_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    return subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            str(INVENTORY),
            "playbooks/render.yml",
            "-e",
            f"render_dir={render_dir}",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("render")
    (out / "examples").mkdir()
    proc = render(out, "-e", f"render_examples_dir={out / 'examples'}")
    assert proc.returncode == 0, f"render.yml failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    return out


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_render_writes_every_file(rendered: Path) -> None:
    for host in MONITORING:
        for name in (
            "prometheus.yml",
            "alertmanager.yml",
            "blackbox.yml",
            "default/prometheus",
            "default/prometheus-alertmanager",
        ):
            assert (rendered / host / name).is_file(), f"{host}/{name} missing"
        assert len(list((rendered / host / "rules").glob("*.yml"))) == 8
        assert list((rendered / host / "templates").glob("*.tmpl"))
    for host in ALL_HOSTS:
        assert (rendered / host / "default" / "prometheus-node-exporter").is_file()
    assert (rendered / "db1" / "default" / "prometheus-postgres-exporter").is_file()
    assert (rendered / "cache1" / "default" / "prometheus-redis-exporter").is_file()
    for host in APPS:
        assert (rendered / host / "rollback-agent.yml").is_file()


def test_the_agents_examples_are_what_make_render_writes(rendered: Path) -> None:
    kept = ROOT / "agent" / "examples"
    written = {p.name: p.read_text() for p in (rendered / "examples").iterdir()}
    assert sorted(written) == sorted(p.name for p in kept.iterdir())
    stale = [name for name, text in written.items() if (kept / name).read_text() != text]
    assert not stale, f"agent/examples/{stale} differ from the roles' output: run `make render` and commit"


def test_no_secret_or_vault_placeholder_is_rendered(rendered: Path) -> None:
    # The vault's placeholders all contain CHANGE-ME; the roles must reference secrets by path.
    leaked = [
        str(p.relative_to(rendered))
        for p in rendered.rglob("*")
        if p.is_file() and "CHANGE-ME" in p.read_text(errors="replace")
    ]
    assert not leaked, f"secrets rendered into {leaked}"


@pytest.mark.parametrize("host", MONITORING)
def test_promtool_accepts_prometheus_yml_with_its_rules(
    rendered: Path, host: str, promtool: str, tmp_path: Path
) -> None:
    config = load(rendered / host / "prometheus.yml")
    # Check the rendered rule files with it, and stand in for the CA file of the host.
    config["rule_files"] = [str(rendered / host / "rules" / "*.yml")]
    ca = tmp_path / "ca.crt"
    ca.write_text("placeholder: promtool only checks that the file exists\n")
    for section in [*config["scrape_configs"], *config["alerting"]["alertmanagers"]]:
        if "tls_config" in section and "ca_file" in section["tls_config"]:
            section["tls_config"]["ca_file"] = str(ca)
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [promtool, "check", "config", str(checked)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", proc.stdout))
    assert found >= 50, proc.stdout


@pytest.mark.parametrize("host", MONITORING)
def test_amtool_accepts_alertmanager_yml_with_its_templates(
    rendered: Path, host: str, amtool: str, tmp_path: Path
) -> None:
    config = load(rendered / host / "alertmanager.yml")
    assert config["templates"] == ["/etc/alertmanager/templates/*.tmpl"]
    config["templates"] = [str(rendered / host / "templates" / "*.tmpl")]
    checked = tmp_path / "alertmanager.yml"
    checked.write_text(yaml.safe_dump(config))
    proc = subprocess.run([amtool, "check-config", str(checked)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"- [1-9]\d* templates", proc.stdout), proc.stdout


def test_scrape_jobs_follow_the_inventory(rendered: Path) -> None:
    config = load(rendered / "mon1" / "prometheus.yml")
    assert config["global"]["scrape_interval"] == "15s"
    assert config["global"]["evaluation_interval"] == "15s"
    assert config["global"]["external_labels"]["replica"] == "mon1"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {
        "node",
        "prometheus",
        "alertmanager",
        "blackbox_exporter",
        "postgres",
        "redis",
        "rollback-agent",
        "mita-api",
        "blackbox",
    }

    def instances(job: str) -> list[str]:
        return [c["labels"]["instance"] for c in jobs[job]["static_configs"]]

    assert instances("node") == [f"{h}:9100" for h in ALL_HOSTS]
    assert instances("postgres") == ["db1:9187"]
    assert instances("redis") == ["cache1:9121"]
    assert instances("rollback-agent") == ["app1:9095", "app2:9095"]
    assert instances("mita-api") == ["app1:8000", "app2:8000"]
    # exporters behind TLS and basic auth, redis_exporter behind TLS only (it has no basic auth)
    assert jobs["node"]["scheme"] == "https"
    assert jobs["node"]["basic_auth"] == {
        "username": "prometheus",
        "password_file": "/etc/prometheus/scrape-passwords/node",
    }
    assert jobs["redis"]["scheme"] == "https" and "basic_auth" not in jobs["redis"]
    assert jobs["node"]["static_configs"][0]["targets"] == ["198.51.100.11:9100"]
    # the health URLs of the app hosts, probed through this host's blackbox_exporter
    probes = jobs["blackbox"]
    assert [c["targets"][0] for c in probes["static_configs"]] == [
        "http://203.0.113.21:8000/health",
        "http://203.0.113.22:8000/health",
    ]
    assert probes["relabel_configs"][-1]["replacement"] == "198.51.100.11:9115"
    alerting = config["alerting"]["alertmanagers"][0]
    assert alerting["static_configs"][0]["targets"] == ["198.51.100.11:9093", "198.51.100.12:9093"]
    assert config["alerting"]["alert_relabel_configs"] == [{"action": "labeldrop", "regex": "replica"}]


def test_server_flags(rendered: Path) -> None:
    prometheus = (rendered / "mon1" / "default" / "prometheus").read_text()
    for flag in (
        "--storage.tsdb.retention.time=30d",
        "--web.enable-lifecycle",
        "--web.config.file=/etc/prometheus/web.yml",
        "--web.listen-address=0.0.0.0:9090",
    ):
        assert flag in prometheus
    alertmanager = (rendered / "mon1" / "default" / "prometheus-alertmanager").read_text()
    assert "--cluster.peer=198.51.100.12:9094" in alertmanager
    assert "--cluster.advertise-address=198.51.100.11:9094" in alertmanager
    assert (
        "--cluster.peer=198.51.100.11:9094"
        in (rendered / "mon2" / "default" / "prometheus-alertmanager").read_text()
    )


def test_rollback_webhook_targets_every_app_host(rendered: Path) -> None:
    config = load(rendered / "mon1" / "alertmanager.yml")
    receiver = next(r for r in config["receivers"] if r["name"] == "rollback-trigger")
    urls = [w["url"] for w in receiver["webhook_configs"]]
    assert urls == [
        "http://203.0.113.21:9095/api/admin/rollback/trigger",
        "http://203.0.113.22:9095/api/admin/rollback/trigger",
    ]
    for webhook in receiver["webhook_configs"]:
        assert (
            webhook["http_config"]["basic_auth"]["password_file"]
            == "/etc/alertmanager/secrets/rollback_webhook_secret"
        )


def test_a_configuration_promtool_rejects_fails_the_render(tmp_path: Path) -> None:
    proc = render(tmp_path, "-e", "prometheus_scrape_interval=15x")
    assert proc.returncode != 0
    assert "not a valid duration" in proc.stdout + proc.stderr
    for host in MONITORING:
        assert not (tmp_path / host / "prometheus.yml").exists()


def test_render_refuses_limit(tmp_path: Path) -> None:
    proc = render(tmp_path, "--limit", "mon1")
    assert proc.returncode != 0
    assert "run it without --limit" in proc.stdout


def test_rollback_agents_with_tls_are_scraped_and_called_over_https(tmp_path: Path) -> None:
    # An agent host with rollback_agent_tls_cert_file serves https: Prometheus scrapes its
    # /metrics and Alertmanager posts its webhook over https (the agent has no basic auth on
    # /metrics, so its job gets none); the other jobs keep their own schemes.
    proc = render(
        tmp_path,
        "-e",
        "rollback_agent_tls_cert_file=/etc/rollback-agent/tls.crt",
        "-e",
        "rollback_agent_tls_key_file=/etc/rollback-agent/tls.key",
    )
    assert proc.returncode == 0, f"render.yml failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    jobs = {job["job_name"]: job for job in load(tmp_path / "mon1" / "prometheus.yml")["scrape_configs"]}
    agents = jobs["rollback-agent"]
    assert agents["scheme"] == "https"
    assert agents["tls_config"] == {"ca_file": "/etc/prometheus/scrape-ca.crt", "insecure_skip_verify": False}
    assert "basic_auth" not in agents
    assert [c["targets"][0] for c in agents["static_configs"]] == ["203.0.113.21:9095", "203.0.113.22:9095"]
    assert jobs["mita-api"]["scheme"] == "http"
    config = load(tmp_path / "mon2" / "alertmanager.yml")
    receiver = next(r for r in config["receivers"] if r["name"] == "rollback-trigger")
    assert [w["url"] for w in receiver["webhook_configs"]] == [
        "https://203.0.113.21:9095/api/admin/rollback/trigger",
        "https://203.0.113.22:9095/api/admin/rollback/trigger",
    ]
