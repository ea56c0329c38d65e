"""``downgrade: forbidden`` on the manual path (issue 17): a person may roll such a release back, but
only on purpose. Without ``--allow-forbidden`` the command refuses before any change, saying why and
what to do; with it the rollback runs under migrations.destructive_downgrade (a backup first by
default) and the incident records the override. The webhook path never overrides it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_downgrade import backups, payments, unchanged_at_v4, with_payments
from agent_support import basic_auth, run_cli

pytestmark = pytest.mark.agent

FORBIDDEN = "downgrade: forbidden\n"


def test_without_the_flag_the_manual_rollback_is_refused_and_nothing_changes(any_env, capsys) -> None:
    env = any_env
    with_payments(env, declaration=FORBIDDEN)
    code, out, err = run_cli(env, capsys, "rollback", "--reason", "fees are wrong")
    assert code == 3, (out, err)
    assert "declares downgrade: forbidden" in err and "--allow-forbidden" in err
    assert "Nothing was changed" in err
    unchanged_at_v4(env)
    history = env.client().get("/api/admin/rollback/status", headers=basic_auth()).get_json()["history"]
    assert [i for i in history if i["source"] == "cli"] == []  # refused before any incident
    assert backups(env) == []


def test_with_the_flag_it_runs_backs_up_first_and_records_the_override(any_env, capsys) -> None:
    env = any_env
    with_payments(env, rows=4, declaration=FORBIDDEN)
    code, out, err = run_cli(
        env, capsys, "--json", "rollback", "--allow-forbidden", "--reason", "saved the rows"
    )
    assert code == 0, (out, err)
    answer = json.loads(out)
    assert answer["result"] == "success", answer
    incident = env.wait_incident(answer["incident_id"])
    assert incident["source"] == "cli" and incident["detail"]["allow_forbidden"] is True
    downgrade = incident["detail"]["downgrade"]
    assert downgrade["forbidden_overridden"] is True and downgrade["action"] == "backup", downgrade
    assert downgrade["dropped"] == [{"table": "payments_v4", "column": None, "rows": 4}]
    assert Path(downgrade["backup"]["path"]).is_file()
    assert "overridden by hand (--allow-forbidden)" in json.dumps(incident["phases"])
    assert env.db_revision() == "c3000003" and env.app_version() == "v3"
    assert "payments_v4" not in env.db_tables()


def test_the_flag_does_not_lift_a_blocking_policy(agent_env, capsys) -> None:
    env = agent_env
    env.write_config(migrations={"destructive_downgrade": "block"})
    with_payments(env, declaration=FORBIDDEN)
    code, out, _err = run_cli(env, capsys, "--json", "rollback", "--allow-forbidden")
    answer = json.loads(out)
    assert code != 0 and answer["status"] == "blocked", answer
    assert "destructive_downgrade: block" in answer["error"]
    unchanged_at_v4(env)
    assert payments(env) == 3
