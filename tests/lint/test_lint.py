"""Static checks: every one must pass for a change to land."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lint

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*cmd: str) -> None:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"


def test_ruff_check() -> None:
    run(str(BIN / "ruff"), "check", ".")


def test_ruff_format_is_not_required_but_syntax_is() -> None:
    run(sys.executable, "-m", "compileall", "-q", "agent/src", "scripts", "tests")


def test_yamllint() -> None:
    run(str(BIN / "yamllint"), "--strict", ".")


def test_ansible_lint_production_profile() -> None:
    if not any((ROOT / "roles").iterdir()) and not list((ROOT / "playbooks").glob("*.yml")):
        pytest.fail("no roles or playbooks to lint: the layout is broken")
    run(str(BIN / "ansible-lint"), "--profile", "production", "--offline")


@pytest.mark.parametrize("playbook", sorted(p.name for p in (ROOT / "playbooks").glob("*.yml")))
def test_playbook_syntax(playbook: str) -> None:
    for inventory in ("inventories/production", "inventories/lab"):
        run(str(BIN / "ansible-playbook"), "-i", inventory, "--syntax-check", f"playbooks/{playbook}")
