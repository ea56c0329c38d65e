"""`rollback-agent deploy`: releases onto a host, recorded in the ledger, nothing left half done."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from agent_sample_repo import REVISIONS, TABLES, add_release, migration_source
from agent_support import AgentEnv

pytestmark = pytest.mark.agent


def test_three_deploys_fill_the_ledger(fresh_env) -> None:
    env = fresh_env
    for tag in ("v1", "v2", "v3"):
        result = env.deploy(tag)
        assert result.result == "deployed", result.as_dict()
        assert result.changed and result.exit_code == 0
        assert result.sha == env.shas[tag]
        assert result.revision == REVISIONS[tag]
        assert env.deployed_sha() == env.head_sha() == env.shas[tag]
        assert env.app_version() == tag
        assert env.db_revision() == REVISIONS[tag]
        assert env.db_tables() == TABLES[tag]
    assert env.restarts() == ["restart app.service", "restart worker.service"] * 3
    ledger = env.agent().store.deploys()
    assert [(d.sha, d.ref, d.revision, d.outcome, d.kind) for d in reversed(ledger)] == [
        (env.shas[t], t, REVISIONS[t], "healthy", "deploy") for t in ("v1", "v2", "v3")
    ]
    assert all(d.deployed_at for d in ledger)
    assert ledger[0].previous_sha == env.shas["v2"]
    # The ref's reflog says who moved it.
    log = subprocess.run(
        ["git", "-C", str(env.repo), "reflog", "show", "refs/heads/deployed"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "rollback-agent: deploy v3" in log


def test_redeploying_the_same_release_changes_nothing(agent_env) -> None:
    result = agent_env.deploy("v3")
    assert result.result == "unchanged" and not result.changed and result.exit_code == 0
    assert agent_env.restarts() == []
    forced = agent_env.deploy("v3", force=True)
    assert forced.result == "deployed" and forced.changed
    assert len(agent_env.restarts()) == 2


def test_unknown_ref_fails_without_changes(agent_env) -> None:
    result = agent_env.deploy("v9")
    assert result.result == "failed" and result.exit_code == 1
    assert "'v9' is not a commit" in (result.error or "")
    assert agent_env.deployed_sha() == agent_env.shas["v3"] and agent_env.restarts() == []


def test_failing_upgrade_puts_the_previous_code_back(agent_env) -> None:
    env = agent_env
    broken = migration_source("d4000004", "c3000003", 'raise RuntimeError("migration bug (test)")', "pass")
    sha = add_release(
        env.repo, "v4", {"app.py": 'VERSION = "v4"\n', "migrations/versions/d4000004_broken.py": broken}
    )
    result = env.deploy("v4")
    assert result.result == "failed" and result.failed_step == "migrate"
    assert "migration bug (test)" in (result.error or "")
    assert env.head_sha() == env.shas["v3"] and env.deployed_sha() == env.shas["v3"]
    assert env.app_version() == "v3" and env.db_revision() == "c3000003"
    assert env.restarts() == []
    ledger = env.agent().store.deploys(1)[0]
    assert (ledger.sha, ledger.outcome, ledger.deployed_at) == (sha, "failed", None)
    assert [s["step"] for s in result.steps] == ["resolve", "checkout", "migrate", "restore"]


def test_unhealthy_deploy_is_live_and_says_so(agent_env) -> None:
    env = agent_env
    env.server.health_status = 503
    sha = add_release(env.repo, "v4", {"app.py": 'VERSION = "v4"\n'})
    result = env.deploy("v4")
    assert result.result == "unhealthy" and result.exit_code == 4
    assert result.failed_step == "verify" and "HTTP 503" in (result.error or "")
    # The code is live, so the ref says so; the ledger records the outcome.
    assert env.deployed_sha() == sha
    assert env.agent().store.deploys(1)[0].outcome == "unhealthy"


def test_restart_failure_is_unhealthy(agent_env) -> None:
    env = agent_env
    add_release(env.repo, "v4", {"app.py": 'VERSION = "v4"\n'})
    env.control_file("fail-restart")
    result = env.deploy("v4")
    assert result.result == "unhealthy" and result.failed_step == "restart"
    assert "restart of app.service failed" in (result.error or "")


def test_health_check_waits_for_a_slow_starting_app(agent_env) -> None:
    env = agent_env
    env.server.health_failures_left = 5  # 503 five times, then 200
    add_release(env.repo, "v4", {"app.py": 'VERSION = "v4"\n'})
    result = env.deploy("v4")
    assert result.result == "deployed", result.as_dict()
    assert env.server.health_requests == 6


def test_local_changes_refuse_the_deploy(agent_env) -> None:
    env = agent_env
    (env.repo / "app.py").write_text('VERSION = "hand-edited"\n')
    result = env.deploy("v2")
    assert result.result == "failed" and result.failed_step == "preflight"
    assert "app.py" in (result.error or "")
    assert (env.repo / "app.py").read_text() == 'VERSION = "hand-edited"\n'


def test_deploy_cli_json_and_exit_codes(agent_env) -> None:
    env = agent_env
    cmd = [sys.executable, "-m", "rollback_agent", "--config", str(env.config_path)]
    proc = subprocess.run([*cmd, "deploy", "v2", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["result"] == "deployed" and data["changed"] is True and data["exit_code"] == 0
    assert data["sha"] == env.shas["v2"] and data["previous_sha"] == env.shas["v3"]
    assert data["revision"] == "b2000002"
    # An older release: the schema was stepped down from the live tree before the checkout.
    assert env.db_revision() == "b2000002" and env.db_tables() == TABLES["v2"]
    assert [s["step"] for s in data["steps"]][:3] == ["resolve", "downgrade", "checkout"]
    assert "checkout" in proc.stderr  # progress goes to stderr with --json
    proc = subprocess.run([*cmd, "deploy", "v2", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout)["changed"] is False
    proc = subprocess.run([*cmd, "deploy", "nope"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "failed: nope" in proc.stdout and "not a commit" in proc.stderr


def test_busy_lock_gives_exit_code_5(agent_env) -> None:
    agent = agent_env.agent()
    with agent.lock().acquire("rollback", "INC-test"):
        result = agent_env.deploy("v2")
    assert result.result == "busy" and result.exit_code == 5
    assert "rollback INC-test is running" in (result.error or "")


def test_deploy_fetches_new_releases_from_the_remote(agent_env, tmp_path) -> None:
    import git

    env = agent_env
    upstream = tmp_path / "upstream"
    git.Repo.clone_from(str(env.repo), str(upstream)).close()
    sha = add_release(upstream, "v4", {"app.py": 'VERSION = "v4"\n'})
    repo = git.Repo(env.repo)
    repo.create_remote("origin", str(upstream))
    repo.close()
    env.write_config(deployment={"remote": "origin"})
    result = env.deploy("v4")
    assert result.result == "deployed" and result.sha == sha, result.as_dict()
    assert env.app_version() == "v4"
    # A branch name means the remote's branch, not a stale local one.
    sha5 = add_release(upstream, "v5", {"app.py": 'VERSION = "v5"\n'})
    result = env.deploy("main")
    assert result.result == "deployed" and result.sha == sha5
    # The deploy pushed the ref to the remote (GitOps).
    assert git.Repo(upstream).git.rev_parse("refs/heads/deployed") == sha5


def _provisioned_host(tmp_path, capture) -> tuple[AgentEnv, dict[str, str]]:
    """A host as the roles leave it: an empty repository whose remote has the releases (nothing
    checked out, no migration scripts on disk yet) and an empty database."""
    import git
    from agent_sample_repo import build_repo, commit

    upstream = tmp_path / "upstream"
    shas = build_repo(upstream)
    repo = git.Repo(upstream)
    repo.git.checkout("-q", "-b", "broken", "v1")
    broken = migration_source("b9000009", "a1000001", 'raise RuntimeError("broken migration (test)")', "pass")
    files = {"migrations/versions/b9000009_broken.py": broken}
    shas["broken"] = commit(repo, "release broken", files, "broken")
    repo.git.checkout("-q", "main")
    repo.close()
    git.Repo.init(tmp_path / "app").create_remote("origin", str(upstream))
    (tmp_path / "db").mkdir()
    env = AgentEnv(tmp_path, shas, capture, f"sqlite:///{tmp_path / 'db' / 'app.db'}")
    env.write_config(deployment={"remote": "origin"})
    return env, shas


def test_the_first_deploy_of_a_provisioned_host(tmp_path, capture) -> None:
    env, shas = _provisioned_host(tmp_path, capture)
    result = env.deploy("v1")
    assert result.result == "deployed", result.as_dict()
    assert env.deployed_sha() == env.head_sha() == shas["v1"]
    assert env.db_revision() == REVISIONS["v1"] and env.db_tables() == TABLES["v1"]


def test_a_failed_first_deploy_leaves_the_database_where_it_started(tmp_path, capture) -> None:
    env, _shas = _provisioned_host(tmp_path, capture)
    result = env.deploy("broken")
    assert result.result == "failed" and result.failed_step == "migrate", result.as_dict()
    # a1000001 ran, b9000009 failed: the schema goes back to base (empty), nothing half done.
    assert env.db_revision() is None and env.db_tables() == {}
    assert env.agent().deployment.current_sha() is None  # the ref was never moved
    assert env.deploy("v1").result == "deployed"
    assert env.db_revision() == REVISIONS["v1"]
