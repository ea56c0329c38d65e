"""A downgrade never loses data silently: its offline SQL is read and classified before it runs, the
rows of what it drops are counted, and ``migrations.destructive_downgrade`` (block, backup_then_run,
run) with the release's own ``rollback.yml`` decides. On SQLite and on a real PostgreSQL.

Release v4 (on top of the sample's v3) creates ``payments_v4`` and writes rows to it; rolling it
back to v3 drops that table.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest
from agent_downgrade import (
    INDEX_DOWN,
    INDEX_UP,
    backups,
    pagerduty,
    payments,
    release_v4,
    trigger,
    unchanged_at_v4,
    wait_pages,
    with_payments,
)
from agent_support import basic_auth

pytestmark = pytest.mark.agent


# --- the classification ---------------------------------------------------------------------------------
def test_classification_of_rendered_sql() -> None:
    from rollback_agent.datasafety import DESTRUCTIVE, SAFE, DowngradeCheck, classify

    sql = """-- Running downgrade d4 -> c3
DROP TABLE payments_v4;
ALTER TABLE accounts DROP COLUMN email;
ALTER TABLE accounts ALTER COLUMN name TYPE VARCHAR(10);
ALTER TABLE accounts DROP CONSTRAINT fk_x;
ALTER TABLE accounts ALTER COLUMN name DROP NOT NULL;
UPDATE alembic_version SET version_num='c3' WHERE alembic_version.version_num = 'd4';
"""
    check = classify(DowngradeCheck("d4", "c3"), sql)
    assert check.classification == DESTRUCTIVE
    assert [(d.table, d.column) for d in check.dropped] == [("payments_v4", None), ("accounts", "email")]
    assert len(check.statements) == 3  # the type change counts, the constraint/NOT NULL do not
    safe = classify(DowngradeCheck("d4", "c3"), "DROP INDEX ix_a;\nALTER TABLE a DROP CONSTRAINT fk;\n")
    assert safe.classification == SAFE and not safe.data_at_risk


# --- each policy, on both databases ---------------------------------------------------------------------
def test_a_safe_downgrade_runs_without_backup(any_env) -> None:
    env = any_env
    release_v4(env, INDEX_UP, INDEX_DOWN)
    incident = trigger(env)
    assert incident["status"] == "success", incident
    downgrade = incident["detail"]["downgrade"]
    assert downgrade["classification"] == "safe" and downgrade["action"] == "run"
    assert "DROP INDEX" in downgrade["sql"]
    assert env.db_revision() == "c3000003" and env.app_version() == "v3"
    assert backups(env) == []


def test_block_leaves_everything_and_pages(any_env) -> None:
    env = any_env
    pagerduty(env, destructive_downgrade="block")
    with_payments(env)
    incident = trigger(env)
    assert incident["status"] == "blocked" and incident["failed_step"] == "initiated", incident
    assert "drops table payments_v4 (3 rows)" in incident["error"]
    assert "nothing was changed" in incident["error"]
    downgrade = incident["detail"]["downgrade"]
    assert downgrade["classification"] == "destructive" and downgrade["action"] == "block"
    assert downgrade["dropped"] == [{"table": "payments_v4", "column": None, "rows": 3}]
    unchanged_at_v4(env)
    pages = wait_pages(env)
    assert len(pages) == 1 and "payments_v4" in str(pages[0])
    assert backups(env) == []


def test_block_rolls_the_code_back_only_when_the_release_declares_it_compatible(any_env) -> None:
    env = any_env
    pagerduty(env, destructive_downgrade="block")
    with_payments(env, declaration="downgrade: destructive\ncode_compatible_with_newer_schema: true\n")
    incident = trigger(env)
    assert incident["status"] == "success", incident
    assert incident["detail"]["downgrade"]["action"] == "code_only"
    assert env.app_version() == "v3" and env.deployed_sha() == env.shas["v3"]
    assert env.db_revision() == "d4000004"  # the schema stays, with its rows
    assert payments(env) == 3
    assert "schema left at d4000004 (code-only rollback)" in str(incident["phases"])


def test_backup_then_run_keeps_a_restorable_copy(any_env) -> None:
    env = any_env
    with_payments(env, rows=5)
    incident = trigger(env)
    assert incident["status"] == "success", incident
    downgrade = incident["detail"]["downgrade"]
    assert downgrade["action"] == "backup" and downgrade["dropped"][0]["rows"] == 5
    saved = downgrade["backup"]
    path = Path(saved["path"])
    assert path.parent == env.state_dir / "backups" and path.is_file()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == saved["sha256"]
    assert env.db_revision() == "c3000003" and "payments_v4" not in env.db_tables()
    if env.database_url.startswith("sqlite"):
        copy = sqlite3.connect(path)
        assert copy.execute("SELECT count(*) FROM payments_v4").fetchone() == (5,)
        copy.close()
        return
    server = env.pg_server  # type: ignore[attr-defined]
    restored = f"restored_{uuid.uuid4().hex[:8]}"
    server.create_database(restored)
    base = ["-h", server.host, "-p", str(server.port), "-U", server.user, "-d", restored]
    subprocess.run(["pg_restore", *base, str(path)], check=True, capture_output=True, text=True)
    out = subprocess.run(
        ["psql", *base, "-X", "-A", "-t", "-c", "SELECT count(*), sum(amount_cents) FROM payments_v4"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == "5|1000"


def test_a_failing_backup_changes_nothing(any_env) -> None:
    env = any_env
    env.write_config(migrations={"backup_command": ["false"]})
    with_payments(env)
    incident = trigger(env)
    assert incident["status"] == "failed" and incident["failed_step"] == "initiated", incident
    assert (
        "backup before the downgrade failed" in incident["error"]
        and "nothing was changed" in incident["error"]
    )
    unchanged_at_v4(env)


def test_run_records_the_sql_and_the_counts(any_env) -> None:
    env = any_env
    env.write_config(migrations={"destructive_downgrade": "run"})
    with_payments(env, rows=2)
    tables_before = set(env.db_tables())
    incident = trigger(env)
    assert incident["status"] == "success", incident
    downgrade = incident["detail"]["downgrade"]
    assert downgrade["action"] == "run" and downgrade["dropped"][0]["rows"] == 2
    # The offline SQL names exactly what the real downgrade removed.
    gone = tables_before - set(env.db_tables())
    assert gone == {d["table"] for d in downgrade["dropped"] if d["column"] is None} == {"payments_v4"}
    assert "DROP TABLE payments_v4" in downgrade["sql"]
    assert backups(env) == []


def test_a_release_declaring_forbidden_never_rolls_back_automatically(any_env) -> None:
    env = any_env
    pagerduty(env, destructive_downgrade="run")
    with_payments(env, declaration="downgrade: forbidden\n")
    incident = trigger(env)
    assert incident["status"] == "blocked", incident
    assert "forbidden" in incident["error"] and "nothing was changed" in incident["error"]
    unchanged_at_v4(env)
    assert len(wait_pages(env)) == 1


def test_the_plan_shows_the_offline_sql_that_alembic_then_runs(any_env, capsys) -> None:
    from rollback_agent.cli import main

    env = any_env
    env.write_config(migrations={"destructive_downgrade": "run"})
    with_payments(env, rows=4)
    answer = env.client().post(
        "/api/admin/rollback/test", json={"alert_name": "CriticalErrorRate"}, headers=basic_auth()
    )
    planned = answer.get_json()["plan"]["downgrade"]
    assert planned["classification"] == "destructive" and planned["action"] == "run"
    assert planned["dropped"] == [{"table": "payments_v4", "column": None, "rows": 4}]
    assert planned["summary"].endswith("drops table payments_v4 (4 rows)")
    assert main(["--config", str(env.config_path), "rollback", "--dry-run"]) == 0
    assert "drops table payments_v4 (4 rows)" in capsys.readouterr().out
    tables_before = set(env.db_tables())
    incident = trigger(env)
    assert incident["status"] == "success", incident
    ran = incident["detail"]["downgrade"]
    assert ran["sql"] == planned["sql"] and "DROP TABLE payments_v4" in ran["sql"]
    assert tables_before - set(env.db_tables()) == {"payments_v4"}
    assert env.db_revision() == "c3000003"
