"""Small pieces on their own: the state store, the lock, revisions read from git, Slack messages, payloads."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_sample_repo import build_repo, migration_source
from agent_support import alive
from rollback_agent.config import RetentionConfig, SlackConfig
from rollback_agent.gitops import Deployment
from rollback_agent.locking import LockBusyError, OperationLock, is_held, read_holder
from rollback_agent.migrations import MigrationError, heads_of, is_below, release_graph, release_revision
from rollback_agent.notify import Event, Notifier, progress_bar, render
from rollback_agent.payload import PayloadError, parse_webhook
from rollback_agent.procs import run
from rollback_agent.state import Store

pytestmark = pytest.mark.unit


def test_store_uses_wal_and_stays_bounded(tmp_path: Path) -> None:
    store = Store(tmp_path / "state" / "state.db", RetentionConfig(webhooks=20, incidents=10, deploys=10))
    assert store.journal_mode() == "wal"
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o750
    for i in range(60):
        store.record_webhook(
            remote="127.0.0.1",
            receiver="r",
            group_key="g",
            alert_count=1,
            status="ignored",
            incident_id=None,
            reason="r",
            decisions=[{"i": i}],
        )
        with store.transaction() as conn:
            store.create_incident(
                conn,
                incident_id=f"INC-{i}",
                source="webhook",
                status="blocked",
                alert_name="A",
                fingerprint=f"fp{i}",
                trigger_id="t",
                confidence="high",
                reason="r",
                from_sha="a",
                to_sha="b",
                from_revision=None,
                to_revision=None,
                detail={},
            )
            store.mark_handled(conn, [f"fp{i}"], "sha", f"INC-{i}", "blocked")
        deploy = store.start_deploy(kind="deploy", sha=f"{i:040d}", ref="v", previous_sha=None)
        store.finish_deploy(deploy, outcome="healthy", revision="r", deployed=True)
    counts = store.counts()
    assert counts["webhooks"] <= 20 + 50 and counts["incidents"] <= 11 and counts["deploys"] <= 11
    assert counts["handled_alerts"] <= 20 + 50
    # The newest survive.
    assert store.recent_webhooks(1)[0]["decisions"] == [{"i": 59}]
    assert store.incidents(1)[0]["id"] == "INC-59"
    assert store.deploys(1)[0].sha == f"{59:040d}"
    size = (tmp_path / "state" / "state.db").stat().st_size
    for _ in range(150):
        store.record_webhook(
            remote=None,
            receiver=None,
            group_key=None,
            alert_count=0,
            status="ignored",
            incident_id=None,
            reason="r",
            decisions=[],
        )
    assert store.counts()["webhooks"] <= 70
    assert (tmp_path / "state" / "state.db").stat().st_size <= size * 2


def test_lock_is_exclusive_across_processes_and_freed_by_death(tmp_path: Path) -> None:
    path = tmp_path / "rollback.lock"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; from pathlib import Path; from rollback_agent.locking import OperationLock;"
            f"l=OperationLock(Path({str(path)!r})).acquire('rollback','INC-x'); print('held', flush=True);"
            " time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        assert is_held(path)
        with pytest.raises(LockBusyError, match=r"rollback INC-x is running \(pid \d+\)"):
            OperationLock(path).acquire("deploy", "v1")
        assert read_holder(path) == {**read_holder(path), "kind": "rollback", "id": "INC-x", "pid": child.pid}
    finally:
        child.kill()
        child.wait()
    assert not is_held(path)  # the kernel released it with the process
    with OperationLock(path).acquire("deploy", "v1"):
        assert is_held(path)
    assert not is_held(path)


def test_revisions_are_read_from_each_release(tmp_path: Path) -> None:
    shas = build_repo(tmp_path / "app")
    deployment = Deployment(tmp_path / "app", "refs/heads/deployed")
    assert release_revision(deployment, shas["v1"], "alembic.ini") == "a1000001"
    assert release_revision(deployment, shas["v2"], "alembic.ini") == "b2000002"
    assert release_revision(deployment, shas["v3"], str(tmp_path / "app" / "alembic.ini")) == "c3000003"
    graph = release_graph(deployment, shas["v3"], "alembic.ini")
    assert heads_of(graph) == ["c3000003"]
    assert is_below(graph, "a1000001", "c3000003") and is_below(graph, "base", "c3000003")
    assert not is_below(graph, "c3000003", "b2000002")
    with pytest.raises(MigrationError, match=r"has no other\.ini"):
        release_revision(deployment, shas["v1"], "other.ini")
    with pytest.raises(MigrationError, match=r"outside deployment\.repo"):
        release_revision(deployment, shas["v1"], "/etc/alembic.ini")


def test_two_heads_are_refused(tmp_path: Path) -> None:
    from agent_sample_repo import add_release

    shas = build_repo(tmp_path / "app")
    add_release(
        tmp_path / "app",
        "v4",
        {"migrations/versions/x.py": migration_source("x4000004", "b2000002", "pass", "pass")},
    )
    deployment = Deployment(tmp_path / "app", "refs/heads/deployed")
    sha = deployment.resolve("v4")
    with pytest.raises(MigrationError, match="several alembic heads"):
        release_revision(deployment, sha, "alembic.ini")
    assert release_revision(deployment, shas["v3"], "alembic.ini") == "c3000003"


def test_commands_have_a_time_limit_that_stops_children(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    started = time.monotonic()
    result = run(["sh", "-c", f"sleep 30 & echo $! > {marker}; wait"], timeout=1.0)
    assert result.timed_out and not result.ok and time.monotonic() - started < 10
    assert "time limit reached" in result.excerpt()
    time.sleep(0.1)
    assert not alive(int(marker.read_text()))
    missing = run(["/nonexistent/cmd"], timeout=5)
    assert missing.returncode == 127 and "cannot run /nonexistent/cmd" in missing.excerpt()


def test_slack_message_layout() -> None:
    assert progress_bar(0) == "[░░░░░░░░░░] 0%"
    assert progress_bar(40) == "[████░░░░░░] 40%"
    assert progress_bar(100) == "[██████████] 100%"
    body = render(
        Event(
            kind="failure",
            incident_id="INC-1",
            host="app1",
            alert="CriticalErrorRate",
            trigger="error_rate_threshold",
            reason="Error rate exceeded 20% for 2 minutes",
            from_sha="a" * 40,
            to_sha="b" * 40,
            progress=40,
            duration=75.0,
            failed_step="database",
            error="boom",
            follow_up=["look"],
        ),
        "#mita-deployments",
        "rollback-agent",
    )
    text = body["attachments"][0]["text"]
    assert body["channel"] == "#mita-deployments" and body["attachments"][0]["color"] == "danger"
    for part in (
        "INC-1",
        "host `app1`",
        "`aaaaaaaaaa` → `bbbbbbbbbb`",
        "[████░░░░░░] 40%",
        "1m15s",
        "*Failed step:* database",
        "boom",
        "• look",
    ):
        assert part in text


def test_notifier_queues_without_blocking_and_gives_up_quietly() -> None:
    # A URL nobody answers on: sending fails, but send() returns at once and flush() ends.
    notifier = Notifier(
        SlackConfig(webhook_url_env="X", timeout=0.5, max_attempts=2), "http://127.0.0.1:9/hook", max_delay=3
    )
    started = time.monotonic()
    for i in range(5):
        notifier.send(Event(kind="initiated", incident_id=f"INC-{i}", host="h"))
    # Sent inline, five events would take >= 5 s (2 attempts x 0.5 s each): queued, far less.
    assert time.monotonic() - started < 2.0
    assert notifier.flush(timeout=30)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {
                "version": "4",
                "status": "firing",
                "alerts": [{"status": "firing", "labels": {"alertname": "A"}}],
            },
            None,
        ),
        (
            {
                "version": "4",
                "status": "firing",
                "alerts": [{"status": "firing", "labels": {"alertname": 3}}],
            },
            "alerts[0].labels.alertname",
        ),
        ({"version": "4", "status": "firing", "alerts": "x"}, "alerts:"),
        ({"version": 4, "status": "firing", "alerts": []}, "unsupported webhook version 4"),
        ("text", "must be a JSON object"),
    ],
)
def test_payload_validation(data: object, message: str | None) -> None:
    if message is None:
        payload = parse_webhook(data)
        assert payload.alerts[0].name == "A" and len(payload.alerts[0].key()) == 16
        return
    with pytest.raises(PayloadError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_webhook(data)
