"""The alert pipeline tester (playbooks/pipeline-tester.yml) against the lab's real stack.

Both Alertmanagers, both rollback agents (basic auth with the lab's webhook secret), Slack,
email and PagerDuty (the lab's capture server standing in, reached through the same code paths
as the real services) and a test alert routed by the real cluster: every check must PASS, and
the capture server must hold what the tester says it sent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lab_kit import services
from lab_kit.inventory import Lab
from lab_kit.runner import playbook

pytestmark = pytest.mark.e2e


def last_id(lab: Lab) -> int:
    return max((m["id"] for m in services.messages(lab)), default=0)


def test_every_check_of_the_pipeline_tester_passes_on_the_lab(lab: Lab, tmp_path: Path) -> None:
    before = last_id(lab)
    results = tmp_path / "pipeline.json"
    res = playbook("pipeline-tester.yml", "-e", f"pipeline_tester_results_file={results}",
                   quiet=True, label="e2e-pipeline-tester")
    assert res.rc == 0, f"pipeline-tester.yml failed (rc {res.rc}):\n{res.log.read_text()[-4000:]}"
    report = json.loads(results.read_text())
    checks = {c["name"]: c for c in report["checks"]}
    expected = (
        {f"alertmanager[{h.address}:9093]" for h in lab.group("monitoring")}
        | {f"agent[{h.address}:9095]" for h in lab.group("app")}
        | {"slack", "email", "pagerduty:critical", "pagerduty:error", "test-alert"}
    )
    missing = expected - set(checks)
    assert not missing, f"checks not run: {sorted(missing)} (ran {sorted(checks)})"
    not_passed = {n: (c["status"], c["detail"]) for n, c in checks.items() if c["status"] != "PASS"}
    assert not not_passed, f"checks that did not pass: {not_passed}"

    got = services.messages(lab, after=before)
    kinds = {m["kind"] for m in got}
    assert {"slack", "email", "pagerduty"} <= kinds, f"the capture server got only {sorted(kinds)}"
    # Real alerts of the lab may reach PagerDuty meanwhile: look at this run's dedup keys only.
    pagerduty = [m["raw"] for m in got if m["kind"] == "pagerduty"]
    events = {(e.get("dedup_key"), e.get("event_action")) for e in pagerduty}
    for tier in ("critical", "error"):
        key = f"pipeline-tester-{report['run_id']}-{tier}"
        assert {(key, "trigger"), (key, "resolve")} <= events, f"no trigger and resolve of {key}"
