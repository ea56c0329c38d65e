"""The served agent (gunicorn): its timer decides waiting alerts on its own, and playbooks/freeze.yml
freezes and unfreezes it through the authenticated HTTP API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_gunicorn import Gunicorn
from agent_support import SECRET, payload

pytestmark = pytest.mark.agent

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(agent_env):
    server = Gunicorn(agent_env, workers=2)
    yield server
    server.stop()


def test_the_timer_of_the_served_agent_acts_on_a_waiting_alert(agent_env, served) -> None:
    agent_env.write_config(guards={"corroboration_window": "1s"})
    served.start()
    body = payload("UserRegistrationDown", fingerprint="fp-signups")
    answer = served.trigger(body).json()
    assert answer["status"] == "waiting", answer
    deadline = time.monotonic() + 20  # each worker ticks every 5 s
    while time.monotonic() < deadline:
        history = served.get("/api/admin/rollback/status").json()["history"]
        if history and history[0]["status"] != "running":
            break
        time.sleep(0.2)
    assert history and history[0]["status"] == "success", history
    assert history[0]["alert_name"] == "UserRegistrationDown" and history[0]["confidence"] == "medium"
    assert agent_env.deployed_sha() == agent_env.shas["v2"]
    assert served.trigger(body).json()["status"] == "duplicate"


def _playbook(port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOST_KEY_CHECKING": "False"}
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "-i",
            "localhost,",
            "-c",
            "local",
            str(ROOT / "playbooks" / "freeze.yml"),
            "-e",
            "freeze_group=all",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            "-e",
            f"rollback_agent_port={port}",
            "-e",
            f"rollback_agent_webhook_secret={SECRET}",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=environ,
        timeout=180,
        check=False,
    )


def test_freeze_playbook_freezes_and_unfreezes_through_the_api(agent_env, served) -> None:
    served.start()
    done = _playbook(served.port, "-e", "freeze_for=2h", "-e", 'freeze_reason="database upgrade"')
    assert done.returncode == 0, done.stdout + done.stderr
    assert "frozen until" in done.stdout and SECRET not in done.stdout
    assert served.get("/api/admin/rollback/status").json()["freeze"]["reason"] == "database upgrade"
    blocked = served.trigger().json()
    assert blocked["status"] == "blocked" and "frozen until" in blocked["reason"], blocked
    done = _playbook(served.port, "-e", "unfreeze=true")
    assert done.returncode == 0 and "unfrozen" in done.stdout, done.stdout + done.stderr
    assert served.get("/api/admin/rollback/status").json()["freeze"] is None
    refused = _playbook(served.port, "-e", "freeze_for=2h")  # no reason
    assert refused.returncode != 0 and "freeze_reason" in refused.stdout
