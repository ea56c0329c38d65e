"""Helpers of the monitoring tests: rendering the content the way roles/monitoring_config does.

Everything is rendered the way the roles render it (ansible-playbook through the role's entry
points), then checked with the real tools: promtool, amtool and a real Alertmanager.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rollback_agent.triggers import DEFAULT_TRIGGERS
from testkit.ansible import BIN, ansible_env

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
TESTS = MONITORING / "tests"
FIXTURE_PLAYBOOK = TESTS / "fixtures" / "render.yml"
RENDER_PLAYBOOK = REPO / "playbooks" / "render.yml"
PRODUCTION_INVENTORY = REPO / "inventories" / "production"

# The alerts the rollback agents act on by default: the rules must define exactly these
# (the agent's own list, so the two cannot drift apart; docs/contracts.md).
ROLLBACK_TRIGGERS = frozenset(DEFAULT_TRIGGERS)
SEVERITIES = ("info", "warning", "error", "critical")
CATEGORIES = (
    "api_performance",
    "system_health",
    "database",
    "authentication",
    "resources",
    "business",
    "external_services",
    "monitoring_meta",
)


def run_playbook(
    playbook: Path, inventory: str, render_dir: Path, extra: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    """ansible-playbook with render_dir and extra vars (a JSON file, so types survive)."""
    cmd = [str(BIN / "ansible-playbook"), "-i", inventory, str(playbook), "-e", f"render_dir={render_dir}"]
    if extra:
        vars_file = render_dir.parent / f"{render_dir.name}-vars.json"
        vars_file.write_text(json.dumps(extra))
        cmd += ["-e", f"@{vars_file}"]
    return subprocess.run(cmd, cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=600)


@dataclass(frozen=True)
class Render:
    """One host's rendered monitoring content."""

    root: Path
    source: str  # which playbook produced it

    @property
    def rules_dir(self) -> Path:
        return self.root / "rules"

    @property
    def alertmanager_yml(self) -> Path:
        return self.root / "alertmanager.yml"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    @property
    def blackbox_yml(self) -> Path:
        return self.root / "blackbox.yml"

    def rule_docs(self) -> dict[str, dict[str, Any]]:
        return {p.stem: yaml.safe_load(p.read_text()) for p in sorted(self.rules_dir.glob("*.yml"))}

    def alerts(self) -> list[dict[str, Any]]:
        return [
            {**rule, "category": category, "group": group["name"]}
            for category, doc in self.rule_docs().items()
            for group in doc["groups"]
            for rule in group["rules"]
            if "alert" in rule
        ]

    def alertmanager(self) -> dict[str, Any]:
        return yaml.safe_load(self.alertmanager_yml.read_text())


def render_fixture(render_dir: Path, extra: dict[str, Any] | None = None) -> Render:
    """Render through monitoring/tests/fixtures/render.yml (the role's entry points)."""
    proc = run_playbook(FIXTURE_PLAYBOOK, "localhost,", render_dir, extra)
    if proc.returncode != 0:
        raise AssertionError(f"rendering failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
    return Render(render_dir / "fixture", "monitoring/tests/fixtures/render.yml")


def rule_test_files() -> list[Path]:
    return sorted((TESTS / "rules").glob("*.test.yml"))
