"""Fixtures of the rollback agent's tests: a real git repository with three releases, real alembic
migrations on SQLite (or the shared PostgreSQL), a recording restart command, and one local HTTP
server standing in for the application's health URL and for Slack.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import agent_sample_repo as sample_app
import pytest
from agent_support import (  # noqa: F401  (re-exported for fixtures)
    RECORDER,
    SECRET,
    SLACK_PATH,
    AgentEnv,
    CaptureServer,
    _copy_template,
    alive,
    basic_auth,
    deep_merge,
    payload,
    write_recorder,
)


@pytest.fixture(scope="session")
def deployed_template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Once per session: the repo with v1, v2, v3 deployed in turn (SQLite), to copy per test."""
    root = tmp_path_factory.mktemp("template")
    shas = sample_app.build_repo(root / "app")
    (root / "db").mkdir()
    env = AgentEnv(root, shas, None, f"sqlite:///{root / 'db' / 'app.db'}")
    for tag in ("v1", "v2", "v3"):
        result = env.deploy(tag)
        assert result.result == "deployed", result.as_dict()
    return {"root": root, "shas": shas}


@pytest.fixture(scope="module")
def shared_env(tmp_path_factory: pytest.TempPathFactory, deployed_template: dict[str, Any]) -> AgentEnv:
    """One dry-run host for a whole module of read-only HTTP tests (no Slack, no health URL)."""
    root = tmp_path_factory.mktemp("shared")
    _copy_template(deployed_template["root"], root)
    env = AgentEnv(root, deployed_template["shas"], None, f"sqlite:///{root / 'db' / 'app.db'}")
    env.write_config(dry_run=True)
    return env


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    server = CaptureServer()
    yield server
    server.close()


@pytest.fixture
def agent_env(tmp_path: Path, deployed_template: dict[str, Any], capture: CaptureServer) -> AgentEnv:
    """An app host: v3 deployed (after v1 and v2), all healthy, Slack and health on the capture server."""
    _copy_template(deployed_template["root"], tmp_path)
    env = AgentEnv(tmp_path, deployed_template["shas"], capture, f"sqlite:///{tmp_path / 'db' / 'app.db'}")
    env.clear_calls()
    return env


@pytest.fixture
def fresh_env(tmp_path: Path, capture: CaptureServer) -> AgentEnv:
    """An app host with the repository but nothing deployed yet."""
    shas = sample_app.build_repo(tmp_path / "app")
    (tmp_path / "db").mkdir()
    return AgentEnv(tmp_path, shas, capture, f"sqlite:///{tmp_path / 'db' / 'app.db'}")


@pytest.fixture
def pg_env(tmp_path: Path, capture: CaptureServer, postgres_server: Any) -> AgentEnv:
    """Like agent_env (v1, v2, v3 deployed), on a database of its own on the shared PostgreSQL."""
    url = postgres_server.create_database(f"rollback_agent_{uuid.uuid4().hex[:8]}")
    shas = sample_app.build_repo(tmp_path / "app")
    env = AgentEnv(tmp_path, shas, capture, url.replace("postgresql://", "postgresql+psycopg2://"))
    env.pg_server = postgres_server  # type: ignore[attr-defined]
    for tag in ("v1", "v2", "v3"):
        assert env.deploy(tag).result == "deployed"
    return env


@pytest.fixture(params=["sqlite", "postgresql"])
def any_env(request: pytest.FixtureRequest) -> AgentEnv:
    """The same test on SQLite (agent_env) and on PostgreSQL (pg_env)."""
    return request.getfixturevalue("agent_env" if request.param == "sqlite" else "pg_env")


@pytest.fixture(autouse=True)
def _no_multiprocess_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process tests use prometheus-client's default registry; gunicorn tests set their own dir.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
