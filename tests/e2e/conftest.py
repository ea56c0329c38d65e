"""The lab as a pytest fixture: booted once per session with `scripts/lab up` (idempotent).

The whole session holds /tmp/heavy-suite.lock (the team's lock for podman work) unless the
caller already does (HEAVY_SUITE_LOCK_HELD=1). A lab that was up before the session stays up
afterwards; one the session created is removed at the end unless LAB_KEEP=1. LAB_REUSE=1
takes a running lab as it is, without `scripts/lab up` (faster when iterating on the tests).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from lab_kit import deploys, inventory, podman  # noqa: E402
from lab_kit.runner import heavy_lock  # noqa: E402


def lab_cmd(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HEAVY_SUITE_LOCK_HELD": "1"}
    return subprocess.run(
        [str(ROOT / "scripts" / "lab"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def heavy() -> Iterator[None]:
    with heavy_lock():
        yield


@pytest.fixture(scope="session")
def lab(heavy: None) -> Iterator[inventory.Lab]:
    lab = inventory.load()
    was_up = all(podman.container_state(h) == "running" for h in lab.hosts.values())
    start = time.monotonic()
    if was_up and os.environ.get("LAB_REUSE") == "1":
        yield lab  # a developer's running lab, taken as it is (no converge)
        return
    proc = lab_cmd("up", "--quiet")
    if proc.returncode != 0:
        pytest.fail(
            f"scripts/lab up failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
        )
    print(f"\nlab up in {time.monotonic() - start:.0f}s (was up before: {was_up})")
    yield lab
    if not was_up and os.environ.get("LAB_KEEP") != "1":
        with contextlib.suppress(subprocess.SubprocessError):
            lab_cmd("down")


@pytest.fixture(scope="session")
def shas(lab: inventory.Lab) -> dict[str, str]:
    return deploys.host_release_shas(lab)


def in_host(host: inventory.Host, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return podman.exec_in(host, *cmd, check=check)


@pytest.fixture(scope="session")
def agent_status(lab: inventory.Lab):
    def get(name: str) -> dict:
        st = deploys.agent_status(lab, lab.hosts[name])
        assert st is not None, f"the rollback agent on {name} does not answer"
        return st

    return get
