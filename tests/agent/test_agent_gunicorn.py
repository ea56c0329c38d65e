"""The agent under a real gunicorn, as systemd runs it: concurrency, worker restarts, kill -9."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from agent_gunicorn import Gunicorn, failed_start, metric
from agent_support import payload
from testkit.net import free_port

pytestmark = pytest.mark.agent

@pytest.fixture
def gunicorn(agent_env, request):
    server = Gunicorn(agent_env, workers=getattr(request, "param", 2))
    yield server
    server.stop()
    sleepers = agent_env.control / "sleepers"
    if sleepers.exists():
        for pid in sleepers.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), signal.SIGKILL)


@pytest.mark.parametrize("gunicorn", [4], indirect=True)
def test_fifty_identical_webhooks_make_exactly_one_rollback(agent_env, gunicorn) -> None:
    env = agent_env
    gunicorn.start()
    barrier = threading.Barrier(50)

    def send(_: int) -> requests.Response:
        barrier.wait()
        return gunicorn.trigger()

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(send, range(50)))
    bodies = [r.json() for r in responses]
    statuses = Counter(b["status"] for b in bodies)
    assert statuses["accepted"] == 1, statuses
    assert set(statuses) <= {"accepted", "duplicate", "in_progress", "blocked"}, statuses
    assert all(
        r.status_code == (202 if b["status"] == "accepted" else 200)
        for r, b in zip(responses, bodies, strict=True)
    )
    incident_id = next(b["incident_id"] for b in bodies if b["status"] == "accepted")
    assert env.wait_incident(incident_id)["status"] == "success"
    assert env.restarts() == ["restart app.service", "restart worker.service"]
    executed = env.sql("SELECT count(*) FROM incidents WHERE status NOT IN ('blocked', 'dry_run')")
    assert executed == [(1,)]
    assert env.sql("SELECT count(*) FROM webhooks") == [(50,)]
    # Metrics add up across the four workers and the rollback process.
    text = gunicorn.get("/metrics").text
    total = sum(metric(text, f'rollback_agent_webhooks_total{{outcome="{s}"}}') for s in statuses)
    assert total == 50
    assert metric(text, 'rollback_agent_rollbacks_total{result="success"}') == 1
    assert metric(text, "rollback_agent_rollback_duration_seconds_count") == 1
    assert metric(text, "rollback_agent_rollback_in_progress") == 0


def test_rollback_survives_worker_restarts(agent_env, gunicorn) -> None:
    env = agent_env
    env.control_file("sleep-restart", "2")
    gunicorn.start()
    response = gunicorn.trigger()
    assert response.status_code == 202
    incident_id = response.json()["incident_id"]
    time.sleep(0.5)
    old_workers = gunicorn.workers()
    assert gunicorn.proc is not None
    os.kill(gunicorn.proc.pid, signal.SIGHUP)  # gunicorn replaces every worker
    for pid in old_workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and set(gunicorn.workers()) & set(old_workers):
        time.sleep(0.1)
    assert not set(gunicorn.workers()) & set(old_workers)
    status = gunicorn.get("/api/admin/rollback/status").json()
    assert status["in_progress"]["incident_id"] == incident_id  # a new worker sees it running
    incident = env.wait_incident(incident_id)
    assert incident["status"] == "success", incident
    assert env.deployed_sha() == env.shas["v2"]


def test_kill_9_mid_rollback_is_interrupted_on_restart(agent_env, gunicorn) -> None:
    env = agent_env
    env.control_file("sleep-restart", "60")
    gunicorn.start()
    incident_id = gunicorn.trigger().json()["incident_id"]
    deadline = time.monotonic() + 30
    sleepers = env.control / "sleepers"
    while time.monotonic() < deadline:
        status = gunicorn.get("/api/admin/rollback/status").json()
        if (status["in_progress"] or {}).get("phase") == "application" and sleepers.exists():
            break  # the restart command is running
        time.sleep(0.1)
    assert status["in_progress"]["progress"] == 60
    gunicorn.kill9()
    for pid in sleepers.read_text().split():  # systemd would kill the unit's cgroup
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid), signal.SIGKILL)
    env.server.messages.clear()

    gunicorn.start()
    status = gunicorn.get("/api/admin/rollback/status").json()
    assert status["in_progress"] is None
    item = next(i for i in status["history"] if i["incident_id"] == incident_id)
    assert item["status"] == item["result"] == "interrupted"
    assert item["failed_step"] == "application"
    assert item["error"].startswith("no process runs the rollback any more")
    assert "during application (60%); code at" in item["error"]
    text = env.server.wait_for("interrupted")
    assert incident_id in text and "rollback-agent rollback --to" in text
    # A new alert can be handled again (the lock is free), within the guards.
    again = gunicorn.trigger(payload("CriticalP95Latency", fingerprint="fp-latency")).json()
    assert again["status"] == "blocked" and "cooldown" in again["reason"]


def test_config_error_stops_gunicorn_with_the_key_named(agent_env) -> None:
    env = agent_env
    env.write_config(guards={"cooldwn": "5m"})
    stderr = failed_start(env)
    assert "unknown key 'cooldwn' in 'guards' (did you mean 'cooldown'?)" in stderr


def test_serve_command_runs_the_same_gunicorn(agent_env) -> None:
    env = agent_env
    port = free_port()
    env.write_config(server={"bind": f"127.0.0.1:{port}", "workers": 1})
    environ = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rollback_agent", "--config", str(env.config_path), "serve"],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                if health.status_code == 200:
                    break
            assert proc.poll() is None
            time.sleep(0.1)
        assert health.json()["host"] == "app1"
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert (
            b"gunicorn" in cmdline and b"python:rollback_agent.gunicorn_conf" in cmdline
        )  # exec'd, same pid
        assert (env.state_dir / "metrics").is_dir()
        mode = (env.state_dir / "state.db").stat().st_mode & 0o777
        assert mode & 0o007 == 0, oct(mode)  # nothing for other users
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


@pytest.mark.parametrize("gunicorn", [1], indirect=True)
def test_sighup_makes_new_workers_read_the_configuration_again(agent_env, gunicorn) -> None:
    gunicorn.start()
    assert requests.get(gunicorn.base + "/healthz", timeout=5).json()["mode"] == "live"
    old_workers = gunicorn.workers()
    agent_env.write_config(dry_run=True)
    assert gunicorn.proc is not None
    os.kill(gunicorn.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 20
    mode = "live"
    while time.monotonic() < deadline and mode != "dry_run":
        time.sleep(0.2)
        with contextlib.suppress(requests.RequestException):
            mode = requests.get(gunicorn.base + "/healthz", timeout=5).json()["mode"]
    assert mode == "dry_run"
    # the old worker finishes gracefully: it may still be exiting when a new one first answers
    while time.monotonic() < deadline and set(gunicorn.workers()) & set(old_workers):
        time.sleep(0.2)
    assert not set(gunicorn.workers()) & set(old_workers), "an old worker outlived the SIGHUP"
