"""`rollback-agent backup` / `restore`: a consistent online copy of the ledger, checked restores,
refused while a rollback runs."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from agent_support import run_cli as run
from rollback_agent.backup import BackupError, backup, inspect
from rollback_agent.state import SCHEMA_VERSION

pytestmark = pytest.mark.agent


def rollback_once(env, capsys) -> str:
    code, out, err = run(env, capsys, "rollback", "--json", "--reason", "before the backup")
    assert code == 0, (out, err)
    return str(json.loads(out)["incident_id"])


def test_backup_then_restore_brings_the_history_and_the_bad_release_back(agent_env, capsys, tmp_path) -> None:
    env = agent_env
    incident_id = rollback_once(env, capsys)
    target = tmp_path / "ledger.db"
    code, out, _ = run(env, capsys, "backup", "--to", str(target), "--json")
    assert code == 0, out
    info = json.loads(out)
    assert info["result"] == "backed_up" and info["integrity"] == "ok"
    assert info["schema_version"] == SCHEMA_VERSION and info["counts"]["incidents"] == 1
    assert info["size"] == target.stat().st_size and (target.stat().st_mode & 0o777) == 0o600
    assert not list(tmp_path.glob("ledger.db-*")), "the backup must be one self-contained file"
    # the data is lost ...
    (env.state_dir / "state.db").unlink()
    for extra in env.state_dir.glob("state.db-*"):
        extra.unlink()
    code, out, _ = run(env, capsys, "status", "--json")
    assert json.loads(out)["history"] == []
    # ... and comes back, the bad release with it
    code, out, _ = run(env, capsys, "restore", "--from", str(target), "--sha256", info["sha256"])
    assert code == 0, out
    assert "1 incidents" in out and "1 bad releases" in out
    code, out, _ = run(env, capsys, "status", "--json")
    status = json.loads(out)
    assert [i["incident_id"] for i in status["history"]] == [incident_id]
    code, out, err = run(env, capsys, "deploy", "v3")
    assert code == 3, (out, err)
    assert "marked bad" in (out + err).lower()
    journal = sqlite3.connect(env.state_dir / "state.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"


def test_backup_is_consistent_while_the_ledger_is_written(agent_env, tmp_path) -> None:
    env = agent_env
    store = env.agent().store
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            with store.transaction() as conn:  # two rows per transaction: a torn copy would show it
                conn.execute("INSERT INTO bad_releases (sha, marked_at, reason) VALUES (?, ?, 'a')",
                             (f"a{n}", time.time()))
                conn.execute("INSERT INTO bad_releases (sha, marked_at, reason) VALUES (?, ?, 'b')",
                             (f"b{n}", time.time()))
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        copies = []
        for i in range(5):
            time.sleep(0.05)
            copies.append(backup(env.state_dir / "state.db", tmp_path / f"copy{i}.db"))
    finally:
        stop.set()
        thread.join()
    for info in copies:
        conn = sqlite3.connect(info.path)
        a, b = (conn.execute("SELECT count(*) FROM bad_releases WHERE reason=?", (r,)).fetchone()[0]
                for r in ("a", "b"))
        conn.close()
        assert a == b, f"{info.path}: {a} vs {b} rows, a transaction was cut in two"
    assert copies[-1].counts["bad_releases"] > 0


def test_restore_refused_during_a_rollback_and_a_deploy(agent_env, capsys, tmp_path) -> None:
    env = agent_env
    target = tmp_path / "ledger.db"
    assert run(env, capsys, "backup", "--to", str(target))[0] == 0
    proc = env.start_held_rollback()
    try:
        before = env.sql("SELECT id, status FROM incidents")
        code, out, err = run(env, capsys, "restore", "--from", str(target))
        assert code == 5, (out, err)
        assert "restore refused: rollback INC-" in err and "is in progress (phase application" in err, err
        assert "`rollback-agent status` shows nothing in progress" in err
        assert env.sql("SELECT id, status FROM incidents") == before  # nothing written over
    finally:
        proc.send_signal(signal.SIGTERM)
        (env.control / "sleep-restart").unlink()  # the restore's restarts do not hang
        proc.communicate(timeout=30)
    with env.agent().lock().acquire("deploy", "v9"):
        code, _, err = run(env, capsys, "restore", "--from", str(target), "--json")
    assert code == 5 and "deploy v9 is in progress" in err
    # once nothing runs, the same file restores
    assert run(env, capsys, "restore", "--from", str(target))[0] == 0


def test_restore_refuses_a_damaged_foreign_or_newer_file(agent_env, capsys, tmp_path) -> None:
    env = agent_env
    good = tmp_path / "ledger.db"
    assert run(env, capsys, "backup", "--to", str(good))[0] == 0
    info = inspect(good)
    code, _, err = run(env, capsys, "restore", "--from", str(good), "--sha256", "0" * 64)
    assert code == 3 and f"sha256 {info.sha256} does not match the expected {'0' * 64}" in err
    foreign = tmp_path / "other.db"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.close()
    code, _, err = run(env, capsys, "restore", "--from", str(foreign))
    assert code == 3 and "not a rollback agent ledger" in err
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    code, _, err = run(env, capsys, "restore", "--from", str(junk))
    assert code == 3 and "junk.db" in err
    newer = tmp_path / "newer.db"
    newer.write_bytes(good.read_bytes())
    conn = sqlite3.connect(newer)
    conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    code, _, err = run(env, capsys, "restore", "--from", str(newer))
    assert code == 3 and "written by a newer agent" in err
    code, _, err = run(env, capsys, "restore", "--from", str(tmp_path / "missing.db"))
    assert code == 3 and "no such file" in err
    # nothing of that touched the ledger
    assert inspect(env.state_dir / "state.db").counts == info.counts
    with pytest.raises(BackupError, match="no such directory"):
        backup(env.state_dir / "state.db", tmp_path / "nowhere" / "x.db")


def test_the_playbooks_sqlite_helper_copies_and_checks_grafanas_kind_of_database(tmp_path) -> None:
    """playbooks/files/sqlite_backup.py (Grafana's database): same online copy, run as a script."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "playbooks" / "files" / "sqlite_backup.py"
    db = tmp_path / "grafana.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE dashboard (id INTEGER PRIMARY KEY, title TEXT)")
    conn.executemany("INSERT INTO dashboard (title) VALUES (?)", [(f"d{i}",) for i in range(100)])
    conn.commit()  # kept open: the copy is taken while the owner has the database open
    out = subprocess.run([sys.executable, str(script), "backup", str(db), str(tmp_path / "copy.db")],
                         capture_output=True, text=True, check=False)
    conn.close()
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["integrity"] == "ok" and info["size"] == (tmp_path / "copy.db").stat().st_size
    rows = sqlite3.connect(tmp_path / "copy.db").execute("SELECT count(*) FROM dashboard").fetchone()[0]
    assert rows == 100
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    out = subprocess.run([sys.executable, str(script), "check", str(junk)], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 1 and "sqlite_backup:" in out.stderr
