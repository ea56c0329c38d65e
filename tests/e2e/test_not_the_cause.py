"""A rollback that does not help: the release is not the cause (make lab-break SCENARIO=not-the-cause).

The healthy release v2.1 goes live, then Redis stops on the cache host: RedisConnectionFailure fires,
each agent rolls v2.1 back to v2 once, the alert keeps firing, and at the end of the verify window
(lab: 3m) the agent says `not_confirmed`, escalates (Slack @here, PagerDuty) and rolls back nothing
more. Redis is started again by the scenario itself.
"""

from __future__ import annotations

import pytest
from lab_kit import deploys, incident, not_the_cause
from lab_kit.inventory import Lab
from lab_kit.podman import exec_in
from testkit.lab import ensure_good, new_incidents, wait_cooldown
from testkit.net import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def redis_stopped(lab: Lab, shas: dict[str, str]) -> incident.Report:
    ensure_good(lab, shas)
    wait_cooldown(lab)
    return not_the_cause.run(lab, timeout=660, quiet_load=True)


def test_the_agents_roll_back_once_and_escalate(lab: Lab, redis_stopped: incident.Report) -> None:
    r = redis_stopped
    assert r.success, r.reason
    assert not_the_cause.ALERT in r.fired, r.fired
    assert "cause" in r.marks and r.marks["deploy_done"] < r.marks["cause"], r.marks
    found = r.escalations
    for host in ("app1", "app2"):
        done = [i for i in new_incidents(r, host) if i["status"] not in not_the_cause.EXECUTED_NOT]
        assert len(done) == 1, done  # no second rollback: v2 came back by a rollback
        inc = done[0]
        assert inc["alert_name"] == not_the_cause.ALERT and inc["result"] == "success"
        assert (inc["from_sha"], inc["to_sha"]) == (r.bad_sha, r.good_sha)
        ver = inc["verification"]
        assert ver["state"] == "not_confirmed", ver
        firing = [a for a in ver["alerts"] if a["alertname"] == not_the_cause.ALERT]
        assert firing and all(a.get("resolved_at") is None for a in firing), ver
        for kind in ("slack", "pagerduty"):  # Slack with @here, and a PagerDuty trigger
            assert any(line.startswith(kind) and inc["incident_id"] in line for line in found), (kind, found)
        st = deploys.agent_status(lab, lab.hosts[host]) or {}
        assert st["deployment"]["sha"] == r.good_sha and st["in_progress"] is None


def test_redis_runs_again_afterwards(lab: Lab, redis_stopped: incident.Report) -> None:
    cache = lab.group("cache")[0]
    state = exec_in(cache, "systemctl", "is-active", not_the_cause.REDIS_UNIT, check=False).stdout.strip()
    assert state == "active"
    for host in lab.group("app"):  # the service is healthy again (not only "degraded"), Redis included
        url = f"http://127.0.0.1:{host.port('sample-app')}/health"
        wait_for(lambda url=url: incident.get_json(url).get("status") == "healthy", 60, f"{url} healthy")
