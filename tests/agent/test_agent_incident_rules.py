"""One incident per bad release, exactly once per alert instance, the right target, a closed loop.

Each defect of issue 11 first, then each rule, through the HTTP API with Alertmanager payloads,
against real git and alembic. Time moves with an injected clock (``Clock``) and the timer's
``tick(now)``: nothing sleeps for minutes.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from agent_support import PAGERDUTY_KEY, AgentEnv, Clock, basic_auth, payload

pytestmark = pytest.mark.agent

TRIGGER = "/api/admin/rollback/trigger"
STATUS = "/api/admin/rollback/status"


def post(client: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = client.post(TRIGGER, json=body, headers=basic_auth())
    return response.status_code, response.get_json()


def backdate(env: AgentEnv, seconds: float) -> None:
    """The ledger as if every deploy had happened ``seconds`` earlier (v3 live for a while)."""
    env.sql("UPDATE deploys SET started_at = started_at - ?, deployed_at = deployed_at - ?", seconds, seconds)


def roll_back(env: AgentEnv, client: Any, **alert: Any) -> dict[str, Any]:
    status, body = post(client, payload(**alert))
    assert (status, body["status"]) == (202, "accepted"), body
    incident = env.wait_incident(body["incident_id"])
    assert incident["status"] == "success", incident
    wait_for_the_lock(env)
    return body


def wait_for_the_lock(env: AgentEnv) -> None:
    """The rollback process records its result, then lets the operation lock go."""
    from rollback_agent.locking import is_held

    deadline = time.monotonic() + 10
    while is_held(env.state_dir / "rollback.lock"):
        assert time.monotonic() < deadline, "the rollback process kept the lock"
        time.sleep(0.02)


def ticker(env: AgentEnv, clock: Clock) -> Any:
    from rollback_agent.ticker import Ticker

    return Ticker(env.agent(clock))


def history(client: Any) -> list[dict[str, Any]]:
    return client.get(STATUS + "?limit=50", headers=basic_auth()).get_json()["history"]


# --- the defects ---------------------------------------------------------------------------------------
def test_defect_1_a_resend_20_minutes_after_the_rollback_is_a_duplicate(agent_env: AgentEnv) -> None:
    """Deploy v1, v2, v3; A rolls v3 back to v2; 20 minutes later A is re-sent: nothing happens."""
    env = agent_env
    backdate(env, 600)
    clock = Clock()
    client = env.client(clock)
    started = time.time() - 120
    first = roll_back(env, client, starts_at=started)
    assert env.deployed_sha() == env.shas["v2"]
    env.clear_calls()
    clock.advance(20 * 60)  # past the cooldown: the old key (sha@deploy) no longer protected
    for agent in (client, env.client(clock)):  # the same worker, and a restarted one
        status, again = post(agent, payload(starts_at=started))
        assert (status, again["status"]) == (200, "duplicate"), again
        assert again["incident_id"] == first["incident_id"]
    assert env.restarts() == [] and env.deployed_sha() == env.shas["v2"]
    assert env.agent().store.bad_release(env.shas["v2"]) is None  # the good v2 is not marked bad
    assert env.sql("SELECT count(*) FROM incidents") == [(1,)]


def test_defect_2_an_alert_after_a_manual_deploy_of_v2_goes_back_to_v1(agent_env: AgentEnv) -> None:
    """Deploy v1, v2, v3, then `deploy v2` by hand: the target is v1, never v3 (a roll forward)."""
    env = agent_env
    assert env.deploy("v2").result == "deployed"
    assert env.db_revision() == "b2000002"
    body = roll_back(env, env.client())
    assert body["plan"]["from_sha"] == env.shas["v2"] and body["plan"]["to_sha"] == env.shas["v1"], body
    target = next(g for g in body["guards"] if g["name"] == "target_release")
    assert f"{env.shas['v3'][:10]} is newer than {env.shas['v2'][:10]}" in target["detail"]
    assert env.deployed_sha() == env.shas["v1"] and env.db_revision() == "a1000001"
    assert env.agent().store.bad_release(env.shas["v3"]) is None


def test_defect_3_a_second_trigger_that_started_before_the_rollback_is_attached(agent_env: AgentEnv) -> None:
    """CriticalErrorRate of another instance, started while v3 was live, arrives after the rollback."""
    env = agent_env
    backdate(env, 600)
    client = env.client()
    first = roll_back(env, client, starts_at=time.time() - 120)
    env.server.wait_for("success")
    status, second = post(client, payload(fingerprint="fp-error-rate-2", starts_at=time.time() - 60))
    assert (status, second["status"]) == (200, "attached"), second
    assert second["incident_id"] == first["incident_id"]
    assert "not evidence against it" in second["reason"]
    time.sleep(0.5)
    assert "blocked" not in env.server.kinds()
    assert env.sql("SELECT count(*) FROM incidents") == [(1,)]
    item = next(i for i in history(client) if i["incident_id"] == first["incident_id"])
    assert [a["fingerprint"] for a in item["attached"]] == ["fp-error-rate-2"]


# --- the rules -----------------------------------------------------------------------------------------
def test_an_alert_older_than_every_incident_is_ignored_once(agent_env: AgentEnv) -> None:
    env = agent_env
    backdate(env, 3600)
    client = env.client()
    started = time.time() - 7200  # before v3 (and v2, v1) went live: no incident concerns it
    status, body = post(client, payload(starts_at=started))
    assert (status, body["status"]) == (200, "ignored"), body
    assert (
        "before the live release started going live" in body["reason"] and "no incident of" in body["reason"]
    )
    assert post(client, payload(starts_at=started))[1]["status"] == "duplicate"
    assert env.sql("SELECT count(*) FROM incidents") == [(0,)] and env.restarts() == []


def test_clock_skew_counts_a_slightly_earlier_start_against_the_release(agent_env: AgentEnv) -> None:
    env = agent_env
    # v3's deploy began at started_at: alerts that start from then on count against it.
    deployed_at = env.sql("SELECT started_at FROM deploys ORDER BY id DESC LIMIT 1")[0][0]
    env.write_config(dry_run=True)
    _status, body = post(env.client(), payload(starts_at=deployed_at - 20))  # within 30s
    assert body["status"] == "dry_run", body
    env.write_config(guards={"clock_skew": "10s"})
    _status, body = post(env.client(), payload(fingerprint="fp-2", starts_at=deployed_at - 20))
    assert body["status"] == "ignored" and "guards.clock_skew 10s" in body["reason"], body


def test_loop_breaker_a_release_put_in_place_by_a_rollback_is_never_rolled_back(agent_env: AgentEnv) -> None:
    env = agent_env
    clock = Clock()
    client = env.client(clock)
    first = roll_back(env, client)
    # While the rollback verifies, a new firing joins it.
    status, during = post(client, payload(fingerprint="fp-later"))
    assert (status, during["status"]) == (200, "attached") and during["incident_id"] == first["incident_id"]
    clock.advance(11 * 60)  # the verification ended (not confirmed)
    ticker(env, clock).tick()
    env.clear_calls()
    status, after = post(client, payload(fingerprint="fp-much-later", starts_at=clock()))
    assert (status, after["status"]) == (200, "blocked"), after
    assert (
        after["reason"].startswith("blocked by arrived_by_deploy:") and "a person decides" in after["reason"]
    )
    assert env.restarts() == [] and env.deployed_sha() == env.shas["v2"]


def test_target_skips_bad_releases(agent_env: AgentEnv) -> None:
    env = agent_env
    env.write_config(dry_run=True)
    env.sql("INSERT INTO bad_releases (sha, marked_at, reason) VALUES (?, 0, 'test')", env.shas["v2"])
    _status, body = post(env.client(), payload())
    assert body["plan"]["to_sha"] == env.shas["v1"], body
    assert f"{env.shas['v2'][:10]} is marked bad" in next(
        g["detail"] for g in body["guards"] if g["name"] == "target_release"
    )


def test_no_earlier_good_release_blocks(fresh_env: AgentEnv) -> None:
    assert fresh_env.deploy("v1").result == "deployed"  # only v1 ever deployed: nothing to go back to
    _status, body = post(fresh_env.client(), payload())
    assert body["status"] == "blocked" and "no earlier good release" in body["reason"], body


def test_medium_confidence_waits_then_the_timer_acts(agent_env: AgentEnv) -> None:
    env = agent_env
    clock = Clock()
    client = env.client(clock)
    started = time.time()
    alert = {"alertname": "UserRegistrationDown", "fingerprint": "fp-signups", "starts_at": started}
    status, body = post(client, payload(**alert))
    assert (status, body["status"]) == (200, "waiting"), body
    assert "confidence medium: waiting for corroboration" in body["reason"]
    assert post(client, payload(**alert))[1]["status"] == "waiting"  # a resend still waits
    waiting = client.get(STATUS, headers=basic_auth()).get_json()["waiting"]
    assert [w["fingerprint"] for w in waiting] == ["fp-signups"]
    tick = ticker(env, clock)
    assert tick.tick()["corroboration"] == []  # not due yet
    clock.advance(301)
    decided = tick.tick()["corroboration"]
    assert [d["decision"] for d in decided] == ["accepted"], decided
    assert "still firing" in decided[0]["reason"]
    assert env.wait_incident(decided[0]["incident_id"])["status"] == "success"
    assert post(client, payload(**alert))[1]["status"] == "duplicate"


def test_medium_confidence_cancelled_by_resolve(agent_env: AgentEnv) -> None:
    env = agent_env
    clock = Clock()
    client = env.client(clock)
    alert = {"alertname": "UserRegistrationDown", "fingerprint": "fp-signups", "starts_at": time.time()}
    assert post(client, payload(**alert))[1]["status"] == "waiting"
    _status, body = post(client, payload(status="resolved", **alert))
    assert body["alerts"][0]["reason"] == "resolved alert: the waiting decision is cancelled"
    clock.advance(600)
    assert ticker(env, clock).tick()["corroboration"] == []
    assert env.sql("SELECT count(*) FROM incidents") == [(0,)] and env.restarts() == []


def test_medium_confidence_corroborated_by_another_trigger_or_the_health_check(agent_env: AgentEnv) -> None:
    env = agent_env
    env.write_config(dry_run=True)
    client = env.client()
    assert post(client, payload("UserRegistrationDown", fingerprint="fp-signups"))[1]["status"] == "waiting"
    _status, body = post(client, payload("MitaSystemUnhealthy", fingerprint="fp-health"))
    assert (
        body["status"] == "dry_run"
        and "corroborated: MitaSystemUnhealthy, UserRegistrationDown" in body["reason"]
    ), body
    incident = env.agent().store.instances_of(body["incident_id"])
    assert sorted(i.fingerprint for i in incident) == ["fp-health", "fp-signups"]
    env.server.health_status = 503
    _status, body = post(client, payload("UserRegistrationDown", fingerprint="fp-signups-2"))
    assert body["status"] == "dry_run" and "the health check fails" in body["reason"], body


def test_freeze_blocks_every_trigger_until_unfrozen(agent_env: AgentEnv, capsys) -> None:
    from rollback_agent.cli import main

    env = agent_env
    config = ["--config", str(env.config_path)]
    assert main([*config, "freeze", "--for", "2h", "--reason", "db upgrade"]) == 0
    assert "frozen until" in capsys.readouterr().out
    assert main([*config, "status"]) == 0
    assert "FROZEN:" in capsys.readouterr().out and "db upgrade" in env.sql("SELECT value FROM meta")[-1][0]
    client = env.client()
    _status, body = post(client, payload())
    assert body["status"] == "blocked" and body["reason"].startswith("blocked by freeze: frozen until"), body
    assert body["reason"].endswith(": db upgrade")
    assert client.get(STATUS, headers=basic_auth()).get_json()["freeze"]["reason"] == "db upgrade"
    assert main([*config, "unfreeze"]) == 0
    assert post(client, payload(fingerprint="fp-2"))[1]["status"] == "accepted"
    assert main([*config, "freeze", "--for", "soon", "--reason", "x"]) == 2


def test_freeze_endpoint_for_the_playbook(agent_env: AgentEnv) -> None:
    env = agent_env
    client = env.client()
    url = "/api/admin/rollback/freeze"
    assert client.post(url, json={"for": "1h", "reason": "x"}).status_code == 401
    bad = client.post(url, json={"for": "forever", "reason": "x"}, headers=basic_auth())
    assert bad.status_code == 400 and "invalid duration" in bad.get_json()["detail"]
    assert client.post(url, json={"for": "1h"}, headers=basic_auth()).status_code == 400
    done = client.post(url, json={"for": "1h", "reason": "planned"}, headers=basic_auth())
    assert done.status_code == 200 and done.get_json()["freeze"]["reason"] == "planned"
    assert post(client, payload())[1]["reason"].startswith("blocked by freeze")
    gone = client.delete(url, headers=basic_auth()).get_json()
    assert gone == {"freeze": None, "was_frozen": True}
    assert client.get(STATUS, headers=basic_auth()).get_json()["freeze"] is None


# --- the closed loop -------------------------------------------------------------------------------------
def test_verification_confirmed_when_every_alert_resolves(agent_env: AgentEnv) -> None:
    from rollback_agent import metrics

    env = agent_env
    backdate(env, 600)
    client = env.client()
    first_start, second_start = time.time() - 120, time.time() - 60
    first = roll_back(env, client, starts_at=first_start)
    assert post(client, payload(fingerprint="fp-2", starts_at=second_start))[1]["status"] == "attached"
    item = next(i for i in history(client) if i["incident_id"] == first["incident_id"])
    assert item["verification"]["state"] == "pending"
    assert item["verification"]["deadline"] == pytest.approx(item["ended_at"] + 600)
    before = metrics.VERIFICATIONS.labels(state="confirmed")._value.get()
    post(client, payload(status="resolved", starts_at=first_start))
    assert (
        next(i for i in history(client) if i["incident_id"] == first["incident_id"])["verification"]["state"]
        == "pending"
    )  # the attached alert still fires
    post(client, payload(status="resolved", fingerprint="fp-2", starts_at=second_start))
    item = next(i for i in history(client) if i["incident_id"] == first["incident_id"])
    assert item["verification"]["state"] == "confirmed", item
    assert all(a["resolved_at"] for a in item["verification"]["alerts"])
    text = env.server.wait_for("confirmed")
    assert "confirmed: CriticalErrorRate resolved" in text and "s after the rollback" in text
    assert metrics.VERIFICATIONS.labels(state="confirmed")._value.get() == before + 1


def test_verification_not_confirmed_escalates_once(agent_env: AgentEnv, capsys) -> None:
    from rollback_agent import metrics
    from rollback_agent.cli import main

    env = agent_env
    env.write_config(notify=env.pagerduty_notify())
    clock = Clock()
    client = env.client(clock)
    first = roll_back(env, client)
    before = metrics.VERIFICATIONS.labels(state="not_confirmed")._value.get()
    tick = ticker(env, clock)
    tick.tick()
    assert tick.host.store.verification(first["incident_id"]).state == "pending"
    clock.advance(601)
    assert tick.tick()["verification"] == [(first["incident_id"], "not_confirmed")]
    assert tick.tick()["verification"] == []  # ended once
    tick.host.notifier.flush(10)
    text = env.server.wait_for("not_confirmed")
    assert "did not clear the alert" in text
    escalation = next(m for m in env.server.messages if m["text"].startswith("<!here>"))
    assert first["incident_id"] in escalation["text"]
    assert len(env.server.pages) == 1
    page = env.server.pages[0]
    assert page["routing_key"] == PAGERDUTY_KEY and page["event_action"] == "trigger"
    assert first["incident_id"] in page["dedup_key"] and "a person is needed" in page["payload"]["summary"]
    assert metrics.VERIFICATIONS.labels(state="not_confirmed")._value.get() == before + 1
    item = next(i for i in history(client) if i["incident_id"] == first["incident_id"])
    assert item["verification"]["state"] == "not_confirmed"
    assert [a["resolved_at"] for a in item["verification"]["alerts"]] == [None]
    assert main(["--config", str(env.config_path), "status"]) == 0
    assert "verification not_confirmed: CriticalErrorRate firing" in capsys.readouterr().out


def test_slack_thread_with_a_bot_token(agent_env: AgentEnv, tmp_path) -> None:
    env = agent_env
    token = tmp_path / "slack-bot-token"
    token.write_text("xoxb-test-token\n")
    token.chmod(0o600)
    env.write_config(
        notify={
            "slack": {
                "webhook_url_file": None,
                "bot_token_file": str(token),
                "api_url": env.server.base + "/slack-api/chat.postMessage",
            }
        }
    )
    backdate(env, 600)
    client = env.client()
    first_start = time.time() - 120
    roll_back(env, client, starts_at=first_start)
    env.server.wait_for("success")
    assert post(client, payload(fingerprint="fp-2", starts_at=time.time() - 60))[1]["status"] == "attached"
    post(client, payload(status="resolved", starts_at=first_start))
    post(client, payload(status="resolved", fingerprint="fp-2", starts_at=time.time() - 60))
    env.server.wait_for("attached")
    messages = env.server.messages
    assert all(m["path"] == "/slack-api/chat.postMessage" for m in messages)
    assert set(env.server.api_tokens) == {"Bearer xoxb-test-token"}
    assert "thread_ts" not in messages[0] and messages[0]["channel"] == "#mita-deployments"
    assert {m.get("thread_ts") for m in messages[1:]} == {messages[0]["ts"]}, messages
    assert env.server.kinds()[0] == "initiated" and "attached" in env.server.kinds()


def test_flat_slack_messages_carry_no_attached_line(agent_env: AgentEnv) -> None:
    env = agent_env
    backdate(env, 600)
    client = env.client()
    roll_back(env, client, starts_at=time.time() - 120)
    env.server.wait_for("success")
    assert post(client, payload(fingerprint="fp-2", starts_at=time.time() - 60))[1]["status"] == "attached"
    time.sleep(0.5)
    assert "attached" not in env.server.kinds() and "thread_ts" not in str(env.server.messages)


def test_the_defects_on_postgresql(tmp_path, capture, postgres_server) -> None:
    """Defects 1 and 2 and the closed loop against PostgreSQL: `deploy v2` by hand, an alert goes
    back to v1 (alembic downgrade on PostgreSQL), its resend 20 minutes later changes nothing, and
    its resolve confirms the rollback."""
    import agent_sample_repo

    url = postgres_server.create_database("rollback_agent_rules")
    shas = agent_sample_repo.build_repo(tmp_path / "app")
    env = AgentEnv(tmp_path, shas, capture, url.replace("postgresql://", "postgresql+psycopg2://"))
    for tag in ("v1", "v2", "v3", "v2"):
        assert env.deploy(tag).result == "deployed"
    clock = Clock()
    client = env.client(clock)
    started = time.time()
    body = roll_back(env, client, starts_at=started)
    assert body["plan"]["to_sha"] == shas["v1"] and env.db_revision() == "a1000001"
    assert env.db_tables() == agent_sample_repo.TABLES["v1"]
    clock.advance(5 * 60)
    post(client, payload(status="resolved", starts_at=started))
    item = next(i for i in history(client) if i["incident_id"] == body["incident_id"])
    assert item["verification"]["state"] == "confirmed", item
    clock.advance(15 * 60)
    assert post(client, payload(starts_at=started))[1]["status"] == "duplicate"
    assert env.deployed_sha() == shas["v1"] and env.sql("SELECT count(*) FROM incidents") == [(1,)]


def test_an_alert_resolved_after_the_deadline_is_not_confirmed(agent_env: AgentEnv) -> None:
    env = agent_env
    clock = Clock()
    client = env.client(clock)
    started = time.time()
    body = roll_back(env, client, starts_at=started)
    clock.advance(11 * 60)  # no timer ran meanwhile
    post(client, payload(status="resolved", starts_at=started))
    item = next(i for i in history(client) if i["incident_id"] == body["incident_id"])
    assert item["verification"]["state"] == "not_confirmed", item


def test_not_the_cause_one_rollback_then_escalation_and_no_second_rollback(agent_env: AgentEnv) -> None:
    """The lab's not-the-cause scenario: a healthy release deployed, then Redis stops.
    RedisConnectionFailure rolls the release back (it cannot know better), keeps firing, the
    verification ends not_confirmed with an escalation, and neither its resends, a new firing,
    nor the timer roll back again."""
    env = agent_env
    assert env.deploy("v3", force=True).result == "deployed"  # v3 now the healthy release of the day
    clock = Clock()
    client = env.client(clock)
    redis = {"alertname": "RedisConnectionFailure", "fingerprint": "fp-redis", "starts_at": time.time()}
    first = roll_back(env, client, **redis)
    assert env.deployed_sha() == env.shas["v2"]
    tick = ticker(env, clock)
    for minutes in (2, 4, 6, 8, 10.5):  # Alertmanager resends while Redis stays down
        clock.offset = minutes * 60
        assert post(client, payload(**redis))[1]["status"] == "duplicate"
        tick.tick()
    assert tick.host.store.verification(first["incident_id"]).state == "not_confirmed"
    env.server.wait_for("not_confirmed")
    # Redis flaps: a new firing of the same alert after the verification ended.
    env.clear_calls()
    status, again = post(client, payload(**{**redis, "starts_at": clock()}))
    assert (status, again["status"]) == (200, "blocked") and "arrived_by_deploy" in again["reason"], again
    assert env.restarts() == [] and env.deployed_sha() == env.shas["v2"]
    executed = env.sql("SELECT count(*) FROM incidents WHERE status NOT IN ('blocked', 'dry_run')")
    assert executed == [(1,)]
