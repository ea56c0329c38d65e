"""Benchmark (make bench): a no-change site.yml on the running lab, with its task counts.

The figure the production guide quotes: wall time of site.yml on the 4-host lab when nothing has
to change, beside the number of tasks it ran (distinct tasks in the log, and host-tasks: ok +
failed summed over the hosts) and what it changed. Target: 40 s or less on the 2-core machine.
"""

from __future__ import annotations

import re

import pytest
from lab_kit.inventory import Lab
from lab_kit.runner import playbook

pytestmark = pytest.mark.bench

TARGET_SECONDS = 40


def distinct_tasks(log_text: str) -> int:
    """TASK and RUNNING HANDLER headers of an ansible-playbook log (includes and skips count once)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", log_text)
    return len(re.findall(r"^(?:TASK|RUNNING HANDLER) \[", text, flags=re.MULTILINE))


def test_bench_site_yml_no_change(lab: Lab) -> None:
    playbook("site.yml", quiet=True, label="bench-site-settle")  # whatever a deploy left to do
    again = playbook("site.yml", quiet=True, label="bench-site-no-change")
    assert again.rc == 0, f"site.yml failed on the lab: {again.log}"
    assert again.log is not None
    tasks = distinct_tasks(again.log.read_text())
    print(
        f"\nsite.yml no-change run on {len(lab.hosts)} hosts: {again.seconds:6.1f} s   "
        f"tasks {tasks}, host-tasks {again.tasks}, changed {again.changed}   "
        f"(target <= {TARGET_SECONDS} s, changed 0)"
    )
    assert again.changed == 0, f"a second site.yml run changed {again.changed} task(s): {again.log}"
