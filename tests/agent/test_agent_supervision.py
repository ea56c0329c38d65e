"""Supervision: the web process notices at once when the rollback process it started dies, and every
web process looks again every 30 s; the incident says honestly what is known."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest
from agent_gunicorn import Gunicorn, metric
from agent_support import basic_auth, payload

pytestmark = pytest.mark.agent


def open_orphan(env, host, incident_id: str) -> str:
    """A running v3 -> v2 rollback in the store whose runner is gone (nobody holds the lock)."""
    from rollback_agent.state import RUNNING

    host.store.open_incident(
        incident_id,
        source="webhook",
        status=RUNNING,
        reason="test",
        from_sha=env.shas["v3"],
        to_sha=env.shas["v2"],
        from_revision="c3000003",
        to_revision="b2000002",
    )
    return incident_id


def test_kill_9_of_the_runner_is_noticed_within_seconds(agent_env) -> None:
    env = agent_env
    env.control_file("sleep-restart", "60")
    server = Gunicorn(env, workers=2)
    try:
        server.start()
        incident_id = server.trigger().json()["incident_id"]
        sleepers = env.control / "sleepers"
        deadline = time.monotonic() + 30
        runner = None
        while time.monotonic() < deadline:
            busy = env.agent().in_progress() or {}
            if busy.get("phase") == "application" and sleepers.exists():
                runner = busy["runner_pid"]
                break
            time.sleep(0.1)
        assert runner, "the rollback never reached its restart"
        os.kill(runner, signal.SIGKILL)
        for pid in sleepers.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), signal.SIGKILL)
        killed = time.monotonic()
        # Read straight from the state (no status call, which would run recovery itself).
        incident = env.wait_incident(incident_id, timeout=10)
        assert time.monotonic() - killed < 5
        assert incident["status"] == "interrupted", incident
        error = incident["error"]
        assert error.startswith("runner exited with signal 9 (SIGKILL) during application (60%)"), error
        assert f"code at {env.shas['v2'][:10]}, ref at {env.shas['v2'][:10]}, database at b2000002" in error
        assert incident["detail"]["consistent"] is True  # all of v2 is in place, restarted or not
        assert "runner exited with signal 9" in env.server.wait_for("interrupted")
        health = server.get("/healthz").json()
        assert health["rollback_in_progress"] is False and health["stuck"] == []
        text = server.get("/metrics").text
        assert metric(text, 'rollback_agent_incidents{state="running"}') == 0
        assert 'rollback_agent_incidents{state="stuck"} 0.0' in text
    finally:
        server.stop()


def test_periodic_recovery_every_30_seconds_on_the_ticker(agent_env) -> None:
    from rollback_agent.recovery import PeriodicRecovery
    from rollback_agent.state import RUNNING
    from rollback_agent.ticker import Ticker

    env = agent_env
    host = env.agent()

    def orphan(name: str) -> str:  # a rollback whose process is gone (nobody holds the lock)
        return open_orphan(env, host, f"INC-20250101-000000-{name}")

    ticker = Ticker(host, jobs={"recovery": PeriodicRecovery()})
    first = orphan("0000000000000001")
    assert ticker.tick(now=1000.0)["recovery"] == [first]  # at start
    second = orphan("0000000000000002")
    assert ticker.tick(now=1010.0)["recovery"] is None  # not yet
    assert host.store.incident(second).status == RUNNING
    assert ticker.tick(now=1031.0)["recovery"] == [second]
    inc = host.store.incident(second)
    assert inc.status == "interrupted"
    assert inc.error.startswith("no process runs the rollback any more")
    assert f"code at {env.shas['v3'][:10]}" in inc.error and "database at c3000003" in inc.error
    assert inc.detail["consistent"] is True


def test_an_interrupted_rollback_out_of_step_leaves_the_host_stuck(agent_env) -> None:
    from rollback_agent.recovery import recover

    env = agent_env
    host = env.agent()
    # The runner died after the downgrade, before the code switch: v3's code on v2's schema.
    host.migrations.downgrade("b2000002", 60)
    open_orphan(env, host, "INC-20250101-000000-00000000000000ff")
    assert recover(host) == ["INC-20250101-000000-00000000000000ff"]
    inc = host.store.incident("INC-20250101-000000-00000000000000ff")
    assert inc.detail["stuck"] is True and "OUT OF STEP" in inc.error
    assert env.client().get("/healthz").get_json()["stuck"] == [inc.id]
    metrics = env.client().get("/metrics").get_data(as_text=True)
    assert 'rollback_agent_incidents{state="stuck"} 1.0' in metrics
    env.server.wait_for("stuck")
    blocked = (
        env.client().post("/api/admin/rollback/trigger", json=payload(), headers=basic_auth()).get_json()
    )
    assert blocked["status"] == "blocked" and "stuck" in blocked["reason"]
