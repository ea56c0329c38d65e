"""Downgrade backups do not fill state_dir (issue 17): after each new backup the agent keeps the
newest ``migrations.backup_keep`` (and, when set, none older than ``backup_max_age``), never the
backup of a running incident or of the last one, and never a file it did not write (``INC-...``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from agent_downgrade import backups, trigger, with_payments
from rollback_agent.backup import prune_backups
from rollback_agent.config import ConfigError

pytestmark = pytest.mark.agent


def old_backup(folder: Path, name: str, age: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"PGDMP old backup " + name.encode())
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def test_the_newest_are_kept_protected_ones_too_and_foreign_files_never_go(tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    ages = {"INC-a.dump": 50, "INC-b.sqlite": 40, "INC-c.dump": 30, "INC-d.dump": 20, "INC-e.dump": 10}
    for name, age in ages.items():
        old_backup(folder, name, age)
    foreign = old_backup(folder, "notes.txt", 1000)
    gone = prune_backups(folder, keep=2, max_age=None, protect={"INC-a"}, now=time.time())
    assert sorted(p.name for p in gone) == ["INC-b.sqlite", "INC-c.dump"]
    assert sorted(p.name for p in folder.iterdir()) == ["INC-a.dump", "INC-d.dump", "INC-e.dump", "notes.txt"]
    assert foreign.exists()
    gone = prune_backups(folder, keep=10, max_age=15.0, protect=set(), now=time.time())
    assert sorted(p.name for p in gone) == ["INC-a.dump", "INC-d.dump"]  # older than 15 s
    assert prune_backups(tmp_path / "none", keep=1, max_age=None, protect=set(), now=time.time()) == []


def test_a_rollback_with_a_backup_prunes_the_older_ones(any_env) -> None:
    env = any_env
    env.write_config(migrations={"backup_keep": 2})
    folder = env.state_dir / "backups"
    for i, age in enumerate((400, 300, 200)):
        old_backup(folder, f"INC-20260101-00000{i}-old.dump", age)
    with_payments(env, rows=2)
    incident = trigger(env)
    assert incident["status"] == "success", incident
    kept = [p.name for p in backups(env)]
    new = Path(incident["detail"]["downgrade"]["backup"]["path"]).name
    assert sorted(kept) == sorted([new, "INC-20260101-000002-old.dump"]), kept  # the newest two
    assert "pruned 2 older backup(s)" in json.dumps(incident["phases"])


def test_backup_max_age_prunes_by_age_but_never_the_new_backup(agent_env) -> None:
    env = agent_env
    env.write_config(migrations={"backup_keep": 50, "backup_max_age": "1m"})
    old_backup(env.state_dir / "backups", "INC-20260101-000000-old.sqlite", 3600)
    with_payments(env)
    incident = trigger(env)
    assert incident["status"] == "success", incident
    assert [p.name for p in backups(env)] == [Path(incident["detail"]["downgrade"]["backup"]["path"]).name]


def test_backup_keep_must_be_at_least_one(agent_env) -> None:
    env = agent_env
    env.write_config(migrations={"backup_keep": 0})
    with pytest.raises(ConfigError, match="backup_keep"):
        env.config()
