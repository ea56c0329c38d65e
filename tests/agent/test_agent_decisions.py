"""The decision rules, in order, and every guard: answered at once, recorded, notified."""

from __future__ import annotations

import time

import pytest
from agent_support import basic_auth, payload

pytestmark = pytest.mark.agent

TRIGGER = "/api/admin/rollback/trigger"


def post(client, body):
    response = client.post(TRIGGER, json=body, headers=basic_auth())
    return response.status_code, response.get_json()


def test_accepted_rolls_back_to_the_last_healthy_release(agent_env) -> None:
    env = agent_env
    client = env.client()
    env.control_file("sleep-restart", "3")  # the rollback is still restarting when the answer comes
    status, body = post(client, payload())
    assert status == 202 and body["status"] == "accepted", body
    # The answer does not wait for the rollback: it runs in the background.
    from rollback_agent.state import RUNNING, Store

    assert Store(env.state_dir / "state.db").incident(body["incident_id"])["status"] == RUNNING
    assert body["incident_id"].startswith("INC-")
    assert body["plan"]["from_sha"] == env.shas["v3"] and body["plan"]["to_sha"] == env.shas["v2"]
    assert body["plan"]["to_revision"] == "b2000002"
    assert (
        body["alerts"][0]["decision"] == "accepted" and body["alerts"][0]["trigger"] == "error_rate_threshold"
    )
    incident = env.wait_incident(body["incident_id"])
    assert incident["status"] == "success", incident
    assert env.deployed_sha() == env.head_sha() == env.shas["v2"]
    assert env.db_revision() == "b2000002"
    # The release rolled back from is marked bad: deploy refuses it without --force.
    refused = env.deploy("v3")
    assert refused.result == "refused" and refused.exit_code == 3 and "--force" in (refused.error or "")
    assert env.deploy("v3", force=True).result == "deployed"


def test_resolved_alerts_are_recorded_and_ignored(agent_env) -> None:
    status, body = post(agent_env.client(), payload(status="resolved"))
    assert (status, body["status"]) == (200, "ignored")
    assert body["alerts"][0]["reason"] == "resolved alert: recorded, no action"
    assert "incident_id" not in body
    rows = agent_env.sql("SELECT status, alert_count FROM webhooks")
    assert rows == [("ignored", 1)]
    assert agent_env.restarts() == []


@pytest.mark.parametrize(
    ("alert", "labels", "overrides", "reason"),
    [
        ("HighErrorRate", {}, {}, "HighErrorRate is not a rollback trigger"),
        (
            "UserRegistrationDown",
            {},
            {
                "triggers": {
                    "UserRegistrationDown": {
                        "trigger": "business_metric_failure",
                        "reason": "r",
                        "auto_rollback": False,
                    }
                }
            },
            "trigger business_metric_failure has auto_rollback: false",
        ),
        ("CriticalErrorRate", {"service": "billing"}, {}, "label service='billing' does not match scope"),
        (
            "CriticalErrorRate",
            {"instance": "app2:8000"},
            {"scope": {"match_re": {"instance": "app1(:[0-9]+)?"}}},
            "does not match scope instance=~",
        ),
    ],
)
def test_out_of_mapping_or_scope_is_ignored(agent_env, alert, labels, overrides, reason) -> None:
    agent_env.write_config(**overrides)
    status, body = post(agent_env.client(), payload(alert, labels=labels))
    assert (status, body["status"]) == (200, "ignored"), body
    assert reason in body["reason"]
    assert agent_env.sql("SELECT count(*) FROM incidents") == [(0,)]


def test_scope_regex_matches_this_host(agent_env) -> None:
    agent_env.write_config(dry_run=True, scope={"match_re": {"instance": "app1(:[0-9]+)?"}})
    _status, body = post(agent_env.client(), payload(labels={"instance": "app1:8000"}))
    assert body["status"] == "dry_run", body


def test_same_alert_instance_is_handled_once(agent_env) -> None:
    env = agent_env
    env.write_config(dry_run=True)
    client = env.client()
    started = time.time()
    first = post(client, payload(starts_at=started))[1]
    assert first["status"] == "dry_run"
    for _ in range(3):  # Alertmanager's resends: same fingerprint, same startsAt
        again = post(client, payload(starts_at=started))[1]
        assert again["status"] == "duplicate"
        assert again["incident_id"] == first["incident_id"]
        assert "was decided already: dry_run" in again["reason"]
    # Another alert (fingerprint) is a new decision.
    other = post(client, payload("CriticalP95Latency", fingerprint="fp-latency"))[1]
    assert other["status"] == "dry_run" and other["incident_id"] != first["incident_id"]
    assert env.sql("SELECT count(*) FROM incidents") == [(2,)]


def test_several_alerts_in_one_webhook_make_one_incident(agent_env) -> None:
    env = agent_env
    env.write_config(dry_run=True)
    extra = payload("CriticalP95Latency", fingerprint="fp-latency")["alerts"]
    extra += payload("HighErrorRate", fingerprint="fp-high")["alerts"]
    _status, body = post(env.client(), payload(extra_alerts=extra))
    decisions = {a["alertname"]: a["decision"] for a in body["alerts"]}
    assert decisions == {
        "CriticalErrorRate": "dry_run",
        "CriticalP95Latency": "dry_run",
        "HighErrorRate": "ignored",
    }
    assert len({a.get("incident_id") for a in body["alerts"] if a["decision"] == "dry_run"}) == 1


def test_rollback_running_means_in_progress(agent_env) -> None:
    env = agent_env
    env.control_file("sleep-restart", "2")
    client = env.client()
    status, first = post(client, payload())
    assert status == 202
    time.sleep(0.3)
    status, second = post(client, payload("CriticalP95Latency", fingerprint="fp-latency"))
    assert (status, second["status"]) == (200, "in_progress"), second
    assert second["incident_id"] == first["incident_id"]
    assert "is running (phase" in second["reason"]
    assert env.wait_incident(first["incident_id"])["status"] == "success"
    assert env.restarts().count("restart app.service") == 1


def test_deploy_running_means_in_progress(agent_env) -> None:
    agent = agent_env.agent()
    with agent.lock().acquire("deploy", "v4"):
        _status, body = post(agent_env.client(), payload())
    assert body["status"] == "in_progress" and "deploy v4 is running" in body["reason"], body


def _guard_blocks(env, reason_part: str, guard: str, live: str = "v3") -> dict:
    status, body = post(env.client(), payload())
    assert (status, body["status"]) == (200, "blocked"), body
    assert body["reason"].startswith(f"blocked by {guard}:") and reason_part in body["reason"], body
    assert next(g["name"] for g in body["guards"] if not g["ok"]) == guard
    incident = env.agent().store.incident(body["incident_id"])
    assert incident["status"] == "blocked" and reason_part in incident["reason"]
    env.server.wait_for("blocked")
    text = env.server.texts()[-1]
    assert body["incident_id"] in text and reason_part in text
    assert env.restarts() == [] and env.deployed_sha() == env.shas[live]
    return body


def test_guard_rollback_window(agent_env) -> None:
    agent_env.sql("UPDATE deploys SET deployed_at = deployed_at - 3*3600")
    _guard_blocks(agent_env, "the deploy is probably not the cause", "rollback_window")


def test_guard_cooldown(agent_env) -> None:
    env = agent_env
    _status, body = post(env.client(), payload())
    assert env.wait_incident(body["incident_id"])["status"] == "success"
    # v3 is deployed again by hand minutes after the rollback and an alert fires: cooldown blocks it.
    assert env.deploy("v3", force=True).result == "deployed"
    env.clear_calls()
    _guard_blocks(env, "cooldown is 15m00s", "cooldown", live="v3")


def test_same_alert_after_a_forced_redeploy_is_a_new_incident(agent_env) -> None:
    """The bad release forced back on and breaking again (a new firing) rolls back again."""
    env = agent_env
    env.write_config(guards={"cooldown": "1s"})
    client = env.client()
    started = time.time()
    _status, body = post(client, payload(starts_at=started))
    assert env.wait_incident(body["incident_id"])["status"] == "success"
    assert env.deployed_sha() == env.shas["v2"]
    assert env.deploy("v3", force=True).result == "deployed"
    time.sleep(1.1)
    # The first firing resent: decided already, whatever was deployed since.
    assert post(client, payload(starts_at=started))[1]["status"] == "duplicate"
    status, again = post(client, payload())
    assert (status, again["status"]) == (202, "accepted"), again
    assert again["incident_id"] != body["incident_id"]
    assert env.wait_incident(again["incident_id"])["status"] == "success"
    assert env.deployed_sha() == env.shas["v2"]
    assert env.sql("SELECT count(*) FROM incidents WHERE status='success'") == [(2,)]


def test_guard_daily_cap(agent_env) -> None:
    env = agent_env
    env.write_config(guards={"cooldown": "1s", "max_rollbacks_per_day": 1})
    _status, body = post(env.client(), payload())
    assert env.wait_incident(body["incident_id"])["status"] == "success"
    assert env.deploy("v3", force=True).result == "deployed"
    env.clear_calls()
    time.sleep(1.1)
    _guard_blocks(env, "1 rollback(s) in the last 24h (cap 1)", "daily_cap", live="v3")


def test_guard_no_earlier_healthy_release(agent_env) -> None:
    env = agent_env
    env.sql("UPDATE deploys SET outcome='unhealthy' WHERE sha != ?", env.shas["v3"])
    _guard_blocks(env, "no earlier healthy release", "target_release")


def test_guard_no_deployment_at_all(fresh_env) -> None:
    _status, body = post(fresh_env.client(), payload())
    assert body["status"] == "blocked" and "refs/heads/deployed does not exist" in body["reason"], body


def test_dry_run_decides_and_notifies_but_executes_nothing(agent_env) -> None:
    env = agent_env
    env.write_config(dry_run=True)
    status, body = post(env.client(), payload())
    assert (status, body["status"]) == (200, "dry_run")
    assert body["plan"]["to_sha"] == env.shas["v2"]
    assert env.agent().store.incident(body["incident_id"])["status"] == "dry_run"
    text = env.server.wait_for("dry_run")
    assert "would roll back" in text
    assert env.restarts() == [] and env.deployed_sha() == env.shas["v3"] and env.db_revision() == "c3000003"
    assert env.agent().store.bad_release(env.shas["v3"]) is None


def test_blocked_alert_is_not_retried_when_resent(agent_env) -> None:
    env = agent_env
    env.sql("UPDATE deploys SET deployed_at = deployed_at - 3*3600")
    client = env.client()
    started = time.time()
    assert post(client, payload(starts_at=started))[1]["status"] == "blocked"
    assert post(client, payload(starts_at=started))[1]["status"] == "duplicate"
    time.sleep(0.5)
    assert env.server.kinds().count("blocked") == 1  # one notification, not one per resend
