"""site.yml across the lab's hosts: Prometheus scrapes every other host, a second run changes nothing.

The molecule scenarios prove each role alone; this is the multi-host proof on the lab that
`scripts/lab up` converged (mon1, mon2 monitoring; app1 app + database + cache; app2 app).
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest
from lab_kit.inventory import Lab
from lab_kit.runner import playbook

pytestmark = pytest.mark.e2e

# job name in the generated scrape configs -> (inventory group whose hosts it scrapes, port)
EXPORTER_JOBS = {
    "node": ("all", 9100),
    "postgres": ("database", 9187),
    "redis": ("cache", 9121),
    "rollback-agent": ("app", 9095),
    "alertmanager": ("monitoring", 9093),
    "prometheus": ("monitoring", 9090),
    "blackbox_exporter": ("monitoring", 9115),
}


def expected_targets(lab: Lab) -> set[tuple[str, str]]:
    want = set()
    for job, (group, port) in EXPORTER_JOBS.items():
        hosts = lab.hosts.values() if group == "all" else lab.group(group)
        want |= {(job, f"{h.name}:{port}") for h in hosts}
    # blackbox probes of every app host's health URL (SPEC: HTTP probes of each app)
    want |= {("blackbox", f"http://{h.address}:8000/health") for h in lab.group("app")}
    return want


def active_targets(port: int) -> dict[tuple[str, str], tuple[str, str]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets?state=active", timeout=10) as r:
        data = json.load(r)["data"]["activeTargets"]
    return {(t["labels"]["job"], t["labels"]["instance"]): (t["health"], t["lastError"]) for t in data}


@pytest.mark.parametrize("mon", ["mon1", "mon2"])
def test_prometheus_scrapes_every_exporter_and_agent_on_the_other_hosts(lab: Lab, mon: str) -> None:
    want = expected_targets(lab)
    deadline = time.monotonic() + 90  # a target's first scrape comes within one interval (15 s)
    while True:
        have = active_targets(lab.hosts[mon].port("prometheus"))
        missing = want - set(have)
        down = {k: v for k, v in have.items() if k in want and v[0] != "up"}
        if (not missing and not down) or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert not missing, f"{mon}: Prometheus has no target for {sorted(missing)}"
    assert not down, f"{mon}: targets not up: {down}"


def changed_tasks(log: Path) -> list[str]:
    """'TASK [role : name] host' for every changed result in an ansible-playbook log."""
    task, out = "", []
    for line in log.read_text().splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed: ["):
            out.append(f"{task} -> {line[len('changed: '):]}")
    return out


def test_a_second_site_yml_run_changes_nothing(lab: Lab) -> None:
    again = playbook("site.yml", quiet=True, label="e2e-site-idempotence")
    assert again.rc == 0, f"site.yml failed on an unchanged lab; log: {again.log}"
    print(f"\nsite.yml no-change run: {again.seconds:.0f}s, {again.tasks} tasks, {again.changed} changed")
    assert again.changed == 0, "site.yml is not idempotent, changed:\n" + "\n".join(changed_tasks(again.log))


def test_check_mode_on_the_converged_lab_reports_no_change(lab: Lab) -> None:
    """`site.yml --check --diff` (an operator's preview) runs clean and would change nothing."""
    check = playbook("site.yml", "--check", "--diff", quiet=True, label="e2e-site-check")
    assert check.rc == 0, f"site.yml --check failed on the converged lab; log: {check.log}"
    print(f"\nsite.yml --check --diff: {check.seconds:.0f}s, {check.tasks} tasks, {check.changed} changed")
    assert check.changed == 0, "site.yml --check reports changes on a converged lab:\n" + "\n".join(
        changed_tasks(check.log)
    )
