"""More incidents on the lab: Alertmanager HA, the latency trigger, an alert that is no trigger.

Runs after test_rollback.py (file order); each test starts from v2 and waits out the agents'
cooldown of the previous rollback (lab: 30 s), so every incident is judged on its own.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from lab_kit import deploys, incident
from lab_kit.inventory import Host, Lab
from lab_kit.podman import exec_in as in_host
from testkit.lab import INCIDENT_TIMEOUT, ensure_good, new_incidents, wait_cooldown
from testkit.net import wait_for_url

pytestmark = pytest.mark.e2e


def alertmanager_unit(host: Host) -> str:
    units = in_host(
        host, "systemctl", "list-units", "--type=service", "--all", "--plain", "--no-legend"
    ).stdout
    names = [line.split()[0] for line in units.splitlines() if "alertmanager" in line]
    assert names, f"no Alertmanager unit on {host.name}"
    return names[0]


@pytest.fixture(scope="module")
def slow_with_mon1_alertmanager_down(lab: Lab, shas: dict[str, str]) -> incident.Report:
    ensure_good(lab, shas)
    wait_cooldown(lab)
    mon1 = lab.hosts["mon1"]
    unit = alertmanager_unit(mon1)
    in_host(mon1, "systemctl", "stop", unit)
    try:
        report = incident.run(lab, "v3-slow", timeout=INCIDENT_TIMEOUT, quiet_load=True)
        time.sleep(15)
    finally:
        in_host(mon1, "systemctl", "start", unit)
        wait_for_url(f"http://127.0.0.1:{mon1.port('alertmanager')}/-/ready")
    return report


def test_slow_release_fires_critical_p95_latency(slow_with_mon1_alertmanager_down: incident.Report) -> None:
    r = slow_with_mon1_alertmanager_down
    assert "CriticalP95Latency" in r.fired, r.fired
    assert "CriticalErrorRate" not in r.fired and "TransactionProcessingFailure" not in r.fired
    assert r.success, r.reason


def test_one_alertmanager_down_neither_stops_nor_duplicates_the_rollback(
    lab: Lab, slow_with_mon1_alertmanager_down: incident.Report
) -> None:
    r = slow_with_mon1_alertmanager_down
    assert "alertmanager_mon2" in r.marks and "alertmanager_mon1" not in r.marks, r.marks
    for host in ("app1", "app2"):
        executed = [i for i in new_incidents(r, host) if i["status"] not in ("blocked", "dry_run")]
        assert len(executed) == 1 and executed[0]["result"] == "success", executed
        assert executed[0]["alert_name"] == "CriticalP95Latency"
        st = deploys.agent_status(lab, lab.hosts[host]) or {}
        assert st["deployment"]["sha"] == r.good_sha


def test_the_destructive_downgrade_is_counted_and_backed_up_first(
    lab: Lab, slow_with_mon1_alertmanager_down: incident.Report
) -> None:
    """v3-slow's migration adds transactions.fee and fee_schedule: the downgrade drops rows (issue 17)."""
    r = slow_with_mon1_alertmanager_down
    (inc,) = [i for i in new_incidents(r, "app1") if i["status"] not in ("blocked", "dry_run")]
    downgrade = inc["detail"]["downgrade"]  # app1 runs the migrations (app2 shares its database)
    assert (downgrade["from_revision"], downgrade["to_revision"]) == ("0003", "0002")
    assert downgrade["classification"] == "destructive" and downgrade["action"] == "backup", downgrade
    rows = {(d["table"], d["column"]): d["rows"] for d in downgrade["dropped"]}
    assert rows[("fee_schedule", None)] == 2, rows  # the fee tiers its migration inserted
    assert rows[("transactions", "fee")] > 0, rows  # every transaction carries a fee column
    backup = downgrade["backup"]
    listed = in_host(lab.hosts["app1"], "sha256sum", backup["path"]).stdout.split()
    assert listed[0] == backup["sha256"] and "/backups/" in backup["path"], (listed, backup)
    lines = incident.downgrade_lines(downgrade)
    assert any("drops table fee_schedule (2 rows)" in line for line in lines), lines
    assert not [i for i in new_incidents(r, "app2") if (i.get("detail") or {}).get("downgrade")]


def _post_alert(lab: Lab, labels: dict[str, str], starts: datetime, ends: datetime) -> None:
    now = starts
    body = json.dumps(
        [
            {
                "labels": labels,
                "annotations": {
                    "summary": "e2e: a critical alert that is no rollback trigger",
                    "runbook_url": "https://example.invalid/runbook",
                },
                "startsAt": now.isoformat(),
                "endsAt": ends.isoformat(),
                "generatorURL": "http://e2e.invalid/",
            }
        ]
    ).encode()
    for mon in lab.group("monitoring"):  # like Prometheus: to every Alertmanager
        req = urllib.request.Request(
            f"http://127.0.0.1:{mon.port('alertmanager')}/api/v2/alerts",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200


def _counts(lab: Lab, host: Host) -> dict[str, float]:
    return incident.webhook_counts(
        incident.get_text(f"http://127.0.0.1:{host.port('rollback-agent')}/metrics")
    )


def test_a_firing_non_trigger_alert_rolls_nothing_back(lab: Lab, shas: dict[str, str]) -> None:
    ensure_good(lab, shas)
    apps = lab.group("app")
    before: dict[str, Any] = {h.name: (deploys.agent_status(lab, h), _counts(lab, h)) for h in apps}
    labels = {
        "alertname": "LabNotATrigger",
        "severity": "critical",
        "rollback": "true",
        "service": "mita-api",
        "component": "api",
        "instance": f"e2e-{uuid.uuid4().hex[:8]}",  # a new alert group every run
    }
    starts = datetime.now(timezone.utc)
    _post_alert(lab, labels, starts, starts + timedelta(minutes=5))
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if all(_counts(lab, h).get("ignored", 0) > before[h.name][1].get("ignored", 0) for h in apps):
                break
            time.sleep(1)
        else:
            pytest.fail(f"the agents never answered the webhook: {[_counts(lab, h) for h in apps]}")
    finally:
        _post_alert(lab, labels, starts, max(datetime.now(timezone.utc), starts + timedelta(seconds=1)))
    for host in apps:
        st = deploys.agent_status(lab, host) or {}
        old_ids = {i["incident_id"] for i in before[host.name][0]["history"]}
        assert {i["incident_id"] for i in st["history"]} <= old_ids, "a new incident appeared"
        assert st["deployment"]["sha"] == shas["v2"]
        assert st["in_progress"] is None
        assert _counts(lab, host).get("accepted", 0) == before[host.name][1].get("accepted", 0)
