"""The downgrade's preview where people look first (issue 17): the answer to the webhook that starts a
rollback and the status' history show the classification, the dropped objects with their rows, the
action and the backup; the SQL is shortened there (the plan and the incident keep it whole).
"""

from __future__ import annotations

import pytest
from agent_downgrade import TRIGGER, with_payments
from agent_support import basic_auth, payload
from rollback_agent import datasafety

pytestmark = pytest.mark.agent


def test_the_accepted_webhook_answer_shows_what_the_downgrade_drops(any_env) -> None:
    env = any_env
    with_payments(env, rows=3)
    response = env.client().post(TRIGGER, json=payload(), headers=basic_auth())
    answer = response.get_json()
    assert response.status_code == 202 and answer["status"] == "accepted", answer
    shown = answer["plan"]["downgrade"]
    assert shown["classification"] == "destructive" and shown["action"] == "backup", shown
    assert shown["dropped"] == [{"table": "payments_v4", "column": None, "rows": 3}]
    assert shown["summary"].endswith("drops table payments_v4 (3 rows)")
    assert "DROP TABLE payments_v4" in shown["sql"] and shown["sql_truncated"] is False
    incident = env.wait_incident(answer["incident_id"])
    assert incident["status"] == "success", incident
    recorded = incident["detail"]["downgrade"]  # the answer showed what the rollback then did
    assert {k: recorded[k] for k in ("classification", "dropped", "sql")} == {
        k: shown[k] for k in ("classification", "dropped", "sql")
    }
    history = env.client().get("/api/admin/rollback/status", headers=basic_auth()).get_json()["history"]
    listed = next(i for i in history if i["incident_id"] == answer["incident_id"])["downgrade"]
    assert listed["dropped"] == [{"table": "payments_v4", "column": None, "rows": 3}]
    assert listed["backup"]["sha256"] == recorded["backup"]["sha256"] and listed["action"] == "backup"


def test_the_sql_is_shortened_with_a_visible_marker() -> None:
    sql = "DROP TABLE payments_v4;\n" + "-- padding\n" * 200
    shown = datasafety.brief({"classification": "destructive", "sql": sql, "dropped": []})
    assert shown is not None and shown["sql_truncated"] is True
    assert shown["sql"].startswith("DROP TABLE payments_v4;")
    assert len(shown["sql"]) < len(sql)
    assert f"{len(sql) - datasafety.SQL_SHOWN} more characters" in shown["sql"]
    assert datasafety.brief(None) is None
