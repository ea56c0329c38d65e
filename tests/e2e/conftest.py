"""The lab as a pytest fixture: booted once per session with `scripts/lab up` (idempotent).

The whole session holds the heavy-suite lock (lab_kit.lock: /tmp/heavy-suite.lock unless
HEAVY_SUITE_LOCK names another) unless the caller already does (HEAVY_SUITE_LOCK_HELD=1). A lab
that was up before the session stays up afterwards; one the session created is removed at the
end unless LAB_KEEP=1. LAB_REUSE=1 takes a running lab as it is, without `scripts/lab up`
(faster when iterating on the tests).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator

import pytest
from lab_kit import deploys, inventory, podman
from lab_kit.lock import heavy_lock
from testkit.lab import lab_cmd

# No module needs to run last: every scenario returns only once Prometheus shows the alerts it
# caused resolved (not_the_cause.py: Redis' alerts; canary_fails.py: v3's), so the next one starts
# clean whatever the order.


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
