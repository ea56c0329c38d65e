"""Support of the downgrade data-safety tests: release v4 on top of the sample's v3 creates
``payments_v4`` (with rows) or an index, and the checks the tests share (rows, backups, pages).
"""

from __future__ import annotations

import time
from pathlib import Path

from agent_sample_repo import add_release, migration_source
from agent_support import AgentEnv, basic_auth, payload

TRIGGER = "/api/admin/rollback/trigger"
PAYMENTS_UP = """
op.create_table(
    "payments_v4",
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
)
"""
PAYMENTS_DOWN = 'op.drop_table("payments_v4")'
INDEX_UP = 'op.create_index("ix_accounts_name", "accounts", ["name"])'
INDEX_DOWN = 'op.drop_index("ix_accounts_name", table_name="accounts")'


def release_v4(env: AgentEnv, up: str, down: str, declaration: str | None = None) -> str:
    files = {
        "app.py": 'VERSION = "v4"\n',
        "migrations/versions/d4000004_v4.py": migration_source("d4000004", "c3000003", up, down),
    }
    if declaration is not None:
        files["rollback.yml"] = declaration
    sha = add_release(env.repo, "v4", files)
    env.shas["v4"] = sha
    result = env.deploy("v4")
    assert result.result == "deployed", result.as_dict()
    env.clear_calls()
    return sha


def with_payments(env: AgentEnv, rows: int = 3, declaration: str | None = None) -> None:
    release_v4(env, PAYMENTS_UP, PAYMENTS_DOWN, declaration)
    from sqlalchemy import create_engine, text

    engine = create_engine(env.database_url)
    with engine.begin() as conn:
        for i in range(rows):
            conn.execute(
                text("INSERT INTO payments_v4 (id, amount_cents) VALUES (:i, :a)"), {"i": i + 1, "a": 100 * i}
            )
    engine.dispose()


def payments(env: AgentEnv) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(env.database_url)
    with engine.connect() as conn:
        count = int(conn.execute(text("SELECT count(*) FROM payments_v4")).scalar_one())
    engine.dispose()
    return count


def pagerduty(env: AgentEnv, **migrations: object) -> None:
    env.write_config(notify=env.pagerduty_notify(), migrations=migrations)


def trigger(env: AgentEnv) -> dict:
    response = env.client().post(TRIGGER, json=payload(), headers=basic_auth())
    data = response.get_json()
    assert response.status_code == 202, data
    return env.wait_incident(data["incident_id"])


def unchanged_at_v4(env: AgentEnv, rows: int = 3) -> None:
    assert env.db_revision() == "d4000004"
    assert payments(env) == rows
    assert env.head_sha() == env.deployed_sha() == env.shas["v4"]
    assert env.app_version() == "v4"
    assert env.restarts() == []


def wait_pages(env: AgentEnv, count: int = 1, timeout: float = 20.0) -> list[dict]:
    assert env.server is not None
    deadline = time.monotonic() + timeout
    while len(env.server.pages) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return list(env.server.pages)


def backups(env: AgentEnv) -> list[Path]:
    folder = env.state_dir / "backups"
    return sorted(folder.iterdir()) if folder.exists() else []
