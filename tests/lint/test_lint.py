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
# Every playbook, with the inventories it runs against: production playbooks against both, the
# lab's own (lab-kit/playbooks) against the lab only.
PLAYBOOKS = {
    **{p.relative_to(ROOT).as_posix(): ("inventories/production", "inventories/lab")
       for p in sorted((ROOT / "playbooks").glob("*.yml"))},
    **{p.relative_to(ROOT).as_posix(): ("inventories/lab",)
       for p in sorted((ROOT / "lab-kit" / "playbooks").glob("*.yml"))},
}


def run(*cmd: str) -> None:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"


def test_ruff_check() -> None:
    run(str(BIN / "ruff"), "check", ".")


def test_yamllint() -> None:
    run(str(BIN / "yamllint"), "--strict", ".")


def test_ansible_lint_production_profile() -> None:
    run(str(BIN / "ansible-lint"), "--profile", "production", "--offline")


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax(playbook: str) -> None:
    for inventory in PLAYBOOKS[playbook]:
        run(str(BIN / "ansible-playbook"), "-i", inventory, "--syntax-check", playbook)
