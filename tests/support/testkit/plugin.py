"""The fixtures every suite shares; pytest.ini loads this plugin (-p testkit.plugin)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.postgres import PostgresServer, running_postgres
from testkit.tools import require_tool


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool")


@pytest.fixture(scope="session")
def amtool() -> str:
    return require_tool("amtool")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL 15 cluster on a free loopback port, trust auth, removed at the end."""
    with running_postgres() as server:
        yield server
