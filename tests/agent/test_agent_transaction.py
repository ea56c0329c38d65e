"""A rollback and a deploy are transactions: a preflight before any change, compensation after any
failure, the truth as read from the host in every failure message, and a host that stays `stuck`
(refusing automatic rollbacks) when even the restore failed, until a person resolves it.

Faults are real: lock files git trips over, a migration that fills the state disk (tmpfs), a schema
restore that fails, a second migration of a release that fails.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_sample_repo import TABLES, add_release, migration_source
from agent_support import AgentEnv, basic_auth, payload

pytestmark = pytest.mark.agent

TRIGGER = "/api/admin/rollback/trigger"

# A migration whose downgrade injects faults named in the application's environment file:
# FAULT_CREATE files are created, FAULT_FILL fills the disk holding that path (ENOSPC).
# Its upgrade fails while FAULT_FAIL_UPGRADE_IF exists.
FAULTY_UPGRADE = """
import os
marker = os.environ.get("FAULT_FAIL_UPGRADE_IF")
if marker and os.path.exists(marker):
    raise RuntimeError("upgrade fails on purpose (test)")
op.create_table("audit", sa.Column("id", sa.Integer))
"""
# The faults act only when the downgrade really runs, not when alembic renders its SQL (--sql).
FAULTY_DOWNGRADE = """
import os
from alembic import context
op.drop_table("audit")
online = not context.is_offline_mode()
for path in filter(None, os.environ.get("FAULT_CREATE", "").split(":") if online else []):
    open(path, "w").close()
fill = os.environ.get("FAULT_FILL") if online else None
if fill:
    with open(fill, "wb") as out:
        try:
            while True:
                out.write(b"x" * 65536)
                out.flush()
        except OSError:
            pass
"""


def release_v4(env: AgentEnv) -> str:
    """v4 = v3 + revision d4000004 (table audit) whose scripts inject the faults; deployed."""
    script = migration_source("d4000004", "c3000003", FAULTY_UPGRADE, FAULTY_DOWNGRADE)
    sha = add_release(
        env.repo, "v4", {"app.py": 'VERSION = "v4"\n', "migrations/versions/d4000004_audit.py": script}
    )
    result = env.deploy("v4")
    assert result.result == "deployed", result.as_dict()
    env.clear_calls()
    return sha


def fault(env: AgentEnv, **values: str) -> None:
    with env.env_file.open("a") as out:
        for key, value in values.items():
            out.write(f"{key}={value}\n")


def trigger(env: AgentEnv) -> dict:
    response = env.client().post(TRIGGER, json=payload(), headers=basic_auth())
    data = response.get_json()
    assert response.status_code == 202, data
    return env.wait_incident(data["incident_id"])


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0750", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# --- preflight: nothing changes ------------------------------------------------------------------------
@pytest.mark.parametrize("lock", ["refs/heads/deployed.lock", "index.lock", "HEAD.lock"])
def test_a_stale_git_lock_file_blocks_before_any_change(agent_env, lock) -> None:
    env = agent_env
    path = env.repo / ".git" / lock
    path.write_text("")
    incident = trigger(env)
    assert incident["status"] == "failed" and incident["failed_step"] == "initiated", incident
    assert str(path) in incident["error"] and "nothing was changed" in incident["error"]
    # Nothing changed: schema, code, ref, services.
    assert env.db_revision() == "c3000003" and env.db_tables() == TABLES["v3"]
    assert env.head_sha() == env.deployed_sha() == env.shas["v3"]
    assert env.restarts() == []
    assert [p["name"] for p in incident["phases"]] == ["initiated"]
    text = env.server.wait_for("failure")
    assert str(path) in text


def test_a_database_revision_unknown_to_the_scripts_blocks_before_any_change(agent_env) -> None:
    from sqlalchemy import create_engine, text

    env = agent_env
    engine = create_engine(env.database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num='ffff0000'"))
    engine.dispose()
    incident = trigger(env)
    assert incident["status"] == "failed" and incident["failed_step"] == "initiated", incident
    assert "ffff0000" in incident["error"] and "preflight" in incident["error"]
    assert "nothing was changed" in incident["error"]
    assert env.db_revision() == "ffff0000" and env.head_sha() == env.shas["v3"]
    assert env.restarts() == []


def test_a_nearly_full_state_disk_blocks_before_any_change(agent_env) -> None:
    env = agent_env
    with tmpfs(env.root / "small", "12m") as mount:
        subprocess.run(["cp", "-a", str(env.state_dir), str(mount / "state")], check=True)
        env.state_dir = mount / "state"
        env.write_config(state_dir=str(env.state_dir))
        client = env.client()
        # Room for the incident's records, less than the rollback needs to be sure it can record.
        (mount / "filler").write_bytes(b"x" * (10 * 1024 * 1024))
        response = client.post(TRIGGER, json=payload(), headers=basic_auth())
        assert response.status_code == 202, response.get_json()
        incident = env.wait_incident(response.get_json()["incident_id"])
        assert incident["status"] == "failed" and incident["failed_step"] == "initiated", incident
        assert f"state_dir {mount / 'state'}" in incident["error"] and "free" in incident["error"]
        assert env.db_revision() == "c3000003" and env.head_sha() == env.shas["v3"]
        assert env.restarts() == []
        env.agent().store.close()


# --- compensation: back to the release that was live ---------------------------------------------------
def test_a_lock_file_appearing_after_the_downgrade_is_compensated(any_env) -> None:
    env = any_env
    sha = release_v4(env)
    lock = env.repo / ".git" / "refs" / "heads" / "deployed.lock"
    fault(env, FAULT_CREATE=str(lock))
    incident = trigger(env)
    assert incident["status"] == "failed" and incident["failed_step"] == "application", incident
    assert incident["detail"]["restored"] is True and incident["detail"]["consistent"] is True
    # Code, ref and schema are v4's again; nothing was restarted, so nothing is restarted again.
    assert env.head_sha() == env.deployed_sha() == sha and env.app_version() == "v4"
    assert env.db_revision() == "d4000004" and "audit" in env.db_tables()
    assert env.restarts() == []
    # The truth as read after the restore, with the file named.
    error = incident["error"]
    assert str(lock) in error
    assert f"ref at {sha[:10]}, HEAD at {sha[:10]}, database at d4000004" in error
    assert "app.service active" in error
    text = env.server.wait_for("failure")
    assert str(lock) in text and "restored" in text and "d4000004" in text


def test_a_full_state_disk_after_the_downgrade_is_compensated_and_recorded(agent_env) -> None:
    env = agent_env
    sha = release_v4(env)
    with tmpfs(env.root / "small", "16m") as mount:
        state = mount / "state"
        subprocess.run(["cp", "-a", str(env.state_dir), str(state)], check=True)
        env.state_dir = state
        env.write_config(state_dir=str(state))
        filler = mount / "filler"
        fault(env, FAULT_FILL=str(filler))
        freed = threading.Event()

        def free_when_reported() -> None:  # the operator frees space once Slack says what happened
            env.server.wait_for("failure", timeout=60)
            filler.unlink()
            freed.set()

        helper = threading.Thread(target=free_when_reported, daemon=True)
        helper.start()
        response = env.client().post(TRIGGER, json=payload(), headers=basic_auth())
        assert response.status_code == 202, response.get_json()
        # While the disk is full even opening the state database can fail: read it once space is free.
        helper.join(timeout=90)
        assert freed.is_set(), "no failure message arrived while the state disk was full"
        incident = env.wait_incident(response.get_json()["incident_id"], timeout=90)
        assert incident["status"] == "failed", incident
        assert incident["detail"]["restored"] is True
        assert "disk is full" in incident["error"] or "No space left" in incident["error"]
        assert env.head_sha() == env.deployed_sha() == sha
        assert env.db_revision() == "d4000004"
        text = env.server.wait_for("failure")
        assert "restored" in text
        env.agent().store.close()


def test_a_failed_restore_leaves_the_host_stuck_until_a_person_resolves_it(agent_env, capsys) -> None:
    from rollback_agent.cli import main

    env = agent_env
    env.write_config(notify=env.pagerduty_notify())
    release_v4(env)
    lock = env.repo / ".git" / "refs" / "heads" / "deployed.lock"
    marker = env.root / "fail-upgrade"
    fault(env, FAULT_CREATE=f"{lock}:{marker}", FAULT_FAIL_UPGRADE_IF=str(marker))
    incident = trigger(env)
    assert incident["status"] == "failed", incident
    assert incident["detail"]["consistent"] is False and incident["detail"]["stuck"] is True
    assert "database at c3000003" in incident["error"]  # the truth: the schema stayed down
    text = env.server.wait_for("stuck")
    assert "rollback-agent resolve" in text and incident["id"] in text
    page = next(m for m in env.server.messages if m["attachments"][0]["footer"].endswith("stuck"))
    assert page["text"].startswith("<!here>")
    deadline = time.monotonic() + 20
    while not env.server.pages and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(env.server.pages) == 1 and incident["id"] in env.server.pages[0]["dedup_key"]
    assert "left the host inconsistent" in env.server.pages[0]["payload"]["summary"]
    client = env.client()
    health = client.get("/healthz").get_json()
    assert health["stuck"] == [incident["id"]]
    status = client.get("/api/admin/rollback/status", headers=basic_auth()).get_json()
    assert status["stuck"][0]["incident_id"] == incident["id"]
    # Every automatic rollback is refused meanwhile.
    lock.unlink()
    marker.unlink()
    again = client.post(
        TRIGGER, json=payload("CriticalP95Latency", fingerprint="fp-latency"), headers=basic_auth()
    ).get_json()
    assert again["status"] == "blocked" and "stuck" in again["reason"], again
    # A person repairs the host and says so.
    code = main(
        ["--config", str(env.config_path), "resolve", incident["id"], "--note", "schema fixed by hand"]
    )
    out, _ = capsys.readouterr()
    assert code == 0 and "resolved" in out
    assert client.get("/healthz").get_json()["stuck"] == []
    resolved = env.agent().store.incident(incident["id"])
    assert resolved["detail"]["stuck"] is False
    assert resolved["detail"]["resolution"]["note"] == "schema fixed by hand"


# --- deploy ------------------------------------------------------------------------------------------
def test_a_deploy_whose_second_migration_fails_downgrades_to_where_it_started(any_env) -> None:
    env = any_env
    first = migration_source(
        "d4000004",
        "c3000003",
        'op.create_table("audit", sa.Column("id", sa.Integer))',
        'op.drop_table("audit")',
    )
    second = migration_source(
        "e5000005", "d4000004", 'raise RuntimeError("second migration fails (test)")', "pass"
    )
    add_release(
        env.repo,
        "v4",
        {
            "app.py": 'VERSION = "v4"\n',
            "migrations/versions/d4000004_audit.py": first,
            "migrations/versions/e5000005_broken.py": second,
        },
    )
    result = env.deploy("v4")
    assert result.result == "failed" and result.failed_step == "migrate", result.as_dict()
    assert env.db_revision() == "c3000003" and env.db_tables() == TABLES["v3"]
    assert env.head_sha() == env.deployed_sha() == env.shas["v3"]
    restore = [s for s in result.steps if s["step"] == "restore"]
    assert any("alembic downgrade c3000003" in s["detail"] and s["ok"] for s in restore), result.steps
    record = env.agent().store.deploys(1)[0]
    assert record.outcome == "failed" and "schema downgraded back to c3000003" in (record.detail or "")
    # The next rollback works from a consistent host.
    env.clear_calls()
    incident = trigger(env)
    assert incident["status"] == "success", incident
    assert env.db_revision() == "b2000002"
