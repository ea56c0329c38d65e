"""The roles as the Ansible collection sre_monitoring.stack (galaxy.yml), used from elsewhere.

The tarball is built with ``ansible-galaxy collection build`` (as ``make collection`` does),
installed with ``ansible-galaxy collection install`` into a temporary collections path, and used
from an unrelated temporary directory with its own ansible.cfg (that collections path only, no
roles path) and its own inventory: a playbook names the roles by FQCN and renders Prometheus,
Alertmanager and the rollback agent's files through the roles' render entry points, checked by
promtool/amtool inside the roles and by promtool, amtool and the agent's own parser here. The
agent's wheel is built from the installed collection's agent/ copy by the role's build script,
with the same arguments as the role's install step (the render entry point installs nothing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GALAXY = yaml.safe_load((REPO / "galaxy.yml").read_text())
FQCN = f"{GALAXY['namespace']}.{GALAXY['name']}"

# What the roles read outside their own folder (role_path/../../...), and the filters they use.
NEEDED = [
    "roles/stack_common/tasks/unit.yml",
    "roles/monitoring_config/tasks/rules.yml",
    "plugins/filter/net.py",
    "plugins/filter/rules.py",
    "monitoring/rules",
    "monitoring/alertmanager",
    "monitoring/templates",
    "monitoring/dashboards",
    "agent/pyproject.toml",
    "agent/src/rollback_agent/__init__.py",
    "playbooks/site.yml",
    "meta/runtime.yml",
]
# Test, lab and development content that must stay out of the tarball.
ABSENT_PREFIXES = ("tests/", "roles/sample_app/", "inventories/", "scripts/", "lab-kit/", ".venv/",
                   ".cache/", ".lab/", "collections/", "docs/", "render/", "dist/", "agent/tests/")
ABSENT_PARTS = ("/molecule/", "__pycache__", ".egg-info/")

INVENTORY = {
    "all": {
        "children": {
            "monitoring": {"hosts": {"mon1": {"ansible_host": "169.254.31.11"},
                                     "mon2": {"ansible_host": "169.254.31.12"}}},
            "app": {
                "hosts": {"app1": {"ansible_host": "169.254.31.21"}},
                "vars": {
                    "rollback_agent_webhook_secret": "collection-test-secret-0123456789",
                    "rollback_agent_migrations_environment_file": "/etc/app/env",
                },
            },
        },
        "vars": {"alertmanager_slack_webhook_url": "https://hooks.slack.com/services/T0/B0/collectionTest"},
    }
}

PLAY = f"""
- name: Render the monitoring and app hosts with the collection's roles
  hosts: monitoring:app
  gather_facts: false
  vars:
    ansible_connection: local
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
  tasks:
    - name: Create the render folder
      ansible.builtin.file:
        path: "{{{{ render_dir }}}}/{{{{ inventory_hostname }}}}/default"
        state: directory
        mode: "0755"
      delegate_to: localhost
    - name: Render Prometheus
      ansible.builtin.include_role:
        name: {FQCN}.prometheus
        tasks_from: render
      when: "'monitoring' in group_names"
    - name: Render Alertmanager
      ansible.builtin.include_role:
        name: {FQCN}.alertmanager
        tasks_from: render
      when: "'monitoring' in group_names"
    - name: Render the rollback agent
      ansible.builtin.include_role:
        name: {FQCN}.rollback_agent
        tasks_from: render
      when: "'app' in group_names"
"""


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, f"{' '.join(argv)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def clean_env() -> dict[str, str]:
    """The caller's environment without any ANSIBLE_* variable (no repository ansible.cfg)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}


def outside_env(project: Path) -> dict[str, str]:
    """An environment that knows nothing of the repository: the project's own ansible.cfg, the
    venv's tools (promtool, amtool on PATH as before)."""
    env = clean_env()
    return {**env, "ANSIBLE_CONFIG": str(project / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("collection-dist")
    build = [str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out)]
    run([*build, str(REPO)], REPO, clean_env())
    (built,) = out.glob("*.tar.gz")
    assert built.name == f"{GALAXY['namespace']}-{GALAXY['name']}-{GALAXY['version']}.tar.gz"
    return built


@pytest.fixture(scope="module")
def installed(tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The collections path the tarball was installed into."""
    path = tmp_path_factory.mktemp("collections")
    # --force: a copy elsewhere (e.g. ~/.ansible/collections) must not make the install a no-op
    galaxy = [str(BIN / "ansible-galaxy"), "collection", "install", "--force"]
    run([*galaxy, str(tarball), "-p", str(path)], path, clean_env())
    return path


def collection_dir(installed: Path) -> Path:
    return installed / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]


def test_tarball_carries_what_the_roles_read_and_nothing_of_the_tests_or_the_lab(tarball: Path) -> None:
    with tarfile.open(tarball) as tar:
        names = [n.removeprefix("./") for n in tar.getnames()]
    for needed in NEEDED:
        assert any(n == needed or n.startswith(needed + "/") for n in names), f"{needed} not in the tarball"
    rules = [n for n in names if n.startswith("monitoring/rules/") and n.endswith(".yml.j2")]
    assert len(rules) >= 8, rules
    leaked = [n for n in names if n.startswith(ABSENT_PREFIXES) or any(p in n for p in ABSENT_PARTS)]
    assert not leaked, f"test/lab/development files in the tarball: {leaked[:20]}"
    roles = {n.split("/")[1] for n in names if n.startswith("roles/") and n.count("/") >= 2}
    assert roles == {"alertmanager", "blackbox_exporter", "grafana", "monitoring_config", "node_exporter",
                     "postgres_exporter", "prometheus", "redis_exporter", "rollback_agent", "stack_common"}


def test_every_role_path_outside_a_role_resolves_in_the_installed_collection(installed: Path) -> None:
    """role_path/../../<dir> (monitoring/, agent/) and role_path/../stack_common/... as the roles
    write them, resolved from the installed roles."""
    root = collection_dir(installed)
    for role in ("prometheus", "alertmanager", "grafana", "rollback_agent", "monitoring_config"):
        assert (root / "roles" / role / "tasks").is_dir()
    assert (root / "roles" / "monitoring_config" / "../../monitoring/rules").resolve().is_dir()
    assert (root / "roles" / "grafana" / "../../monitoring/dashboards").resolve().is_dir()
    assert (root / "roles" / "rollback_agent" / "../../agent/pyproject.toml").resolve().is_file()
    assert (root / "roles" / "grafana" / "../stack_common/templates/service.j2").resolve().is_file()


@pytest.fixture(scope="module")
def project(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An operator's own directory: ansible.cfg with the collections path only, an inventory and
    a playbook naming the roles by FQCN; the playbook rendered into project/render."""
    project = tmp_path_factory.mktemp("operator-project")
    (project / "ansible.cfg").write_text(
        f"[defaults]\ncollections_path = {installed}\nretry_files_enabled = False\n"
        "interpreter_python = auto_silent\nfact_caching = memory\n"
    )
    (project / "hosts.yml").write_text(yaml.safe_dump(INVENTORY))
    (project / "render.yml").write_text(PLAY)
    playbook = [str(BIN / "ansible-playbook"), "-i", "hosts.yml", "render.yml"]
    proc = run([*playbook, "-e", f"render_dir={project / 'render'}"], project, outside_env(project))
    for secret in ("collection-test-secret", "collectionTest"):
        assert secret not in proc.stdout + proc.stderr
    # every role came from the installed collection, none from the repository
    assert str(REPO) not in proc.stdout
    return project


def test_prometheus_config_and_rules_rendered_from_the_collection(project: Path) -> None:
    mon1 = project / "render" / "mon1"
    rules = sorted((mon1 / "rules").glob("*.yml"))
    assert len(rules) >= 8, rules
    promtool = str(shutil.which("promtool"))
    run([promtool, "check", "config", "--syntax-only", str(mon1 / "prometheus.yml")], project)
    run([promtool, "check", "rules", *map(str, rules)], project)
    config = yaml.safe_load((mon1 / "prometheus.yml").read_text())
    assert config["rule_files"], config
    assert any(job["job_name"] for job in config["scrape_configs"])


def test_alertmanager_config_rendered_from_the_collection(project: Path) -> None:
    mon2 = project / "render" / "mon2"
    config = mon2 / "alertmanager.yml"
    run([str(shutil.which("amtool")), "check-config", str(config)], project)
    assert "collectionTest" not in config.read_text()  # the secret stays in its own file
    assert list((mon2 / "templates").glob("*.tmpl"))


def test_rollback_agent_config_rendered_from_the_collection(project: Path) -> None:
    from rollback_agent.config import parse_config

    text = (project / "render" / "app1" / "rollback-agent.yml").read_text()
    assert "collection-test-secret" not in text
    config = parse_config(yaml.safe_load(text), source="app1")
    assert config.host == "app1"
    assert config.triggers  # made from the collection's monitoring/ rules


def test_agent_wheel_builds_from_the_collections_agent_copy(installed: Path, tmp_path: Path) -> None:
    """roles/rollback_agent/tasks/install.yml builds the wheel with files/build_wheel.py from
    rollback_agent_source_dir (role_path/../../agent): the same, from the installed collection."""
    role = collection_dir(installed) / "roles" / "rollback_agent"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    assert defaults["rollback_agent_source_dir"] == "{{ role_path }}/../../agent"
    proc = run([sys.executable, str(role / "files" / "build_wheel.py"), str(role / ".." / ".." / "agent"),
                str(tmp_path / "build")], tmp_path)
    wheel = Path(json.loads(proc.stdout)["wheel"])
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
    assert "rollback_agent/cli.py" in names
    assert "rollback_agent/openapi.yaml" in names
