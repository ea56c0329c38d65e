"""Benchmark of the agent (make bench): prints figures, asserts nothing about speed.

1. Webhook intake under 8 concurrent senders: requests/s, p50 and p99 latency, as a ratio to a
   bare Flask endpoint served with the same gunicorn settings (targets: >= 0.7, p99 < 50 ms).
2. Memory: RSS of the gunicorn master and workers after the load (target: < 80 MB a process).
3. Rollback wall time, webhook to recorded result, against the sum of the same raw commands run
   alone: alembic downgrade, git checkout, git update-ref, restarts, status checks, one health GET
   (target: under 1 s of overhead).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from agent_gunicorn import Gunicorn
from agent_support import SECRET, basic_auth, payload

pytestmark = pytest.mark.bench

BENCH = Path(__file__).resolve().parents[2] / "agent" / "bench"
sys.path.insert(0, str(BENCH))
import loadgen  # noqa: E402

ROUNDS = 3


def bare_gunicorn(env, workers: int) -> Gunicorn:
    """The bare Flask endpoint with the agent's gunicorn settings (same config file, same workers)."""
    return Gunicorn(env, workers=workers, app=("--chdir", str(BENCH), "bare_app:app"))


def timed(argv: list[str], **kwargs) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, **kwargs)
    return time.monotonic() - started


def raw_rollback(env) -> dict[str, float]:
    """The rollback's commands by hand, in order, each timed on its own."""
    app_env = {**os.environ, "DATABASE_URL": env.database_url}
    alembic = [sys.executable, "-m", "alembic", "-c", "alembic.ini"]
    steps = {
        "alembic downgrade": timed([*alembic, "downgrade", "b2000002"], cwd=env.repo, env=app_env),
        "git checkout": timed(
            ["git", "-C", str(env.repo), "checkout", "--quiet", "--detach", env.shas["v2"]]
        ),
        "git update-ref": timed(
            ["git", "-C", str(env.repo), "update-ref", "refs/heads/deployed", env.shas["v2"]]
        ),
    }
    for unit in ("app.service", "worker.service"):
        steps[f"restart {unit}"] = timed([str(env.recorder), "restart", unit])
    for unit in ("app.service", "worker.service"):
        steps[f"is-active {unit}"] = timed([str(env.recorder), "is-active", unit])
    started = time.monotonic()
    requests.get(env.server.base + "/health", timeout=5).raise_for_status()
    steps["health GET"] = time.monotonic() - started
    # Back to v3 for the next round.
    subprocess.run(
        ["git", "-C", str(env.repo), "checkout", "--quiet", "--detach", env.shas["v3"]], check=True
    )
    subprocess.run(
        ["git", "-C", str(env.repo), "update-ref", "refs/heads/deployed", env.shas["v3"]], check=True
    )
    subprocess.run([*alembic, "upgrade", "head"], cwd=env.repo, env=app_env, check=True, capture_output=True)
    return steps


def test_benchmark(agent_env) -> None:
    env = agent_env
    lines = ["", "=== rollback-agent benchmark ==="]

    # 1. Intake: duplicate resends of a firing alert (the common case) against the bare endpoint.
    env.write_config(dry_run=True)
    agent = Gunicorn(env, workers=2).start()
    body = payload()
    assert agent.trigger(body).json()["status"] == "dry_run"
    headers = basic_auth()
    try:
        agent_load = loadgen.load(agent.port, "/api/admin/rollback/trigger", body, headers)
        assert agent.trigger(body).json()["status"] == "duplicate"
        assert agent.proc is not None
        workers = loadgen.children(agent.proc.pid)
        master_rss = loadgen.rss_mb(agent.proc.pid)
        worker_rss = [loadgen.rss_mb(pid) for pid in workers]
    finally:
        agent.stop()
    bare = bare_gunicorn(env, workers=2).start()
    try:
        bare_load = loadgen.load(bare.port, "/api/admin/rollback/trigger", body, headers)
    finally:
        bare.stop()
    lines += [
        "intake, 8 concurrent senders, gunicorn 2 gthread workers x 16 threads, 5 s after 1 s warm-up"
        f" (load average {os.getloadavg()[0]:.1f}):",
        "  " + agent_load.line("agent"),
        "  " + bare_load.line("bare Flask"),
        f"  ratio agent/bare: {agent_load.rps / bare_load.rps:.2f} (target >= 0.7); "
        f"agent p99 {agent_load.percentile(0.99) * 1000:.1f} ms (target < 50 ms)",
        f"memory (RSS): master {master_rss:.1f} MB, workers "
        + ", ".join(f"{r:.1f}" for r in worker_rss)
        + f" MB; total {master_rss + sum(worker_rss):.1f} MB (target < 80 MB a process)",
    ]

    # 3. Rollback wall time against its raw commands.
    env.write_config(dry_run=False, guards={"cooldown": "1s", "max_rollbacks_per_day": 100})
    agent = Gunicorn(env, workers=2).start()
    walls, raws, breakdowns = [], [], []
    try:
        for _ in range(ROUNDS):
            sent = time.time()
            response = requests.post(
                agent.base + "/api/admin/rollback/trigger",
                auth=("alertmanager", SECRET),
                json=payload(fingerprint=uuid.uuid4().hex),
                timeout=30,
            )
            incident = env.wait_incident(response.json()["incident_id"])
            assert incident["status"] == "success", incident
            walls.append(incident["ended_at"] - sent)
            phases = incident["phases"]
            breakdowns.append(
                {
                    "decision + process start": phases[0]["started_at"] - sent,
                    **{p["name"]: p["ended_at"] - p["started_at"] for p in phases},
                }
            )
            assert env.deploy("v3", force=True).result == "deployed"
            time.sleep(1.1)  # the 1 s cooldown of this benchmark
            steps = raw_rollback(env)
            raws.append(sum(steps.values()))
    finally:
        agent.stop()
    wall, raw = statistics.median(walls), statistics.median(raws)
    lines += [
        f"rollback v3 -> v2 (SQLite, 2 units, health check), median of {ROUNDS}:",
        f"  agent, webhook sent -> result recorded: {wall:.2f} s  (rounds: "
        + ", ".join(f"{w:.2f}" for w in walls)
        + ")",
        "  raw commands alone: "
        + f"{raw:.2f} s  ("
        + ", ".join(f"{k} {v:.2f}" for k, v in steps.items())
        + ")",
        f"  overhead: {wall - raw:.2f} s (target < 1 s)",
        "  where the agent's time went (median s): "
        + ", ".join(f"{k} {statistics.median(b[k] for b in breakdowns):.2f}" for k in breakdowns[0]),
        "",
    ]
    print("\n".join(lines))
