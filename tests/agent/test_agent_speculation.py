"""The downgrade's SQL rendered while the preflight reads the database's revision (real alembic)."""

from __future__ import annotations

import pytest
from rollback_agent.speculation import Speculation
from rollback_agent.steps import Deadline

pytestmark = pytest.mark.agent


def test_the_sql_rendered_from_the_expected_revision_is_used_when_the_database_is_there(agent_env) -> None:
    host = agent_env.agent()
    with Speculation(host, "c3000003", "b2000002", Deadline.after(120)) as rendered:
        check = rendered.result("c3000003", "b2000002")
        assert rendered.result("c3000003", "b2000002") is check  # rendered once, in the background
    assert (check.from_revision, check.to_revision) == ("c3000003", "b2000002")


def test_a_database_elsewhere_gets_the_sql_rendered_again_from_where_it_is(agent_env) -> None:
    host = agent_env.agent()
    with Speculation(host, "c3000003", "a1000001", Deadline.after(120)) as rendered:
        check = rendered.result("b2000002", "a1000001")  # the guess (from c3000003) is dropped
    assert (check.from_revision, check.to_revision) == ("b2000002", "a1000001")
    assert "c3000003" not in check.sql


def test_nothing_is_rendered_ahead_when_there_is_nothing_to_guess(agent_env) -> None:
    host = agent_env.agent()
    with Speculation(host, None, "b2000002", Deadline.after(120)) as rendered:
        assert rendered._thread is None
        check = rendered.result("c3000003", "b2000002")
    assert (check.from_revision, check.to_revision) == ("c3000003", "b2000002")
