"""The rollback itself: phases, notifications, failures that never leave the host worse, the time limit."""

from __future__ import annotations

import time

import git
import pytest
from agent_sample_repo import TABLES, add_release, migration_source
from agent_support import AgentEnv, alive, basic_auth, payload

pytestmark = pytest.mark.agent


def trigger(env: AgentEnv, body: dict | None = None) -> dict:
    response = env.client().post("/api/admin/rollback/trigger", json=body or payload(), headers=basic_auth())
    data = response.get_json()
    assert response.status_code == 202, data
    return env.wait_incident(data["incident_id"])


def test_phases_progress_and_notifications(agent_env) -> None:
    env = agent_env
    incident = trigger(env)
    assert incident["status"] == incident["result"] == "success"
    assert incident["from_revision"] == "c3000003" and incident["to_revision"] == "b2000002"
    phases = incident["phases"]
    assert [(p["name"], p["progress"], p["status"]) for p in phases] == [
        ("initiated", 0, "success"),
        ("database", 40, "success"),
        ("application", 60, "success"),
        ("verify", 80, "success"),
        ("done", 100, "success"),
    ]
    stamps = [(p["started_at"], p["ended_at"]) for p in phases]
    assert all(a <= b for a, b in stamps) and all(stamps[i][1] <= stamps[i + 1][0] for i in range(4))
    assert "alembic downgrade b2000002: ok" in phases[1]["detail"]
    assert "restarted app.service, worker.service" in phases[2]["detail"]
    assert env.db_tables() == TABLES["v2"] and env.app_version() == "v2"
    # Restart after the code switch, then the status checks.
    assert env.calls() == [
        "restart app.service",
        "restart worker.service",
        "is-active app.service",
        "is-active worker.service",
    ]

    env.server.wait_for("success")
    assert env.server.kinds() == ["initiated", "database", "application", "verify", "success"]
    short_from, short_to = env.shas["v3"][:10], env.shas["v2"][:10]
    for text, bar in zip(env.server.texts(), ["0%", "40%", "60%", "80%", "100%"], strict=True):
        assert incident["id"] in text and "host `app1`" in text
        assert "CriticalErrorRate (trigger `error_rate_threshold`)" in text
        assert "Error rate exceeded 20% for 2 minutes" in text
        assert f"`{short_from}` → `{short_to}`" in text
        assert f"] {bar}`" in text
    assert "*ETA:*" in env.server.texts()[0]
    final = env.server.texts()[-1]
    assert "*Total duration:*" in final and "health check OK" in final and "marked bad" in final
    assert env.server.messages[0]["channel"] == "#mita-deployments"
    # The ledger has the rollback as the live release.
    record = env.agent().store.deploys(1)[0]
    assert (record.kind, record.sha, record.revision, record.outcome) == (
        "rollback",
        env.shas["v2"],
        "b2000002",
        "healthy",
    )


def test_failing_downgrade_leaves_the_code_untouched(agent_env) -> None:
    env = agent_env
    broken = migration_source(
        "d4000004",
        "c3000003",
        'op.create_table("audit", sa.Column("id", sa.Integer))',
        'raise RuntimeError("downgrade is broken (test)")',
    )
    sha = add_release(
        env.repo, "v4", {"app.py": 'VERSION = "v4"\n', "migrations/versions/d4000004_audit.py": broken}
    )
    assert env.deploy("v4").result == "deployed"
    env.clear_calls()
    incident = trigger(env)
    assert incident["status"] == "failed" and incident["failed_step"] == "database"
    assert "downgrade is broken (test)" in incident["error"]
    # Code, ref, schema and services as they were.
    assert env.head_sha() == env.deployed_sha() == sha and env.app_version() == "v4"
    assert env.db_revision() == "d4000004" and "audit" in env.db_tables()
    assert env.restarts() == []
    text = env.server.wait_for("failure")
    assert "*Failed step:* database" in text and "downgrade is broken (test)" in text
    assert "The code was not switched" in text
    assert [p["name"] for p in incident["phases"]] == ["initiated", "database"]
    assert incident["phases"][-1]["status"] == "failed"


def test_failing_checkout_after_downgrade_restores_the_schema(agent_env) -> None:
    env = agent_env
    migration = migration_source(
        "d4000004",
        "c3000003",
        'op.create_table("audit", sa.Column("id", sa.Integer))',
        'op.drop_table("audit")',
    )
    repo = git.Repo(env.repo)
    head = repo.head.commit.hexsha
    repo.git.checkout("--quiet", "main")
    (env.repo / "migrations/versions/d4000004_audit.py").write_text(migration)
    repo.index.add(["migrations/versions/d4000004_audit.py"])
    repo.index.remove(["app.py"], working_tree=True)
    repo.index.commit("release v4: app.py moved away")
    repo.create_tag("v4")
    repo.git.checkout("--detach", "--quiet", head)
    repo.close()
    assert env.deploy("v4").result == "deployed"
    (env.repo / "app.py").write_text("an untracked file that git checkout would overwrite\n")
    incident = trigger(env)
    assert incident["status"] == "failed" and incident["failed_step"] == "application"
    assert "git checkout" in incident["error"]
    assert env.db_revision() == "d4000004"  # downgraded, then upgraded back for the code still running
    assert "schema upgraded back to d4000004" in incident["phases"][2]["detail"]
    assert env.deployed_sha() != env.shas["v3"]


def test_timeout_stops_the_running_step(agent_env) -> None:
    env = agent_env
    # Long enough for preflight, backup and downgrade on a loaded machine: the restart is what hangs.
    env.write_config(guards={"timeout": "12s"})
    env.control_file("sleep-restart", "60")
    incident = trigger(env)
    assert incident["status"] == incident["result"] == "timed_out"
    assert incident["failed_step"] == "application"
    assert "guards.timeout (12s) reached" in incident["error"]
    # The restart command (and its sleep) was stopped, not left running.
    pids = [int(p) for p in (env.control / "sleepers").read_text().split()]
    time.sleep(0.2)
    assert pids and not any(alive(pid) for pid in pids)
    text = env.server.wait_for("timed_out")
    assert "*Failed step:* application" in text


def test_unhealthy_after_restart_fails_in_verify(agent_env) -> None:
    env = agent_env
    env.server.health_status = 500
    incident = trigger(env)
    assert incident["status"] == "failed" and incident["failed_step"] == "verify"
    assert "health check failed" in incident["error"] and "HTTP 500" in incident["error"]
    assert env.deployed_sha() == env.shas["v2"]  # the code did switch; the failure says so
    assert env.agent().store.deploys(1)[0].outcome == "unhealthy"
    assert "The code is at" in env.server.wait_for("failure")


def test_unknown_target_revision_is_derived_from_the_release(agent_env) -> None:
    env = agent_env
    env.sql("UPDATE deploys SET revision = NULL")
    body = (
        env.client()
        .post("/api/admin/rollback/test", json={"alert_name": "CriticalErrorRate"}, headers=basic_auth())
        .get_json()
    )
    assert body["plan"]["to_revision"] == "b2000002" and body["plan"]["to_revision_source"] == "derived"
    incident = trigger(env)
    assert incident["status"] == "success" and incident["to_revision"] == "b2000002"
    assert env.db_revision() == "b2000002"


def test_ref_move_is_pushed_to_the_gitops_remote(agent_env, tmp_path) -> None:
    env = agent_env
    remote = git.Repo.init(tmp_path / "remote.git", bare=True)
    repo = git.Repo(env.repo)
    repo.create_remote("origin", str(tmp_path / "remote.git"))
    repo.git.push("origin", f"{env.shas['v3']}:refs/heads/deployed")
    repo.close()
    env.write_config(deployment={"remote": "origin"})
    incident = trigger(env)
    assert incident["status"] == "success"
    assert remote.git.rev_parse("refs/heads/deployed") == env.shas["v2"]
    assert "pushed refs/heads/deployed to origin" in incident["phases"][2]["detail"]


def test_slack_slow_or_down_never_delays_the_rollback(agent_env) -> None:
    env = agent_env
    env.server.slack_delay = 3.0  # each message takes 3 s: five would take 15 s in line
    incident = trigger(env)
    assert incident["status"] == "success"
    assert incident["duration"] < 10, incident["duration"]


def test_slack_errors_are_retried(agent_env) -> None:
    env = agent_env
    env.server.slack_statuses = [500, 503]  # the first message needs three attempts
    incident = trigger(env)
    assert incident["status"] == "success"
    env.server.wait_for("success")
    assert env.server.kinds()[0] == "initiated"
    assert env.server.slack_requests == len(env.server.messages) + 2


def test_rollback_against_postgresql(tmp_path, capture, postgres_server) -> None:
    import agent_sample_repo

    url = postgres_server.create_database("rollback_agent_test")
    shas = agent_sample_repo.build_repo(tmp_path / "app")
    env = AgentEnv(tmp_path, shas, capture, url.replace("postgresql://", "postgresql+psycopg2://"))
    for tag in ("v1", "v2", "v3"):
        assert env.deploy(tag).result == "deployed"
    assert env.db_tables() == TABLES["v3"] and env.db_revision() == "c3000003"
    incident = trigger(env)
    assert incident["status"] == "success", incident
    assert env.db_tables() == TABLES["v2"] and env.db_revision() == "b2000002"
    assert env.app_version() == "v2"
    # And back forward again by hand, with --force since v3 is marked bad.
    assert env.deploy("v3").result == "refused"
    assert env.deploy("v3", force=True).result == "deployed"
    assert env.db_tables() == TABLES["v3"]
