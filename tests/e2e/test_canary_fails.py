"""The canary's rollback fails: the next wave aborts, unchanged (make lab-break SCENARIO=canary-fails).

The lab's agents roll back in waves (app1 wave 0, app2 wave 1). v3 goes live, a ref lock file is
left in app1's repository, CriticalErrorRate fires: app1's rollback fails in its preflight, app2
stops waiting with `aborted` and touches nothing. The scenario then cleans up like an operator
(lock removed, stuck incidents resolved, v2 deployed again, the alerts resolved).
"""

from __future__ import annotations

import pytest
from lab_kit import alerts, canary_fails, deploys, incident, services
from lab_kit.inventory import Lab
from lab_kit.podman import exec_in
from testkit.lab import INCIDENT_TIMEOUT, ensure_good, wait_cooldown

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def canary_failed(lab: Lab, shas: dict[str, str]) -> incident.Report:
    ensure_good(lab, shas)
    wait_cooldown(lab)
    return canary_fails.run(lab, timeout=INCIDENT_TIMEOUT, quiet_load=True)


def test_the_canary_fails_and_app2_aborts_untouched(canary_failed: incident.Report) -> None:
    r = canary_failed
    assert r.success, r.reason
    assert canary_fails.ALERT in r.fired, r.fired
    assert r.waves == {"app1": 0, "app2": 1}, r.waves
    (app1,) = canary_fails.results(r, "app1")
    app2, *later = canary_fails.results(r, "app2")
    # a later trigger of v3 (TransactionProcessingFailure) may start another wait: it stops too
    for inc in later:
        assert inc["result"] == "aborted" and inc["error"].startswith("canary app1 "), inc
        assert [p["name"] for p in inc["phases"]] == ["waiting_for_wave"], inc["phases"]
    assert (app1["result"], app1["failed_step"]) == ("failed", "initiated"), app1
    assert "deployed.lock" in app1["error"] and "nothing was changed" in app1["error"], app1["error"]
    assert (app2["result"], app2["failed_step"]) == ("aborted", "waiting_for_wave"), app2
    assert app2["error"].startswith("canary app1 failed at initiated: preflight: git lock file"), app2
    assert "nothing was changed" in app2["error"], app2["error"]
    assert [p["name"] for p in app2["phases"]] == ["waiting_for_wave"], app2["phases"]
    assert app2["detail"]["fleet"]["outcome"] == "aborted", app2["detail"]["fleet"]
    assert app2["detail"]["fleet"]["peers"]["app1"]["state"] == "stopped"
    assert app2["ended_at"] >= app1["ended_at"]  # it stopped on app1's failure, not before
    # app2 before the cleanup: v3 still in place (ref and working tree), the unit not restarted,
    # and the shared schema still at v3's revision
    seen = r.checks["app2"]
    assert seen["ref"] == seen["head"] == r.bad_sha, seen
    assert seen["unit_started_at"] < app2["started_at"], seen
    assert r.checks["schema"] == "0003", r.checks
    lines = incident.wave_lines(r)
    assert lines[0].startswith("app1 (wave 0)") and "-> failed" in lines[0], lines
    assert lines[1].startswith("app2 (wave 1): waiting_for_wave") and "-> aborted" in lines[1], lines


def test_slack_says_app2_aborted_because_of_the_canary(lab: Lab, canary_failed: incident.Report) -> None:
    app2 = canary_fails.results(canary_failed, "app2")[0]
    msgs = [m for m in services.messages(lab, "slack") if m["time"] >= canary_failed.started_at]
    mine = [m for m in msgs if app2["incident_id"] in str(m["raw"].get("text", ""))]
    assert any("canary app1 failed" in m.get("text", "") for m in mine), [m.get("text") for m in mine]


def test_the_lab_is_good_again_afterwards(lab: Lab, canary_failed: incident.Report) -> None:
    app1 = lab.hosts["app1"]
    assert exec_in(app1, "test", "-e", canary_fails.LOCK_FILE, check=False).returncode == 1
    for host in lab.group("app"):
        st = deploys.agent_status(lab, host) or {}
        assert st["deployment"]["sha"] == canary_failed.good_sha, host.name
        assert st["in_progress"] is None and not st.get("stuck"), st.get("stuck")
    left = [a for a in alerts.active(lab) if a["labels"].get("rollback") == "true"]
    assert not left, [alerts.describe(a) for a in left]
