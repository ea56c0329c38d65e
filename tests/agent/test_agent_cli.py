"""The `rollback-agent` command: clear output, --json for machines, documented exit codes."""

from __future__ import annotations

import json
import os
import signal

import pytest
from agent_support import alive
from agent_support import run_cli as run
from rollback_agent.cli import main

pytestmark = pytest.mark.agent


def test_check_config_ok_and_broken(agent_env, capsys) -> None:
    code, out, _ = run(agent_env, capsys, "check-config")
    assert code == 0 and "configuration OK" in out and "ok  deployment.ref: refs/heads/deployed ->" in out
    code, out, _ = run(agent_env, capsys, "check-config", "--json")
    data = json.loads(out)
    assert data["ok"] is True and len(data["triggers"]) == 7
    agent_env.write_config(services={"restart_command": ["/nonexistent/systemctl", "restart"]})
    code, out, _ = run(agent_env, capsys, "check-config")
    assert code == 2 and "ERR services.restart_command: /nonexistent/systemctl not found" in out
    agent_env.write_config(guards={"max_rollback_per_day": 2})
    code, _, err = run(agent_env, capsys, "check-config")
    assert code == 2
    assert "unknown key 'max_rollback_per_day' in 'guards' (did you mean 'max_rollbacks_per_day'?)" in err
    # --json keeps its shape for a broken file too: one failed "config" check per problem.
    code, out, _ = run(agent_env, capsys, "check-config", "--json")
    data = json.loads(out)
    assert code == 2 and data["ok"] is False
    assert data["checks"][0]["name"] == "config" and "max_rollback_per_day" in data["checks"][0]["detail"]
    agent_env.secret_file.unlink()
    agent_env.write_config(guards={"max_rollback_per_day": None})
    code, out, _ = run(agent_env, capsys, "check-config", "--json")
    assert code == 2 and "auth.password_file: cannot read" in json.loads(out)["checks"][0]["detail"]


def test_config_from_the_environment_variable(agent_env, capsys, monkeypatch) -> None:
    monkeypatch.setenv("ROLLBACK_AGENT_CONFIG", str(agent_env.config_path))
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["deployment"]["sha"] == agent_env.shas["v3"]


def test_status_and_history(agent_env, capsys) -> None:
    code, out, _ = run(agent_env, capsys, "status")
    assert code == 0
    assert f"deployed:   {agent_env.shas['v3'][:10]} release v3" in out
    assert "alembic c3000003" in out and "in progress: nothing" in out
    code, out, _ = run(agent_env, capsys, "history", "--json")
    data = json.loads(out)
    assert [d["ref"] for d in data["deploys"]] == ["v3", "v2", "v1"] and data["incidents"] == []
    code, out, _ = run(agent_env, capsys, "history")
    assert out.count(" deploy ") == 3 and "healthy" in out


def test_test_command_shows_the_plan(agent_env, capsys) -> None:
    code, out, _ = run(agent_env, capsys, "test", "CriticalErrorRate")
    assert code == 0
    assert "CriticalErrorRate: would be accepted" in out
    assert f"-> {agent_env.shas['v2'][:10]} (alembic b2000002, ledger)" in out
    assert "nothing was executed" in out
    code, out, _ = run(agent_env, capsys, "test", "CriticalErrorRate", "--label", "service=billing", "--json")
    assert json.loads(out)["would"] == "ignored"
    assert agent_env.restarts() == []


def test_manual_rollback_dry_run_then_real(agent_env, capsys) -> None:
    env = agent_env
    code, out, _ = run(env, capsys, "rollback", "--dry-run", "--json")
    data = json.loads(out)
    assert code == 0 and data["result"] == "dry_run" and data["plan"]["to_sha"] == env.shas["v2"]
    assert env.restarts() == [] and env.sql("SELECT count(*) FROM incidents") == [(0,)]

    code, out, err = run(env, capsys, "rollback", "--reason", "bad release, found by hand", "--json")
    data = json.loads(out)
    assert code == 0 and data["result"] == "success", (out, err)
    assert "[ 60%] application" in err  # progress on stderr with --json
    incident = env.agent().store.incident(data["incident_id"])
    assert incident["source"] == "cli" and incident["reason"] == "bad release, found by hand"
    assert env.deployed_sha() == env.shas["v2"] and env.db_revision() == "b2000002"
    assert "bad release, found by hand" in env.server.wait_for("success")
    # By hand, the cooldown is reported but does not block; --to picks the release.
    code, out, _ = run(env, capsys, "rollback", "--to", "v1")
    assert code == 0, out
    assert "[not enforced by hand]" in out and "cooldown" in out
    assert env.deployed_sha() == env.shas["v1"] and env.db_revision() == "a1000001"


def test_manual_rollback_refused_and_busy(agent_env, capsys) -> None:
    env = agent_env
    code, out, _ = run(env, capsys, "rollback", "--to", "v3")
    assert code == 3 and "blocked: target_release: v3 is the deployed release already" in out
    with env.agent().lock().acquire("deploy", "v9"):
        code, out, _ = run(env, capsys, "rollback", "--json")
    assert code == 5 and json.loads(out)["result"] == "busy" and "deploy v9 is running" in out


def test_sigterm_stops_a_manual_rollback_and_records_it(agent_env) -> None:
    env = agent_env
    proc = env.start_held_rollback()
    proc.send_signal(signal.SIGTERM)
    (env.control / "sleep-restart").unlink()  # the restore's restarts do not hang
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    data = json.loads(out)
    assert data["result"] == "interrupted" and data["failed_step"] == "application"
    assert "received SIGTERM" in data["error"]
    assert not any(alive(int(pid)) for pid in (env.control / "sleepers").read_text().split())
    assert not env.agent().in_progress()


def test_root_is_refused_when_the_state_belongs_to_the_agent_user(agent_env, capsys, monkeypatch) -> None:
    import pwd

    if os.geteuid() == 0:
        os.chown(agent_env.state_dir, 65534, 65534)  # as if it belonged to the agent's user
    owner = pwd.getpwuid(agent_env.state_dir.stat().st_uid).pw_name
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    try:
        code, _, err = run(agent_env, capsys, "status")
    finally:
        monkeypatch.undo()
        if os.geteuid() == 0:
            os.chown(agent_env.state_dir, 0, 0)
    assert code == 2 and f"run this as the agent's user, not root: sudo -u {owner} rollback-agent" in err


def test_usage_errors_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["deploy"])
    assert info.value.code == 2
    assert main(["--config", "/nonexistent.yml", "status"]) == 2
    assert "cannot read the file" in capsys.readouterr().err
