"""The state database's WAL is checkpointed by a thread of its own in a served worker (every 5 s),
never by the commit of a webhook (fewer checkpoints: more webhooks/s, see the agent README)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from agent_gunicorn import Gunicorn
from agent_support import payload
from rollback_agent.checkpoints import Checkpointer
from rollback_agent.state import Store
from testkit.net import wait_for

pytestmark = pytest.mark.agent


def _record(store: Store, count: int) -> None:
    """``count`` webhook records written from a new thread (a request thread's own connection)."""

    def write() -> None:
        for n in range(count):
            store.record_webhook(
                remote="127.0.0.1",
                receiver="rollback-agent",
                group_key=f"group-{n}",
                alert_count=1,
                status="duplicate",
                incident_id=None,
                reason="x" * 300,
                decisions=[{"alertname": "CriticalErrorRate", "reason": "y" * 300}],
            )

    thread = threading.Thread(target=write)
    thread.start()
    thread.join()


def _autocheckpoint(store: Store) -> int:
    found: list[int] = []

    def read() -> None:
        with store.connect() as conn:
            found.append(int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]))

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    return found[0]


def test_request_threads_never_checkpoint_and_the_thread_does(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.initialize()
    assert _autocheckpoint(store) == 1000  # SQLite's default: the CLI and the rollback process keep it
    idle = Checkpointer(store, interval=3600).start()  # started, but never due in this test
    try:
        assert _autocheckpoint(store) == 0
        before = store.path.stat().st_size
        _record(store, 1500)  # past 1000 WAL pages: SQLite's own checkpoint would have run
        wal = Path(f"{store.path}-wal").stat().st_size
        assert wal > 1000 * 4096, wal
        assert store.path.stat().st_size == before, "a request thread's commit copied the WAL"
    finally:
        idle.stop()
    assert store.autocheckpoint

    running = Checkpointer(store, interval=0.05).start()
    try:
        wait_for(lambda: store.path.stat().st_size > before + 500 * 1024, 5, "the checkpoint thread", 0.05)
        busy, frames, copied = store.checkpoint()
        assert (busy, copied) == (0, frames)
    finally:
        running.stop()


def test_served_worker_checkpoints_soon_after_a_few_webhooks(agent_env) -> None:
    """150 resent webhooks (a few hundred WAL pages, below SQLite's 1000) reach the database file
    within seconds: the workers' checkpoint thread copies them, no webhook waits for the 1000th page."""
    agent_env.write_config(dry_run=True)
    server = Gunicorn(agent_env, workers=2).start()
    try:
        db = agent_env.state_dir / "state.db"
        time.sleep(6.0)  # the start-up writes checkpointed
        before = db.stat().st_size
        body = payload()
        assert server.trigger(body).json()["status"] == "dry_run"
        for _ in range(150):
            assert server.trigger(body).json()["status"] == "duplicate"
        wait_for(lambda: db.stat().st_size > before + 64 * 1024, 12, "the WAL copied into state.db", 0.1)
    finally:
        server.stop()


def test_the_setting_reaches_a_connection_opened_before_it_changed(tmp_path: Path) -> None:
    """A connection is kept per (process, thread identifier), and a finished thread's identifier is
    reused by the next thread: the setting must follow on every use, not only at opening."""
    store = Store(tmp_path / "state.db")
    store.initialize()

    def pages() -> int:  # always this thread, so always the same kept connection
        with store.connect() as conn:
            return int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

    assert pages() == 1000
    checkpointer = Checkpointer(store, interval=3600).start()
    try:
        assert pages() == 0
    finally:
        checkpointer.stop()
    assert pages() == 1000
