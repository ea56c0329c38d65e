"""Where the lab keeps things on the controller."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The repository this package sits in: scripts/bootstrap installs it in editable mode
# (pip install -e lab-kit), so the lab always runs this checkout's playbooks and inventory.
ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(os.environ.get("LAB_VENV_BIN", str(ROOT / ".venv" / "bin")))
PYTHON = Path(sys.executable)
STATE = Path(os.environ.get("LAB_STATE_DIR", str(ROOT / ".lab")))
INVENTORY = ROOT / "inventories" / "lab"
PLAYBOOKS = ROOT / "playbooks"
# The lab's own playbook (never run in production) sits in the lab's package folder, not in
# inventories/lab: Ansible would try to read every file of the inventory folder as inventory.
SAMPLE_APP_PLAYBOOK = "lab-kit/playbooks/sample-app.yml"
RELEASES_REPO = STATE / "releases" / "sample-app"
RELEASES_BUNDLE = STATE / "releases" / "sample-app.bundle"
SECRETS = STATE / "secrets.yml"
SSH_KEY = STATE / "ssh" / "id_ed25519"
CAPTURE_DIR = STATE / "capture"
LOG_DIR = STATE / "logs"
TIMINGS = STATE / "timings.jsonl"
HEAVY_LOCK = Path(os.environ.get("HEAVY_SUITE_LOCK", "/tmp/heavy-suite.lock"))  # noqa: S108 - shared by the team
