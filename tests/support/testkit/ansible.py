"""Run a small playbook of the repository's roles against an inventory written for the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from testkit import REPO_ROOT

BIN = Path(sys.executable).parent


def ansible_env() -> dict[str, str]:
    """The environment of an ansible-playbook run on the repository: its ansible.cfg and roles, no colour."""
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(REPO_ROOT / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def run_playbook(
    tmp: Path,
    play: str,
    inventory: dict[str, Any],
    extra_vars: dict[str, Any] | None = None,
    *args: str,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """ansible-playbook on ``play`` with ``inventory`` (both written into ``tmp``), the repository's
    ansible.cfg and roles, ``extra_vars`` as a JSON file (lists and dicts stay typed), ``args``
    appended. Facts are cached in memory only: parallel test workers share no cache files."""
    (tmp / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (tmp / "play.yml").write_text(play)
    argv = [str(BIN / "ansible-playbook"), "-i", str(tmp / "inventory.yml"), str(tmp / "play.yml")]
    if extra_vars is not None:
        (tmp / "vars.json").write_text(json.dumps(extra_vars))
        argv += ["-e", f"@{tmp / 'vars.json'}"]
    env = {**ansible_env(), "ANSIBLE_FACT_CACHING": "memory"}
    return subprocess.run(
        [*argv, *args], cwd=tmp, capture_output=True, text=True, env=env, check=False, timeout=timeout
    )
