"""Helpers of the lab's end-to-end tests (tests/e2e): the lab itself is lab-kit's (lab_kit)."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from lab_kit import deploys, incident
from lab_kit.inventory import Lab
from lab_kit.lock import LOCK_ENV
from lab_kit.paths import ROOT

# How long one incident (bad deploy -> alert -> rollback by both agents) may take on the lab.
INCIDENT_TIMEOUT = 480


def lab_cmd(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """scripts/lab with these arguments, run by a caller that holds the heavy-suite lock."""
    return subprocess.run(
        [str(ROOT / "scripts" / "lab"), *args],
        cwd=ROOT,
        env={**os.environ, LOCK_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ensure_good(lab: Lab, shas: dict[str, str]) -> None:
    """Every app host on v2 (the previous test may have left something else)."""
    current = {h.name: deploys.current_sha(deploys.agent_status(lab, h)) for h in lab.group("app")}
    if any(sha != shas["v2"] for sha in current.values()):
        assert deploys.deploy(lab, "v2", force=True, quiet=True) == 0, f"could not put v2 back: {current}"


def wait_cooldown(lab: Lab) -> None:
    """Let the agents' cooldown (lab: 30 s) pass since their last rollback."""
    cooldown = max(
        (deploys.agent_status(lab, h) or {}).get("guards", {}).get("cooldown", 0) for h in lab.group("app")
    )
    last = 0.0
    for h in lab.group("app"):
        for inc in (deploys.agent_status(lab, h) or {}).get("history") or []:
            last = max(last, inc.get("ended_at") or 0)
    delay = last + cooldown + 2 - time.time()
    if delay > 0:
        time.sleep(delay)


def new_incidents(report: incident.Report, host: str) -> list[dict[str, Any]]:
    return list(report.incidents.get(host, {}).values())
