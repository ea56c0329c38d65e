"""Backup and restore of the agent's ledger (the SQLite state database); pruning of downgrade backups.

``backup`` uses SQLite's online backup API: one read transaction copies every page, so the copy
is consistent while the agent runs, even in the middle of a rollback (WAL: readers never block
the writer). The copy is switched to a self-contained rollback-journal file, checked with
``PRAGMA integrity_check`` and moved into place atomically.

``restore`` checks the file first (SQLite, intact, an agent ledger of a schema this agent reads,
the expected sha256 when given), then, holding the operation lock so that no rollback or deploy
can start meanwhile, copies it into the live database with the same API. It refuses while a
rollback or a deploy is in progress: the running operation would write over the restored ledger.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rollback_agent import __version__
from rollback_agent.state import SCHEMA_VERSION

# The files a downgrade backup leaves under state_dir/backups: INC-<id>.dump, INC-<id>.sqlite, ...
BACKUP_PREFIX = "INC-"

if TYPE_CHECKING:
    from rollback_agent.host import Host

TABLES = ("incidents", "deploys", "bad_releases", "webhooks")


class BackupError(Exception):
    """The file is not a usable ledger backup (missing, corrupt, foreign, newer, wrong checksum)."""


class RestoreRefusedError(Exception):
    """A rollback or deploy is running: restoring now would lose what it writes, or be lost by it."""


@dataclass(frozen=True)
class LedgerFile:
    """What a ledger file holds: enough for a manifest and for checking it before a restore."""

    path: str
    size: int
    sha256: str
    schema_version: int
    agent_version: str
    integrity: str
    counts: dict[str, int]
    taken_at: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _connect(path: Path, *, read_only: bool = False) -> Iterator[sqlite3.Connection]:
    uri = f"file:{path}?mode=ro" if read_only else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, timeout=15.0, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def _describe(conn: sqlite3.Connection, path: Path) -> tuple[str, int, dict[str, int]]:
    """integrity_check result, schema version and row counts; BackupError when not a ledger."""
    try:
        integrity = "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall())
        tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path}: not a readable SQLite database ({exc})") from None
    if integrity != "ok":
        raise BackupError(f"{path}: integrity check failed: {integrity[:500]}")
    missing = {"meta", *TABLES} - tables
    if missing:
        raise BackupError(f"{path}: not a rollback agent ledger (no table {', '.join(sorted(missing))})")
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None:
        raise BackupError(f"{path}: not a rollback agent ledger (no schema_version)")
    counts = {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}  # noqa: S608
    return integrity, int(row[0]), counts


def inspect(path: Path) -> LedgerFile:
    """Check a backup file without changing it; BackupError with the reason when it is unusable."""
    if not path.is_file():
        raise BackupError(f"{path}: no such file")
    try:
        with _connect(path, read_only=True) as conn:
            integrity, schema, counts = _describe(conn, path)
    except sqlite3.Error as exc:
        raise BackupError(f"{path}: cannot open ({exc})") from None
    if schema > SCHEMA_VERSION:
        raise BackupError(
            f"{path}: written by a newer agent (ledger schema {schema}, this agent {__version__} reads "
            f"{SCHEMA_VERSION}): upgrade the agent first"
        )
    return LedgerFile(
        path=str(path),
        size=path.stat().st_size,
        sha256=sha256_of(path),
        schema_version=schema,
        agent_version=__version__,
        integrity=integrity,
        counts=counts,
        taken_at=path.stat().st_mtime,
    )


def backup(db_path: Path, target: Path) -> LedgerFile:
    """Copy the live ledger at ``db_path`` to ``target`` (0600, replaced atomically)."""
    if not db_path.is_file():
        raise BackupError(f"{db_path}: no ledger to back up")
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent}: no such directory")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        with _connect(db_path) as src, _connect(tmp) as dst:
            src.backup(dst)  # one step: a single read transaction, a consistent snapshot
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            _describe(dst, tmp)
        os.replace(tmp, target)
    except sqlite3.Error as exc:
        raise BackupError(f"backup of {db_path} to {target} failed: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    info = inspect(target)
    return LedgerFile(**{**info.as_dict(), "taken_at": time.time()})


def refuse_if_busy(host: Host) -> None:
    running = host.in_progress()
    if not running:
        return
    if running.get("kind") == "rollback":
        what = (
            f"rollback {running.get('incident_id')} is in progress (phase {running.get('phase')}, "
            f"{running.get('progress')}%)"
        )
    else:
        what = f"{running.get('kind')} {running.get('id') or ''} is in progress (pid {running.get('pid')})"
    raise RestoreRefusedError(
        f"{what}: the ledger was not restored; run the restore again once `rollback-agent status` "
        "shows nothing in progress"
    )


def restore(host: Host, source: Path, expect_sha256: str | None = None) -> LedgerFile:
    """Replace the host's ledger with ``source`` (checked first), holding the operation lock."""
    from rollback_agent.locking import LockBusyError

    info = inspect(source)
    if expect_sha256 and info.sha256 != expect_sha256.lower():
        raise BackupError(
            f"{source}: sha256 {info.sha256} does not match the expected {expect_sha256} "
            "(a damaged or different file)"
        )
    refuse_if_busy(host)
    try:
        lock = host.lock().acquire("restore", source.name)
    except LockBusyError as exc:
        raise RestoreRefusedError(f"{exc}: the ledger was not restored; try again when it is done") from None
    with lock:
        host.store.close()
        try:
            with _connect(source, read_only=True) as src, _connect(host.config.db_path) as dst:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=WAL")
                _describe(dst, host.config.db_path)
        except sqlite3.Error as exc:
            raise BackupError(f"restore of {source} into {host.config.db_path} failed: {exc}") from None
    return info


# --- the `backup` and `restore` commands (registered by rollback_agent.cli) --------------------------
def _cmd_backup(args: argparse.Namespace) -> int:
    from rollback_agent import cli

    config = cli._load(args)
    try:
        info = backup(config.db_path, Path(args.to).absolute())
    except BackupError as exc:
        raise cli.CliError(str(exc), cli.EXIT_FAILED) from None
    cli._emit(
        args,
        {"result": "backed_up", **info.as_dict()},
        lambda: print(
            f"backed up {config.db_path} to {info.path}: {info.size} bytes, sha256 {info.sha256}, "
            f"schema {info.schema_version}, {info.counts['incidents']} incidents, "
            f"{info.counts['deploys']} deploys"
        ),
    )
    return cli.EXIT_OK


def _cmd_restore(args: argparse.Namespace) -> int:
    from rollback_agent import cli

    host = cli._host(cli._load(args))
    try:
        info = restore(host, Path(args.source).absolute(), args.sha256)
    except RestoreRefusedError as exc:
        raise cli.CliError(f"restore refused: {exc}", cli.EXIT_BUSY) from None
    except BackupError as exc:
        raise cli.CliError(f"restore refused: {exc}", cli.EXIT_REFUSED) from None
    cli._emit(
        args,
        {"result": "restored", "db_path": str(host.config.db_path), **info.as_dict()},
        lambda: print(
            f"restored {host.config.db_path} from {info.path} (sha256 {info.sha256}): "
            f"{info.counts['incidents']} incidents, {info.counts['deploys']} deploys, "
            f"{info.counts['bad_releases']} bad releases"
        ),
    )
    return cli.EXIT_OK


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add `backup` and `restore` to the CLI's subcommands."""
    p = sub.add_parser(
        "backup", parents=[common], help="copy the ledger (online, consistent) to a file"
    )
    p.add_argument("--to", required=True, metavar="FILE", help="file to write (replaced atomically)")
    p.set_defaults(func=_cmd_backup)
    p = sub.add_parser(
        "restore", parents=[common], help="replace the ledger with a backup (refused during a rollback)"
    )
    p.add_argument("--from", dest="source", required=True, metavar="FILE", help="backup file to restore")
    p.add_argument("--sha256", metavar="HEX", help="refuse unless the file has this sha256 (manifest)")
    p.set_defaults(func=_cmd_restore)


def prune_backups(
    folder: Path, keep: int, max_age: float | None, protect: set[str], now: float
) -> list[Path]:
    """Delete downgrade backups beyond the newest ``keep`` or older than ``max_age`` seconds.

    Only the agent's own files (``INC-...``) are considered; those of the incidents in ``protect``
    (the running one, the last one) are never deleted and count among the kept. Returns what went.
    """
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and p.name.startswith(BACKUP_PREFIX)]
    files.sort(key=lambda p: p.stat().st_mtime, reverse=True)  # newest first
    removed: list[Path] = []
    for rank, path in enumerate(files):
        if path.name.split(".", 1)[0] in protect:
            continue
        too_many = rank >= keep
        too_old = max_age is not None and now - path.stat().st_mtime > max_age
        if too_many or too_old:
            path.unlink()
            removed.append(path)
    return removed
